#include "model/attention.h"

#include "common/torch_compat.h"

#include <algorithm>
#include <limits>
#include <string>

namespace rlora::model {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Which keys ks..ks+bk-1 the queries qs..qs+bq-1 may see: [B, 1, bq, bk] bool. `seg`: each
// position's example (packing) or undefined.
Tensor allowed_block(const AttentionMask& m, const Tensor& key_mask, const Tensor& empty, const Tensor& seg, int64_t qs,
                     int64_t bq, int64_t ks, int64_t bk, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  Tensor qi = torch::arange(qs, qs + bq, opts).unsqueeze(1) + m.past;  // [bq, 1]
  Tensor kj = torch::arange(ks, ks + bk, opts).unsqueeze(0);           // [1, bk]
  Tensor ok = kj <= qi;
  if (m.window > 0) ok = ok.logical_and(kj > qi - m.window);
  if (seg.defined()) ok = ok.logical_and(seg.narrow(0, qs + m.past, bq).unsqueeze(1) == seg.narrow(0, ks, bk).unsqueeze(0));
  Tensor allowed = ok.unsqueeze(0);  // [1, bq, bk]
  if (key_mask.defined()) allowed = allowed.logical_and(key_mask.narrow(1, ks, bk).unsqueeze(1));  // [B, bq, bk]
  Tensor self = (kj == qi).unsqueeze(0).logical_and(empty.narrow(1, qs, bq).unsqueeze(2));           // [B, bq, bk]
  return allowed.logical_or(self).unsqueeze(1);
}

// The examples' first positions (packing), from cu_seqlens; empty without packing.
std::vector<int64_t> segment_starts(const Tensor& cu) {
  if (!cu.defined()) return {};
  Tensor c = cu.to(torch::kCPU, torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel() - 1);
}

// Whether any query of qs..qs+bq-1 may see a key of ks..ks+bk-1 (else the block is skipped).
// `starts`: the examples' first positions when packed (a query sees nothing before its example's).
bool block_needed(const AttentionMask& m, const std::vector<int64_t>& starts, int64_t qs, int64_t bq, int64_t ks, int64_t bk) {
  if (ks > qs + bq - 1 + m.past) return false;                          // every key after every query
  if (m.window > 0 && ks + bk - 1 <= qs + m.past - m.window) return false;  // every key before every window
  if (!starts.empty()) {  // every key before the example of the block's first query
    auto it = std::upper_bound(starts.begin(), starts.end(), qs + m.past);
    if (it != starts.begin() && ks + bk - 1 < *std::prev(it)) return false;
  }
  return true;
}

// Whether every query of the block may see every key of it (no mask to apply): all keys at or
// before the first query, inside every query's window, in one example, none of them padding.
bool block_full(const AttentionMask& m, const std::vector<int64_t>& starts, int64_t qs, int64_t bq, int64_t ks, int64_t bk) {
  if (m.key_mask.defined()) return false;
  const int64_t first_q = qs + m.past, last_q = qs + bq - 1 + m.past;
  if (ks + bk - 1 > first_q) return false;
  if (m.window > 0 && ks <= last_q - m.window) return false;
  if (!starts.empty()) {  // no example starts after the first key and at or before the last query
    auto it = std::upper_bound(starts.begin(), starts.end(), ks);
    if (it != starts.end() && *it <= last_q) return false;
  }
  return true;
}

// The scores of a block, in float32: q k^T * scale, soft-capped; `capped` gets tanh(s / cap).
Tensor block_scores(const Tensor& qb, const Tensor& kb, const AttentionMask& m, Tensor* capped) {
  Tensor s = torch::matmul(qb, kb.transpose(-2, -1)).mul_(m.scale);
  if (m.softcap > 0) {
    Tensor t = s.div_(m.softcap).tanh_();
    if (capped) *capped = t;
    s = t * m.softcap;
  }
  return s;
}

// An empty tensor stands for "none" in the autograd function's arguments.
Tensor defined_or_none(const Tensor& t) { return t.numel() > 0 ? t : Tensor(); }
Tensor none_as_empty(const Tensor& t) { return t.defined() ? t : torch::empty({0}, torch::kInt64); }

class BlockAttentionFunction : public torch::autograd::Function<BlockAttentionFunction> {
 public:
  // key_mask and cu: an empty tensor for none (libtorch's apply takes no undefined tensor)
  static Tensor forward(AutogradContext* ctx, Tensor q, Tensor k, Tensor v, Tensor key_mask_or_empty, Tensor empty,
                        Tensor cu_or_empty, double scale, double softcap, int64_t window, int64_t past, int64_t block) {
    const Tensor key_mask = defined_or_none(key_mask_or_empty), cu = defined_or_none(cu_or_empty);
    const AttentionMask m{past, window, key_mask, scale, softcap, cu};
    const Tensor seg = segment_ids(m, q.device());
    const std::vector<int64_t> starts = segment_starts(cu);
    const int64_t B = q.size(0), H = q.size(1), S = q.size(2), T = k.size(2), D = q.size(3);
    Tensor qf = q.to(torch::kFloat32), kf = k.to(torch::kFloat32), vf = v.to(torch::kFloat32);
    Tensor out = torch::empty({B, H, S, D}, qf.options());
    Tensor lse = torch::empty({B, H, S, 1}, qf.options());
    for (int64_t qs = 0; qs < S; qs += block) {
      const int64_t bq = std::min(block, S - qs);
      Tensor qb = qf.narrow(2, qs, bq);
      Tensor mx = torch::full({B, H, bq, 1}, -kInf, qf.options());
      Tensor l = torch::zeros({B, H, bq, 1}, qf.options());
      Tensor acc = torch::zeros({B, H, bq, D}, qf.options());
      for (int64_t ks = 0; ks < T; ks += block) {
        const int64_t bk = std::min(block, T - ks);
        if (!block_needed(m, starts, qs, bq, ks, bk)) continue;
        Tensor s = block_scores(qb, kf.narrow(2, ks, bk), m, nullptr);
        if (!block_full(m, starts, qs, bq, ks, bk))
          s.masked_fill_(allowed_block(m, key_mask, empty, seg, qs, bq, ks, bk, q.device()).logical_not(), -kInf);
        Tensor mnew = torch::maximum(mx, s.amax(-1, true));
        Tensor msafe = torch::where(torch::isinf(mnew), torch::zeros_like(mnew), mnew);  // a row with no key yet
        Tensor p = s.sub_(msafe).exp_();  // in place: the block's scores are not needed again
        Tensor alpha = (mx - msafe).exp_();
        l.mul_(alpha).add_(p.sum(-1, true));
        acc.mul_(alpha).add_(torch::matmul(p, vf.narrow(2, ks, bk)));
        mx = mnew;
      }
      out.narrow(2, qs, bq).copy_(acc / l);
      lse.narrow(2, qs, bq).copy_(mx + torch::log(l));
    }
    ctx->save_for_backward({q, k, v, out, lse, key_mask_or_empty, empty, cu_or_empty});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["softcap"] = softcap;
    ctx->saved_data["window"] = window;
    ctx->saved_data["past"] = past;
    ctx->saved_data["block"] = block;
    return out.to(q.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    Tensor q = saved[0], k = saved[1], v = saved[2], out = saved[3], lse = saved[4], key_mask = defined_or_none(saved[5]),
           empty = saved[6], cu = defined_or_none(saved[7]);
    const AttentionMask m{ctx->saved_data["past"].toInt(), ctx->saved_data["window"].toInt(), key_mask,
                          ctx->saved_data["scale"].toDouble(), ctx->saved_data["softcap"].toDouble(), cu};
    const Tensor seg = segment_ids(m, q.device());
    const std::vector<int64_t> starts = segment_starts(cu);
    const int64_t block = ctx->saved_data["block"].toInt();
    const int64_t S = q.size(2), T = k.size(2);
    Tensor qf = q.to(torch::kFloat32), kf = k.to(torch::kFloat32), vf = v.to(torch::kFloat32);
    Tensor dout = grads[0].to(torch::kFloat32);
    Tensor delta = (dout * out).sum(-1, true);  // [B, H, S, 1]
    Tensor dq = torch::zeros_like(qf), dk = torch::zeros_like(kf), dv = torch::zeros_like(vf);
    for (int64_t qs = 0; qs < S; qs += block) {
      const int64_t bq = std::min(block, S - qs);
      Tensor qb = qf.narrow(2, qs, bq), dob = dout.narrow(2, qs, bq);
      Tensor lseb = lse.narrow(2, qs, bq), deltab = delta.narrow(2, qs, bq);
      Tensor dqb = dq.narrow(2, qs, bq);
      for (int64_t ks = 0; ks < T; ks += block) {
        const int64_t bk = std::min(block, T - ks);
        if (!block_needed(m, starts, qs, bq, ks, bk)) continue;
        Tensor kb = kf.narrow(2, ks, bk), vb = vf.narrow(2, ks, bk);
        Tensor capped;
        Tensor s = block_scores(qb, kb, m, &capped);
        if (!block_full(m, starts, qs, bq, ks, bk))
          s.masked_fill_(allowed_block(m, key_mask, empty, seg, qs, bq, ks, bk, q.device()).logical_not(), -kInf);
        Tensor p = s.sub_(lseb).exp_();  // the softmax, as the forward made it
        dv.narrow(2, ks, bk).add_(torch::matmul(p.transpose(-2, -1), dob));
        Tensor ds = torch::matmul(dob, vb.transpose(-2, -1)).sub_(deltab).mul_(p);
        if (m.softcap > 0) ds.mul_(1 - capped * capped);
        ds.mul_(m.scale);
        dqb.add_(torch::matmul(ds, kb));
        dk.narrow(2, ks, bk).add_(torch::matmul(ds.transpose(-2, -1), qb));
      }
    }
    return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor segment_ids(const AttentionMask& m, const torch::Device& device) {
  if (!m.cu_seqlens.defined()) return Tensor();
  Tensor cu = m.cu_seqlens.to(torch::kCPU, torch::kInt64);
  const int64_t n = cu.numel() - 1;
  Tensor lengths = cu.narrow(0, 1, n) - cu.narrow(0, 0, n);
  return torch::repeat_interleave(torch::arange(n, cu.options()), lengths).to(device);
}

Tensor empty_rows(const AttentionMask& m, int64_t B, int64_t S, int64_t T, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  if (!m.key_mask.defined()) return torch::zeros({B, S}, opts.dtype(torch::kBool));
  // keys seen by query i: those at positions (past + i - window, past + i] that are tokens
  Tensor real = (m.key_mask != 0).to(torch::kInt64);
  Tensor upto = torch::cat({torch::zeros({B, 1}, opts), real.cumsum(1)}, 1);  // upto[:, t] = tokens before t
  Tensor last = torch::arange(S, opts) + m.past;                                // [S]
  Tensor hi = (last + 1).clamp_max(T);
  Tensor lo = m.window > 0 ? (last - m.window + 1).clamp_min(0) : torch::zeros_like(last);
  Tensor seen = upto.index_select(1, hi) - upto.index_select(1, lo);
  return seen == 0;
}

Tensor block_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m, int64_t block) {
  const int64_t B = q.size(0), S = q.size(2), T = k.size(2);
  if (block < 1) throw std::invalid_argument("block_attention: block must be >= 1, got " + std::to_string(block));
  Tensor key_mask = m.key_mask.defined() ? (m.key_mask.to(q.device()) != 0) : Tensor();
  Tensor empty = empty_rows(m, B, S, T, q.device());
  return BlockAttentionFunction::apply(q, k, v, none_as_empty(key_mask), empty, none_as_empty(m.cu_seqlens), m.scale, m.softcap,
                                       m.window, m.past, block);
}

Tensor eager_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m) {
  const int64_t B = q.size(0), S = q.size(2), T = k.size(2);
  Tensor empty = empty_rows(m, B, S, T, q.device());
  Tensor key_mask = m.key_mask.defined() ? (m.key_mask.to(q.device()) != 0) : Tensor();
  Tensor allowed = allowed_block(m, key_mask, empty, segment_ids(m, q.device()), 0, S, 0, T, q.device());  // [B, 1, S, T]
  Tensor scores = torch::matmul(q, k.transpose(2, 3)) * m.scale;
  if (m.softcap > 0) scores = torch::tanh(scores / m.softcap) * m.softcap;
  scores = scores.masked_fill(allowed.logical_not(), -kInf);
  Tensor attn = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  return torch::matmul(attn, v);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m) {
  const int64_t S = q.size(2), T = k.size(2);
  if (S * T <= kEagerScores) return eager_attention(q, k, v, m);
  if (compat::kHasFusedAttention && m.past == 0 && m.window == 0 && m.softcap == 0 && !m.cu_seqlens.defined() && S == T) {
    // padding only after the tokens (none before a token): a token never sees a padding key
    const bool right_padded = !m.key_mask.defined() || !(m.key_mask.narrow(1, 1, T - 1) > m.key_mask.narrow(1, 0, T - 1)).any().item<bool>();
    if (right_padded) return compat::fused_causal_attention(q, k, v, m.scale);
  }
  return block_attention(q, k, v, m);
}

}  // namespace rlora::model
