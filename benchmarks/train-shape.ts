// The model and run the training benchmark measures (issue: LLaMA-shaped, about 20M parameters,
// R-LoRA on gate/up/down with r = 4, N = 5, the paper's setting).
export const TRAIN_SHAPE = {
  config: {
    architectures: ['LlamaForCausalLM'],
    vocab_size: 8192,
    hidden_size: 512,
    intermediate_size: 1376,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-6,
  },
  adapter: { rank: 4, heads: 5, alpha: 32, dropout: 0.1, targetModules: ['gate_proj', 'up_proj', 'down_proj'] },
  batchSize: 4,
  sequence: 128,
  learningRate: 2e-4,
  warmup: 2,
};
