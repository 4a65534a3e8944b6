// attentionVjp: the attention of native/model/attention.h with its vector-Jacobian product, for
// tests that check the block-wise path against the eager one and against Python torch.
#include "attention.h"

#include "model/attention.h"
#include "tensor.h"

namespace rlora::binding {

namespace {

struct AttentionResult {
  torch::Tensor out, dq, dk, dv;
};

// attentionVjp(q, k, v, dOut, {past, window, keyMask, scale, softcap, block, eager, cuSeqlens?}) -> Promise<{out, dq, dk, dv}>
Napi::Value AttentionVjp(const Napi::CallbackInfo& info) {
  torch::Tensor q = unwrap<JsTensor>(info[0], "q"), k = unwrap<JsTensor>(info[1], "k"), v = unwrap<JsTensor>(info[2], "v");
  torch::Tensor dout = unwrap<JsTensor>(info[3], "dOut");
  OptionsReader o(info[4], "attentionVjp", {"past", "window", "keyMask", "scale", "softcap", "block", "eager", "cuSeqlens"},
                  /*required=*/true);
  model::AttentionMask m;
  m.past = o.integer("past", 0);
  m.window = o.integer("window", 0);
  if (o.has("keyMask") && !o.get("keyMask").IsNull()) m.key_mask = unwrap<JsTensor>(o.get("keyMask"), "keyMask");
  if (o.has("cuSeqlens") && !o.get("cuSeqlens").IsNull()) m.cu_seqlens = unwrap<JsTensor>(o.get("cuSeqlens"), "cuSeqlens");
  m.scale = o.number("scale");
  m.softcap = o.number("softcap");
  const int64_t block = o.integer("block", 1);
  const bool eager = o.boolean("eager");
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || k.sizes() != v.sizes() || q.size(0) != k.size(0) || q.size(1) != k.size(1) ||
      q.size(3) != k.size(3) || dout.sizes() != q.sizes())
    throw std::invalid_argument("attentionVjp: q [B, H, S, D], k and v [B, H, T, D], dOut like q");
  if (m.key_mask.defined() && (m.key_mask.dim() != 2 || m.key_mask.size(0) != q.size(0) || m.key_mask.size(1) != k.size(2)))
    throw std::invalid_argument("attentionVjp: keyMask must be [B, T]");
  if (m.past + q.size(2) > k.size(2)) throw std::invalid_argument("attentionVjp: past + S must be <= T");
  if (m.cu_seqlens.defined() && (q.size(0) != 1 || m.cu_seqlens.dim() != 1 || m.cu_seqlens.numel() < 2 ||
                                 m.cu_seqlens[-1].item<int64_t>() != k.size(2)))
    throw std::invalid_argument("attentionVjp: cuSeqlens [0, ..., T] needs B == 1");
  return run_async<AttentionResult>(
      info.Env(),
      [q, k, v, dout, m, block, eager] {
        torch::Tensor qq = q.detach().requires_grad_(true), kk = k.detach().requires_grad_(true), vv = v.detach().requires_grad_(true);
        torch::Tensor out = eager ? model::eager_attention(qq, kk, vv, m) : model::block_attention(qq, kk, vv, m, block);
        auto g = torch::autograd::grad({out}, {qq, kk, vv}, {dout});
        return AttentionResult{out.detach(), g[0], g[1], g[2]};
      },
      [](Napi::Env e, AttentionResult& r) -> Napi::Value {
        auto obj = Napi::Object::New(e);
        obj.Set("out", JsTensor::Wrap(e, r.out));
        obj.Set("dq", JsTensor::Wrap(e, r.dq));
        obj.Set("dk", JsTensor::Wrap(e, r.dk));
        obj.Set("dv", JsTensor::Wrap(e, r.dv));
        return obj;
      });
}

}  // namespace

void InitAttention(Napi::Env env, Napi::Object exports) { export_function<AttentionVjp>(exports, "attentionVjp"); }

}  // namespace rlora::binding
