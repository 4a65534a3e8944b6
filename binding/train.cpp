// JS class NativeAdamW and the training steps: argument checks and dispatch to native/train.
#include "train.h"

#include <memory>

#include "layer.h"
#include "locks.h"
#include "model.h"
#include "tensor.h"
#include "train/layer_fit.h"
#include "train/lm_step.h"

namespace rlora::binding {

namespace {

train::AdamWOptions parse_adamw(const Napi::Value& v) {
  train::AdamWOptions a;
  OptionsReader o(v, "AdamW", {"lr", "betas", "eps", "weightDecay", "maxGradNorm", "schedule", "warmupSteps", "totalSteps"});
  if (o.has("lr")) a.lr = o.number("lr");
  if (o.has("betas")) {
    Napi::Value b = o.get("betas");
    if (!b.IsArray() || b.As<Napi::Array>().Length() != 2) type_error(v.Env(), "betas", "an array of two numbers", b);
    a.beta1 = get_number(b.As<Napi::Array>().Get(0u), "betas[0]");
    a.beta2 = get_number(b.As<Napi::Array>().Get(1u), "betas[1]");
  }
  if (o.has("eps")) a.eps = o.number("eps");
  if (o.has("weightDecay")) a.weight_decay = o.number("weightDecay");
  if (o.has("maxGradNorm")) a.max_grad_norm = o.number("maxGradNorm");
  if (o.has("schedule")) a.schedule.kind = train::parse_schedule(o.string("schedule"));
  if (o.has("warmupSteps")) a.schedule.warmup_steps = o.integer("warmupSteps");
  if (o.has("totalSteps")) a.schedule.total_steps = o.integer("totalSteps");
  return a;
}

}  // namespace

void JsAdamW::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls =
      DefineClass(env, "NativeAdamW",
                  {getter<&JsAdamW::StepsTaken>("stepsTaken"), method<&JsAdamW::LrAt>("lrAt"),
                   method<&JsAdamW::State>("state"), method<&JsAdamW::SetState>("setState"), dispose_method()});
  addon_data(env).adamw = Napi::Persistent(cls);
  exports.Set("NativeAdamW", cls);
}

JsAdamW::JsAdamW(const Napi::CallbackInfo& info) : Wrapped(info, "optimizer") {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    std::vector<torch::Tensor> params;
    if (info[0].IsObject() && !info[0].IsArray()) {
      model_ = unwrap<JsModel>(info[0], "modules");
      auto lock = JobLock::on_model(*model_);
      params = model_->set_trainable(true);
    } else {
      if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
        type_error(env, "modules", "a non-empty array of MultiHeadLoraLinear", info[0]);
      auto arr = info[0].As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        auto layer = unwrap<JsLoraLinear>(arr.Get(i), "modules[" + std::to_string(i) + "]");
        layers_.push_back(layer);
        for (auto& p : layer->parameters()) params.push_back(p);
      }
    }
    // the optimizer's two moments per parameter are counted as held memory
    const int64_t bytes = 2 * cpu_bytes(params);
    hold(env, std::make_shared<train::AdamW>(params, parse_adamw(info[1])), bytes);
  });
}

void JsAdamW::on_dispose() {
  layers_.clear();
  model_.reset();
}

Napi::Value JsAdamW::StepsTaken(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(get()->steps_taken()));
}

// state() -> {steps, params: [{step, expAvg, expAvgSq}]} (copies)
Napi::Value JsAdamW::State(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto lock = JobLock::on_optimizer(*get());
  auto o = Napi::Object::New(env);
  o.Set("steps", static_cast<double>(get()->steps_taken()));
  const auto& st = get()->state();
  auto arr = Napi::Array::New(env, st.size());
  for (size_t i = 0; i < st.size(); ++i) {
    auto p = Napi::Object::New(env);
    p.Set("step", static_cast<double>(st[i].step));
    p.Set("expAvg", JsTensor::Wrap(env, st[i].exp_avg.clone()));
    p.Set("expAvgSq", JsTensor::Wrap(env, st[i].exp_avg_sq.clone()));
    arr.Set(static_cast<uint32_t>(i), p);
  }
  o.Set("params", arr);
  return o;
}

Napi::Value JsAdamW::SetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) type_error(env, "state", "an object", info[0]);
  auto o = info[0].As<Napi::Object>();
  const int64_t steps = get_integer(o.Get("steps"), "state.steps");
  Napi::Value pv = o.Get("params");
  if (!pv.IsArray()) type_error(env, "state.params", "an array", pv);
  auto arr = pv.As<Napi::Array>();
  std::vector<train::AdamWParamState> st;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) type_error(env, "state.params[" + std::to_string(i) + "]", "an object", e);
    auto eo = e.As<Napi::Object>();
    st.push_back({get_integer(eo.Get("step"), "step"), unwrap<JsTensor>(eo.Get("expAvg"), "expAvg"),
                  unwrap<JsTensor>(eo.Get("expAvgSq"), "expAvgSq")});
  }
  auto lock = JobLock::on_optimizer(*get());
  get()->set_state(steps, st);
  return env.Undefined();
}

Napi::Value JsAdamW::LrAt(const Napi::CallbackInfo& info) {
  const int64_t step = get_integer(info[0], "step");
  return Napi::Number::New(info.Env(), train::scheduled_lr(get()->options().lr, get()->options().schedule, step));
}

