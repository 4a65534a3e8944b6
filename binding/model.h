// The native model behind a JS NativeModel.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "model/decoder.h"

namespace rlora::binding {

void InitModel(Napi::Env env, Napi::Object exports);
// TypeError naming `what` unless v is a NativeModel.
std::shared_ptr<model::DecoderModel> model_from_value(const Napi::Value& v, const std::string& what);

}  // namespace rlora::binding
