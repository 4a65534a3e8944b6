// JS handle of a torch::Tensor (wrapped by lib/tensor.ts), and the binding's typed-array copies.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <vector>

#include "common.h"

namespace rlora::binding {

class JsTensor : public Wrapped<JsTensor, torch::Tensor> {
 public:
  static constexpr Napi::FunctionReference AddonData::*kClass = &AddonData::tensor;
  static constexpr const char* kExpected = "a Tensor";
  static void Init(Napi::Env env, Napi::Object exports);
  // A new JS NativeTensor holding t (detached).
  static Napi::Object Wrap(Napi::Env env, torch::Tensor t);

  explicit JsTensor(const Napi::CallbackInfo& info);

 private:
  static Napi::Value FromTypedArray(const Napi::CallbackInfo& info);
  static Napi::Value FromBytes(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Data(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
};

// Typed arrays <-> tensors: every copy between JS memory and a tensor is one of these two.
// A new CPU tensor of `dtype` and `shape` holding a copy of the bytes of `a`, whose byte length
// must be the tensor's (callers check it first, with their own message).
torch::Tensor tensor_from_js(const Napi::TypedArray& a, torch::ScalarType dtype, const std::vector<int64_t>& shape);
// A new JS array holding a copy of the elements of `t` (moved to the CPU and made contiguous),
// whose element size must be the array's: Float32Array, Float64Array, Int32Array, BigInt64Array,
// Uint8Array, or a Buffer of its raw bytes.
enum class JsArray { Float32, Float64, Int32, BigInt64, Uint8, Buffer };
Napi::Value tensor_to_js(Napi::Env env, const torch::Tensor& t, JsArray kind);

}  // namespace rlora::binding
