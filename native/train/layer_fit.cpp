#include "train/layer_fit.h"

#include <stdexcept>

#include "common/format.h"

namespace rlora::train {

FitResult fit_step(MultiHeadLoraLinear& layer, const torch::Tensor& x, const torch::Tensor& target, AdamW& opt) {
  torch::AutoGradMode grad_on(true);
  torch::Tensor y = layer.forward(x);
  if (!target.defined() || target.sizes() != y.sizes())
    throw std::invalid_argument("target must have the output's shape " + shape_str(y) + ", got " + shape_str(target));
  if (target.scalar_type() != y.scalar_type() || target.device() != y.device())
    throw std::invalid_argument("target must be " + dtype_str(y.scalar_type()) + " on " + y.device().str() + ", got " +
                                dtype_str(target.scalar_type()) + " on " + target.device().str());
  torch::Tensor sq = (y - target).pow(2).reshape({-1, y.size(-1)});
  torch::Tensor loss = sq.mean();
  opt.zero_grad();
  loss.backward();
  FitResult r;
  r.stats = opt.step();
  r.loss = loss.item<double>();
  r.row_loss = sq.detach().mean(1).to(torch::kCPU, torch::kFloat64);
  return r;
}

}  // namespace rlora::train
