// Glue shared by the binding: C++ exceptions become JS Errors, argument checks, async jobs.
// The binding converts and dispatches; the math lives in native/.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "common/torch_compat.h"

namespace rlora::binding {

// Runs f; any C++ exception leaves as a JS Error with its message (never a crash).
template <typename F>
auto guarded(const Napi::Env& env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, compat::error_message(e));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// Argument checks: each names the argument and what was expected.
std::string describe(const Napi::Value& v);
[[noreturn]] void type_error(const Napi::Env& env, const std::string& what, const std::string& expected,
                             const Napi::Value& got);
std::string get_string(const Napi::Value& v, const std::string& what);
double get_number(const Napi::Value& v, const std::string& what);
int64_t get_integer(const Napi::Value& v, const std::string& what);
bool get_bool(const Napi::Value& v, const std::string& what);
// Refuses a key of the options object `o` that is not in `known` (TypeError naming it and the
// expected keys); `where` prefixes nested keys ("init.").
void check_keys(const Napi::Object& o, const std::set<std::string>& known, const std::string& where = "");
std::vector<int64_t> get_shape(const Napi::Value& v, const std::string& what);
Napi::Array shape_to_js(const Napi::Env& env, c10::IntArrayRef sizes);

// Per-environment data: the main thread and every worker_threads Worker load the addon into an
// environment of their own, and a JS function belongs to one environment, so the class
// constructors live here (Napi instance data), never in process-wide statics.
struct AddonData {
  Napi::FunctionReference tensor, layer, model, adamw;
};
AddonData& addon_data(const Napi::Env& env);
// Whether v is an object made by the class `cls` of this environment.
bool is_instance(const Napi::Value& v, const Napi::FunctionReference& cls);

// The native object behind a JS wrapper (Model, layer, optimizer). It tells V8 how many bytes of
// CPU memory the object holds, so the collector runs when dropped objects add up (V8 sees only
// its own heap otherwise), and gives them back when the wrapper is collected or disposed. Using
// a disposed object throws "this <what> was disposed".
template <typename T>
class Owned {
 public:
  explicit Owned(const char* what) : what_(what) {}
  void set(const Napi::Env& env, std::shared_ptr<T> p, int64_t bytes) {
    release(env);
    p_ = std::move(p);
    bytes_ = bytes;
    if (bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, bytes_);
  }
  const std::shared_ptr<T>& get(const Napi::Env& env) const {
    if (!p_) throw Napi::Error::New(env, std::string("this ") + what_ + " was disposed");
    return p_;
  }
  void release(const Napi::Env& env) {
    p_.reset();
    if (bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -bytes_);
    bytes_ = 0;
  }
  int64_t bytes() const { return bytes_; }

 private:
  const char* what_;
  std::shared_ptr<T> p_;
  int64_t bytes_ = 0;
};

// Bytes of CPU memory the tensors hold (CUDA memory is not V8's concern).
int64_t cpu_bytes(const std::vector<torch::Tensor>& tensors);

// Intra-op threads every native job uses (set at the start of each job: the setting is per thread).
extern std::atomic<int> g_num_threads;

// Runs `work` on the libuv pool and settles a Promise with `convert(result)` on the JS thread.
template <typename R>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<R()> work, std::function<Napi::Value(Napi::Env, R&)> convert)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        convert_(std::move(convert)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      if (at::get_num_threads() != g_num_threads.load()) at::set_num_threads(g_num_threads.load());
      result_ = work_();
    } catch (const c10::Error& e) {
      SetError(compat::error_message(e));
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, e.what()).Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  // The job's completion reaches the JS thread after its environment began to be torn down
  // (worker.terminate() while a Worker awaits a native job): every N-API call then fails, and
  // node-addon-api would throw out of this callback, which aborts the whole process. Nothing can
  // be settled in an environment that is going away: drop it quietly.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::AsyncWorker::OnWorkComplete(env, status);
    } catch (...) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<R()> work_;
  std::function<Napi::Value(Napi::Env, R&)> convert_;
  R result_{};
};

template <typename R>
Napi::Promise run_async(Napi::Env env, std::function<R()> work, std::function<Napi::Value(Napi::Env, R&)> convert) {
  auto* worker = new PromiseWorker<R>(env, std::move(work), std::move(convert));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace rlora::binding
