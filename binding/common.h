// Glue shared by the binding, which checks arguments, converts and dispatches; the math lives in
// native/ (docs/ARCHITECTURE.md section 1). Each concern is written once, here:
//   Errors     js_error() and guarded(): the one place C++ exceptions become JS errors
//   Arguments  get_*(), type_error(), range_error(): what each value must be
//   Options    OptionsReader: an options object, its unknown keys refused as lib/ refuses them
//   Wrappers   Wrapped<W, T> (a JS class over a native object, the one owner of its external
//              memory), unwrap<W>() (the native object behind a JS value), entry<F>
//   Jobs       run_async(): work off the JS thread, settled as a Promise
// Which locks a job takes: locks.h. Typed-array copies: tensor.h.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <atomic>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/cpu_allocator.h"
#include "common/errors.h"
#include "common/torch_compat.h"

namespace rlora::binding {

// ---------------------------------------------------------------------------------------------
// Errors. Every entry point runs inside guarded() (registered with entry<F> or Wrapped's method /
// getter, or a constructor's body), and every job's failure settles its Promise through
// js_error(), so this one table gives a JS error its class:
//   Napi::Error, i.e. the binding's own checks     as thrown: TypeError for a value of the wrong
//                                                   type, RangeError for a value out of range
//   rlora::OutOfRange (native/common/errors.h)      RangeError
//   std::invalid_argument (shape, dtype, a value    Error
//     that does not fit the object or the others)
//   c10::Error (libtorch)                           Error, the message without its backtrace
//   anything else                                   Error
// The messages are those of lib/util/options.ts: they name the option and the value received.
// ---------------------------------------------------------------------------------------------
Napi::Error js_error(const Napi::Env& env, std::exception_ptr e);

// Runs f; a C++ exception leaves as the JS error of js_error() (never a crash).
template <typename F>
auto guarded(const Napi::Env& env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (...) {
    throw js_error(env, std::current_exception());
  }
}

// A function of the addon, run inside guarded(): exports.Set(name, Napi::Function::New(env, entry<F>)).
using Callback = Napi::Value (*)(const Napi::CallbackInfo&);
template <Callback F>
Napi::Value entry(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] { return F(info); });
}
template <Callback F>
void export_function(Napi::Object exports, const char* name) {
  exports.Set(name, Napi::Function::New(exports.Env(), entry<F>, name));
}

// ---------------------------------------------------------------------------------------------
// Arguments: each check names the argument (`what`) and what was expected. A value of the wrong
// type is a TypeError ("<what> must be an integer, got 1.5"), a value of the right type outside
// what is allowed a RangeError ("seed must be a non-negative integer, got -1").
// ---------------------------------------------------------------------------------------------
std::string describe(const Napi::Value& v);
[[noreturn]] void type_error(const Napi::Env& env, const std::string& what, const std::string& expected,
                             const Napi::Value& got);
[[noreturn]] void range_error(const Napi::Env& env, const std::string& what, const std::string& expected,
                              const Napi::Value& got);
std::string get_string(const Napi::Value& v, const std::string& what);
double get_number(const Napi::Value& v, const std::string& what);
int64_t get_integer(const Napi::Value& v, const std::string& what);
// An integer from min to max: TypeError for a non-integer, RangeError outside ("a non-negative
// integer", "an integer from 1 to 1024").
int64_t get_integer(const Napi::Value& v, const std::string& what, int64_t min,
                    int64_t max = std::numeric_limits<int64_t>::max());
// A seed: an integer >= 0 (every seed of the addon).
uint64_t get_seed(const Napi::Value& v, const std::string& what);
bool get_bool(const Napi::Value& v, const std::string& what);
std::vector<int64_t> get_shape(const Napi::Value& v, const std::string& what);
Napi::Array shape_to_js(const Napi::Env& env, c10::IntArrayRef sizes);

// "Did you mean": the closest of `candidates` to `word`, as closest() of lib/util/options.ts
// (case-insensitive Damerau-Levenshtein distance at most 3 and below the word's length), or "".
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

// ---------------------------------------------------------------------------------------------
// Options: an options object read key by key. The constructor refuses a key not in `known` with
// lib/util/options.ts checkKeys's RangeError:
//   <where>: unknown option "rnak" (did you mean "rank"?); known: method, rank, heads, ...
// Values are named by their key (nested ones "init.gamma"); the readers without a default
// require the key.
// ---------------------------------------------------------------------------------------------
class OptionsReader {
 public:
  // `v` must be an object; undefined or null read as {} unless `required`. `prefix` starts the
  // name of every value ("config.").
  OptionsReader(const Napi::Value& v, std::string where, std::vector<std::string> known, bool required = false,
                std::string prefix = "");

