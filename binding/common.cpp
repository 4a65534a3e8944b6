#include "common.h"

#include <cmath>

namespace rlora::binding {

std::atomic<int> g_num_threads{1};

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

std::string get_string(const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) type_error(v.Env(), what, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

double get_number(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) type_error(v.Env(), what, "a number", v);
  return v.As<Napi::Number>().DoubleValue();
}

int64_t cpu_bytes(const std::vector<torch::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors)
    if (t.defined() && t.device().is_cpu()) n += static_cast<int64_t>(t.numel() * t.element_size());
  return n;
}

AddonData& addon_data(const Napi::Env& env) { return *env.GetInstanceData<AddonData>(); }

bool is_instance(const Napi::Value& v, const Napi::FunctionReference& cls) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(cls.Value());
}

int64_t get_integer(const Napi::Value& v, const std::string& what) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) <= 9007199254740991.0) return static_cast<int64_t>(d);
  }
  type_error(v.Env(), what, "an integer", v);
}

bool get_bool(const Napi::Value& v, const std::string& what) {
  if (!v.IsBoolean()) type_error(v.Env(), what, "true or false", v);
  return v.As<Napi::Boolean>().Value();
}

std::vector<int64_t> get_shape(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) type_error(v.Env(), what, "an array of non-negative integers", v);
  auto arr = v.As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    int64_t d = get_integer(arr.Get(i), what + "[" + std::to_string(i) + "]");
    if (d < 0) type_error(v.Env(), what + "[" + std::to_string(i) + "]", "a non-negative integer", arr.Get(i));
    shape.push_back(d);
  }
  return shape;
}

Napi::Array shape_to_js(const Napi::Env& env, c10::IntArrayRef sizes) {
  auto arr = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(sizes[i])));
  return arr;
}

void check_keys(const Napi::Object& o, const std::set<std::string>& known, const std::string& where) {
  auto names = o.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); ++i) {
    std::string k = names.Get(i).ToString().Utf8Value();
    if (!known.count(k)) {
      std::string list;
      for (auto& n : known) list += (list.empty() ? "" : ", ") + n;
      throw Napi::TypeError::New(o.Env(), "unknown option " + where + k + "; expected one of " + list);
    }
  }
}

}  // namespace rlora::binding
