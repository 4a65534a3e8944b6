// From Hugging Face to llama.cpp: architecture names, the metadata keys of each architecture,
// tensor names, which tensors stay float32, and the row permutation of LLaMA's q_proj/k_proj (as
// llama.cpp's convert_hf_to_gguf.py writes them). Architectures are added here once a test model
// of theirs has been exported and run in llama.cpp (test/gguf.test.ts); others are refused.
import type { HFConfig } from '../model';
import type { NativeModelConfig } from '../native';
import type { GgufTensorType, GgufValue } from './format';
import { Q8_0_BLOCK } from './format';

/** The architectures rlora exports, by Hugging Face class, with their llama.cpp names. */
export const GGUF_ARCHITECTURES = { LlamaForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2' } as const;
export type GgufArchitecture = (typeof GGUF_ARCHITECTURES)[keyof typeof GGUF_ARCHITECTURES];

/** The dtypes of a GGUF export and the tensor type each writes for weight matrices. */
export const GGUF_DTYPES = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0' } as const satisfies Record<string, GgufTensorType>;
export type GgufDtype = keyof typeof GGUF_DTYPES;

/** general.file_type (llama.cpp's llama_ftype) of each export dtype. */
export const GGUF_FILE_TYPES: Record<GgufDtype, number> = { f32: 0, f16: 1, q8_0: 7, bf16: 32 };

/** transformers' default max_position_embeddings of each architecture, for a config.json without it. */
const DEFAULT_CONTEXT: Record<GgufArchitecture, number> = { llama: 2048, qwen2: 32768 };

/**
 * The llama.cpp architecture of a model, or an Error saying why it cannot be exported: an
 * architecture no test model has checked yet, or a setting llama.cpp's graph for it lacks.
 */
export function ggufArchitecture(c: NativeModelConfig): GgufArchitecture {
  const arch = (GGUF_ARCHITECTURES as Record<string, GgufArchitecture>)[c.architecture];
  if (arch === undefined) {
    throw new Error(
      `GGUF export of ${c.architecture} is not supported yet: rlora exports ${Object.keys(GGUF_ARCHITECTURES).join(' and ')}, ` +
        'the architectures whose exported test models have been run in llama.cpp',
    );
  }
  if (arch === 'qwen2') {
    if (c.slidingWindow > 0) throw new Error('GGUF export of Qwen2 with use_sliding_window: llama.cpp\'s qwen2 graph has no sliding window; the model would compute differently there');
    if (c.headDim * c.numAttentionHeads !== c.hiddenSize) throw new Error(`GGUF export of Qwen2 with head_dim ${c.headDim} x ${c.numAttentionHeads} heads != hidden_size ${c.hiddenSize}: llama.cpp's qwen2 graph needs them equal`);
  }
  return arch;
}

/** The architecture's metadata (`<arch>.context_length` ... `<arch>.rope.dimension_count`), as convert_hf_to_gguf.py writes it. */
export function architectureMetadata(arch: GgufArchitecture, config: HFConfig, c: NativeModelConfig): [string, GgufValue][] {
  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  const f32 = (value: number): GgufValue => ({ type: 'float32', value });
  const ctx = typeof config.max_position_embeddings === 'number' ? config.max_position_embeddings : DEFAULT_CONTEXT[arch];
  const kv: [string, GgufValue][] = [
    [`${arch}.vocab_size`, u32(c.vocabSize)],
    [`${arch}.context_length`, u32(ctx)],
    [`${arch}.embedding_length`, u32(c.hiddenSize)],
    [`${arch}.block_count`, u32(c.numHiddenLayers)],
    [`${arch}.feed_forward_length`, u32(c.intermediateSize)],
    [`${arch}.attention.head_count`, u32(c.numAttentionHeads)],
    [`${arch}.attention.head_count_kv`, u32(c.numKeyValueHeads)],
    [`${arch}.rope.freq_base`, f32(c.ropeTheta)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(c.rmsNormEps)],
    [`${arch}.rope.dimension_count`, u32(c.headDim)],
  ];
  if (c.headDim * c.numAttentionHeads !== c.hiddenSize || config.head_dim != null) {
    kv.push([`${arch}.attention.key_length`, u32(c.headDim)], [`${arch}.attention.value_length`, u32(c.headDim)]);
  }
  return kv;
}

const LAYER_NAMES: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.q_proj.bias': 'attn_q.bias',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.k_proj.bias': 'attn_k.bias',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.v_proj.bias': 'attn_v.bias',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.o_proj.bias': 'attn_output.bias',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.gate_proj.bias': 'ffn_gate.bias',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.up_proj.bias': 'ffn_up.bias',
  'mlp.down_proj.weight': 'ffn_down.weight',
  'mlp.down_proj.bias': 'ffn_down.bias',
};
const TOP_NAMES: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** llama.cpp's name of a Hugging Face tensor (`model.layers.3.mlp.up_proj.weight` -> `blk.3.ffn_up.weight`), or undefined. */
export function ggufTensorName(hfName: string): string | undefined {
  if (Object.hasOwn(TOP_NAMES, hfName)) return TOP_NAMES[hfName];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  return m && Object.hasOwn(LAYER_NAMES, m[2]) ? `blk.${m[1]}.${LAYER_NAMES[m[2]]}` : undefined;
}

