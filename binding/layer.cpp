// JS class NativeLoraLinear: argument checks and dispatch to rlora::MultiHeadLoraLinear.
#include <map>
#include <memory>
#include <set>

#include "layer.h"

#include "common.h"
#include "common/format.h"
#include "tensor.h"

namespace rlora::binding {

namespace {

// Reads the JS options object into overrides; the preset fills what is not set.
LoraOverrides parse_overrides(const Napi::Value& v) {
  LoraOverrides ov;
  if (v.IsUndefined() || v.IsNull()) return ov;
  if (!v.IsObject()) type_error(v.Env(), "options", "an object", v);
  auto o = v.As<Napi::Object>();
  check_keys(o, {"method", "rank", "heads", "alpha", "dropout", "dropoutOn", "multiHeadDropout", "rankStabilization",
                 "init", "seed"},
             "");
  auto has = [&](const char* k) { return o.Has(k) && !o.Get(k).IsUndefined(); };
  if (has("method")) ov.method = parse_method(get_string(o.Get("method"), "method"));
  if (has("rank")) ov.rank = get_integer(o.Get("rank"), "rank");
  if (has("heads")) ov.heads = get_integer(o.Get("heads"), "heads");
  if (has("alpha")) ov.alpha = get_number(o.Get("alpha"), "alpha");
  if (has("dropout")) ov.dropout = get_number(o.Get("dropout"), "dropout");
  if (has("dropoutOn")) ov.dropout_on = parse_dropout_on(get_string(o.Get("dropoutOn"), "dropoutOn"));
  if (has("multiHeadDropout")) ov.multi_head_dropout = get_bool(o.Get("multiHeadDropout"), "multiHeadDropout");
  if (has("rankStabilization")) ov.rank_stabilization = get_bool(o.Get("rankStabilization"), "rankStabilization");
  if (has("seed")) {
    int64_t seed = get_integer(o.Get("seed"), "seed");
    if (seed < 0) type_error(v.Env(), "seed", "a non-negative integer", o.Get("seed"));
    ov.seed = static_cast<uint64_t>(seed);
  }
  if (has("init")) {
    Napi::Value iv = o.Get("init");
    if (!iv.IsObject()) type_error(v.Env(), "init", "an object", iv);
    auto io = iv.As<Napi::Object>();
    check_keys(io, {"a", "b", "router", "scale", "gamma", "stableBase", "offset"}, "init.");
    auto ihas = [&](const char* k) { return io.Has(k) && !io.Get(k).IsUndefined(); };
    if (ihas("a")) ov.init_a = parse_init_scheme(get_string(io.Get("a"), "init.a"), "init.a");
    if (ihas("b")) ov.init_b = parse_init_scheme(get_string(io.Get("b"), "init.b"), "init.b");
    if (ihas("router")) ov.init_router = parse_init_scheme(get_string(io.Get("router"), "init.router"), "init.router");
    if (ihas("scale")) ov.init_scale = parse_init_scale(get_string(io.Get("scale"), "init.scale"));
    if (ihas("gamma")) ov.init_gamma = get_number(io.Get("gamma"), "init.gamma");
    if (ihas("stableBase")) ov.init_stable_base = parse_stable_base(get_string(io.Get("stableBase"), "init.stableBase"));
    if (ihas("offset")) ov.init_offset = get_bool(io.Get("offset"), "init.offset");
  }
  return ov;
}

Napi::Object options_to_js(Napi::Env env, const LoraOptions& o) {
  auto r = Napi::Object::New(env);
  r.Set("method", to_string(o.method));
  r.Set("rank", static_cast<double>(o.rank));
  r.Set("heads", static_cast<double>(o.heads));
  r.Set("alpha", o.alpha);
  r.Set("dropout", o.dropout);
  r.Set("dropoutOn", to_string(o.dropout_on));
  r.Set("multiHeadDropout", o.multi_head_dropout);
  r.Set("rankStabilization", o.rank_stabilization);
  auto i = Napi::Object::New(env);
  i.Set("a", to_string(o.init.a));
  i.Set("b", to_string(o.init.b));
  i.Set("router", to_string(o.init.router));
  i.Set("scale", to_string(o.init.scale));
  i.Set("gamma", o.init.gamma);
  i.Set("stableBase", to_string(o.init.stable_base));
  i.Set("offset", o.init.offset);
  r.Set("init", i);
  r.Set("seed", static_cast<double>(o.seed));
  r.Set("scaling", o.scaling());
  return r;
}

Napi::Object named_to_js(Napi::Env env, const NamedTensors& named) {
  auto o = Napi::Object::New(env);
  for (const auto& [name, t] : named) o.Set(name, JsTensor::Wrap(env, t));
  return o;
}

}  // namespace

class JsLoraLinear : public Napi::ObjectWrap<JsLoraLinear> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(
        env, "NativeLoraLinear",
        {InstanceMethod("forward", &JsLoraLinear::Forward), InstanceMethod("vjp", &JsLoraLinear::Vjp),
         InstanceMethod("setTraining", &JsLoraLinear::SetTraining),
         InstanceAccessor("training", &JsLoraLinear::Training, nullptr),
         InstanceAccessor("options", &JsLoraLinear::Options, nullptr),
         InstanceMethod("stateDict", &JsLoraLinear::StateDict),
         InstanceMethod("loadStateDict", &JsLoraLinear::LoadStateDict),
         InstanceMethod("headSimilarity", &JsLoraLinear::HeadSimilarity),
         InstanceMethod("baseWeight", &JsLoraLinear::BaseWeight),
         InstanceMethod("mergedWeight", &JsLoraLinear::MergedWeight),
         InstanceMethod("generatorState", &JsLoraLinear::GeneratorState),
         InstanceMethod("setGeneratorState", &JsLoraLinear::SetGeneratorState),
         InstanceMethod("reseed", &JsLoraLinear::Reseed),
         InstanceMethod("parameterCount", &JsLoraLinear::ParameterCount),
         InstanceMethod("dispose", &JsLoraLinear::Dispose)});
    addon_data(env).layer = Napi::Persistent(cls);
    exports.Set("NativeLoraLinear", cls);
  }

  static std::shared_ptr<MultiHeadLoraLinear> FromValue(const Napi::Value& v, const std::string& what) {
    if (!is_instance(v, addon_data(v.Env()).layer)) type_error(v.Env(), what, "a MultiHeadLoraLinear", v);
    return Napi::ObjectWrap<JsLoraLinear>::Unwrap(v.As<Napi::Object>())->layer();
  }

  // new NativeLoraLinear(weight, bias | null, options)
  explicit JsLoraLinear(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsLoraLinear>(info) {
    Napi::Env env = info.Env();
    guarded(env, [&] {
      torch::Tensor w = JsTensor::FromValue(info[0], "weight");
      torch::Tensor b;
      if (!info[1].IsUndefined() && !info[1].IsNull()) b = JsTensor::FromValue(info[1], "bias");
      LoraOptions opts = resolve_options(parse_overrides(info[2]));
      auto l = std::make_shared<MultiHeadLoraLinear>(w, b, opts);
      std::vector<torch::Tensor> held;  // A, the heads, the router, the offset pair
      for (const auto& kv : l->state_dict()) held.push_back(kv.second);
      const int64_t bytes = cpu_bytes(held);
      layer_.set(env, std::move(l), bytes);
    });
  }
  ~JsLoraLinear() override { layer_.release(Env()); }

 private:
  Owned<MultiHeadLoraLinear> layer_{"MultiHeadLoraLinear"};
  const std::shared_ptr<MultiHeadLoraLinear>& layer() const { return layer_.get(Env()); }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    layer_.release(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      torch::Tensor x = JsTensor::FromValue(info[0], "input");
      auto layer = this->layer();
      return run_async<torch::Tensor>(
          env,
          [layer, x] {
            std::lock_guard<std::mutex> lock(layer->mutex());
            torch::NoGradGuard no_grad;
            return layer->forward(x);
          },
          [](Napi::Env e, torch::Tensor& y) -> Napi::Value { return JsTensor::Wrap(e, y); });
    });
  }

  Napi::Value Vjp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      torch::Tensor x = JsTensor::FromValue(info[0], "input");
      torch::Tensor g = JsTensor::FromValue(info[1], "gradOutput");
      auto layer = this->layer();
      return run_async<MultiHeadLoraLinear::Vjp>(
          env,
          [layer, x, g] {
            std::lock_guard<std::mutex> lock(layer->mutex());
            return layer->vjp(x, g);
          },
          [](Napi::Env e, MultiHeadLoraLinear::Vjp& r) -> Napi::Value {
            auto o = Napi::Object::New(e);
            o.Set("output", JsTensor::Wrap(e, r.output));
            o.Set("gradInput", JsTensor::Wrap(e, r.grad_input));
            o.Set("grads", named_to_js(e, r.grads));
            return o;
          });
    });
  }

  Napi::Value SetTraining(const Napi::CallbackInfo& info) {
    bool on = get_bool(info[0], "training");
    std::lock_guard<std::mutex> lock(layer()->mutex());
    layer()->train(on);
    return info.Env().Undefined();
  }
  Napi::Value Training(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), layer()->is_training()); }
  Napi::Value Options(const Napi::CallbackInfo& info) { return options_to_js(info.Env(), layer()->options()); }

  Napi::Value StateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lock(layer()->mutex());
      return named_to_js(info.Env(), layer()->state_dict());
    });
  }

  Napi::Value LoadStateDict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      if (!info[0].IsObject()) type_error(env, "stateDict", "an object of Tensors", info[0]);
      auto o = info[0].As<Napi::Object>();
      std::map<std::string, torch::Tensor> tensors;
      auto names = o.GetPropertyNames();
      for (uint32_t i = 0; i < names.Length(); ++i) {
        std::string k = names.Get(i).ToString().Utf8Value();
        tensors[k] = JsTensor::FromValue(o.Get(k), "stateDict[\"" + k + "\"]");
      }
      std::lock_guard<std::mutex> lock(layer()->mutex());
      layer()->load_state_dict(tensors);
      return env.Undefined();
    });
  }

  // A tensor the layer computes, under its lock, as a JS Tensor.
  Napi::Value TensorOf(const Napi::CallbackInfo& info, torch::Tensor (MultiHeadLoraLinear::*get)() const) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lock(layer()->mutex());
      return JsTensor::Wrap(info.Env(), ((*layer()).*get)());
    });
  }
  Napi::Value HeadSimilarity(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::head_similarity); }
  Napi::Value BaseWeight(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::base_weight); }
  Napi::Value MergedWeight(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::merged_weight); }
  Napi::Value GeneratorState(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::generator_state); }

  Napi::Value SetGeneratorState(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      torch::Tensor t = JsTensor::FromValue(info[0], "state");
      std::lock_guard<std::mutex> lock(layer()->mutex());
      layer()->set_generator_state(t);
      return info.Env().Undefined();
    });
  }

  Napi::Value Reseed(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const int64_t seed = get_integer(info[0], "seed");
      if (seed < 0) throw std::invalid_argument("seed must be >= 0, got " + std::to_string(seed));
      std::lock_guard<std::mutex> lock(layer()->mutex());
      layer()->reseed(static_cast<uint64_t>(seed));
      return info.Env().Undefined();
    });
  }

  Napi::Value ParameterCount(const Napi::CallbackInfo& info) {
    int64_t n = 0;
    for (const auto& p : layer()->parameters()) n += p.numel();
    return Napi::Number::New(info.Env(), static_cast<double>(n));
  }
};

void InitLayer(Napi::Env env, Napi::Object exports) { JsLoraLinear::Init(env, exports); }

std::shared_ptr<MultiHeadLoraLinear> layer_from_value(const Napi::Value& v, const std::string& what) {
  return JsLoraLinear::FromValue(v, what);
}

}  // namespace rlora::binding
