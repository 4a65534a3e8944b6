// Small helpers that name tensors' shapes and dtypes in error messages.
#pragma once

#include <torch/torch.h>

#include <string>

namespace rlora {

// "[4, 16]"
inline std::string shape_str(c10::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}
inline std::string shape_str(const torch::Tensor& t) { return t.defined() ? shape_str(t.sizes()) : "undefined"; }

// The names users write: "float32", "bfloat16", "int64", ...
std::string dtype_str(torch::ScalarType t);
// Parses those names; throws std::invalid_argument listing the known ones.
torch::ScalarType parse_dtype(const std::string& name);
// "cpu", "cuda", "cuda:1"; throws std::invalid_argument for anything else or an absent CUDA.
torch::Device parse_device(const std::string& name);

}  // namespace rlora
