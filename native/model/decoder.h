// A decoder-only transformer with the Hugging Face conventions of the six supported families
// (docs/ARCHITECTURE.md section 3): LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM,
// MistralForCausalLM, Phi3ForCausalLM and Gemma2ForCausalLM. One code path, with the differences
// as ModelConfig flags: RMSNorm in float32 (Gemma2: times 1 + weight), rotary embeddings
// (rotate-half, optional llama3 scaling), grouped-query attention with causal and padding masks
// (optional sliding window, Gemma2's soft-capping), q/k/v biases (Qwen2), per-head q/k norms
// (Qwen3), fused qkv and gate_up projections (Phi3), SwiGLU MLP (Gemma2: tanh-GELU gate and its
// extra norms), tied or separate lm_head. Parameters carry the Hugging Face names, and any linear
// module can be wrapped by a MultiHeadLoraLinear. Generation (the sampling loop over the key/value
// cache) is in model/generate.h.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/quant.h"
#include "rlora/multihead_lora.h"

namespace rlora::model {

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// The keys and values of every position a cached forward has seen (generation).
struct KvCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, n_kv, T, D]
  torch::Tensor mask;               // [B, T] of everything seen
  torch::Tensor next_pos;           // [B] position of the next token
};

class DecoderModel {
 public:
  // Parameters are allocated (uninitialised) in `dtype` on `device`; fill them with
  // init_random() or set_parameter().
  DecoderModel(const ModelConfig& config, torch::ScalarType dtype, torch::Device device);

  const ModelConfig& config() const { return config_; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::Device device() const { return device_; }

  // Every parameter with its Hugging Face name and shape, in a fixed order.
  const std::vector<ParamSpec>& parameter_specs() const { return specs_; }
  // Copies (converting dtype and device) into a parameter; throws naming the name or both shapes.
  void set_parameter(const std::string& name, const torch::Tensor& value);
  // The parameter itself (shares storage).
  torch::Tensor parameter(const std::string& name) const;
  // Hugging Face initialisation: N(0, initializer_range) for linear and embedding weights, zero
  // biases, unit norms. Drawn on the CPU from `seed`. With `quantize` ("int8" or "nf4"), each
  // decoder linear weight is quantized right after it is drawn, so the float weights never exist
  // all at once (quantize(kind) then marks the model); the values equal init, then quantize.
  void init_random(uint64_t seed, const std::string& quantize = "");
  int64_t parameter_count() const;
  // A number that differs between two models whose weights differ (in practice always): every
  // parameter's sum and 64 evenly spaced values of it, weighted by position. Data-parallel ranks
  // compare it to refuse ranks whose base weights differ. Reads each weight once (a quantized one
  // is dequantized, one at a time).
  double fingerprint() const;
  // Makes every base parameter trainable (or frozen again) and returns them in spec order, for
  // full training (pretraining a small model). Frozen is the default.
  std::vector<torch::Tensor> set_trainable(bool on);

  // Quantizes every decoder layer's linear weight ("int8" or "nf4"; the embeddings, norms and
  // lm_head stay): the float weights are freed, products dequantize a few rows at a time. Refused
  // with adapters attached or when already quantized. parameter() of a quantized weight gives a
  // dequantized copy; set_parameter, init_random and set_trainable refuse.
  void quantize(const std::string& kind);
  // Quantizes one module's weight now (loading: each weight right after it is read, so the float
  // weights never exist all at once); quantize(kind) then does the rest and marks the model.
  void quantize_module(const std::string& module, const std::string& kind);
  // "int8", "nf4", or "" when not quantized.
  const std::string& quantization() const { return quantization_; }
  // The tensor an adapter layer for `module` is made from: the weight itself, or for a quantized
  // module a placeholder of its shape and dtype (one value of storage).
  torch::Tensor linear_weight(const std::string& module) const;

  // Linear module names ("model.layers.0.self_attn.q_proj", ..., "lm_head" unless tied).
  std::vector<std::string> linear_names() const;
  bool is_linear(const std::string& module) const;
  // Wraps (or, with nullptr, unwraps) a linear module. The layer must have been made from that
  // module's weight.
  void set_adapter(const std::string& module, std::shared_ptr<MultiHeadLoraLinear> layer);
  std::shared_ptr<MultiHeadLoraLinear> adapter(const std::string& module) const;
  // Every attached adapter layer (the binding's job locks take theirs: binding/locks.h).
  std::vector<std::shared_ptr<MultiHeadLoraLinear>> adapters() const;

  // ids [B, S] int64 in [0, vocab); mask [B, S] (1 = token, 0 = padding) or undefined. Positions
  // count real tokens only, so left padding does not shift them. Returns logits [B, S, vocab].
  // cu_seqlens (packing, the varlen layout): one row (B == 1) holding several examples, example e
  // at positions [cu[e], cu[e + 1]) (int32 or int64, cu[0] == 0, increasing, the last == S), no
  // padding; positions restart at each example and attention never crosses one, so each
  // example's logits are those it has alone.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& cu_seqlens = {});
  // forward() in two halves, for a loss that needs the logits of some positions only (training
  // reads those whose next token is labelled): the last decoder layer's output [B, S, hidden]
  // (checked as forward), and the head (final norm, lm_head or the tied embedding, Gemma2's
  // soft-capping) of any [..., hidden] rows. head(hidden(x)) == forward(x).
  torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& cu_seqlens = {});
  torch::Tensor head(const torch::Tensor& h) const;
  // Throws unless ids, mask and cu_seqlens are a valid input of forward() (shape, dtype,
  // vocabulary, offsets).
  void check_ids(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& cu_seqlens = {}) const;
  // The forward of the next ids.size(1) positions of every row after those in `cache`, which it
  // extends; unchecked (check the first ids with check_ids). Returns the logits of the last
  // position only, [B, 1, vocab] (the head runs on nothing else).
  torch::Tensor forward_cached(const torch::Tensor& ids, const torch::Tensor& mask, KvCache& cache);

