#include "train/lm_step.h"

#include <cmath>
#include <stdexcept>

#include "common/errors.h"
#include "common/format.h"
#include "common/torch_compat.h"
#include "distributed/reducer.h"
#include "model/attention.h"

namespace rlora::train {

namespace {
// The batch checked, packed labels without a target at each example's first position.
LmBatch checked(const model::DecoderModel& model, const LmBatch& b, size_t i) {
  if (!b.labels.defined() || b.labels.sizes() != b.ids.sizes())
    throw std::invalid_argument("micro-batch " + std::to_string(i) + ": labels have shape " + shape_str(b.labels) +
                                ", the input ids " + shape_str(b.ids));
  if (b.labels.scalar_type() != torch::kInt64)
    throw std::invalid_argument("micro-batch " + std::to_string(i) + ": labels must be int64, got " +
                                dtype_str(b.labels.scalar_type()));
  if (!b.cu_seqlens.defined()) return b;
  try {
    model.check_ids(b.ids, b.mask, b.cu_seqlens);
  } catch (const OutOfRange& e) {
    throw OutOfRange("micro-batch " + std::to_string(i) + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("micro-batch " + std::to_string(i) + ": " + e.what());
  }
  LmBatch out = b;
  out.cu_seqlens = b.cu_seqlens.to(torch::kCPU, torch::kInt64);
  const int64_t n = out.cu_seqlens.numel() - 1;
  out.labels = b.labels.clone();
  if (n > 1) out.labels.index_fill_(1, out.cu_seqlens.narrow(0, 1, n - 1).to(b.labels.device()), kIgnoreLabel);
  return out;
}
}  // namespace

torch::Tensor lm_loss_rows(const model::DecoderModel& model, const torch::Tensor& hidden, const torch::Tensor& labels,
                           torch::Tensor* tokens, const torch::Tensor& cu_seqlens) {
  const int64_t B = hidden.size(0), S = hidden.size(1), H = hidden.size(2);
  // which positions predict a labelled token, found on the labels' side (the CPU, where the
  // binding made them): no host synchronisation with the model's device
  const torch::Tensor y = labels.narrow(1, 1, S - 1).reshape({-1});
  const torch::Tensor keep = (y != kIgnoreLabel).nonzero().squeeze(1);  // [M], in position order
  // the row of each kept position, or with cu_seqlens (one row) its example
  torch::Tensor group;
  int64_t n = B;
  if (cu_seqlens.defined()) {
    const model::AttentionMask m{0, 0, {}, 1.0, 0.0, cu_seqlens};
    group = model::segment_ids(m, keep.device()).narrow(0, 1, S - 1).index_select(0, keep);
    n = cu_seqlens.numel() - 1;
  } else {
    group = keep.div(S - 1, "floor");
  }
  const torch::Device dev = hidden.device();
  const torch::Tensor keep_d = keep.to(dev), group_d = group.to(dev);
  torch::Tensor logits = model.head(hidden.narrow(1, 0, S - 1).reshape({-1, H}).index_select(0, keep_d));
  logits = logits.scalar_type() == torch::kFloat64 ? logits : logits.to(torch::kFloat32);
  torch::Tensor per_token = torch::nn::functional::cross_entropy(
      logits, y.index_select(0, keep).to(dev), torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  if (tokens) *tokens = torch::zeros({n}, group_d.options()).index_add_(0, group_d, torch::ones_like(group_d));
  return torch::zeros({n}, per_token.options()).index_add(0, group_d, per_token);
}

LmStepResult lm_train_step(model::DecoderModel& model, const std::vector<LmBatch>& micro_in, AdamW& opt,
                           const LmStepOptions& options) {
  const torch::ScalarType autocast = options.autocast;
  dist::Group* const group = options.group;
  const bool cast = autocast != torch::kFloat32 && autocast != model.dtype();
  if (micro_in.empty()) throw std::invalid_argument("a training step needs at least one micro-batch");
  std::vector<LmBatch> micro;
  for (size_t i = 0; i < micro_in.size(); ++i) micro.push_back(checked(model, micro_in[i], i));
  int64_t total = 0;
  for (const auto& b : micro) total += (b.labels.narrow(1, 1, b.labels.size(1) - 1) != kIgnoreLabel).sum().item<int64_t>();
  if (group) total = dist::allreduce_sum(*group, total);  // every rank's count: the global normaliser
  if (total == 0) throw std::invalid_argument("the batch has no labelled token: every label is " + std::to_string(kIgnoreLabel));
  torch::AutoGradMode grad_on(true);
  opt.zero_grad();
  LmStepResult r;
  std::vector<torch::Tensor> sums, counts;
  // Data parallel: the last micro-batch's backward sums the gradients over the ranks as they come
  // (earlier ones accumulate locally, as DDP's no_sync).
  std::unique_ptr<dist::OverlappedAllreduce> overlap;
  for (size_t i = 0; i < micro.size(); ++i) {
    const auto& b = micro[i];
    if (group && group->bucket_cap_bytes() > 0 && i + 1 == micro.size())
      overlap = std::make_unique<dist::OverlappedAllreduce>(*group, opt.params());
    torch::Tensor tokens, rows;
    if (options.checkpointing) {
      compat::AutocastGuard guard(model.device(), cast, autocast);  // the recomputation too
      std::vector<torch::Tensor> row_parts, token_parts;
      model.backward_checkpointed(b.ids, b.mask, b.cu_seqlens, [&](const torch::Tensor& hidden, int64_t row0) {
        torch::Tensor t;
        row_parts.push_back(lm_loss_rows(model, hidden, b.labels.narrow(0, row0, hidden.size(0)), &t, b.cu_seqlens));
        token_parts.push_back(t);
        return row_parts.back().sum() / static_cast<double>(total);
      });
      rows = torch::cat(row_parts);
      tokens = torch::cat(token_parts);
    } else {
      {
        compat::AutocastGuard guard(model.device(), cast, autocast);
        rows = lm_loss_rows(model, model.hidden(b.ids, b.mask, b.cu_seqlens), b.labels, &tokens, b.cu_seqlens);
      }
      torch::Tensor loss = rows.sum() / static_cast<double>(total);
      loss.backward();
    }
    // kept where they were computed: on CUDA, no host synchronisation until the step's end
    sums.push_back(rows.detach());
    counts.push_back(tokens);
  }
  // The gradients summed over the ranks (each rank's loss was divided by the global count, so the
  // sum is the global gradient), then the global loss: every rank decides on the same number.
  if (overlap) {
    overlap->finish();
  } else if (group) {
    dist::sum_gradients(*group, opt.params());
  }
  r.rows = {torch::cat(sums).to(torch::kCPU, torch::kFloat64), torch::cat(counts).to(torch::kCPU, torch::kInt64)};
  double loss_sum = r.rows.loss_sum.sum().item<double>();
  if (group) loss_sum = dist::allreduce_sum(*group, loss_sum);
  r.loss = loss_sum / static_cast<double>(total);
  r.finite = std::isfinite(r.loss);
  if (!r.finite) {
    opt.zero_grad();
    return r;
  }
  r.stats = opt.step();
  return r;
}

LmLoss lm_eval_loss(model::DecoderModel& model, const LmBatch& batch_in) {
  const LmBatch batch = checked(model, batch_in, 0);
  torch::NoGradGuard no_grad;
  LmLoss out;
  out.loss_sum = lm_loss_rows(model, model.hidden(batch.ids, batch.mask, batch.cu_seqlens), batch.labels, &out.tokens,
                              batch.cu_seqlens)
                     .to(torch::kCPU, torch::kFloat64);
  out.tokens = out.tokens.to(torch::kCPU, torch::kInt64);
  return out;
}

}  // namespace rlora::train
