#include "common.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace rlora::binding {

std::atomic<int> g_num_threads{1};

namespace {
// The job thread: a queue of jobs and the thread that runs them. Made on first use and never
// destroyed (a static's destructor would join it at exit while a job may still run).
class JobThread {
 public:
  static JobThread& instance() {
    static JobThread* t = new JobThread();
    return *t;
  }
  void run(const std::function<void()>& job) {
    bool done = false;
    std::exception_ptr error;
    std::unique_lock<std::mutex> lock(mutex_);
    queue_.push_back([&] {
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> l(mutex_);
      done = true;
      finished_.notify_all();
    });
    ready_.notify_one();
    finished_.wait(lock, [&] { return done; });
    if (error) std::rethrow_exception(error);
  }

 private:
  JobThread() : thread_([this] { loop(); }) { thread_.detach(); }
  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return !queue_.empty(); });
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job();  // never throws: run() wraps it
    }
  }
  std::mutex mutex_;
  std::condition_variable ready_, finished_;
  std::deque<std::function<void()>> queue_;
  std::thread thread_;
};
}  // namespace

void run_on_job_thread(const std::function<void()>& job) { JobThread::instance().run(job); }

// ---- Errors ----------------------------------------------------------------------------------

Napi::Error js_error(const Napi::Env& env, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const Napi::Error& x) {
    return x;
  } catch (const OutOfRange& x) {
    return Napi::RangeError::New(env, x.what());
  } catch (const c10::Error& x) {
    return Napi::Error::New(env, compat::error_message(x));
  } catch (const std::exception& x) {  // std::invalid_argument and the rest
    return Napi::Error::New(env, x.what());
  } catch (...) {
    return Napi::Error::New(env, "unknown native error");
  }
}

// ---- Arguments -------------------------------------------------------------------------------

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsString()) return "\"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsNumber() || v.IsBoolean()) return v.ToString().Utf8Value();
  if (v.IsArray()) return "an array";
  if (v.IsTypedArray()) return "a typed array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

void type_error(const Napi::Env& env, const std::string& what, const std::string& expected, const Napi::Value& got) {
  throw Napi::TypeError::New(env, what + " must be " + expected + ", got " + describe(got));
}

void range_error(const Napi::Env& env, const std::string& what, const std::string& expected, const Napi::Value& got) {
  throw Napi::RangeError::New(env, what + " must be " + expected + ", got " + describe(got));
}

std::string get_string(const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) type_error(v.Env(), what, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

double get_number(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) type_error(v.Env(), what, "a number", v);
  return v.As<Napi::Number>().DoubleValue();
}

namespace {
// An integer a double holds exactly (|d| <= 2^53 - 1).
std::optional<int64_t> as_integer(const Napi::Value& v) {
  if (!v.IsNumber()) return std::nullopt;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) <= 9007199254740991.0) return static_cast<int64_t>(d);
  return std::nullopt;
}

std::string integer_range(int64_t min, int64_t max) {
  constexpr int64_t top = std::numeric_limits<int64_t>::max();
  if (min == 0 && max == top) return "a non-negative integer";
  if (min == 1 && max == top) return "a positive integer";
  if (max == top) return "an integer >= " + std::to_string(min);
  return "an integer from " + std::to_string(min) + " to " + std::to_string(max);
}
}  // namespace

int64_t get_integer(const Napi::Value& v, const std::string& what) {
  auto i = as_integer(v);
  if (!i) type_error(v.Env(), what, "an integer", v);
  return *i;
}

int64_t get_integer(const Napi::Value& v, const std::string& what, int64_t min, int64_t max) {
  auto i = as_integer(v);
  if (!i) type_error(v.Env(), what, integer_range(min, max), v);
  if (*i < min || *i > max) range_error(v.Env(), what, integer_range(min, max), v);
  return *i;
}

uint64_t get_seed(const Napi::Value& v, const std::string& what) { return static_cast<uint64_t>(get_integer(v, what, 0)); }

bool get_bool(const Napi::Value& v, const std::string& what) {
  if (!v.IsBoolean()) type_error(v.Env(), what, "true or false", v);
  return v.As<Napi::Boolean>().Value();
}

