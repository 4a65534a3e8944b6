// The native layer behind a JS NativeLoraLinear.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "rlora/multihead_lora.h"

namespace rlora::binding {

void InitLayer(Napi::Env env, Napi::Object exports);
// TypeError naming `what` unless v is a NativeLoraLinear.
std::shared_ptr<MultiHeadLoraLinear> layer_from_value(const Napi::Value& v, const std::string& what);

}  // namespace rlora::binding