/**
 * The head count by which a tensor's rows are permuted, or 0: LLaMA's q_proj (heads) and k_proj
 * (key/value heads), weights and biases, and the lora_B of adapters on them. llama.cpp's LLaMA
 * rotates interleaved pairs (x0, x1), (x2, x3) ... where Hugging Face rotates halves; the
 * converter reorders each head's rows so both compute the same (convert_hf_to_gguf.py permute).
 */
export function permutedHeads(arch: GgufArchitecture, c: NativeModelConfig, hfModule: string): number {
  if (arch !== 'llama') return 0;
  if (/\.self_attn\.q_proj$/.test(hfModule)) return c.numAttentionHeads;
  if (/\.self_attn\.k_proj$/.test(hfModule)) return c.numKeyValueHeads;
  return 0;
}

/**
 * Rows reordered as convert_hf_to_gguf.py's permute: each head's rows (h, j, i) with j in {0, 1}
 * (first or second half), i < headDim / 2, go to (h, i, j). `values` holds `rows` x `cols`.
 */
export function permuteRows(values: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const headRows = rows / heads;
  if (!Number.isInteger(headRows) || headRows % 2 !== 0) throw new RangeError(`cannot permute ${rows} rows over ${heads} heads (each head needs an even number of rows)`);
  const half = headRows / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * headRows + j * half + i) * cols;
        const to = (h * headRows + 2 * i + j) * cols;
        out.set(values.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

/**
 * LLaMA 3's rope scaling as llama.cpp takes it: `rope_freqs.weight`, one divisor per rotary
 * frequency (convert_hf_to_gguf.py's generate_extra_tensors), or null without llama3 scaling.
 */
export function ropeFreqs(c: NativeModelConfig): Float32Array | null {
  const s = c.ropeScaling;
  if (!s) return null;
  const dim = c.headDim;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  const out = new Float32Array(dim / 2);
  for (let k = 0; k < dim / 2; k++) {
    // in float32, as the converter's torch computes the frequencies
    const freq = Math.fround(1 / Math.fround(c.ropeTheta ** Math.fround((2 * k) / dim)));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[k] = 1;
    else if (wavelen > lowWavelen) out[k] = s.factor;
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[k] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/**
 * The tensor type a tensor is written in, as convert_hf_to_gguf.py chooses it: vectors (norms,
 * biases, rope_freqs) stay F32; matrices take the export's type, and Q8_0 falls back to F16 for
 * a matrix whose rows are not whole blocks of 32.
 */
export function tensorTypeFor(ggufName: string, shape: readonly number[], dtype: GgufDtype): GgufTensorType {
  if (shape.length <= 1 || ggufName.endsWith('_norm.weight') || !/\.(weight|lora_a|lora_b)$/.test(ggufName)) return 'F32';
  const t = GGUF_DTYPES[dtype];
  return t === 'Q8_0' && shape[shape.length - 1] % Q8_0_BLOCK !== 0 ? 'F16' : t;
}
