// JS class NativeLoraLinear: argument checks and dispatch to rlora::MultiHeadLoraLinear.
#include "layer.h"

#include <map>

#include "common/format.h"
#include "locks.h"
#include "tensor.h"

namespace rlora::binding {

namespace {

// Reads the JS options object into overrides; the preset fills what is not set.
LoraOverrides parse_overrides(const Napi::Value& v) {
  LoraOverrides ov;
  OptionsReader o(v, "MultiHeadLoraLinear", {"method", "rank", "heads", "alpha", "dropout", "dropoutOn",
                                             "multiHeadDropout", "rankStabilization", "init", "seed"});
  if (o.has("method")) ov.method = parse_method(o.string("method"));
  if (o.has("rank")) ov.rank = o.integer("rank");
  if (o.has("heads")) ov.heads = o.integer("heads");
  if (o.has("alpha")) ov.alpha = o.number("alpha");
  if (o.has("dropout")) ov.dropout = o.number("dropout");
  if (o.has("dropoutOn")) ov.dropout_on = parse_dropout_on(o.string("dropoutOn"));
  if (o.has("multiHeadDropout")) ov.multi_head_dropout = o.boolean("multiHeadDropout");
  if (o.has("rankStabilization")) ov.rank_stabilization = o.boolean("rankStabilization");
  if (o.has("seed")) ov.seed = o.seed("seed");
  if (o.has("init")) {
    OptionsReader i = o.object("init", {"a", "b", "router", "scale", "gamma", "stableBase", "offset"});
    if (i.has("a")) ov.init_a = parse_init_scheme(i.string("a"), i.name("a"));
    if (i.has("b")) ov.init_b = parse_init_scheme(i.string("b"), i.name("b"));
    if (i.has("router")) ov.init_router = parse_init_scheme(i.string("router"), i.name("router"));
    if (i.has("scale")) ov.init_scale = parse_init_scale(i.string("scale"));
    if (i.has("gamma")) ov.init_gamma = i.number("gamma");
    if (i.has("stableBase")) ov.init_stable_base = parse_stable_base(i.string("stableBase"));
    if (i.has("offset")) ov.init_offset = i.boolean("offset");
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

void JsLoraLinear::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(
      env, "NativeLoraLinear",
      {method<&JsLoraLinear::Forward>("forward"), method<&JsLoraLinear::Vjp>("vjp"),
       method<&JsLoraLinear::SetTraining>("setTraining"), getter<&JsLoraLinear::Training>("training"),
       getter<&JsLoraLinear::Options>("options"), method<&JsLoraLinear::StateDict>("stateDict"),
       method<&JsLoraLinear::LoadStateDict>("loadStateDict"), method<&JsLoraLinear::HeadSimilarity>("headSimilarity"),
       method<&JsLoraLinear::BaseWeight>("baseWeight"), method<&JsLoraLinear::MergedWeight>("mergedWeight"),
       method<&JsLoraLinear::GeneratorState>("generatorState"),
       method<&JsLoraLinear::SetGeneratorState>("setGeneratorState"), method<&JsLoraLinear::Reseed>("reseed"),
       method<&JsLoraLinear::ParameterCount>("parameterCount"), dispose_method()});
  addon_data(env).layer = Napi::Persistent(cls);
  exports.Set("NativeLoraLinear", cls);
  // the bounds native/rlora/options.h checks, for lib/ to check (and document) the same numbers
  auto limits = Napi::Object::New(env);
  limits.Set("maxRank", Napi::Number::New(env, static_cast<double>(kMaxRank)));
  limits.Set("maxHeads", Napi::Number::New(env, static_cast<double>(kMaxHeads)));
  limits.Set("maxAlpha", Napi::Number::New(env, kMaxAlpha));
  limits.Set("minGamma", Napi::Number::New(env, kMinGamma));
  limits.Set("maxGamma", Napi::Number::New(env, kMaxGamma));
  exports.Set("loraLimits", limits);
}

JsLoraLinear::JsLoraLinear(const Napi::CallbackInfo& info) : Wrapped(info, "MultiHeadLoraLinear") {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    torch::Tensor w = unwrap<JsTensor>(info[0], "weight");
    torch::Tensor b = unwrap_optional<JsTensor>(info[1], "bias");
    LoraOptions opts = resolve_options(parse_overrides(info[2]));
    auto l = std::make_shared<MultiHeadLoraLinear>(w, b, opts);
    std::vector<torch::Tensor> held;  // A, the heads, the router, the offset pair
    for (const auto& kv : l->state_dict()) held.push_back(kv.second);
    const int64_t bytes = cpu_bytes(held);
    hold(env, std::move(l), bytes);
  });
}

Napi::Value JsLoraLinear::Forward(const Napi::CallbackInfo& info) {
  torch::Tensor x = unwrap<JsTensor>(info[0], "input");
  auto layer = get();
  return run_async<torch::Tensor>(
      info.Env(),
      [layer, x] {
        auto lock = JobLock::on_layer(*layer);
        torch::NoGradGuard no_grad;
        return layer->forward(x);
      },
      [](Napi::Env e, torch::Tensor& y) -> Napi::Value { return JsTensor::Wrap(e, y); });
}

Napi::Value JsLoraLinear::Vjp(const Napi::CallbackInfo& info) {
  torch::Tensor x = unwrap<JsTensor>(info[0], "input");
  torch::Tensor g = unwrap<JsTensor>(info[1], "gradOutput");
  auto layer = get();
  return run_async<MultiHeadLoraLinear::Vjp>(
      info.Env(),
      [layer, x, g] {
        auto lock = JobLock::on_layer(*layer);
        return layer->vjp(x, g);
      },
      [](Napi::Env e, MultiHeadLoraLinear::Vjp& r) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("output", JsTensor::Wrap(e, r.output));
        o.Set("gradInput", JsTensor::Wrap(e, r.grad_input));
        o.Set("grads", named_to_js(e, r.grads));
        return o;
      });
}

