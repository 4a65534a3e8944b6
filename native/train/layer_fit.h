// Fitting one multi-head LoRA layer to targets (mean squared error): the step behind the
// layer-level API and the synthetic-regression demo.
#pragma once

#include <torch/torch.h>

#include "rlora/multihead_lora.h"
#include "train/optimizer.h"

namespace rlora::train {

struct FitResult {
  double loss = 0.0;          // mean over every element
  torch::Tensor row_loss;     // [T]: mean squared error of each row (token), float64 CPU
  StepStats stats;
};

// forward (in the layer's mode), MSE against target, backward, clip, AdamW step.
FitResult fit_step(MultiHeadLoraLinear& layer, const torch::Tensor& x, const torch::Tensor& target, AdamW& opt);

}  // namespace rlora::train
