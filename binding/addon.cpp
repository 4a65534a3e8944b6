// Module entry: registers the binding's classes and the process-wide settings.
#include <napi.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "common/blas_info.h"
#include "common/cpu_allocator.h"
#include "common/cpu_support.h"
#include "common/cuda_memory.h"
#include "common/files.h"
#include "common/format.h"
#include "common/process.h"
#include "attention.h"
#include "generation.h"
#include "layer.h"
#include "model.h"
#include "tensor.h"
#include "train.h"

namespace rlora::binding {

void InitDist(Napi::Env env, Napi::Object exports);

namespace {

// The most intra-op threads a job may use. libtorch creates them all at the next job, and aborts
// the process when the system refuses (e.g. a million); past the cores they only slow jobs down.
constexpr int64_t kMaxThreads = 1024;

// setNumThreads(n, {blas?})
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  const int n = static_cast<int>(get_integer(info[0], "threads", 1, kMaxThreads));
  OptionsReader o(info[1], "setNumThreads", {"blas"});
  // OpenBLAS's pool is process-wide: it follows the same number unless told not to
  const bool blas = o.has("blas") ? o.boolean("blas") : true;
  g_num_threads.store(n);
  if (blas) set_blas_threads(n);
  return info.Env().Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), g_num_threads.load());
}

// OpenBLAS's pool size (process-wide), or 0 where the process has no OpenBLAS.
Napi::Value BlasThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), blas_threads()); }

// memoryStats(): the CPU caching allocator's counters, and the CUDA allocator's per device.
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  auto s = cpu_allocator::stats();
  auto o = Napi::Object::New(info.Env());
  const auto devices = cuda_memory::stats();
  auto cuda = Napi::Array::New(info.Env(), devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    auto d = Napi::Object::New(info.Env());
    d.Set("device", "cuda:" + std::to_string(devices[i].device));
    d.Set("allocatedBytes", static_cast<double>(devices[i].allocated_bytes));
    d.Set("peakAllocatedBytes", static_cast<double>(devices[i].peak_allocated_bytes));
    d.Set("reservedBytes", static_cast<double>(devices[i].reserved_bytes));
    d.Set("peakReservedBytes", static_cast<double>(devices[i].peak_reserved_bytes));
    cuda.Set(static_cast<uint32_t>(i), d);
  }
  o.Set("cuda", cuda);
  o.Set("cudaMemoryStats", cuda_memory::available());
  o.Set("cpuCaching", s.enabled);
  o.Set("allocatedBytes", static_cast<double>(s.allocated_bytes));
  o.Set("peakAllocatedBytes", static_cast<double>(s.peak_allocated_bytes));
  o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
  o.Set("cacheLimitBytes", static_cast<double>(s.cache_limit_bytes));
  o.Set("cacheHits", static_cast<double>(s.hits));
  o.Set("cacheMisses", static_cast<double>(s.misses));
  return o;
}

Napi::Value SetCpuCaching(const Napi::CallbackInfo& info) {
  cpu_allocator::set_enabled(get_bool(info[0], "enabled"));
  return info.Env().Undefined();
}

Napi::Value SetCpuCacheLimit(const Napi::CallbackInfo& info) {
  cpu_allocator::set_cache_limit(static_cast<size_t>(get_integer(info[0], "bytes", 0)));
  return info.Env().Undefined();
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  cpu_allocator::empty_cache();
  cuda_memory::empty_cache();
  return info.Env().Undefined();
}

Napi::Value ResetPeakMemory(const Napi::CallbackInfo& info) {
  cpu_allocator::reset_peak();
  cuda_memory::reset_peak();
  return info.Env().Undefined();
}

// cpuDtypeProblem(dtype) -> "" when a model's products run on the CPU in dtype, else libtorch's message.
Napi::Value CpuDtypeProblem(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpu_dtype_problem(parse_dtype(get_string(info[0], "dtype"))));
}

// exchangePaths(a, b) -> 0, or the errno: swaps two paths atomically (common/files.h).
Napi::Value ExchangePaths(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), exchange_paths(get_string(info[0], "a"), get_string(info[1], "b")));
}

// setParentDeathSignal(signal, parentPid) -> 0, or the errno (common/process.h).
Napi::Value SetParentDeathSignal(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), set_parent_death_signal(static_cast<int>(get_integer(info[0], "signal")),
                                                               static_cast<int>(get_integer(info[1], "parentPid"))));
}

Napi::Value BlasInfo(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), blas_info()); }

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
  env.SetInstanceData<AddonData>(new AddonData());  // freed with the environment
  JsTensor::Init(env, exports);
  JsLoraLinear::Init(env, exports);
  JsModel::Init(env, exports);
  JsGeneration::Init(env, exports);
  exports.Set("minTemperature", Napi::Number::New(env, model::kMinTemperature));
  InitTrain(env, exports);
  InitAttention(env, exports);
  InitDist(env, exports);
  export_function<SetNumThreads>(exports, "setNumThreads");
  export_function<GetNumThreads>(exports, "getNumThreads");
  export_function<BlasThreads>(exports, "blasThreads");
  exports.Set("buildInfo", BuildInfo(env));
  export_function<BlasInfo>(exports, "blasInfo");
  export_function<CpuDtypeProblem>(exports, "cpuDtypeProblem");
  export_function<ExchangePaths>(exports, "exchangePaths");
  export_function<SetParentDeathSignal>(exports, "setParentDeathSignal");
  export_function<MemoryStats>(exports, "memoryStats");
  export_function<SetCpuCaching>(exports, "setCpuCaching");
  export_function<SetCpuCacheLimit>(exports, "setCpuCacheLimit");
  export_function<EmptyCache>(exports, "emptyCache");
  export_function<ResetPeakMemory>(exports, "resetPeakMemory");
  // Threads are set by lib/native.ts right after loading: the usable cores (or OMP_NUM_THREADS) for
  // libtorch's pool, and for OpenBLAS's unless OPENBLAS_NUM_THREADS sized it (lib/threads.ts).
  // On by default (RLORA_CPU_CACHING=0 turns it off): large CPU blocks are reused, not re-faulted.
  const char* caching = std::getenv("RLORA_CPU_CACHING");
  cpu_allocator::set_enabled(!(caching && std::strcmp(caching, "0") == 0));
  return exports;
}

}  // namespace rlora::binding

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return rlora::binding::Init(env, exports); }
NODE_API_MODULE(rlora, InitAddon)
