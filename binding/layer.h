// JS class NativeLoraLinear: the native rlora::MultiHeadLoraLinear behind lib/layer.ts.
#pragma once

#include <napi.h>

#include <memory>

#include "common.h"
#include "rlora/multihead_lora.h"

namespace rlora::binding {

class JsLoraLinear : public Wrapped<JsLoraLinear, std::shared_ptr<MultiHeadLoraLinear>> {
 public:
  static constexpr Napi::FunctionReference AddonData::*kClass = &AddonData::layer;
  static constexpr const char* kExpected = "a MultiHeadLoraLinear";
  static void Init(Napi::Env env, Napi::Object exports);

  // new NativeLoraLinear(weight, bias | null, options)
  explicit JsLoraLinear(const Napi::CallbackInfo& info);

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Vjp(const Napi::CallbackInfo& info);
  Napi::Value SetTraining(const Napi::CallbackInfo& info);
  Napi::Value Training(const Napi::CallbackInfo& info);
  Napi::Value Options(const Napi::CallbackInfo& info);
  Napi::Value StateDict(const Napi::CallbackInfo& info);
  Napi::Value LoadStateDict(const Napi::CallbackInfo& info);
  Napi::Value HeadSimilarity(const Napi::CallbackInfo& info);
  Napi::Value BaseWeight(const Napi::CallbackInfo& info);
  Napi::Value MergedWeight(const Napi::CallbackInfo& info);
  Napi::Value GeneratorState(const Napi::CallbackInfo& info);
  Napi::Value SetGeneratorState(const Napi::CallbackInfo& info);
  Napi::Value Reseed(const Napi::CallbackInfo& info);
  Napi::Value ParameterCount(const Napi::CallbackInfo& info);
  // A tensor the layer computes, under its lock, as a JS Tensor.
  Napi::Value TensorOf(const Napi::CallbackInfo& info, torch::Tensor (MultiHeadLoraLinear::*compute)() const);
};

}  // namespace rlora::binding
