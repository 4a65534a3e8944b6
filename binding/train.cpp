// JS class NativeAdamW and the layer fitting step: argument checks and dispatch to native/train.
#include <memory>
#include <mutex>
#include <set>

#include "common.h"
#include "layer.h"
#include "model.h"
#include "tensor.h"
#include "train/layer_fit.h"
#include "train/lm_step.h"
#include "train/optimizer.h"

namespace rlora::binding {

namespace {

train::AdamWOptions parse_adamw(const Napi::Value& v) {
  train::AdamWOptions o;
  if (v.IsUndefined() || v.IsNull()) return o;
  if (!v.IsObject()) type_error(v.Env(), "options", "an object", v);
  auto obj = v.As<Napi::Object>();
  auto has = [&](const char* k) { return obj.Has(k) && !obj.Get(k).IsUndefined(); };
  check_keys(obj, {"lr", "betas", "eps", "weightDecay", "maxGradNorm", "schedule", "warmupSteps", "totalSteps"});
  if (has("lr")) o.lr = get_number(obj.Get("lr"), "lr");
  if (has("betas")) {
    Napi::Value b = obj.Get("betas");
    if (!b.IsArray() || b.As<Napi::Array>().Length() != 2) type_error(v.Env(), "betas", "an array of two numbers", b);
    o.beta1 = get_number(b.As<Napi::Array>().Get(0u), "betas[0]");
    o.beta2 = get_number(b.As<Napi::Array>().Get(1u), "betas[1]");
  }
  if (has("eps")) o.eps = get_number(obj.Get("eps"), "eps");
  if (has("weightDecay")) o.weight_decay = get_number(obj.Get("weightDecay"), "weightDecay");
  if (has("maxGradNorm")) o.max_grad_norm = get_number(obj.Get("maxGradNorm"), "maxGradNorm");
  if (has("schedule")) o.schedule.kind = train::parse_schedule(get_string(obj.Get("schedule"), "schedule"));
  if (has("warmupSteps")) o.schedule.warmup_steps = get_integer(obj.Get("warmupSteps"), "warmupSteps");
  if (has("totalSteps")) o.schedule.total_steps = get_integer(obj.Get("totalSteps"), "totalSteps");
  return o;
}

}  // namespace

class JsAdamW : public Napi::ObjectWrap<JsAdamW> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(env, "NativeAdamW",
                                     {InstanceAccessor("stepsTaken", &JsAdamW::StepsTaken, nullptr),
                                      InstanceMethod("lrAt", &JsAdamW::LrAt), InstanceMethod("state", &JsAdamW::State),
                                      InstanceMethod("setState", &JsAdamW::SetState),
                                      InstanceMethod("dispose", &JsAdamW::Dispose)});
    addon_data(env).adamw = Napi::Persistent(cls);
    exports.Set("NativeAdamW", cls);
  }

  // The optimizer over `params`; its two moments per parameter are counted as held memory.
  void own(const Napi::Env& env, const std::vector<torch::Tensor>& params, const Napi::Value& options) {
    opt_.set(env, std::make_shared<train::AdamW>(params, parse_adamw(options)), 2 * cpu_bytes(params));
  }
  const std::shared_ptr<train::AdamW>& opt() const { return opt_.get(Env()); }
  static std::shared_ptr<train::AdamW> FromValue(const Napi::Value& v, const std::string& what) {
    if (!is_instance(v, addon_data(v.Env()).adamw)) type_error(v.Env(), what, "an AdamW", v);
    return Napi::ObjectWrap<JsAdamW>::Unwrap(v.As<Napi::Object>())->opt();
  }

  // new NativeAdamW(layers: NativeLoraLinear[] | model: NativeModel, options); a model's every
  // parameter becomes trainable (full training).
  explicit JsAdamW(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsAdamW>(info) {
    Napi::Env env = info.Env();
    guarded(env, [&] {
      if (info[0].IsObject() && !info[0].IsArray()) {
        model_ = model_from_value(info[0], "modules");
        std::vector<torch::Tensor> params;
        {
          std::lock_guard<std::mutex> lock(model_->mutex());
          params = model_->set_trainable(true);
        }
        own(env, params, info[1]);
        return;
      }
      if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
        type_error(env, "modules", "a non-empty array of MultiHeadLoraLinear", info[0]);
      auto arr = info[0].As<Napi::Array>();
      std::vector<torch::Tensor> params;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        auto layer = layer_from_value(arr.Get(i), "modules[" + std::to_string(i) + "]");
        layers_.push_back(layer);
        for (auto& p : layer->parameters()) params.push_back(p);
      }
      own(env, params, info[1]);
    });
  }
  ~JsAdamW() override { opt_.release(Env()); }

 private:
  Napi::Value StepsTaken(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(opt()->steps_taken()));
  }
  // state() -> {steps, params: [{step, expAvg, expAvgSq}]} (copies)
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lock(opt()->mutex());
      auto o = Napi::Object::New(env);
      o.Set("steps", static_cast<double>(opt()->steps_taken()));
      const auto& st = opt()->state();
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
    });
  }

  Napi::Value SetState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      if (!info[0].IsObject()) type_error(env, "state", "an object", info[0]);
      auto o = info[0].As<Napi::Object>();
      int64_t steps = get_integer(o.Get("steps"), "state.steps");
      Napi::Value pv = o.Get("params");
      if (!pv.IsArray()) type_error(env, "state.params", "an array", pv);
      auto arr = pv.As<Napi::Array>();
      std::vector<train::AdamWParamState> st;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value e = arr.Get(i);
        if (!e.IsObject()) type_error(env, "state.params[" + std::to_string(i) + "]", "an object", e);
        auto eo = e.As<Napi::Object>();
        st.push_back({get_integer(eo.Get("step"), "step"), JsTensor::FromValue(eo.Get("expAvg"), "expAvg"),
                      JsTensor::FromValue(eo.Get("expAvgSq"), "expAvgSq")});
      }
      std::lock_guard<std::mutex> lock(opt()->mutex());
      opt()->set_state(steps, st);
      return env.Undefined();
    });
  }

  Napi::Value LrAt(const Napi::CallbackInfo& info) {
    int64_t step = get_integer(info[0], "step");
    return Napi::Number::New(info.Env(), train::scheduled_lr(opt()->options().lr, opt()->options().schedule, step));
  }

  std::vector<std::shared_ptr<MultiHeadLoraLinear>> layers_;  // keeps the parameters' owners alive
  std::shared_ptr<model::DecoderModel> model_;
  Owned<train::AdamW> opt_{"optimizer"};

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    opt_.release(info.Env());
    layers_.clear();
    model_.reset();
    return info.Env().Undefined();
  }
};

