// JS class NativeModel: argument checks and dispatch to rlora::model::DecoderModel.
#include <memory>
#include <stdexcept>

#include "model.h"

#include "common.h"
#include "common/format.h"
#include "layer.h"
#include "model/generate.h"
#include "tensor.h"

namespace rlora::binding {

namespace {

// The normalised config lib/model.ts builds from config.json (every field present).
model::ModelConfig parse_config(const Napi::Value& v) {
  if (!v.IsObject()) type_error(v.Env(), "config", "an object", v);
  auto o = v.As<Napi::Object>();
  auto num = [&](const char* k) { return get_number(o.Get(k), std::string("config.") + k); };
  auto integer = [&](const char* k) { return get_integer(o.Get(k), std::string("config.") + k); };
  auto flag = [&](const char* k) { return get_bool(o.Get(k), std::string("config.") + k); };
  model::ModelConfig c;
  c.architecture = get_string(o.Get("architecture"), "config.architecture");
  c.vocab_size = integer("vocabSize");
  c.hidden_size = integer("hiddenSize");
  c.intermediate_size = integer("intermediateSize");
  c.num_hidden_layers = integer("numHiddenLayers");
  c.num_attention_heads = integer("numAttentionHeads");
  c.num_key_value_heads = integer("numKeyValueHeads");
  c.head_dim = integer("headDim");
  c.rms_norm_eps = num("rmsNormEps");
  c.rope_theta = num("ropeTheta");
  c.qkv_bias = flag("qkvBias");
  c.qk_norm = flag("qkNorm");
  c.fused = flag("fused");
  c.gemma2 = flag("gemma2");
  c.attn_logit_softcapping = num("attnLogitSoftcapping");
  c.final_logit_softcapping = num("finalLogitSoftcapping");
  c.query_pre_attn_scalar = num("queryPreAttnScalar");
  c.attention_bias = flag("attentionBias");
  c.mlp_bias = flag("mlpBias");
  c.tie_word_embeddings = flag("tieWordEmbeddings");
  c.initializer_range = num("initializerRange");
  c.sliding_window = integer("slidingWindow");
  Napi::Value rs = o.Get("ropeScaling");
  if (!rs.IsNull() && !rs.IsUndefined()) {
    if (!rs.IsObject()) type_error(v.Env(), "config.ropeScaling", "an object or null", rs);
    auto r = rs.As<Napi::Object>();
    c.rope_scaling.llama3 = true;
    c.rope_scaling.factor = get_number(r.Get("factor"), "config.rope_scaling.factor");
    c.rope_scaling.low_freq_factor = get_number(r.Get("lowFreqFactor"), "config.rope_scaling.low_freq_factor");
    c.rope_scaling.high_freq_factor = get_number(r.Get("highFreqFactor"), "config.rope_scaling.high_freq_factor");
    c.rope_scaling.original_max_position_embeddings =
        get_integer(r.Get("originalMaxPositionEmbeddings"), "config.rope_scaling.original_max_position_embeddings");
  }
  return c;
}

torch::Tensor optional_tensor(const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined() || v.IsNull()) return torch::Tensor();
  return JsTensor::FromValue(v, what);
}

}  // namespace

