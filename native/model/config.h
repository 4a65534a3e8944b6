// Configuration of a LLaMA/Qwen2/Mistral-family decoder (Hugging Face config.json keys).
#pragma once

#include <cstdint>
#include <string>

namespace rlora::model {

struct RopeScaling {
  bool llama3 = false;  // rope_scaling.rope_type (or type) == "llama3"
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool qkv_bias = false;        // Qwen2: q/k/v projections have a bias
  bool qk_norm = false;         // Qwen3: RMSNorm over head_dim on each query and key head, before rotary
  bool fused = false;           // Phi3: one qkv_proj (q, k, v rows in that order) and one gate_up_proj (gate, then up)
  // Gemma2: norms scale by (1 + weight) in float32; embeddings times sqrt(hidden_size); norms after
  // attention and around the MLP too; GeGLU with the tanh GELU; the sliding window on even layers.
  bool gemma2 = false;
  double attn_logit_softcapping = 0.0;   // scores = cap * tanh(scores / cap); 0: none
  double final_logit_softcapping = 0.0;  // the same on the logits
  double query_pre_attn_scalar = 0.0;    // attention scale query_pre_attn_scalar^-1/2; 0: head_dim
  bool attention_bias = false;  // LLaMA attention_bias: q/k/v/o projections have a bias
  bool mlp_bias = false;        // LLaMA mlp_bias
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  int64_t sliding_window = 0;  // Mistral (and Qwen2 with use_sliding_window): keys older than this are masked; 0: none
};

// Throws std::invalid_argument naming the bad field.
void validate(const ModelConfig& c);

}  // namespace rlora::model
