// JS class NativeGeneration: argument checks and dispatch to rlora::model::Generation.
#include "generation.h"

#include "locks.h"
#include "model.h"
#include "tensor.h"

namespace rlora::binding {

model::GenerateOptions parse_generate_options(const Napi::Value& v, const std::string& where) {
  OptionsReader o(v, where,
                  {"maxNewTokens", "minNewTokens", "temperature", "topK", "topP", "repetitionPenalty", "eosTokenIds",
                   "padTokenId", "seed"},
                  /*required=*/true);
  model::GenerateOptions g;
  g.max_new_tokens = o.integer("maxNewTokens");
  g.min_new_tokens = o.integer("minNewTokens");
  g.temperature = o.number("temperature");
  g.top_k = o.integer("topK");
  g.top_p = o.number("topP");
  g.repetition_penalty = o.number("repetitionPenalty");
  g.pad_token_id = o.integer("padTokenId");
  g.seed = o.seed("seed");
  Napi::Value eos = o.get("eosTokenIds");
  if (!eos.IsArray()) type_error(v.Env(), "eosTokenIds", "an array of integers", eos);
  for (uint32_t i = 0; i < eos.As<Napi::Array>().Length(); ++i)
    g.eos_token_ids.push_back(get_integer(eos.As<Napi::Array>().Get(i), "eosTokenIds[" + std::to_string(i) + "]"));
  return g;
}

void JsGeneration::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "NativeGeneration",
                                   {method<&JsGeneration::Step>("step"), method<&JsGeneration::EndRows>("endRows"),
                                    dispose_method(), getter<&JsGeneration::Finished>("finished"),
                                    getter<&JsGeneration::Produced>("produced")});
  addon_data(env).generation = Napi::Persistent(cls);
  exports.Set("NativeGeneration", cls);
}

JsGeneration::JsGeneration(const Napi::CallbackInfo& info) : Wrapped(info, "Generation") {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    std::shared_ptr<model::DecoderModel> m = unwrap<JsModel>(info[0], "model");
    torch::Tensor ids = unwrap<JsTensor>(info[1], "inputIds");
    torch::Tensor mask = unwrap_optional<JsTensor>(info[2], "attentionMask");
    model::GenerateOptions g = parse_generate_options(info[3], "NativeGeneration");
    auto lock = JobLock::on_model(*m);  // the repetition penalty's first table is made on the model's device
    hold(env, std::make_shared<model::Generation>(m, ids, mask, g), 0);
  });
}

// step(n) -> Promise<[B, k] int64 tensor of the new tokens>
Napi::Value JsGeneration::Step(const Napi::CallbackInfo& info) {
  const int64_t n = get_integer(info[0], "n", 0);
  std::shared_ptr<model::Generation> g = get();
  return run_async<torch::Tensor>(
      info.Env(),
      [g, n] {
        auto lock = JobLock::on_model(g->model());
        torch::NoGradGuard no_grad;
        return g->step(n);
      },
      [](Napi::Env e, torch::Tensor& y) -> Napi::Value { return JsTensor::Wrap(e, y); });
}

// endRows(flags: [B] tensor): those rows end now (a stop string the caller found)
Napi::Value JsGeneration::EndRows(const Napi::CallbackInfo& info) {
  torch::Tensor rows = unwrap<JsTensor>(info[0], "rows");
  get()->end_rows(rows);
  return info.Env().Undefined();
}

Napi::Value JsGeneration::Finished(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), get()->finished()); }
Napi::Value JsGeneration::Produced(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(get()->produced()));
}

}  // namespace rlora::binding
