// The multi-head LoRA layer of docs/ARCHITECTURE.md section 2 (LoRA, HydraLoRA and R-LoRA are presets of it).
//
//   w(x) = softmax(W_g x)                                   (float32 at least; w = 1 when N = 1)
//   y    = W0 x + b + s * sum_i w_i(x) B_i A D_i(x)  -  s * offB offA x
//
// The frozen weight W0 is never modified: the R-LoRA offset s * mean_i B_i(0) A(0) is kept as the
// low-rank pair (offB, offA) and subtracted inside the same product as the heads, so the base
// weight stays bit-exact (detach restores it for free) and costs r extra columns, not a copy.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "rlora/options.h"

namespace rlora {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class MultiHeadLoraLinear {
 public:
  // weight: [out, in] floating point; bias: [out] or undefined. Adapter parameters take the
  // weight's dtype and device; initial values are drawn on the CPU from `options.seed`, so a seed
  // gives the same layer on every device.
  MultiHeadLoraLinear(torch::Tensor weight, torch::Tensor bias, const LoraOptions& options);

  // x: [..., in] with the weight's dtype and device. Dropout only in training mode. Differentiable
  // with respect to x and the trainable parameters (a custom autograd function).
  torch::Tensor forward(const torch::Tensor& x);

  // Output, gradient of the input and of every trainable parameter (by state-dict name) for the
  // cotangent grad_output, without touching the parameters' .grad.
  struct Vjp {
    torch::Tensor output, grad_input;
    NamedTensors grads;
  };
  Vjp vjp(const torch::Tensor& x, const torch::Tensor& grad_output);

  void train(bool on) { training_ = on; }
  bool is_training() const { return training_; }

  const LoraOptions& options() const { return options_; }
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  bool has_router() const { return options_.heads > 1; }
  bool has_offset() const { return off_a_.defined(); }
  torch::ScalarType dtype() const { return weight_.scalar_type(); }
  // The adapter's own values (A, B_i, router, offsets, gradients, optimizer state): float32 under a
  // bfloat16 or float16 base weight, else the weight's dtype.
  torch::ScalarType adapter_dtype() const {
    const auto w = weight_.scalar_type();
    return (w == torch::kBFloat16 || w == torch::kHalf) ? torch::kFloat32 : w;
  }
  torch::Device device() const { return weight_.device(); }

  // Trainable parameters as stored: A [r, in], B = [B_0 .. B_{N-1}] [out, N r], router [N, in].
  std::vector<torch::Tensor> parameters() const;
  // Trainable parameters by state-dict name (B split per head, as views of the stored B).
  NamedTensors named_parameters() const;
  // Gradients by state-dict name (undefined where none was computed).
  NamedTensors named_grads() const;

  // lora_A.weight, lora_B.weight (N = 1) or lora_B0.weight .., lora_route.weight,
  // lora_offset_A.weight, lora_offset_B.weight: detached copies.
  NamedTensors state_dict() const;
  // Strict: every trainable name must be present with its shape; offsets when the layer has them.
  void load_state_dict(const std::map<std::string, torch::Tensor>& tensors);

  // N x N cosine similarity of the flattened B_i (two zero heads count as identical: 1).
  torch::Tensor head_similarity() const;
  // The frozen weight as the layer uses it: W0 - s * offB offA (W0 itself without offset).
  torch::Tensor base_weight() const;
  // W0 + s * B A - s * offB offA: the base weight with a single-head adapter folded in. Throws for
  // heads > 1 (the router makes the update depend on the input).
  torch::Tensor merged_weight() const;
  const torch::Tensor& weight() const { return weight_; }
  const torch::Tensor& bias() const { return bias_; }

  // The generator of dropout masks (its state belongs in checkpoints).
  at::Generator& generator() { return gen_; }
  torch::Tensor generator_state() const;
  void set_generator_state(const torch::Tensor& state);
  // Restarts the dropout generator from a seed (data parallelism: each rank its own stream).
  void reseed(uint64_t seed);
  // The base product computed elsewhere (a quantized weight): y = base(x) + the adapter's part.
  // The layer's own weight is then only a placeholder of the shape and dtype.
  void set_base(std::function<torch::Tensor(const torch::Tensor&)> base) { base_ = std::move(base); }
  // Jobs on one layer run one at a time (forward draws from the generator).
  std::mutex& mutex() const { return mutex_; }

 private:
  std::string b_name(int64_t head) const;

  LoraOptions options_;
  std::function<torch::Tensor(const torch::Tensor&)> base_;
  torch::Tensor weight_, bias_;     // frozen
  torch::Tensor a_, b_, router_;    // trainable (router undefined when N = 1)
  torch::Tensor off_a_, off_b_;     // frozen offset pair, undefined without offset
  bool training_ = true;
  mutable at::Generator gen_;
  mutable std::mutex mutex_;
};

}  // namespace rlora
