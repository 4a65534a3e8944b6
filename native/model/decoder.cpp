#include "model/decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "common/cpu_allocator.h"
#include "common/errors.h"
#include "common/format.h"
#include "common/torch_compat.h"
#include "model/attention.h"

namespace rlora::model {

using torch::Tensor;
namespace F = torch::nn::functional;

void validate(const ModelConfig& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v < 1) throw OutOfRange(std::string("config.") + name + " must be an integer >= 1, got " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.num_key_value_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw std::invalid_argument("config.num_attention_heads (" + std::to_string(c.num_attention_heads) +
                                ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")");
  if (c.head_dim % 2 != 0) throw OutOfRange("config.head_dim must be even for rotary embeddings, got " + std::to_string(c.head_dim));
  if (!(c.rms_norm_eps > 0)) throw OutOfRange("config.rms_norm_eps must be > 0");
  if (!(c.rope_theta > 0)) throw OutOfRange("config.rope_theta must be > 0");
  if (c.rope_scaling.llama3 && !(c.rope_scaling.factor > 0 && c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
    throw OutOfRange("config.rope_scaling (llama3) needs factor > 0 and high_freq_factor > low_freq_factor");
}

DecoderModel::DecoderModel(const ModelConfig& config, torch::ScalarType dtype, torch::Device device)
    : config_(config), dtype_(dtype), device_(device) {
  validate(config_);
  if (!c10::isFloatingType(dtype)) throw std::invalid_argument("model dtype must be a floating point type, got " + dtype_str(dtype));
  const auto& c = config_;
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  add_param("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_param(p + "input_layernorm.weight", {H});
    if (c.fused) {
      add_linear(p + "self_attn.qkv_proj", (c.num_attention_heads + 2 * c.num_key_value_heads) * D, H, false);
    } else {
      add_linear(p + "self_attn.q_proj", c.num_attention_heads * D, H, c.qkv_bias || c.attention_bias);
      add_linear(p + "self_attn.k_proj", c.num_key_value_heads * D, H, c.qkv_bias || c.attention_bias);
      add_linear(p + "self_attn.v_proj", c.num_key_value_heads * D, H, c.qkv_bias || c.attention_bias);
    }
    add_linear(p + "self_attn.o_proj", H, c.num_attention_heads * D, c.attention_bias);
    if (c.qk_norm) {
      add_param(p + "self_attn.q_norm.weight", {D});
      add_param(p + "self_attn.k_norm.weight", {D});
    }
    add_param(p + "post_attention_layernorm.weight", {H});
    if (c.gemma2) {
      add_param(p + "pre_feedforward_layernorm.weight", {H});
      add_param(p + "post_feedforward_layernorm.weight", {H});
    }
    if (c.fused) {
      add_linear(p + "mlp.gate_up_proj", 2 * I, H, false);
    } else {
      add_linear(p + "mlp.gate_proj", I, H, c.mlp_bias);
      add_linear(p + "mlp.up_proj", I, H, c.mlp_bias);
    }
    add_linear(p + "mlp.down_proj", H, I, c.mlp_bias);
  }
  add_param("model.norm.weight", {H});
  if (!c.tie_word_embeddings) add_linear("lm_head", c.vocab_size, H, false);

  // Rotary inverse frequencies, as transformers' default and llama3 rope initialisation.
  Tensor inv = 1.0 / torch::pow(c.rope_theta, torch::arange(0, D, 2, torch::kFloat64) / static_cast<double>(D));
  if (c.rope_scaling.llama3) {
    const auto& s = c.rope_scaling;
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
    Tensor wavelen = 2 * M_PI / inv;
    Tensor scaled = torch::where(wavelen > low_wavelen, inv / s.factor, inv);
    Tensor smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  }
  inv_freq_ = inv.to(torch::kFloat32).to(device_);
}

void DecoderModel::add_param(const std::string& name, std::vector<int64_t> shape) {
  specs_.push_back({name, shape});
  params_[name] = torch::empty(shape, torch::TensorOptions().dtype(dtype_).device(device_));
}

void DecoderModel::add_linear(const std::string& module, int64_t out, int64_t in, bool bias) {
  add_param(module + ".weight", {out, in});
  if (bias) add_param(module + ".bias", {out});
  linears_[module] = Linear{module + ".weight", bias ? module + ".bias" : "", nullptr};
}

namespace {
// The linear module whose weight is `name` ("x.weight" -> "x"), or "".
std::string module_of_weight(const std::string& name) {
  const std::string suffix = ".weight";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0
             ? name.substr(0, name.size() - suffix.size())
             : std::string();
}
}  // namespace

void DecoderModel::set_parameter(const std::string& name, const Tensor& value) {
  auto it = params_.find(name);
  if (it == params_.end()) throw std::invalid_argument("the model has no parameter named " + name);
  auto lin = linears_.find(module_of_weight(name));
  if (lin != linears_.end() && lin->second.quant)
    throw std::invalid_argument(name + " is quantized (" + quantization_ + "): load the weights before quantizing");
  if (!value.defined() || value.sizes() != it->second.sizes())
    throw std::invalid_argument(name + " has shape " + shape_str(value) + " in the checkpoint, the model expects " +
                                shape_str(it->second));
  if (!value.is_floating_point())
    throw std::invalid_argument(name + " must be floating point, got " + dtype_str(value.scalar_type()));
  torch::NoGradGuard no_grad;
  it->second.copy_(value);
}

Tensor DecoderModel::parameter(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) throw std::invalid_argument("the model has no parameter named " + name);
  auto lin = linears_.find(module_of_weight(name));
  if (lin != linears_.end() && lin->second.quant) return dequantize(*lin->second.quant);  // a copy
  return it->second;
}

double DecoderModel::fingerprint() const {
  torch::NoGradGuard no_grad;
  double f = 0;
  double k = 0;
  for (const auto& spec : specs_) {
    k += 1;
    Tensor p = parameter(spec.name).detach().reshape({-1});
    const int64_t n = p.numel();
    if (n == 0) continue;
    f += k * p.sum().to(torch::kCPU).to(torch::kDouble).item<double>();
    Tensor at = torch::linspace(0, static_cast<double>(n - 1), std::min<int64_t>(n, 64), torch::TensorOptions().dtype(torch::kDouble))
                    .to(torch::kLong)
                    .to(p.device());
    Tensor sample = p.index_select(0, at).to(torch::kCPU).to(torch::kDouble);
    f += 1e-3 * k * (sample * torch::arange(1, sample.numel() + 1, torch::kDouble)).sum().item<double>();
  }
  return f;
}

Tensor DecoderModel::linear_weight(const std::string& module) const {
  auto it = linears_.find(module);
  if (it == linears_.end()) throw std::invalid_argument("the model has no linear module named " + module);
  return params_.at(it->second.weight);
}

void DecoderModel::check_quantizable(const std::string& kind) const {
  if (!quantization_.empty()) throw std::invalid_argument("the model is already quantized (" + quantization_ + ")");
  if (kind != "int8" && kind != "nf4") throw OutOfRange("quantize must be \"int8\" or \"nf4\", got \"" + kind + "\"");
  if (!partial_kind_.empty() && partial_kind_ != kind)
    throw std::invalid_argument("some modules were quantized as " + partial_kind_ + ", not " + kind);
}

std::shared_ptr<QuantWeight> DecoderModel::quantized(const std::string& module, const std::string& kind) const {
  try {
    return std::make_shared<QuantWeight>(model::quantize(params_.at(linears_.at(module).weight), kind));
  } catch (const std::exception& e) {
    throw std::invalid_argument(module + ": " + e.what());
  }
}

void DecoderModel::install(const std::string& module, std::shared_ptr<QuantWeight> q) {
  Linear& lin = linears_.at(module);
  Tensor& w = params_.at(lin.weight);
  w = torch::zeros({1}, w.options()).expand(w.sizes());  // shape and dtype only; the values are in q
  lin.quant = std::move(q);
}

void DecoderModel::quantize(const std::string& kind) {
  check_quantizable(kind);
  for (const auto& [name, lin] : linears_)
    if (lin.lora) throw std::invalid_argument("quantize before attaching adapters (" + name + " has one)");
  // every module first (nf4's block size), then replace: a refusal changes nothing
  std::map<std::string, std::shared_ptr<QuantWeight>> done;
  for (const auto& [name, lin] : linears_)
    if (name != "lm_head" && !lin.quant) done[name] = quantized(name, kind);  // (some quantized while loading)
  for (auto& [name, q] : done) install(name, std::move(q));
  quantization_ = kind;
  cpu_allocator::empty_cache();  // the float weights: back to the system, not into the cache
}

void DecoderModel::quantize_module(const std::string& module, const std::string& kind) {
  check_quantizable(kind);
  auto it = linears_.find(module);
  if (it == linears_.end() || module == "lm_head") throw std::invalid_argument(module + " is not a decoder linear module");
  if (it->second.lora) throw std::invalid_argument("quantize before attaching adapters (" + module + " has one)");
  if (it->second.quant) return;
  install(module, quantized(module, kind));
  partial_kind_ = kind;
  // the float weight just freed would wait in the caching allocator (one block per module, all
  // of them resident by the end of a load): give it back now (quantize() trims the heap once)
  cpu_allocator::empty_cache(/*trim_heap=*/false);
}

void DecoderModel::init_random(uint64_t seed, const std::string& quantize) {
  if (!quantization_.empty() || !partial_kind_.empty())
    throw std::invalid_argument("the model is quantized (" + (quantization_.empty() ? partial_kind_ : quantization_) +
                                "): its weights are fixed");
  if (!quantize.empty()) check_quantizable(quantize);
  torch::NoGradGuard no_grad;
  at::Generator gen = compat::make_cpu_generator(seed);
  for (const auto& spec : specs_) {
    Tensor& p = params_[spec.name];
    const bool norm = spec.name.find("norm.weight") != std::string::npos;
    const bool bias = spec.name.size() > 5 && spec.name.compare(spec.name.size() - 5, 5, ".bias") == 0;
    if (norm) {
      p.fill_(config_.gemma2 ? 0.0 : 1.0);  // Gemma2 scales by 1 + weight
    } else if (bias) {
      p.zero_();
    } else {
      p.copy_(torch::empty(spec.shape, torch::kFloat32).normal_(0.0, config_.initializer_range, gen));
      const std::string module = module_of_weight(spec.name);
      if (!quantize.empty() && module != "lm_head" && linears_.count(module)) quantize_module(module, quantize);
    }
  }
}

int64_t DecoderModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, p] : params_) n += p.numel();
  return n;
}