class JsModel : public Napi::ObjectWrap<JsModel> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(
        env, "NativeModel",
        {InstanceMethod("parameterSpecs", &JsModel::ParameterSpecs), InstanceMethod("setParameter", &JsModel::SetParameter),
         InstanceMethod("parameter", &JsModel::Parameter), InstanceMethod("initRandom", &JsModel::InitRandom),
         InstanceMethod("setHeadChunkElements", &JsModel::SetHeadChunkElements),
         InstanceMethod("quantize", &JsModel::Quantize), InstanceMethod("quantization", &JsModel::Quantization),
         InstanceMethod("linearWeight", &JsModel::LinearWeight), InstanceMethod("quantizeModule", &JsModel::QuantizeModule),
         InstanceMethod("parameterCount", &JsModel::ParameterCount), InstanceMethod("fingerprint", &JsModel::Fingerprint), InstanceMethod("linearNames", &JsModel::LinearNames),
         InstanceMethod("setAdapter", &JsModel::SetAdapter), InstanceMethod("forward", &JsModel::Forward),
         InstanceMethod("generate", &JsModel::Generate), InstanceMethod("dispose", &JsModel::Dispose),
         InstanceAccessor("dtype", &JsModel::Dtype, nullptr),
         InstanceAccessor("device", &JsModel::Device, nullptr)});
    addon_data(env).model = Napi::Persistent(cls);
    exports.Set("NativeModel", cls);
  }

  static std::shared_ptr<model::DecoderModel> FromValue(const Napi::Value& v, const std::string& what) {
    if (!is_instance(v, addon_data(v.Env()).model)) type_error(v.Env(), what, "a Model", v);
    return Napi::ObjectWrap<JsModel>::Unwrap(v.As<Napi::Object>())->model();
  }

  // new NativeModel(config, dtype, device)
  explicit JsModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsModel>(info) {
    Napi::Env env = info.Env();
    guarded(env, [&] {
      model::ModelConfig c = parse_config(info[0]);
      torch::ScalarType dtype = parse_dtype(get_string(info[1], "dtype"));
      torch::Device device = parse_device(get_string(info[2], "device"));
      auto m = std::make_shared<model::DecoderModel>(c, dtype, device);
      const int64_t bytes = device.is_cpu() ? m->parameter_count() * static_cast<int64_t>(c10::elementSize(dtype)) : 0;
      model_.set(env, std::move(m), bytes);
    });
  }
  ~JsModel() override { model_.release(Env()); }

 private:
  Owned<model::DecoderModel> model_{"Model"};
  const std::shared_ptr<model::DecoderModel>& model() const { return model_.get(Env()); }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.release(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value ParameterSpecs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& specs = model()->parameter_specs();
    auto arr = Napi::Array::New(env, specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      auto o = Napi::Object::New(env);
      o.Set("name", specs[i].name);
      o.Set("shape", shape_to_js(env, specs[i].shape));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  // setParameter(name, tensor): NaN and infinities are refused, whether in the tensor or made by
  // the conversion to the model's dtype (a float32 1e5 in a float16 model).
  Napi::Value SetParameter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      std::string name = get_string(info[0], "name");
      torch::Tensor t = JsTensor::FromValue(info[1], name);
      if (t.is_floating_point()) {
        auto finite = [](const torch::Tensor& x) { return torch::isfinite(x).all().item<bool>(); };
        if (!finite(t)) throw std::invalid_argument(name + " holds NaN or infinite values");
        if (t.scalar_type() != model()->dtype()) {
          t = t.to(model()->dtype());
          if (!finite(t)) throw std::invalid_argument(name + " holds values beyond the range of " + dtype_str(model()->dtype()));
        }
      }
      std::lock_guard<std::mutex> lock(model()->mutex());
      model()->set_parameter(name, t);
      return env.Undefined();
    });
  }

  Napi::Value Fingerprint(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), model()->fingerprint()); });
  }

  Napi::Value Parameter(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      return JsTensor::Wrap(info.Env(), model()->parameter(get_string(info[0], "name")));
    });
  }

  Napi::Value Quantize(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const std::string kind = get_string(info[0], "quantize");
      std::lock_guard<std::mutex> lock(model()->mutex());
      model()->quantize(kind);
      return info.Env().Undefined();
    });
  }

  Napi::Value QuantizeModule(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const std::string module = get_string(info[0], "module"), kind = get_string(info[1], "quantize");
      std::lock_guard<std::mutex> lock(model()->mutex());
      model()->quantize_module(module, kind);
      return info.Env().Undefined();
    });
  }

  Napi::Value Quantization(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), model()->quantization()); });
  }

  Napi::Value LinearWeight(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      return JsTensor::Wrap(info.Env(), model()->linear_weight(get_string(info[0], "module")));
    });
  }

  Napi::Value InitRandom(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      int64_t seed = get_integer(info[0], "seed");
      if (seed < 0) type_error(info.Env(), "seed", "a non-negative integer", info[0]);
      std::string quantize;
      if (info.Length() > 1 && !info[1].IsUndefined()) quantize = get_string(info[1], "quantize");
      std::lock_guard<std::mutex> lock(model()->mutex());
      model()->init_random(static_cast<uint64_t>(seed), quantize);
      return info.Env().Undefined();
    });
  }

  // Checkpointed steps run the head and loss over chunks of at most this many logits (tests set it
  // small to check the chunking).
  Napi::Value SetHeadChunkElements(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      int64_t n = get_integer(info[0], "head chunk elements");
      std::lock_guard<std::mutex> lock(model()->mutex());
      model()->set_head_chunk_elements(n);
      return info.Env().Undefined();
    });
  }

  Napi::Value ParameterCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(model()->parameter_count()));
  }

  Napi::Value LinearNames(const Napi::CallbackInfo& info) {
    auto names = model()->linear_names();
    auto arr = Napi::Array::New(info.Env(), names.size());
    for (size_t i = 0; i < names.size(); ++i) arr.Set(static_cast<uint32_t>(i), names[i]);
    return arr;
  }

  // setAdapter(module, layer | null)
  Napi::Value SetAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      std::string module = get_string(info[0], "module");
      std::shared_ptr<MultiHeadLoraLinear> layer;
      if (!info[1].IsNull() && !info[1].IsUndefined()) layer = layer_from_value(info[1], "layer");
      std::lock_guard<std::mutex> lock(model()->mutex());
      model()->set_adapter(module, layer);
      return env.Undefined();
    });
  }

  // forward(ids, mask | null) -> Promise<logits>
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      torch::Tensor ids = JsTensor::FromValue(info[0], "inputIds");
      torch::Tensor mask = optional_tensor(info[1], "attentionMask");
      auto m = model();
      return run_async<torch::Tensor>(
          env,
          [m, ids, mask] {
            std::lock_guard<std::mutex> lock(m->mutex());
            torch::NoGradGuard no_grad;
            return m->forward(ids, mask);
          },
          [](Napi::Env e, torch::Tensor& y) -> Napi::Value { return JsTensor::Wrap(e, y); });
    });
  }

  // generate(ids, mask | null, {maxNewTokens, temperature, topK, topP, eosTokenIds, padTokenId, seed}) -> Promise<ids>
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      torch::Tensor ids = JsTensor::FromValue(info[0], "inputIds");
      torch::Tensor mask = optional_tensor(info[1], "attentionMask");
      if (!info[2].IsObject()) type_error(env, "options", "an object", info[2]);
      auto o = info[2].As<Napi::Object>();
      model::GenerateOptions g;
      g.max_new_tokens = get_integer(o.Get("maxNewTokens"), "maxNewTokens");
      g.temperature = get_number(o.Get("temperature"), "temperature");
      g.top_k = get_integer(o.Get("topK"), "topK");
      g.top_p = get_number(o.Get("topP"), "topP");
      g.pad_token_id = get_integer(o.Get("padTokenId"), "padTokenId");
      int64_t seed = get_integer(o.Get("seed"), "seed");
      if (seed < 0) type_error(env, "seed", "a non-negative integer", o.Get("seed"));
      g.seed = static_cast<uint64_t>(seed);
      Napi::Value eos = o.Get("eosTokenIds");
      if (!eos.IsArray()) type_error(env, "eosTokenIds", "an array of integers", eos);
      for (uint32_t i = 0; i < eos.As<Napi::Array>().Length(); ++i)
        g.eos_token_ids.push_back(get_integer(eos.As<Napi::Array>().Get(i), "eosTokenIds[" + std::to_string(i) + "]"));
      auto m = model();
      return run_async<torch::Tensor>(
          env,
          [m, ids, mask, g] {
            std::lock_guard<std::mutex> lock(m->mutex());
            torch::NoGradGuard no_grad;
            return model::generate(*m, ids, mask, g);
          },
          [](Napi::Env e, torch::Tensor& y) -> Napi::Value { return JsTensor::Wrap(e, y); });
    });
  }

  Napi::Value Dtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_str(model()->dtype())); }
  Napi::Value Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model()->device().str()); }
};

void InitModel(Napi::Env env, Napi::Object exports) { JsModel::Init(env, exports); }

std::shared_ptr<model::DecoderModel> model_from_value(const Napi::Value& v, const std::string& what) {
  return JsModel::FromValue(v, what);
}

}  // namespace rlora::binding
