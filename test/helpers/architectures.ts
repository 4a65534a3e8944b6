// One tiny random config per supported family and quirk (GQA, llama3 rope scaling, sliding
// windows, Qwen3's head_dim, Phi3's fused projections, Gemma2's soft-capping), for the tests that
// run every architecture.
import type { HFConfig } from '../../lib';

const base = { vocab_size: 61, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, rms_norm_eps: 1e-5 };
export const ARCHITECTURES: Record<string, HFConfig> = {
  llama: { ...base, architectures: ['LlamaForCausalLM'], rope_theta: 10000 },
  qwen2: { ...base, architectures: ['Qwen2ForCausalLM'], num_key_value_heads: 2, rope_theta: 1e6, tie_word_embeddings: true },
  'llama-gqa-llama3': {
    ...base,
    architectures: ['LlamaForCausalLM'],
    num_key_value_heads: 1,
    rope_theta: 500000,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    attention_bias: true,
  },
  'mistral-window': { ...base, architectures: ['MistralForCausalLM'], num_key_value_heads: 2, sliding_window: 3 },
  // head_dim 16 is not hidden / heads (8): q/k/v are wider than the hidden state, as in Qwen3's configs
  qwen3: { ...base, architectures: ['Qwen3ForCausalLM'], num_key_value_heads: 2, head_dim: 16, rope_theta: 1e6, tie_word_embeddings: true, attention_bias: true },
  // fused qkv_proj and gate_up_proj; a sliding window (Phi-3-mini-4k has 2047)
  phi3: { ...base, architectures: ['Phi3ForCausalLM'], num_key_value_heads: 2, sliding_window: 4 },
  // soft caps small enough that tanh bends the scores and logits of these tiny random weights
  gemma2: {
    ...base, architectures: ['Gemma2ForCausalLM'], num_key_value_heads: 2, head_dim: 16, query_pre_attn_scalar: 12,
    attn_logit_softcapping: 0.05, final_logit_softcapping: 0.5, sliding_window: 3, initializer_range: 0.2,
  },
};