std::vector<torch::Tensor> DecoderModel::set_trainable(bool on) {
  if (on && !quantization_.empty())
    throw std::invalid_argument("a quantized model (" + quantization_ + ") cannot be trained in full: attach an adapter");
  std::vector<torch::Tensor> out;
  for (const auto& spec : specs_) {
    torch::Tensor& p = params_[spec.name];
    p.set_requires_grad(on);
    if (!on) p.mutable_grad() = torch::Tensor();
    out.push_back(p);
  }
  return out;
}

std::vector<std::string> DecoderModel::linear_names() const {
  std::vector<std::string> out;
  for (const auto& spec : specs_) {
    const std::string& n = spec.name;
    if (n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0) {
      std::string module = n.substr(0, n.size() - 7);
      if (linears_.count(module)) out.push_back(module);
    }
  }
  return out;
}

bool DecoderModel::is_linear(const std::string& module) const { return linears_.count(module) > 0; }

void DecoderModel::set_adapter(const std::string& module, std::shared_ptr<MultiHeadLoraLinear> layer) {
  auto it = linears_.find(module);
  if (it == linears_.end()) throw std::invalid_argument(module + " is not a linear module of this model");
  if (layer) {
    const Tensor& w = params_.at(it->second.weight);
    // The same memory (the layer holds a detached handle of the module's weight).
    if (layer->weight().data_ptr() != w.data_ptr() || layer->weight().sizes() != w.sizes())
      throw std::invalid_argument("the adapter layer for " + module + " was not made from that module's weight");
  }
  if (layer && it->second.quant) {
    // the layer's base product: the quantized weight (and the bias), dequantized a block at a time
    std::shared_ptr<QuantWeight> q = it->second.quant;
    Tensor bias = it->second.bias.empty() ? Tensor() : params_.at(it->second.bias);
    layer->set_base([q, bias](const Tensor& x) { return quant_linear(x, *q, bias); });
  }
  it->second.lora = std::move(layer);
}

