// The training step of a causal language model with adapters: forward, cross-entropy on the
// labelled tokens, backward, clipping, AdamW and the schedule, over one or more micro-batches
// (gradient accumulation) in one call.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "distributed/group.h"
#include "model/decoder.h"
#include "train/optimizer.h"

namespace rlora::train {

// The label of a position without loss (Hugging Face's ignore_index): prompt, padding. The addon
// exports it to JS as `ignoreLabel`.
constexpr int64_t kIgnoreLabel = -100;

// ids [B, S] int64; mask [B, S] (1 token, 0 padding); labels [B, S] int64, kIgnoreLabel where no
// loss (Hugging Face convention: the model predicts labels[:, t + 1] from position t).
// cu_seqlens (packing, DecoderModel::forward): one row of examples end to end; each example's
// first label is ignored as a row's first is (it would be predicted from the example before), so
// a packed batch gives each example the loss and gradient it has unpacked.
struct LmBatch {
  torch::Tensor ids, mask, labels, cu_seqlens;
};

// Per row, or per example of a packed batch.
struct LmLoss {
  torch::Tensor loss_sum;  // [B] float64: summed cross-entropy of each row's labelled tokens
  torch::Tensor tokens;    // [B] int64: labelled tokens of each row
};

struct LmStepResult {
  double loss = 0.0;  // mean over every labelled token of every micro-batch
  bool finite = true; // false: no update was made
  LmLoss rows;        // every micro-batch's rows, in order
  StepStats stats;
};

// Cross-entropy per row (per example with cu_seqlens: labels already without a target at an
// example's first position) from the last decoder layer's output `hidden` [B, S, H]: the head runs
// on the positions whose next token is labelled only (a prompt's positions cost no vocab-wide
// product, log-softmax or gradient), in float32 at least, differentiable (the caller chooses grad
// mode). tokens: the labelled tokens of each row (or example).
torch::Tensor lm_loss_rows(const model::DecoderModel& model, const torch::Tensor& hidden, const torch::Tensor& labels,
                           torch::Tensor* tokens, const torch::Tensor& cu_seqlens = {});

// How lm_train_step runs (named, as the JS options that fill it; the binding checks their types).
struct LmStepOptions {
  // The forward and backward run under autocast to this dtype (bfloat16) on the model's device;
  // parameters, gradients and optimizer state keep their own dtype. kFloat32 (or the model's
  // dtype) means no autocast.
  torch::ScalarType autocast = torch::kFloat32;
  // Data parallelism: each rank passes its own slice of the global batch; the loss is normalised
  // by the labelled tokens of every rank (summed first), the gradients are summed over the ranks,
  // so every rank makes the same update: that of one process given the union of the slices. The
  // returned loss is the global one; rows are this rank's. nullptr: one process.
  dist::Group* group = nullptr;
  // Activation checkpointing (DecoderModel::backward_checkpointed): the same loss and gradients,
  // less memory, about one more forward of compute.
  bool checkpointing = false;
};

// Gradients accumulate over the micro-batches, normalised by their total labelled tokens, so the
// update equals one step on their union. A non-finite loss makes no update (grads are cleared).
LmStepResult lm_train_step(model::DecoderModel& model, const std::vector<LmBatch>& micro, AdamW& opt,
                           const LmStepOptions& options = {});

// Loss without gradients (evaluation).
LmLoss lm_eval_loss(model::DecoderModel& model, const LmBatch& batch);

}  // namespace rlora::train
