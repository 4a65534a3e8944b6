// JS class NativeModel: argument checks and dispatch to rlora::model::DecoderModel.
#include "model.h"

#include <memory>
#include <stdexcept>

#include "common/format.h"
#include "generation.h"
#include "layer.h"
#include "locks.h"
#include "model/generate.h"
#include "tensor.h"

namespace rlora::binding {

namespace {

// The normalised config lib/model.ts builds from config.json (every field present).
model::ModelConfig parse_config(const Napi::Value& v) {
  OptionsReader o(v, "NativeModel: config",
                  {"architecture", "vocabSize", "hiddenSize", "intermediateSize", "numHiddenLayers", "numAttentionHeads",
                   "numKeyValueHeads", "headDim", "rmsNormEps", "ropeTheta", "ropeScaling", "qkvBias", "qkNorm", "fused",
                   "gemma2", "attnLogitSoftcapping", "finalLogitSoftcapping", "queryPreAttnScalar", "attentionBias",
                   "mlpBias", "tieWordEmbeddings", "initializerRange", "slidingWindow"},
                  /*required=*/true, "config.");
  model::ModelConfig c;
  c.architecture = o.string("architecture");
  c.vocab_size = o.integer("vocabSize");
  c.hidden_size = o.integer("hiddenSize");
  c.intermediate_size = o.integer("intermediateSize");
  c.num_hidden_layers = o.integer("numHiddenLayers");
  c.num_attention_heads = o.integer("numAttentionHeads");
  c.num_key_value_heads = o.integer("numKeyValueHeads");
  c.head_dim = o.integer("headDim");
  c.rms_norm_eps = o.number("rmsNormEps");
  c.rope_theta = o.number("ropeTheta");
  c.qkv_bias = o.boolean("qkvBias");
  c.qk_norm = o.boolean("qkNorm");
  c.fused = o.boolean("fused");
  c.gemma2 = o.boolean("gemma2");
  c.attn_logit_softcapping = o.number("attnLogitSoftcapping");
  c.final_logit_softcapping = o.number("finalLogitSoftcapping");
  c.query_pre_attn_scalar = o.number("queryPreAttnScalar");
  c.attention_bias = o.boolean("attentionBias");
  c.mlp_bias = o.boolean("mlpBias");
  c.tie_word_embeddings = o.boolean("tieWordEmbeddings");
  c.initializer_range = o.number("initializerRange");
  c.sliding_window = o.integer("slidingWindow");
  if (o.has("ropeScaling") && !o.get("ropeScaling").IsNull()) {
    OptionsReader r = o.object("ropeScaling", {"factor", "lowFreqFactor", "highFreqFactor", "originalMaxPositionEmbeddings"});
    c.rope_scaling.llama3 = true;
    c.rope_scaling.factor = r.number("factor");
    c.rope_scaling.low_freq_factor = r.number("lowFreqFactor");
    c.rope_scaling.high_freq_factor = r.number("highFreqFactor");
    c.rope_scaling.original_max_position_embeddings = r.integer("originalMaxPositionEmbeddings");
  }
  return c;
}

Napi::Value tensor_promise(Napi::Env env, std::function<torch::Tensor()> work) {
  return run_async<torch::Tensor>(env, std::move(work), [](Napi::Env e, torch::Tensor& y) -> Napi::Value { return JsTensor::Wrap(e, y); });
}

}  // namespace

void JsModel::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(
      env, "NativeModel",
      {method<&JsModel::ParameterSpecs>("parameterSpecs"), method<&JsModel::SetParameter>("setParameter"),
       method<&JsModel::Parameter>("parameter"), method<&JsModel::InitRandom>("initRandom"),
       method<&JsModel::SetHeadChunkElements>("setHeadChunkElements"), method<&JsModel::Quantize>("quantize"),
       method<&JsModel::Quantization>("quantization"), method<&JsModel::LinearWeight>("linearWeight"),
       method<&JsModel::QuantizeModule>("quantizeModule"), method<&JsModel::ParameterCount>("parameterCount"),
       method<&JsModel::Fingerprint>("fingerprint"), method<&JsModel::LinearNames>("linearNames"),
       method<&JsModel::SetAdapter>("setAdapter"), method<&JsModel::Forward>("forward"),
       method<&JsModel::Generate>("generate"), dispose_method(), getter<&JsModel::Dtype>("dtype"),
       getter<&JsModel::Device>("device")});
  addon_data(env).model = Napi::Persistent(cls);
  exports.Set("NativeModel", cls);
}

JsModel::JsModel(const Napi::CallbackInfo& info) : Wrapped(info, "Model") {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    model::ModelConfig c = parse_config(info[0]);
    torch::ScalarType dtype = parse_dtype(get_string(info[1], "dtype"));
    torch::Device device = parse_device(get_string(info[2], "device"));
    auto m = std::make_shared<model::DecoderModel>(c, dtype, device);
    const int64_t bytes = device.is_cpu() ? m->parameter_count() * static_cast<int64_t>(c10::elementSize(dtype)) : 0;
    hold(env, std::move(m), bytes);
  });
}