std::shared_ptr<MultiHeadLoraLinear> DecoderModel::adapter(const std::string& module) const {
  auto it = linears_.find(module);
  return it == linears_.end() ? nullptr : it->second.lora;
}

std::vector<std::shared_ptr<MultiHeadLoraLinear>> DecoderModel::adapters() const {
  std::vector<std::shared_ptr<MultiHeadLoraLinear>> out;
  for (const auto& [name, lin] : linears_)
    if (lin.lora) out.push_back(lin.lora);
  return out;
}

Tensor DecoderModel::linear(const std::string& module, const Tensor& x) const {
  const Linear& l = linears_.at(module);
  if (l.lora) return l.lora->forward(x);
  if (l.quant) return quant_linear(x, *l.quant, l.bias.empty() ? Tensor() : params_.at(l.bias));
  return torch::linear(x, params_.at(l.weight), l.bias.empty() ? Tensor() : params_.at(l.bias));
}

Tensor DecoderModel::rms_norm(const Tensor& x, const std::string& weight) const {
  Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, true) + config_.rms_norm_eps);
  // Gemma2: times (1 + weight), in float32, then cast (LLaMA casts first, then multiplies)
  if (config_.gemma2) return (h * (1.0 + params_.at(weight).to(torch::kFloat32))).to(x.scalar_type());
  return params_.at(weight) * h.to(x.scalar_type());
}