  // Activation checkpointing (training): runs the forward without keeping activations (only
  // each decoder layer's input), then `loss_of_hidden(h, row0).backward()` for chunks of batch
  // rows (h [rows, S, hidden]: the last layer's output of rows row0.., which the loss passes
  // through head(); chunks of at most set_head_chunk_elements() logits, default 2^25, but at least
  // one row: a 150k vocabulary's logits, their log-softmax and gradient never exist for the whole
  // batch), then each layer again, last to
  // first, with gradients, passing the gradient down. Dropout draws the same masks in the
  // recomputation (the adapters' generators are rewound) and ends where an ordinary forward leaves
  // them, so the gradients are those of forward + backward. Returns the summed loss of the chunks
  // (detached, on the model's device).
  torch::Tensor backward_checkpointed(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& cu_seqlens,
                                      const std::function<torch::Tensor(const torch::Tensor&, int64_t)>& loss_of_hidden);
  // The most logits one chunk of backward_checkpointed's head may hold (at least 1).
  void set_head_chunk_elements(int64_t n);

  // One job at a time: which locks a job takes is decided in one place, binding/locks.h.
  std::mutex& mutex() const { return mutex_; }

 private:
  struct Linear {
    std::string weight, bias;  // parameter names (bias empty when none)
    std::shared_ptr<MultiHeadLoraLinear> lora;
    std::shared_ptr<QuantWeight> quant;  // set when quantized
  };

  void add_param(const std::string& name, std::vector<int64_t> shape);
  void add_linear(const std::string& module, int64_t out, int64_t in, bool bias);
  torch::Tensor linear(const std::string& module, const torch::Tensor& x) const;
  torch::Tensor rms_norm(const torch::Tensor& x, const std::string& weight) const;
  // What every layer of one forward shares: ids on the device, positions, rotary tables, the
  // mask of everything seen (with a cache), the packed examples' offsets (CPU int64).
  struct Prep {
    torch::Tensor ids, pos, full_mask, cos, sin, cu_seqlens;
    torch::Tensor key_mask;  // full_mask when it holds padding, else undefined (attention skips masks)
    int64_t past = 0;  // positions already in the cache before these ids
  };
  torch::Tensor embed(const torch::Tensor& ids) const;
  Prep prepare(const torch::Tensor& ids, const torch::Tensor& mask, const KvCache* cache, const torch::Tensor& cu_seqlens = {}) const;
  torch::Tensor decoder_layer(int64_t l, const torch::Tensor& h, const Prep& pr, KvCache* cache) const;
  std::vector<std::shared_ptr<MultiHeadLoraLinear>> layer_adapters(int64_t l) const;
  // quantize / quantize_module: the checks both make, one module's codes, and putting them in place
  void check_quantizable(const std::string& kind) const;
  std::shared_ptr<QuantWeight> quantized(const std::string& module, const std::string& kind) const;
  void install(const std::string& module, std::shared_ptr<QuantWeight> q);
  // The decoder layers' output (with a cache: the last position's only).
  torch::Tensor run(const torch::Tensor& ids, const torch::Tensor& mask, KvCache* cache, const torch::Tensor& cu_seqlens = {});

  ModelConfig config_;
  torch::ScalarType dtype_;
  torch::Device device_;
  std::vector<ParamSpec> specs_;
  std::map<std::string, torch::Tensor> params_;
  std::map<std::string, Linear> linears_;
  torch::Tensor inv_freq_;  // [D/2] float32
  std::string quantization_;
  std::string partial_kind_;  // modules quantized one by one while loading
  int64_t head_chunk_elements_ = int64_t(1) << 25;
  mutable std::mutex mutex_;
};

}  // namespace rlora::model
