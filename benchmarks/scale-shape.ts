// The model shapes and the step benchmarks/scale.ts measures (issue: real model sizes): random
// weights in Qwen2.5-0.5B's and Qwen2.5-1.5B's shapes (their config.json values), R-LoRA with
// r = 4, N = 5 on gate/up/down, batch 4 x 256.
import type { HFConfig } from '../lib';

const QWEN2 = { architectures: ['Qwen2ForCausalLM'], vocab_size: 151936, rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true, max_position_embeddings: 32768 };

export const SCALE_SHAPES: Record<string, HFConfig> = {
  'qwen2.5-0.5b': { ...QWEN2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2 },
  'qwen2.5-1.5b': { ...QWEN2, hidden_size: 1536, intermediate_size: 8960, num_hidden_layers: 28, num_attention_heads: 12, num_key_value_heads: 2 },
};

export const SCALE_RUN = {
  adapter: { rank: 4, heads: 5, alpha: 32, dropout: 0.1, targetModules: ['gate_proj', 'up_proj', 'down_proj'] },
  batchSize: 4,
  sequence: 256,
  learningRate: 1e-4,
  threads: 2,
};

/** How the frozen base is kept. */
export interface ScaleVariant {
  name: string;
  dtype: 'float32' | 'bfloat16';
  quantize?: 'int8' | 'nf4';
  checkpointing: boolean;
}

const BASES: Omit<ScaleVariant, 'checkpointing'>[] = [
  { name: 'float32', dtype: 'float32' },
  { name: 'bf16 base', dtype: 'bfloat16' },
  { name: 'int8', dtype: 'float32', quantize: 'int8' },
  { name: 'nf4', dtype: 'float32', quantize: 'nf4' },
];
export const SCALE_VARIANTS: ScaleVariant[] = BASES.flatMap((v) => [false, true].map((checkpointing) => ({ ...v, checkpointing, name: v.name + (checkpointing ? ' + ckpt' : '') })));

/** A seeded batch of random token ids, every position labelled (the same on both sides). */
export function scaleBatch(vocab: number, rows = SCALE_RUN.batchSize): { inputIds: number[][]; attentionMask: number[][]; labels: number[][] } {
  let a = 12345;
  const rnd = (): number => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 4294967296);
  const inputIds = Array.from({ length: rows }, () => Array.from({ length: SCALE_RUN.sequence }, () => Math.floor(rnd() * vocab)));
  return { inputIds, attentionMask: inputIds.map((r) => r.map(() => 1)), labels: inputIds.map((r) => [...r]) };
}