  bool has(const std::string& key) const;  // present and not undefined
  Napi::Value get(const std::string& key) const;
  std::string name(const std::string& key) const { return prefix_ + key; }

  std::string string(const std::string& key) const { return get_string(get(key), name(key)); }
  double number(const std::string& key) const { return get_number(get(key), name(key)); }
  int64_t integer(const std::string& key) const { return get_integer(get(key), name(key)); }
  int64_t integer(const std::string& key, int64_t min, int64_t max = std::numeric_limits<int64_t>::max()) const {
    return get_integer(get(key), name(key), min, max);
  }
  bool boolean(const std::string& key) const { return get_bool(get(key), name(key)); }
  uint64_t seed(const std::string& key) const { return get_seed(get(key), name(key)); }
  // One of `choices` (RangeError in checkChoice's format otherwise).
  std::string choice(const std::string& key, const std::vector<std::string>& choices) const;
  // A nested options object (required when present in the parent).
  OptionsReader object(const std::string& key, std::vector<std::string> known) const;

 private:
  OptionsReader(Napi::Object o, std::string where, std::string prefix, std::vector<std::string> known);
  void check_keys() const;

  Napi::Object o_;
  std::string where_, prefix_;
  std::vector<std::string> known_;
};

// ---------------------------------------------------------------------------------------------
// Wrappers.
// ---------------------------------------------------------------------------------------------

// Per-environment data: the main thread and every worker_threads Worker load the addon into an
// environment of their own, and a JS function belongs to one environment, so the class
// constructors live here (Napi instance data), never in process-wide statics.
struct AddonData {
  Napi::FunctionReference tensor, layer, model, adamw, generation;
};
AddonData& addon_data(const Napi::Env& env);
// Whether v is an object made by the class `cls` of this environment.
bool is_instance(const Napi::Value& v, const Napi::FunctionReference& cls);

// Bytes of CPU memory the tensors hold (CUDA memory is not V8's concern).
int64_t cpu_bytes(const std::vector<torch::Tensor>& tensors);

// The one owner of a wrapper's native object (T: a std::shared_ptr or a torch::Tensor). It tells
// V8 how many bytes of CPU memory the object holds, so the collector runs when dropped objects add
// up (V8 sees only its own heap otherwise), and gives them back when the wrapper is collected or
// disposed. Using a disposed object throws "this <what> was disposed".
template <typename T>
class Owned {
 public:
  explicit Owned(const char* what) : what_(what) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  void set(const Napi::Env& env, T value, int64_t bytes) {
    release(env);
    value_ = std::move(value);
    bytes_ = bytes;
    if (bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, bytes_);
  }
  const T& get(const Napi::Env& env) const {
    if (!present(value_)) throw Napi::Error::New(env, std::string("this ") + what_ + " was disposed");
    return value_;
  }
  void release(const Napi::Env& env) {
    value_ = T();
    const int64_t bytes = bytes_;
    bytes_ = 0;
    // also called from a destructor while a Worker's environment is torn down, where the N-API
    // call can fail: an exception out of a destructor would abort the whole process
    try {
      if (bytes > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -bytes);
    } catch (...) {
    }
  }

 private:
  static bool present(const torch::Tensor& t) { return t.defined(); }
  template <typename U>
  static bool present(const std::shared_ptr<U>& p) {
    return p != nullptr;
  }
  const char* what_;
  T value_{};
  int64_t bytes_ = 0;
};

// The base of the JS classes over a native object (W: the class, T: what it holds). W provides
//   static constexpr Napi::FunctionReference AddonData::*kClass;  // its constructor's slot
//   static constexpr const char* kExpected;                        // "a Model", for type errors
// and registers its methods with method<&W::M>(name) and getter<&W::M>(name): they run inside
// guarded(). dispose() releases the object now (W may add to it with on_dispose()).
template <typename W, typename T>
class Wrapped : public Napi::ObjectWrap<W> {
 public:
  Wrapped(const Napi::CallbackInfo& info, const char* what) : Napi::ObjectWrap<W>(info), held_(what) {}
  ~Wrapped() override { held_.release(this->Env()); }
  // The native object; "this <what> was disposed" after dispose().
  const T& get() const { return held_.get(this->Env()); }