Napi::Value JsModel::ParameterSpecs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& specs = get()->parameter_specs();
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
Napi::Value JsModel::SetParameter(const Napi::CallbackInfo& info) {
  auto m = get();
  std::string name = get_string(info[0], "name");
  torch::Tensor t = unwrap<JsTensor>(info[1], name);
  if (t.is_floating_point()) {
    auto finite = [](const torch::Tensor& x) { return torch::isfinite(x).all().item<bool>(); };
    if (!finite(t)) throw std::invalid_argument(name + " holds NaN or infinite values");
    if (t.scalar_type() != m->dtype()) {
      t = t.to(m->dtype());
      if (!finite(t)) throw std::invalid_argument(name + " holds values beyond the range of " + dtype_str(m->dtype()));
    }
  }
  auto lock = JobLock::on_model(*m);
  m->set_parameter(name, t);
  return info.Env().Undefined();
}

Napi::Value JsModel::Fingerprint(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), get()->fingerprint()); }

Napi::Value JsModel::Parameter(const Napi::CallbackInfo& info) {
  return JsTensor::Wrap(info.Env(), get()->parameter(get_string(info[0], "name")));
}

Napi::Value JsModel::Quantize(const Napi::CallbackInfo& info) {
  const std::string kind = get_string(info[0], "quantize");
  auto lock = JobLock::on_model(*get());
  get()->quantize(kind);
  return info.Env().Undefined();
}

Napi::Value JsModel::QuantizeModule(const Napi::CallbackInfo& info) {
  const std::string module = get_string(info[0], "module"), kind = get_string(info[1], "quantize");
  auto lock = JobLock::on_model(*get());
  get()->quantize_module(module, kind);
  return info.Env().Undefined();
}

Napi::Value JsModel::Quantization(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), get()->quantization()); }

Napi::Value JsModel::LinearWeight(const Napi::CallbackInfo& info) {
  return JsTensor::Wrap(info.Env(), get()->linear_weight(get_string(info[0], "module")));
}

// initRandom({seed, quantize?})
Napi::Value JsModel::InitRandom(const Napi::CallbackInfo& info) {
  OptionsReader o(info[0], "NativeModel.initRandom", {"seed", "quantize"}, /*required=*/true);
  const uint64_t seed = o.seed("seed");
  const std::string quantize = o.has("quantize") ? o.string("quantize") : "";
  auto lock = JobLock::on_model(*get());
  get()->init_random(seed, quantize);
  return info.Env().Undefined();
}

// Checkpointed steps run the head and loss over chunks of at most this many logits (tests set it
// small to check the chunking).
Napi::Value JsModel::SetHeadChunkElements(const Napi::CallbackInfo& info) {
  const int64_t n = get_integer(info[0], "head chunk elements");
  auto lock = JobLock::on_model(*get());
  get()->set_head_chunk_elements(n);
  return info.Env().Undefined();
}

Napi::Value JsModel::ParameterCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(get()->parameter_count()));
}

Napi::Value JsModel::LinearNames(const Napi::CallbackInfo& info) {
  auto names = get()->linear_names();
  auto arr = Napi::Array::New(info.Env(), names.size());
  for (size_t i = 0; i < names.size(); ++i) arr.Set(static_cast<uint32_t>(i), names[i]);
  return arr;
}

// setAdapter(module, layer | null)
Napi::Value JsModel::SetAdapter(const Napi::CallbackInfo& info) {
  const std::string module = get_string(info[0], "module");
  std::shared_ptr<MultiHeadLoraLinear> layer = unwrap_optional<JsLoraLinear>(info[1], "layer");
  auto lock = JobLock::on_model(*get(), nullptr, layer.get());
  get()->set_adapter(module, layer);
  return info.Env().Undefined();
}

// forward(ids, mask | null, cuSeqlens | null | undefined) -> Promise<logits>
Napi::Value JsModel::Forward(const Napi::CallbackInfo& info) {
  torch::Tensor ids = unwrap<JsTensor>(info[0], "inputIds");
  torch::Tensor mask = unwrap_optional<JsTensor>(info[1], "attentionMask");
  torch::Tensor cu = unwrap_optional<JsTensor>(info[2], "cuSeqlens");
  auto m = get();
  return tensor_promise(info.Env(), [m, ids, mask, cu] {
    auto lock = JobLock::on_model(*m);
    torch::NoGradGuard no_grad;
    return m->forward(ids, mask, cu);
  });
}

// generate(ids, mask | null, options as NativeGeneration's) -> Promise<ids>
Napi::Value JsModel::Generate(const Napi::CallbackInfo& info) {
  torch::Tensor ids = unwrap<JsTensor>(info[0], "inputIds");
  torch::Tensor mask = unwrap_optional<JsTensor>(info[1], "attentionMask");
  model::GenerateOptions g = parse_generate_options(info[2], "NativeModel.generate");
  auto m = get();
  return tensor_promise(info.Env(), [m, ids, mask, g] {
    auto lock = JobLock::on_model(*m);
    torch::NoGradGuard no_grad;
    return model::generate(m, ids, mask, g);
  });
}

Napi::Value JsModel::Dtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_str(get()->dtype())); }
Napi::Value JsModel::Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), get()->device().str()); }

}  // namespace rlora::binding