Tensor DecoderModel::embed(const Tensor& ids) const {
  Tensor h = torch::embedding(params_.at("model.embed_tokens.weight"), ids);
  // Gemma2 scales the embeddings by sqrt(hidden_size), rounded to the model's dtype first
  if (config_.gemma2) h = h * torch::tensor(std::sqrt(static_cast<double>(config_.hidden_size)), h.options().requires_grad(false));
  return h;
}

namespace {
Tensor rotate_half(const Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

void DecoderModel::check_ids(const Tensor& ids, const Tensor& mask, const Tensor& cu) const {
  if (!ids.defined() || ids.dim() != 2) throw std::invalid_argument("input ids must be a 2-D [batch, sequence] tensor, got " + shape_str(ids));
  if (ids.size(0) == 0 || ids.size(1) == 0) throw std::invalid_argument("input ids must not be empty, got shape " + shape_str(ids));
  if (ids.scalar_type() != torch::kInt64) throw std::invalid_argument("input ids must be int64, got " + dtype_str(ids.scalar_type()));
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= config_.vocab_size)
    throw OutOfRange("token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                                std::to_string(config_.vocab_size) + ")");
  if (mask.defined() && mask.sizes() != ids.sizes())
    throw std::invalid_argument("attention mask has shape " + shape_str(mask) + ", the input ids " + shape_str(ids));
  if (!cu.defined()) return;
  // packing: one row of examples laid end to end, no padding
  if (cu.dim() != 1 || cu.numel() < 2)
    throw std::invalid_argument("cu_seqlens must be 1-D with at least 2 offsets [0, ..., length], got shape " + shape_str(cu));
  if (cu.scalar_type() != torch::kInt32 && cu.scalar_type() != torch::kInt64)
    throw std::invalid_argument("cu_seqlens must be int32 or int64, got " + dtype_str(cu.scalar_type()));
  if (ids.size(0) != 1)
    throw std::invalid_argument("a packed batch (cu_seqlens) is one row of examples, got " + std::to_string(ids.size(0)) + " rows");
  Tensor c = cu.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* o = c.data_ptr<int64_t>();
  const int64_t n = c.numel();
  if (o[0] != 0) throw std::invalid_argument("cu_seqlens[0] must be 0, got " + std::to_string(o[0]));
  for (int64_t e = 1; e < n; ++e)
    if (o[e] <= o[e - 1])
      throw std::invalid_argument("cu_seqlens must increase (every example holds a token): cu_seqlens[" + std::to_string(e) +
                                  "] = " + std::to_string(o[e]) + " after " + std::to_string(o[e - 1]));
  if (o[n - 1] != ids.size(1))
    throw std::invalid_argument("cu_seqlens ends at " + std::to_string(o[n - 1]) + ", the packed row holds " +
                                std::to_string(ids.size(1)) + " tokens");
  if (mask.defined() && (mask == 0).any().item<bool>())
    throw std::invalid_argument("a packed batch (cu_seqlens) has no padding: its attention mask must be all 1");
}

DecoderModel::Prep DecoderModel::prepare(const Tensor& ids_in, const Tensor& mask_in, const KvCache* cache, const Tensor& cu) const {
  const auto& c = config_;
  Prep pr;
  pr.ids = ids_in.to(device_);
  const int64_t B = pr.ids.size(0), S = pr.ids.size(1);
  Tensor mask = mask_in.defined() ? mask_in.to(device_, torch::kInt64) : torch::ones({B, S}, pr.ids.options());

  // Positions count real tokens: left padding does not shift them.
  pr.pos = (cache && cache->next_pos.defined()) ? cache->next_pos.unsqueeze(1) + (mask.cumsum(1) - 1).clamp_min(0)
                                                : (mask.cumsum(1) - 1).clamp_min(0);
  if (cu.defined()) {  // packed: positions restart at each example
    pr.cu_seqlens = cu.to(torch::kCPU, torch::kInt64);
    const int64_t n = pr.cu_seqlens.numel() - 1;
    Tensor starts = pr.cu_seqlens.narrow(0, 0, n);
    Tensor first = torch::repeat_interleave(starts, pr.cu_seqlens.narrow(0, 1, n) - starts);  // [S]
    pr.pos = (torch::arange(S, first.options()) - first).unsqueeze(0).to(device_);
  }
  pr.full_mask = (cache && cache->mask.defined()) ? torch::cat({cache->mask, mask}, 1) : mask;
  const int64_t T = pr.full_mask.size(1), past = T - S;

  Tensor freqs = pr.pos.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;  // [B, S, D/2]
  Tensor emb = torch::cat({freqs, freqs}, -1);
  pr.cos = emb.cos().to(dtype_).unsqueeze(1);  // [B, 1, S, D]
  pr.sin = emb.sin().to(dtype_).unsqueeze(1);

  pr.past = past;  // the attention's masks are made from positions (model/attention.cpp)
  if (!cu.defined() && (pr.full_mask == 0).any().item<bool>()) pr.key_mask = pr.full_mask;
  return pr;
}

Tensor DecoderModel::decoder_layer(int64_t l, const Tensor& h_in, const Prep& pr, KvCache* cache) const {
  const auto& c = config_;
  const int64_t B = h_in.size(0), S = h_in.size(1), D = c.head_dim, T = pr.full_mask.size(1);
  const int64_t nH = c.num_attention_heads, nKV = c.num_key_value_heads;
  const double scale = 1.0 / std::sqrt(c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : static_cast<double>(D));
  const std::string p = "model.layers." + std::to_string(l) + ".";
  Tensor h = h_in;
  Tensor x = rms_norm(h, p + "input_layernorm.weight");
  Tensor q, k, v;
  if (c.fused) {  // Phi3: one projection, split into q, k, v
    Tensor qkv = linear(p + "self_attn.qkv_proj", x);
    q = qkv.narrow(-1, 0, nH * D).reshape({B, S, nH, D});
    k = qkv.narrow(-1, nH * D, nKV * D).reshape({B, S, nKV, D});
    v = qkv.narrow(-1, (nH + nKV) * D, nKV * D).reshape({B, S, nKV, D}).transpose(1, 2);
  } else {
    q = linear(p + "self_attn.q_proj", x).view({B, S, nH, D});
    k = linear(p + "self_attn.k_proj", x).view({B, S, nKV, D});
    v = linear(p + "self_attn.v_proj", x).view({B, S, nKV, D}).transpose(1, 2);
  }
  if (c.qk_norm) {  // Qwen3: each head normalised over head_dim, before rotary
    q = rms_norm(q, p + "self_attn.q_norm.weight");
    k = rms_norm(k, p + "self_attn.k_norm.weight");
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  q = q * pr.cos + rotate_half(q) * pr.sin;
  k = k * pr.cos + rotate_half(k) * pr.sin;
  if (cache) {
    if (static_cast<int64_t>(cache->k.size()) > l) {
      k = torch::cat({cache->k[l], k}, 2);
      v = torch::cat({cache->v[l], v}, 2);
      cache->k[l] = k;
      cache->v[l] = v;
    } else {
      cache->k.push_back(k);
      cache->v.push_back(v);
    }
  }
  if (nKV != nH) {  // grouped-query attention: each key/value head serves nH / nKV query heads
    k = k.unsqueeze(2).expand({B, nKV, nH / nKV, T, D}).reshape({B, nH, T, D});
    v = v.unsqueeze(2).expand({B, nKV, nH / nKV, T, D}).reshape({B, nH, T, D});
  }
  // Gemma2: the sliding window on even layers only; others: on every layer when set
  const bool windowed = c.sliding_window > 0 && (!c.gemma2 || l % 2 == 0);
  // no mask without padding; packed rows have none: the examples' offsets are the mask
  const AttentionMask am{pr.past, windowed ? c.sliding_window : 0, pr.key_mask, scale, c.attn_logit_softcapping, pr.cu_seqlens};
  // long sequences by blocks or fused: memory linear in the length (4,096 tokens took 5 GB as scores)
  Tensor o = attention(q, k, v, am).transpose(1, 2).reshape({B, S, nH * D});
  // Gemma2 puts a norm after attention and after the MLP, and its own before the MLP (where the
  // others use post_attention_layernorm), and gates with the tanh GELU instead of SiLU.
  Tensor a = linear(p + "self_attn.o_proj", o);
  h = h + (c.gemma2 ? rms_norm(a, p + "post_attention_layernorm.weight") : a);
  x = rms_norm(h, p + (c.gemma2 ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"));
  Tensor gate, up;
  if (c.fused) {  // Phi3: gate_up_proj gives the gate, then up
    const int64_t I = c.intermediate_size;
    Tensor gu = linear(p + "mlp.gate_up_proj", x);
    gate = gu.narrow(-1, 0, I);
    up = gu.narrow(-1, I, I);
  } else {
    gate = linear(p + "mlp.gate_proj", x);
    up = linear(p + "mlp.up_proj", x);
  }
  Tensor m = linear(p + "mlp.down_proj", (c.gemma2 ? torch::gelu(gate, "tanh") : torch::silu(gate)) * up);
  return h + (c.gemma2 ? rms_norm(m, p + "post_feedforward_layernorm.weight") : m);
}

Tensor DecoderModel::head(const Tensor& h_in) const {
  Tensor h = rms_norm(h_in, "model.norm.weight");
  Tensor logits = config_.tie_word_embeddings ? torch::matmul(h, params_.at("model.embed_tokens.weight").t()) : linear("lm_head", h);
  const double cap = config_.final_logit_softcapping;
  return cap > 0 ? torch::tanh(logits / cap) * cap : logits;
}

Tensor DecoderModel::run(const Tensor& ids_in, const Tensor& mask_in, KvCache* cache, const Tensor& cu) {
  Prep pr = prepare(ids_in, mask_in, cache, cu);
  Tensor h = embed(pr.ids);
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) h = decoder_layer(l, h, pr, cache);
  if (cache) {
    cache->mask = pr.full_mask;
    cache->next_pos = pr.pos.select(1, pr.ids.size(1) - 1) + 1;
    // generation reads the last position's logits only: the head (vocab-wide) runs on it alone
    h = h.narrow(1, h.size(1) - 1, 1);
  }
  return h;
}

std::vector<std::shared_ptr<MultiHeadLoraLinear>> DecoderModel::layer_adapters(int64_t l) const {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  std::vector<std::shared_ptr<MultiHeadLoraLinear>> out;
  for (const auto& [name, lin] : linears_)
    if (lin.lora && name.rfind(p, 0) == 0) out.push_back(lin.lora);
  return out;
}

Tensor DecoderModel::backward_checkpointed(const Tensor& ids, const Tensor& mask, const Tensor& cu,
                                           const std::function<Tensor(const Tensor&, int64_t)>& loss_of_hidden) {
  check_ids(ids, mask, cu);
  const int64_t L = config_.num_hidden_layers;
  Prep pr;
  {
    torch::NoGradGuard no_grad;
    pr = prepare(ids, mask, nullptr, cu);
  }
  // Forward without keeping activations: each layer's input, and the dropout generators of its
  // adapters as they were before it ran (the recomputation must draw the same masks).
  std::vector<std::vector<std::shared_ptr<MultiHeadLoraLinear>>> adapters(L);
  for (int64_t l = 0; l < L; ++l) adapters[l] = layer_adapters(l);
  auto states = [&](int64_t l) {
    std::vector<Tensor> s;
    for (auto& a : adapters[l]) s.push_back(a->generator_state());
    return s;
  };
  auto rewind = [&](int64_t l, const std::vector<Tensor>& s) {
    for (size_t i = 0; i < s.size(); ++i) adapters[l][i]->set_generator_state(s[i]);
  };
  std::vector<Tensor> inputs;
  std::vector<std::vector<Tensor>> rng_before(L);
  Tensor h;
  {
    torch::NoGradGuard no_grad;
    h = embed(pr.ids);
    for (int64_t l = 0; l < L; ++l) {
      inputs.push_back(h);
      rng_before[l] = states(l);
      h = decoder_layer(l, h, pr, nullptr);
    }
  }
  // The generators' states after the forward: where the next step continues from.
  std::vector<std::vector<Tensor>> rng_after(L);
  for (int64_t l = 0; l < L; ++l) rng_after[l] = states(l);

  Tensor top = h.detach().requires_grad_(true);
  const int64_t B = top.size(0), S = top.size(1);
  const int64_t rows = std::max<int64_t>(1, head_chunk_elements_ / std::max<int64_t>(1, S * config_.vocab_size));
  Tensor loss;  // summed on the model's device: no host synchronisation per chunk
  for (int64_t r0 = 0; r0 < B; r0 += rows) {
    Tensor part = loss_of_hidden(top.narrow(0, r0, std::min(rows, B - r0)), r0);
    part.backward();  // the chunk's logits are freed before the next chunk's
    loss = loss.defined() ? loss + part.detach() : part.detach();
  }
  Tensor g = top.grad();
  for (int64_t l = L - 1; l >= 0; --l) {
    rewind(l, rng_before[l]);
    Tensor in = inputs[l].detach().requires_grad_(true);
    Tensor out = decoder_layer(l, in, pr, nullptr);
    torch::autograd::backward({out}, {g});
    g = in.grad();
    inputs[l] = Tensor();  // free as we go
  }
  for (int64_t l = 0; l < L; ++l) rewind(l, rng_after[l]);
  const Tensor& emb = params_.at("model.embed_tokens.weight");
  if (emb.requires_grad() && g.defined()) {  // full training: the embedding's gradient too
    Tensor e = embed(pr.ids);
    torch::autograd::backward({e}, {g});
  }
  return loss.detach();
}

void DecoderModel::set_head_chunk_elements(int64_t n) {
  if (n < 1) throw OutOfRange("head chunk elements must be at least 1, got " + std::to_string(n));
  head_chunk_elements_ = n;
}

Tensor DecoderModel::forward(const Tensor& ids, const Tensor& mask, const Tensor& cu) { return head(hidden(ids, mask, cu)); }

Tensor DecoderModel::hidden(const Tensor& ids, const Tensor& mask, const Tensor& cu) {
  check_ids(ids, mask, cu);
  return run(ids, mask, nullptr, cu);
}

Tensor DecoderModel::forward_cached(const Tensor& ids, const Tensor& mask, KvCache& cache) { return head(run(ids, mask, &cache)); }

}  // namespace rlora::model
