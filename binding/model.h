// JS class NativeModel: the native rlora::model::DecoderModel behind lib/model.ts.
#pragma once

#include <napi.h>

#include <memory>

#include "common.h"
#include "model/decoder.h"

namespace rlora::binding {

class JsModel : public Wrapped<JsModel, std::shared_ptr<model::DecoderModel>> {
 public:
  static constexpr Napi::FunctionReference AddonData::*kClass = &AddonData::model;
  static constexpr const char* kExpected = "a Model";
  static void Init(Napi::Env env, Napi::Object exports);

  // new NativeModel(config, dtype, device)
  explicit JsModel(const Napi::CallbackInfo& info);

 private:
  Napi::Value ParameterSpecs(const Napi::CallbackInfo& info);
  Napi::Value SetParameter(const Napi::CallbackInfo& info);
  Napi::Value Parameter(const Napi::CallbackInfo& info);
  Napi::Value InitRandom(const Napi::CallbackInfo& info);
  Napi::Value SetHeadChunkElements(const Napi::CallbackInfo& info);
  Napi::Value Quantize(const Napi::CallbackInfo& info);
  Napi::Value QuantizeModule(const Napi::CallbackInfo& info);
  Napi::Value Quantization(const Napi::CallbackInfo& info);
  Napi::Value LinearWeight(const Napi::CallbackInfo& info);
  Napi::Value ParameterCount(const Napi::CallbackInfo& info);
  Napi::Value Fingerprint(const Napi::CallbackInfo& info);
  Napi::Value LinearNames(const Napi::CallbackInfo& info);
  Napi::Value SetAdapter(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Generate(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
};

}  // namespace rlora::binding
