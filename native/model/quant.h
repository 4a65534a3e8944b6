// A frozen linear weight stored quantized, as QLoRA keeps its base model: int8 with one absmax
// scale per output row, or 4-bit NormalFloat (NF4) in blocks of 64 with one absmax per block
// (bitsandbytes' format, without double quantization). The product dequantizes a few rows at a
// time in forward and backward, so the weight never exists dequantized in full.
#pragma once

#include <torch/torch.h>

#include <string>

namespace rlora::model {

struct QuantWeight {
  std::string kind;        // "int8" or "nf4"
  torch::Tensor q;         // int8 [out, in], or uint8 [out, in / 2] holding two 4-bit codes (high nibble first)
  torch::Tensor scale;     // float32: [out] (int8), [out, in / 64] (nf4)
  int64_t out = 0, in = 0;
  torch::ScalarType dtype = torch::kFloat32;  // what dequantization gives (the model's dtype)
};

// Quantizes a 2-D weight; nf4 needs in % 64 == 0. Throws std::invalid_argument naming the problem.
QuantWeight quantize(const torch::Tensor& weight, const std::string& kind);

// The whole weight dequantized, [out, in] in qw.dtype (a copy).
torch::Tensor dequantize(const QuantWeight& qw);

// y = x W^T (+ bias) for a quantized W, differentiable in x (W is frozen). x: [..., in].
torch::Tensor quant_linear(const torch::Tensor& x, const QuantWeight& qw, const torch::Tensor& bias);

}  // namespace rlora::model
