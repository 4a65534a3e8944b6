// Data parallelism: joining and leaving the process group, and the few collectives lib/ needs
// beside the training step (which finds the group itself). Checks and converts; the work is in
// native/distributed.
#include <cstring>
#include <napi.h>

#include "common.h"
#include "distributed/group.h"
#include "distributed/reducer.h"

namespace rlora::binding {

namespace {

std::shared_ptr<dist::Group> need_group(const std::string& what) {
  auto g = dist::current();
  if (!g) throw std::logic_error(what + ": no process group (call distributed.init first)");
  return g;
}

// A Promise that resolves with nothing once `work` is done off the JS thread.
Napi::Promise run_async_void(Napi::Env env, std::function<void()> work) {
  return run_async<bool>(
      env, [work] { work(); return true; }, [](Napi::Env e, bool&) -> Napi::Value { return e.Undefined(); });
}

// Numbers as a JS array.
template <typename T>
Napi::Value to_js_array(Napi::Env env, const std::vector<T>& values) {
  auto out = Napi::Array::New(env, values.size());
  for (size_t i = 0; i < values.size(); ++i) out.Set(static_cast<uint32_t>(i), static_cast<double>(values[i]));
  return out;
}

// distInit({masterAddr, masterPort, rank, worldSize, backend, timeoutMs, localRank, bucketCapBytes, useLibuv,
//           agentStore, restartCount}) -> Promise<void>
Napi::Value DistInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) type_error(env, "options", "an object", info[0]);
    auto o = info[0].As<Napi::Object>();
    dist::InitOptions opts;
    opts.master_addr = get_string(o.Get("masterAddr"), "masterAddr");
    opts.master_port = static_cast<int>(get_integer(o.Get("masterPort"), "masterPort"));
    opts.rank = static_cast<int>(get_integer(o.Get("rank"), "rank"));
    opts.world_size = static_cast<int>(get_integer(o.Get("worldSize"), "worldSize"));
    opts.backend = get_string(o.Get("backend"), "backend");
    opts.timeout_ms = get_integer(o.Get("timeoutMs"), "timeoutMs");
    opts.local_rank = static_cast<int>(get_integer(o.Get("localRank"), "localRank"));
    opts.bucket_cap_bytes = get_integer(o.Get("bucketCapBytes"), "bucketCapBytes");
    opts.use_libuv = get_bool(o.Get("useLibuv"), "useLibuv");
    opts.agent_store = get_bool(o.Get("agentStore"), "agentStore");
    opts.restart_count = static_cast<int>(get_integer(o.Get("restartCount"), "restartCount"));
    return run_async_void(env, [opts] { dist::init(opts); });
  });
}

// distInfo() -> {rank, worldSize, backend, device} or null
Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  auto g = dist::current();
  if (!g) return info.Env().Null();
  auto o = Napi::Object::New(info.Env());
  o.Set("rank", g->rank());
  o.Set("worldSize", g->world_size());
  o.Set("backend", g->backend());
  o.Set("device", g->device().str());
  return o;
}

// distBarrier() -> Promise<void>
Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto g = need_group("barrier");
    return run_async_void(env, [g] { g->barrier(); });
  });
}

// distAllreduceSum(values: number[] | Float32Array | Float64Array) -> Promise of the same kind
// (sums over the ranks; a typed array is copied in one piece and summed in its own dtype, as the
// trainer's gradient buckets are)
Napi::Value DistAllreduceSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto g = need_group("allreduce");
    if (info[0].IsTypedArray()) {
      auto a = info[0].As<Napi::TypedArray>();
      const auto kind = a.TypedArrayType();
      if (kind != napi_float32_array && kind != napi_float64_array)
        type_error(env, "values", "an array of numbers, a Float32Array or a Float64Array", info[0]);
      const bool f32 = kind == napi_float32_array;
      const auto* bytes = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
      torch::Tensor t = torch::empty({static_cast<int64_t>(a.ElementLength())}, f32 ? torch::kFloat32 : torch::kFloat64);
      std::memcpy(t.data_ptr(), bytes, a.ByteLength());
      return run_async<torch::Tensor>(
          env,
          [g, t] {
            if (t.numel() > 0) g->allreduce_sum({t});
            return t;
          },
          [f32](Napi::Env e, torch::Tensor& r) -> Napi::Value {
            auto buf = Napi::ArrayBuffer::New(e, r.nbytes());
            std::memcpy(buf.Data(), r.data_ptr(), r.nbytes());
            if (f32) return Napi::Float32Array::New(e, r.numel(), buf, 0);
            return Napi::Float64Array::New(e, r.numel(), buf, 0);
          });
    }
    if (!info[0].IsArray()) type_error(env, "values", "an array of numbers, a Float32Array or a Float64Array", info[0]);
    auto arr = info[0].As<Napi::Array>();
    std::vector<double> v;
    for (uint32_t i = 0; i < arr.Length(); ++i) v.push_back(get_number(arr.Get(i), "values[" + std::to_string(i) + "]"));
    return run_async<std::vector<double>>(
        env,
        [g, v] {
          torch::Tensor t = torch::tensor(v, torch::kFloat64);
          if (t.numel() > 0) g->allreduce_sum({t});
          return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
        },
        [](Napi::Env e, std::vector<double>& r) { return to_js_array(e, r); });
  });
}

// distAllgather(value: integer) -> Promise<number[]> (every rank's value, in rank order)
Napi::Value DistAllgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto g = need_group("allgather");
    const int64_t value = get_integer(info[0], "value");
    return run_async<std::vector<int64_t>>(
        env, [g, value] { return g->allgather(value); },
        [](Napi::Env e, std::vector<int64_t>& r) { return to_js_array(e, r); });
  });
}

// distLastReduce() -> {buckets, startedInBackward, fallback, waitMs} of the last overlapped step
Napi::Value DistLastReduce(const Napi::CallbackInfo& info) {
  const auto s = dist::last_reduce_stats();
  auto o = Napi::Object::New(info.Env());
  o.Set("buckets", s.buckets);
  o.Set("startedInBackward", s.started_in_backward);
  o.Set("fallback", s.fallback);
  o.Set("waitMs", s.wait_ms);
  return o;
}

Napi::Value DistDestroy(const Napi::CallbackInfo& info) {
  dist::destroy();
  return info.Env().Undefined();
}

}  // namespace

void InitDist(Napi::Env env, Napi::Object exports) {
  exports.Set("distInit", Napi::Function::New(env, DistInit));
  exports.Set("distInfo", Napi::Function::New(env, DistInfo));
  exports.Set("distBarrier", Napi::Function::New(env, DistBarrier));
  exports.Set("distAllreduceSum", Napi::Function::New(env, DistAllreduceSum));
  exports.Set("distAllgather", Napi::Function::New(env, DistAllgather));
  exports.Set("distDestroy", Napi::Function::New(env, DistDestroy));
  exports.Set("distLastReduce", Napi::Function::New(env, DistLastReduce));
  exports.Set("hasGloo", Napi::Boolean::New(env, dist::has_gloo()));
  exports.Set("hasNccl", Napi::Boolean::New(env, dist::has_nccl()));
}

}  // namespace rlora::binding