std::vector<int64_t> get_shape(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) type_error(v.Env(), what, "an array of non-negative integers", v);
  auto arr = v.As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) shape.push_back(get_integer(arr.Get(i), what + "[" + std::to_string(i) + "]", 0));
  return shape;
}

Napi::Array shape_to_js(const Napi::Env& env, c10::IntArrayRef sizes) {
  auto arr = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(sizes[i])));
  return arr;
}

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Damerau-Levenshtein distance (optimal string alignment), as editDistance of lib/util/options.ts.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1, 0));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}
}  // namespace

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  constexpr size_t kMaxDistance = 3;
  if (word.empty()) return "";
  std::string best;
  size_t best_d = std::min(kMaxDistance, word.size() - 1) + 1;
  const std::string lw = lower(word);
  for (const auto& c : candidates) {
    const size_t d = edit_distance(lw, lower(c));
    if (d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

// ---- Options ---------------------------------------------------------------------------------

namespace {
std::string quoted(const std::string& s) { return "\"" + s + "\""; }
std::string joined(const std::vector<std::string>& names, bool quote) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + (quote ? quoted(n) : n);
  return out;
}
}  // namespace

OptionsReader::OptionsReader(const Napi::Value& v, std::string where, std::vector<std::string> known, bool required,
                             std::string prefix)
    : where_(std::move(where)), prefix_(std::move(prefix)), known_(std::move(known)) {
  if (!required && (v.IsUndefined() || v.IsNull())) {
    o_ = Napi::Object::New(v.Env());
    return;
  }
  if (!v.IsObject() || v.IsArray() || v.IsFunction() || v.IsTypedArray())
    throw Napi::TypeError::New(v.Env(), where_ + ": options must be an object, got " + describe(v));
  o_ = v.As<Napi::Object>();
  check_keys();
}

OptionsReader::OptionsReader(Napi::Object o, std::string where, std::string prefix, std::vector<std::string> known)
    : o_(o), where_(std::move(where)), prefix_(std::move(prefix)), known_(std::move(known)) {
  check_keys();
}

void OptionsReader::check_keys() const {
  auto names = o_.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); ++i) {
    const std::string k = names.Get(i).ToString().Utf8Value();
    if (std::find(known_.begin(), known_.end(), k) != known_.end()) continue;
    const std::string near = closest(k, known_);
    throw Napi::RangeError::New(o_.Env(), where_ + ": unknown option " + quoted(k) +
                                              (near.empty() ? "" : " (did you mean " + quoted(near) + "?)") +
                                              "; known: " + joined(known_, false));
  }
}

bool OptionsReader::has(const std::string& key) const { return o_.Has(key) && !o_.Get(key).IsUndefined(); }

Napi::Value OptionsReader::get(const std::string& key) const { return o_.Get(key); }

std::string OptionsReader::choice(const std::string& key, const std::vector<std::string>& choices) const {
  const Napi::Value v = get(key);
  if (!v.IsString()) type_error(v.Env(), name(key), "one of " + joined(choices, true), v);
  const std::string s = v.As<Napi::String>().Utf8Value();
  if (std::find(choices.begin(), choices.end(), s) != choices.end()) return s;
  const std::string near = closest(s, choices);
  throw Napi::RangeError::New(v.Env(), name(key) + " must be one of " + joined(choices, true) + ", got " + quoted(s) +
                                           (near.empty() ? "" : " (did you mean " + quoted(near) + "?)"));
}

OptionsReader OptionsReader::object(const std::string& key, std::vector<std::string> known) const {
  const Napi::Value v = get(key);
  if (!v.IsObject() || v.IsArray() || v.IsFunction() || v.IsTypedArray()) type_error(v.Env(), name(key), "an object", v);
  return OptionsReader(v.As<Napi::Object>(), where_ + ": " + name(key), name(key) + ".", std::move(known));
}

// ---- Wrappers --------------------------------------------------------------------------------

AddonData& addon_data(const Napi::Env& env) { return *env.GetInstanceData<AddonData>(); }

bool is_instance(const Napi::Value& v, const Napi::FunctionReference& cls) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(cls.Value());
}

int64_t cpu_bytes(const std::vector<torch::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors)
    if (t.defined() && t.device().is_cpu()) n += static_cast<int64_t>(t.numel() * t.element_size());
  return n;
}

}  // namespace rlora::binding