namespace {

// fitLayerStep(layer, x, target, optimizer) -> Promise<{loss, rowLoss, lr, gradNorm, paramNorm, paramsFinite}>
Napi::Value FitLayerStep(const Napi::CallbackInfo& info) {
  auto layer = unwrap<JsLoraLinear>(info[0], "layer");
  torch::Tensor x = unwrap<JsTensor>(info[1], "input");
  torch::Tensor y = unwrap<JsTensor>(info[2], "target");
  auto opt = unwrap<JsAdamW>(info[3], "optimizer");
  bool owned = false;
  for (const auto& p : opt->params()) owned = owned || p.is_same(layer->parameters()[0]);
  if (!owned) throw std::invalid_argument("the optimizer was not created with this layer's parameters");
  return run_async<train::FitResult>(
      info.Env(),
      [layer, x, y, opt] {
        auto lock = JobLock::on_layer(*layer, opt.get());
        return train::fit_step(*layer, x, y, *opt);
      },
      [](Napi::Env e, train::FitResult& r) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("loss", r.loss);
        o.Set("rowLoss", JsTensor::Wrap(e, r.row_loss));
        o.Set("lr", r.stats.lr);
        o.Set("gradNorm", r.stats.grad_norm);
        o.Set("paramNorm", r.stats.param_norm);
        o.Set("paramsFinite", r.stats.params_finite);
        return o;
      });
}

train::LmBatch parse_lm_batch(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) type_error(v.Env(), what, "an object {ids, mask, labels, cuSeqlens?}", v);
  auto o = v.As<Napi::Object>();
  return {unwrap<JsTensor>(o.Get("ids"), what + ".ids"), unwrap<JsTensor>(o.Get("mask"), what + ".mask"),
          unwrap<JsTensor>(o.Get("labels"), what + ".labels"), unwrap_optional<JsTensor>(o.Get("cuSeqlens"), what + ".cuSeqlens")};
}

Napi::Object lm_loss_to_js(Napi::Env env, train::LmLoss& l) {
  auto o = Napi::Object::New(env);
  o.Set("lossSum", JsTensor::Wrap(env, l.loss_sum));
  o.Set("tokens", JsTensor::Wrap(env, l.tokens));
  return o;
}

// lmTrainStep(model, microBatches, optimizer, {precision?, distributed?, gradientCheckpointing?})
//   -> Promise<{loss, finite, rows, lr, gradNorm, paramNorm, paramsFinite}>
Napi::Value LmTrainStep(const Napi::CallbackInfo& info) {
  auto m = unwrap<JsModel>(info[0], "model");
  if (!info[1].IsArray()) type_error(info.Env(), "microBatches", "an array", info[1]);
  auto arr = info[1].As<Napi::Array>();
  std::vector<train::LmBatch> micro;
  for (uint32_t i = 0; i < arr.Length(); ++i) micro.push_back(parse_lm_batch(arr.Get(i), "microBatches[" + std::to_string(i) + "]"));
  auto opt = unwrap<JsAdamW>(info[2], "optimizer");
  OptionsReader o(info[3], "lmTrainStep", {"precision", "distributed", "gradientCheckpointing"});
  train::LmStepOptions options;
  if (o.has("precision") && o.choice("precision", {"float32", "bfloat16"}) == "bfloat16") options.autocast = torch::kBFloat16;
  // distributed: true sums the step over the process group's ranks (the group must exist)
  std::shared_ptr<dist::Group> group;
  if (o.has("distributed") && o.boolean("distributed")) {
    group = dist::current();
    if (!group) throw std::logic_error("a distributed step needs a process group (call distributed.init first)");
  }
  options.checkpointing = o.has("gradientCheckpointing") && o.boolean("gradientCheckpointing");
  options.group = group.get();  // the captured shared_ptr keeps it alive for the step
  return run_async<train::LmStepResult>(
      info.Env(),
      [m, micro, opt, options, group] {
        auto lock = JobLock::on_model(*m, opt.get());
        return train::lm_train_step(*m, micro, *opt, options);
      },
      [](Napi::Env e, train::LmStepResult& r) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("loss", r.loss);
        o.Set("finite", r.finite);
        o.Set("rows", lm_loss_to_js(e, r.rows));
        o.Set("lr", r.stats.lr);
        o.Set("gradNorm", r.stats.grad_norm);
        o.Set("paramNorm", r.stats.param_norm);
        o.Set("paramsFinite", r.stats.params_finite);
        return o;
      });
}

// lmEvalLoss(model, batch) -> Promise<{lossSum, tokens}>
Napi::Value LmEvalLoss(const Napi::CallbackInfo& info) {
  auto m = unwrap<JsModel>(info[0], "model");
  train::LmBatch b = parse_lm_batch(info[1], "batch");
  return run_async<train::LmLoss>(
      info.Env(),
      [m, b] {
        auto lock = JobLock::on_model(*m);
        return train::lm_eval_loss(*m, b);
      },
      [](Napi::Env e, train::LmLoss& l) -> Napi::Value { return lm_loss_to_js(e, l); });
}

}  // namespace

void InitTrain(Napi::Env env, Napi::Object exports) {
  JsAdamW::Init(env, exports);
  export_function<FitLayerStep>(exports, "fitLayerStep");
  export_function<LmTrainStep>(exports, "lmTrainStep");
  export_function<LmEvalLoss>(exports, "lmEvalLoss");
  exports.Set("ignoreLabel", Napi::Number::New(env, static_cast<double>(train::kIgnoreLabel)));
}

}  // namespace rlora::binding
