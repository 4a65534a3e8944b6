// JS class NativeAdamW and the training steps (fitLayerStep, lmTrainStep, lmEvalLoss).
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "common.h"
#include "model/decoder.h"
#include "rlora/multihead_lora.h"
#include "train/optimizer.h"

namespace rlora::binding {

class JsAdamW : public Wrapped<JsAdamW, std::shared_ptr<train::AdamW>> {
 public:
  static constexpr Napi::FunctionReference AddonData::*kClass = &AddonData::adamw;
  static constexpr const char* kExpected = "an AdamW";
  static void Init(Napi::Env env, Napi::Object exports);

  // new NativeAdamW(layers: NativeLoraLinear[] | model: NativeModel, options); a model's every
  // parameter becomes trainable (full training).
  explicit JsAdamW(const Napi::CallbackInfo& info);

 private:
  Napi::Value StepsTaken(const Napi::CallbackInfo& info);
  Napi::Value LrAt(const Napi::CallbackInfo& info);
  Napi::Value State(const Napi::CallbackInfo& info);
  Napi::Value SetState(const Napi::CallbackInfo& info);
  void on_dispose() override;

  std::vector<std::shared_ptr<MultiHeadLoraLinear>> layers_;  // keep the parameters' owners alive
  std::shared_ptr<model::DecoderModel> model_;
};

// Registers NativeAdamW, fitLayerStep, lmTrainStep, lmEvalLoss and the constant ignoreLabel.
void InitTrain(Napi::Env env, Napi::Object exports);

}  // namespace rlora::binding