 protected:
  using Method = Napi::Value (W::*)(const Napi::CallbackInfo&);
  template <Method M>
  static Napi::ClassPropertyDescriptor<W> method(const char* name) {
    return Napi::ObjectWrap<W>::InstanceMethod(name, static_cast<Method>(&Wrapped::call<M>));
  }
  template <Method M>
  static Napi::ClassPropertyDescriptor<W> getter(const char* name) {
    return Napi::ObjectWrap<W>::InstanceAccessor(name, static_cast<Method>(&Wrapped::call<M>), nullptr);
  }
  static Napi::ClassPropertyDescriptor<W> dispose_method() {
    return Napi::ObjectWrap<W>::InstanceMethod("dispose", static_cast<Method>(&Wrapped::Dispose));
  }
  // Sets the native object, counting `bytes` of CPU memory it holds.
  void hold(const Napi::Env& env, T value, int64_t bytes) { held_.set(env, std::move(value), bytes); }
  virtual void on_dispose() {}

 private:
  template <Method M>
  Napi::Value call(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&] { return (static_cast<W*>(this)->*M)(info); });
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    held_.release(info.Env());
    on_dispose();
    return info.Env().Undefined();
  }
  Owned<T> held_;
};

// The native object behind a JS value of class W (a shared_ptr, or the tensor of a NativeTensor);
// TypeError "<what> must be <W::kExpected>, got ..." for anything else.
template <typename W>
auto unwrap(const Napi::Value& v, const std::string& what) {
  if (!is_instance(v, addon_data(v.Env()).*W::kClass)) type_error(v.Env(), what, W::kExpected, v);
  return Napi::ObjectWrap<W>::Unwrap(v.As<Napi::Object>())->get();
}
// The same, or an empty one for undefined and null.
template <typename W>
auto unwrap_optional(const Napi::Value& v, const std::string& what) -> decltype(unwrap<W>(v, what)) {
  if (v.IsUndefined() || v.IsNull()) return {};
  return unwrap<W>(v, what);
}

// ---------------------------------------------------------------------------------------------
// Jobs.
// ---------------------------------------------------------------------------------------------

// Intra-op threads every native job uses (set at the start of each job: the setting is per thread).
extern std::atomic<int> g_num_threads;

// Runs `job` on the one thread that runs every job's work, in the order given, and returns when it
// is done (rethrowing what it threw). OpenBLAS maps a 128 MiB buffer for each thread that calls
// it, and glibc an arena: jobs spread over libuv's four threads mapped four of each (measured:
// 1,695 -> 2,411 MB of address space after ten small generate calls; on one job thread 2,269).
// Under an address-space limit (ulimit -v) a new thread's buffer that no longer fitted after an
// out-of-memory error left OpenBLAS retrying for ever; on one thread the buffers exist after the
// first product. So jobs of different models run one after the other (on a CPU they compete for
// the same cores anyway); locks.h decides which jobs may not interleave at all.
void run_on_job_thread(const std::function<void()>& job);

// Runs `work` on the job thread (from the libuv pool, which waits for it) and settles a Promise
// with `convert(result)` on the JS thread, or rejects it with js_error() of what `work` or
// `convert` threw.
template <typename R>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<R()> work, std::function<Napi::Value(Napi::Env, R&)> convert)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        convert_(std::move(convert)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    run_on_job_thread([this] {
      try {
        cpu_allocator::check_address_room(cpu_allocator::kJobAddressRoom, "before a job");
        if (at::get_num_threads() != g_num_threads.load()) at::set_num_threads(g_num_threads.load());
        result_ = work_();
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      if (error_) std::rethrow_exception(error_);
      deferred_.Resolve(convert_(env, result_));
    } catch (...) {
      try {
        deferred_.Reject(js_error(env, std::current_exception()).Value());
      } catch (...) {
        // the environment is going away (see OnWorkComplete): nothing can be settled
      }
    }
  }
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
  std::exception_ptr error_;
};

template <typename R>
Napi::Promise run_async(Napi::Env env, std::function<R()> work, std::function<Napi::Value(Napi::Env, R&)> convert) {
  auto* worker = new PromiseWorker<R>(env, std::move(work), std::move(convert));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace rlora::binding
