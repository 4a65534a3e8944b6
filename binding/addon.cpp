// Module entry: registers the binding's classes and the process-wide settings.
#include <napi.h>

#include "common.h"
#include "layer.h"
#include "tensor.h"

namespace rlora::binding {

void InitTrain(Napi::Env env, Napi::Object exports);

namespace {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = get_integer(info[0], "threads");
  if (n < 1) type_error(info.Env(), "threads", "an integer >= 1", info[0]);
  g_num_threads.store(static_cast<int>(n));
  return info.Env().Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), g_num_threads.load());
}

Napi::Object BuildInfo(Napi::Env env) {
  auto o = Napi::Object::New(env);
  o.Set("torchVersion", compat::torch_version());
  o.Set("torchSource", RLORA_TORCH_SOURCE);
  o.Set("cudaAvailable", torch::cuda::is_available());
  o.Set("cudaDeviceCount", static_cast<double>(torch::cuda::is_available() ? torch::cuda::device_count() : 0));
  return o;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  JsTensor::Init(env, exports);
  InitLayer(env, exports);
  InitTrain(env, exports);
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  exports.Set("buildInfo", BuildInfo(env));
  return exports;
}

}  // namespace rlora::binding

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return rlora::binding::Init(env, exports); }
NODE_API_MODULE(rlora, InitAddon)
