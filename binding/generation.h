// JS class NativeGeneration: a generation in progress (rlora::model::Generation) behind lib/generation.ts.
#pragma once

#include <napi.h>

#include <memory>

#include "common.h"
#include "model/generate.h"

namespace rlora::binding {

// The options of NativeModel.generate and new NativeGeneration: {maxNewTokens, minNewTokens,
// temperature, topK, topP, repetitionPenalty, eosTokenIds, padTokenId, seed}, all required.
model::GenerateOptions parse_generate_options(const Napi::Value& v, const std::string& where);

class JsGeneration : public Wrapped<JsGeneration, std::shared_ptr<model::Generation>> {
 public:
  static constexpr Napi::FunctionReference AddonData::*kClass = &AddonData::generation;
  static constexpr const char* kExpected = "a Generation";
  static void Init(Napi::Env env, Napi::Object exports);

  // new NativeGeneration(model, ids, mask | null, options): checks; computes nothing yet
  explicit JsGeneration(const Napi::CallbackInfo& info);

 private:
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value EndRows(const Napi::CallbackInfo& info);
  Napi::Value Finished(const Napi::CallbackInfo& info);
  Napi::Value Produced(const Napi::CallbackInfo& info);
};

}  // namespace rlora::binding