namespace {

// fitLayerStep(layer, x, target, optimizer) -> Promise<{loss, rowLoss, lr, gradNorm}>
Napi::Value FitLayerStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto layer = layer_from_value(info[0], "layer");
    torch::Tensor x = JsTensor::FromValue(info[1], "input");
    torch::Tensor y = JsTensor::FromValue(info[2], "target");
    auto opt = JsAdamW::FromValue(info[3], "optimizer");
    bool owned = false;
    for (const auto& p : opt->params()) owned = owned || p.is_same(layer->parameters()[0]);
    if (!owned) throw std::invalid_argument("the optimizer was not created with this layer's parameters");
    return run_async<train::FitResult>(
        env,
        [layer, x, y, opt] {
          std::scoped_lock lock(layer->mutex(), opt->mutex());
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
  });
}

train::LmBatch parse_lm_batch(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) type_error(v.Env(), what, "an object {ids, mask, labels}", v);
  auto o = v.As<Napi::Object>();
  return {JsTensor::FromValue(o.Get("ids"), what + ".ids"), JsTensor::FromValue(o.Get("mask"), what + ".mask"),
          JsTensor::FromValue(o.Get("labels"), what + ".labels")};
}

Napi::Object lm_loss_to_js(Napi::Env env, train::LmLoss& l) {
  auto o = Napi::Object::New(env);
  o.Set("lossSum", JsTensor::Wrap(env, l.loss_sum));
  o.Set("tokens", JsTensor::Wrap(env, l.tokens));
  return o;
}

// lmTrainStep(model, microBatches, optimizer, precision?, distributed?, gradientCheckpointing?)
//   -> Promise<{loss, finite, rows, lr, gradNorm, paramNorm, paramsFinite}>
Napi::Value LmTrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model_from_value(info[0], "model");
    if (!info[1].IsArray()) type_error(env, "microBatches", "an array", info[1]);
    auto arr = info[1].As<Napi::Array>();
    std::vector<train::LmBatch> micro;
    for (uint32_t i = 0; i < arr.Length(); ++i) micro.push_back(parse_lm_batch(arr.Get(i), "microBatches[" + std::to_string(i) + "]"));
    auto opt = JsAdamW::FromValue(info[2], "optimizer");
    torch::ScalarType autocast = torch::kFloat32;
    if (!info[3].IsUndefined() && !info[3].IsNull()) {
      std::string p = get_string(info[3], "precision");
      if (p != "float32" && p != "bfloat16")
        throw std::invalid_argument("precision must be \"float32\" or \"bfloat16\", got \"" + p + "\"");
      autocast = p == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
    }
    // distributed: true sums the step over the process group's ranks (the group must exist)
    std::shared_ptr<dist::Group> group;
    if (!info[4].IsUndefined() && get_bool(info[4], "distributed")) {
      group = dist::current();
      if (!group) throw std::logic_error("a distributed step needs a process group (call distributed.init first)");
    }
    const bool checkpointing = !info[5].IsUndefined() && get_bool(info[5], "gradientCheckpointing");
    return run_async<train::LmStepResult>(
        env,
        [m, micro, opt, autocast, group, checkpointing] {
          std::scoped_lock lock(m->mutex(), opt->mutex());
          return train::lm_train_step(*m, micro, *opt, autocast, group.get(), checkpointing);
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
  });
}

// lmEvalLoss(model, batch) -> Promise<{lossSum, tokens}>
Napi::Value LmEvalLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model_from_value(info[0], "model");
    train::LmBatch b = parse_lm_batch(info[1], "batch");
    return run_async<train::LmLoss>(
        env,
        [m, b] {
          std::lock_guard<std::mutex> lock(m->mutex());
          return train::lm_eval_loss(*m, b);
        },
        [](Napi::Env e, train::LmLoss& l) -> Napi::Value { return lm_loss_to_js(e, l); });
  });
}

}  // namespace

void InitTrain(Napi::Env env, Napi::Object exports) {
  JsAdamW::Init(env, exports);
  exports.Set("fitLayerStep", Napi::Function::New(env, FitLayerStep));
  exports.Set("lmTrainStep", Napi::Function::New(env, LmTrainStep));
  exports.Set("lmEvalLoss", Napi::Function::New(env, LmEvalLoss));
  exports.Set("ignoreLabel", Napi::Number::New(env, static_cast<double>(train::kIgnoreLabel)));
}

}  // namespace rlora::binding
