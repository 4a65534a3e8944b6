// Data parallelism: joining and leaving the process group, and the few collectives lib/ needs
// beside the training step (which finds the group itself). Checks and converts; the work is in
// native/distributed.
#include <napi.h>

#include "common.h"
#include "distributed/group.h"
#include "distributed/reducer.h"
#include "tensor.h"

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
//           agentStore, restartCount, runId?}) -> Promise<void>
Napi::Value DistInit(const Napi::CallbackInfo& info) {
  OptionsReader o(info[0], "distInit",
                  {"masterAddr", "masterPort", "rank", "worldSize", "backend", "timeoutMs", "localRank", "bucketCapBytes",
                   "useLibuv", "agentStore", "restartCount", "runId"},
                  /*required=*/true);
  dist::InitOptions opts;
  opts.master_addr = o.string("masterAddr");
  opts.master_port = static_cast<int>(o.integer("masterPort"));
  opts.rank = static_cast<int>(o.integer("rank"));
  opts.world_size = static_cast<int>(o.integer("worldSize"));
  opts.backend = o.string("backend");
  opts.timeout_ms = o.integer("timeoutMs");
  opts.local_rank = static_cast<int>(o.integer("localRank"));
  opts.bucket_cap_bytes = o.integer("bucketCapBytes");
  opts.use_libuv = o.boolean("useLibuv");
  opts.agent_store = o.boolean("agentStore");
  opts.restart_count = static_cast<int>(o.integer("restartCount"));
  if (o.has("runId")) opts.run_id = o.string("runId");
  return run_async_void(info.Env(), [opts] { dist::init(opts); });
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
  auto g = need_group("barrier");
  return run_async_void(info.Env(), [g] { g->barrier(); });
}

// distAllreduceSum(values: number[] | Float32Array | Float64Array) -> Promise of the same kind
// (sums over the ranks; a typed array is copied in one piece and summed in its own dtype, as the
// trainer's gradient buckets are)
Napi::Value DistAllreduceSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = need_group("allreduce");
  const char* expected = "an array of numbers, a Float32Array or a Float64Array";
  if (info[0].IsTypedArray()) {
    auto a = info[0].As<Napi::TypedArray>();
    const auto kind = a.TypedArrayType();
    if (kind != napi_float32_array && kind != napi_float64_array) type_error(env, "values", expected, info[0]);
    const bool f32 = kind == napi_float32_array;
    torch::Tensor t = tensor_from_js(a, f32 ? torch::kFloat32 : torch::kFloat64, {static_cast<int64_t>(a.ElementLength())});
    return run_async<torch::Tensor>(
        env,
        [g, t] {
          if (t.numel() > 0) g->allreduce_sum({t});
          return t;
        },
        [f32](Napi::Env e, torch::Tensor& r) -> Napi::Value { return tensor_to_js(e, r, f32 ? JsArray::Float32 : JsArray::Float64); });
  }
  if (!info[0].IsArray()) type_error(env, "values", expected, info[0]);
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
}

// distAllgather(value: integer) -> Promise<number[]> (every rank's value, in rank order)
Napi::Value DistAllgather(const Napi::CallbackInfo& info) {
  auto g = need_group("allgather");
  const int64_t value = get_integer(info[0], "value");
  return run_async<std::vector<int64_t>>(
      info.Env(), [g, value] { return g->allgather(value); },
      [](Napi::Env e, std::vector<int64_t>& r) { return to_js_array(e, r); });
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
  export_function<DistInit>(exports, "distInit");
  export_function<DistInfo>(exports, "distInfo");
  export_function<DistBarrier>(exports, "distBarrier");
  export_function<DistAllreduceSum>(exports, "distAllreduceSum");
  export_function<DistAllgather>(exports, "distAllgather");
  export_function<DistDestroy>(exports, "distDestroy");
  export_function<DistLastReduce>(exports, "distLastReduce");
  exports.Set("hasGloo", Napi::Boolean::New(env, dist::has_gloo()));
  exports.Set("hasNccl", Napi::Boolean::New(env, dist::has_nccl()));
}

}  // namespace rlora::binding