Napi::Value JsLoraLinear::SetTraining(const Napi::CallbackInfo& info) {
  const bool on = get_bool(info[0], "training");
  auto lock = JobLock::on_layer(*get());
  get()->train(on);
  return info.Env().Undefined();
}

Napi::Value JsLoraLinear::Training(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), get()->is_training()); }
Napi::Value JsLoraLinear::Options(const Napi::CallbackInfo& info) { return options_to_js(info.Env(), get()->options()); }

Napi::Value JsLoraLinear::StateDict(const Napi::CallbackInfo& info) {
  auto lock = JobLock::on_layer(*get());
  return named_to_js(info.Env(), get()->state_dict());
}

Napi::Value JsLoraLinear::LoadStateDict(const Napi::CallbackInfo& info) {
  if (!info[0].IsObject()) type_error(info.Env(), "stateDict", "an object of Tensors", info[0]);
  auto o = info[0].As<Napi::Object>();
  std::map<std::string, torch::Tensor> tensors;
  auto names = o.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); ++i) {
    std::string k = names.Get(i).ToString().Utf8Value();
    tensors[k] = unwrap<JsTensor>(o.Get(k), "stateDict[\"" + k + "\"]");
  }
  auto lock = JobLock::on_layer(*get());
  get()->load_state_dict(tensors);
  return info.Env().Undefined();
}

Napi::Value JsLoraLinear::TensorOf(const Napi::CallbackInfo& info, torch::Tensor (MultiHeadLoraLinear::*compute)() const) {
  auto lock = JobLock::on_layer(*get());
  return JsTensor::Wrap(info.Env(), ((*get()).*compute)());
}
Napi::Value JsLoraLinear::HeadSimilarity(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::head_similarity); }
Napi::Value JsLoraLinear::BaseWeight(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::base_weight); }
Napi::Value JsLoraLinear::MergedWeight(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::merged_weight); }
Napi::Value JsLoraLinear::GeneratorState(const Napi::CallbackInfo& info) { return TensorOf(info, &MultiHeadLoraLinear::generator_state); }

Napi::Value JsLoraLinear::SetGeneratorState(const Napi::CallbackInfo& info) {
  torch::Tensor t = unwrap<JsTensor>(info[0], "state");
  auto lock = JobLock::on_layer(*get());
  get()->set_generator_state(t);
  return info.Env().Undefined();
}

Napi::Value JsLoraLinear::Reseed(const Napi::CallbackInfo& info) {
  const uint64_t seed = get_seed(info[0], "seed");
  auto lock = JobLock::on_layer(*get());
  get()->reseed(seed);
  return info.Env().Undefined();
}

Napi::Value JsLoraLinear::ParameterCount(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  for (const auto& p : get()->parameters()) n += p.numel();
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

}  // namespace rlora::binding
