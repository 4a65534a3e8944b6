// Model: a LLaMA/Qwen2/Mistral-family causal language model loaded from a Hugging Face folder
// (config.json + safetensors) or made from a config, computed natively (DESIGN.md section 3).
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import { native, NativeModel, NativeModelConfig } from './native';
import { forEachSafetensor, saveSafetensors } from './safetensors';
import { Device, Dtype, Tensor } from './tensor';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'MistralForCausalLM'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** A Hugging Face config.json (the keys rlora reads; others are kept and written back). */
export interface HFConfig {
  architectures?: string[];
  model_type?: string;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  rope_scaling?: { rope_type?: string; type?: string; factor?: number; low_freq_factor?: number; high_freq_factor?: number; original_max_position_embeddings?: number } | null;
  attention_bias?: boolean;
  mlp_bias?: boolean;
  tie_word_embeddings?: boolean;
  initializer_range?: number;
  sliding_window?: number | null;
  use_sliding_window?: boolean;
  bos_token_id?: number | number[] | null;
  eos_token_id?: number | number[] | null;
  pad_token_id?: number | null;
  max_position_embeddings?: number;
  torch_dtype?: string;
  [key: string]: unknown;
}

export interface ModelOptions {
  /** Parameter dtype; checkpoint tensors are converted to it. Default 'float32'. */
  dtype?: Dtype;
  /** Default 'cpu'. */
  device?: Device;
}

/** Token ids: nested arrays, a typed array with `shape`, or an integer Tensor, [batch, sequence]. */
export type TokenBatch = number[][] | Int32Array | BigInt64Array | Tensor;

export interface ForwardOptions {
  /** 1 for tokens, 0 for padding (left or right), same forms as the ids. */
  attentionMask?: TokenBatch;
  /** [batch, sequence] when the ids (and mask) are flat typed arrays. */
  shape?: [number, number];
}

export interface GenerateOptions extends ForwardOptions {
  /** Default 32. */
  maxNewTokens?: number;
  /** 0 (default) is greedy decoding. */
  temperature?: number;
  /** Sample from the k most likely tokens only; 0 (default) is off. */
  topK?: number;
  /** Sample from the smallest set of tokens whose probability reaches p; 1 (default) is off. */
  topP?: number;
  /** A row stops at this token (or any of these). Default: the config's eos_token_id. */
  eosTokenId?: number | number[];
  /** Written after a row has stopped. Default: the config's pad_token_id, else the first eos id, else 0. */
  padTokenId?: number;
  /** Seed of the sampling. Default 0. */
  seed?: number;
}

function architectureOf(config: HFConfig): Architecture {
  const named = config.architectures?.[0];
  const byType: Record<string, Architecture> = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', mistral: 'MistralForCausalLM' };
  const arch = named ?? (config.model_type ? byType[config.model_type] : undefined);
  if (!arch || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new Error(
      `unsupported architecture ${JSON.stringify(named ?? config.model_type ?? null)}; rlora supports ${SUPPORTED_ARCHITECTURES.join(', ')}`,
    );
  }
  return arch as Architecture;
}

/** Fills the defaults of each architecture's transformers config class. */
export function normalizeConfig(config: HFConfig): NativeModelConfig {
  if (typeof config !== 'object' || config === null) throw new TypeError('config must be an object (the contents of config.json)');
  const architecture = architectureOf(config);
  const need = (key: keyof HFConfig): number => {
    const v = config[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new Error(`config.${String(key)} must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const heads = need('num_attention_heads');
  const hidden = need('hidden_size');
  let ropeScaling: NativeModelConfig['ropeScaling'] = null;
  if (config.rope_scaling) {
    const kind = config.rope_scaling.rope_type ?? config.rope_scaling.type;
    if (kind !== 'llama3' && kind !== 'default') {
      throw new Error(`rope_scaling of type ${JSON.stringify(kind)} is not supported; supported: llama3`);
    }
    if (kind === 'llama3') {
      const r = config.rope_scaling;
      ropeScaling = {
        factor: r.factor ?? 8,
        lowFreqFactor: r.low_freq_factor ?? 1,
        highFreqFactor: r.high_freq_factor ?? 4,
        originalMaxPositionEmbeddings: r.original_max_position_embeddings ?? 8192,
      };
    }
  }
  const sliding =
    architecture === 'MistralForCausalLM' ? (config.sliding_window ?? 0) : architecture === 'Qwen2ForCausalLM' && config.use_sliding_window ? (config.sliding_window ?? 0) : 0;
  return {
    architecture,
    vocabSize: need('vocab_size'),
    hiddenSize: hidden,
    intermediateSize: need('intermediate_size'),
    numHiddenLayers: need('num_hidden_layers'),
    numAttentionHeads: heads,
    numKeyValueHeads: config.num_key_value_heads ?? heads,
    headDim: config.head_dim ?? Math.floor(hidden / heads),
    rmsNormEps: config.rms_norm_eps ?? 1e-6,
    ropeTheta: config.rope_theta ?? 10000,
    ropeScaling,
    qkvBias: architecture === 'Qwen2ForCausalLM',
    attentionBias: architecture === 'LlamaForCausalLM' ? (config.attention_bias ?? false) : false,
    mlpBias: architecture === 'LlamaForCausalLM' ? (config.mlp_bias ?? false) : false,
    tieWordEmbeddings: config.tie_word_embeddings ?? false,
    initializerRange: config.initializer_range ?? 0.02,
    slidingWindow: sliding ?? 0,
  };
}

/** Converts token ids (or a mask) to an int64 [batch, sequence] Tensor. */
export function toTokenTensor(ids: TokenBatch, what: string, shape?: [number, number]): Tensor {
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'int64' && ids.dtype !== 'int32' && ids.dtype !== 'uint8' && ids.dtype !== 'bool') {
      throw new TypeError(`${what} must be an integer Tensor, got dtype ${ids.dtype}`);
    }
    return ids.dtype === 'int64' ? ids : ids.to('int64');
  }
  if (ids instanceof Int32Array || ids instanceof BigInt64Array) {
    if (!shape) throw new TypeError(`${what}: a typed array needs options.shape [batch, sequence]`);
    return Tensor.from(ids, shape, { dtype: 'int64' });
  }
  if (!Array.isArray(ids) || ids.length === 0) throw new RangeError(`${what} must be a non-empty batch [batch][sequence] of token ids`);
  const len = Array.isArray(ids[0]) ? ids[0].length : -1;
  ids.forEach((row, i) => {
    if (!Array.isArray(row)) throw new TypeError(`${what}[${i}] must be an array of token ids, got ${util.inspect(row, { depth: 0 })}`);
    if (row.length !== len) throw new RangeError(`${what} rows must have equal length (pad them and pass attentionMask): row 0 has ${len}, row ${i} has ${row.length}`);
  });
  return Tensor.from(ids as number[][], undefined, { dtype: 'int64' });
}

function rows(t: Tensor): number[][] {
  const [b, s] = t.shape;
  const flat = t.data() as BigInt64Array;
  return Array.from({ length: b }, (_, i) => Array.from(flat.subarray(i * s, (i + 1) * s), Number));
}

const asList = (v: number | number[] | null | undefined): number[] => (v == null ? [] : Array.isArray(v) ? v : [v]);

export class Model {
  /** @internal */
  readonly native: NativeModel;
  /** The Hugging Face config (as read, or as given). */
  readonly config: HFConfig;
  /** The config with every default filled in. */
  readonly resolvedConfig: NativeModelConfig;
  /** The folder it was loaded from, if any. */
  readonly source?: string;

  private constructor(config: HFConfig, options: ModelOptions, source?: string) {
    this.config = config;
    this.resolvedConfig = normalizeConfig(config);
    this.native = new native.NativeModel(this.resolvedConfig, options.dtype ?? 'float32', options.device ?? 'cpu');
    this.source = source;
  }

  /** A new model with random weights (Hugging Face initialisation), for tests, demos and pretraining. */
  static fromConfig(config: HFConfig, options: ModelOptions & { seed?: number } = {}): Model {
    const m = new Model({ ...config, architectures: [architectureOf(config)] }, options);
    m.native.initRandom(options.seed ?? 0);
    return m;
  }

  /**
   * Loads `dir/config.json` and `dir/model.safetensors` (or the shards listed in
   * `model.safetensors.index.json`), converting F32/F16/BF16 weights to `options.dtype`. Reads one
   * tensor at a time.
   */
  static async fromPretrained(dir: string, options: ModelOptions = {}): Promise<Model> {
    const configPath = path.join(dir, 'config.json');
    if (!fs.existsSync(configPath)) throw new Error(`no config.json in ${dir}: expected a Hugging Face model folder`);
    let config: HFConfig;
    try {
      config = JSON.parse(fs.readFileSync(configPath, 'utf8')) as HFConfig;
    } catch (e) {
      throw new Error(`${configPath} is not valid JSON: ${(e as Error).message}`);
    }
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    let files: string[];
    if (fs.existsSync(single)) files = [single];
    else if (fs.existsSync(index)) {
      const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map;
      if (!map) throw new Error(`${index} has no weight_map`);
      files = [...new Set(Object.values(map))].map((f) => path.join(dir, f));
      for (const f of files) if (!fs.existsSync(f)) throw new Error(`shard ${f} listed in ${index} does not exist`);
    } else {
      throw new Error(`no weights in ${dir}: expected model.safetensors or model.safetensors.index.json`);
    }
    const model = new Model(config, options, dir);
    const expected = new Map(model.native.parameterSpecs().map((s) => [s.name, s.shape]));
    const loaded = new Set<string>();
    const ignorable = (name: string): boolean =>
      name.endsWith('.rotary_emb.inv_freq') || (model.resolvedConfig.tieWordEmbeddings && name === 'lm_head.weight');
    for (const file of files) {
      forEachSafetensor(
        file,
        (e, t) => {
          model.native.setParameter(e.name, t.native);
          loaded.add(e.name);
        },
        (e) => {
          if (expected.has(e.name)) return true;
          if (ignorable(e.name)) return false;
          throw new Error(`${file} holds ${e.name}, which a ${model.resolvedConfig.architecture} with this config does not have`);
        },
      );
    }
    const missing = [...expected.keys()].filter((n) => !loaded.has(n));
    if (missing.length) {
      throw new Error(`the checkpoint in ${dir} lacks ${missing.length} tensor(s): ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
    }
    return model;
  }

  /** Writes config.json and model.safetensors (Hugging Face names; transformers loads them). */
  save(dir: string): void {
    fs.mkdirSync(dir, { recursive: true });
    const tensors: Record<string, Tensor> = {};
    for (const { name } of this.native.parameterSpecs()) tensors[name] = new Tensor(this.native.parameter(name));
    const config = { ...this.config, architectures: [this.resolvedConfig.architecture], torch_dtype: this.dtype };
    saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  }

  get dtype(): Dtype {
    return this.native.dtype;
  }
  get device(): string {
    return this.native.device;
  }

  /** Logits [batch, sequence, vocab] for a batch of token ids. Runs off the JS thread. */
  async forward(inputIds: TokenBatch, options: ForwardOptions = {}): Promise<Tensor> {
    const ids = toTokenTensor(inputIds, 'inputIds', options.shape);
    const mask = options.attentionMask === undefined ? null : toTokenTensor(options.attentionMask, 'attentionMask', options.shape);
    return new Tensor(await this.native.forward(ids.native, mask?.native ?? null));
  }

  /**
   * Continues each row (left-padded when lengths differ) with a key/value cache. Returns the full
   * rows: prompt then new tokens; a row that stopped early is filled with padTokenId.
   */
  async generate(inputIds: TokenBatch, options: GenerateOptions = {}): Promise<number[][]> {
    const ids = toTokenTensor(inputIds, 'inputIds', options.shape);
    const mask = options.attentionMask === undefined ? null : toTokenTensor(options.attentionMask, 'attentionMask', options.shape);
    const eos = options.eosTokenId !== undefined ? asList(options.eosTokenId) : asList(this.config.eos_token_id);
    const out = await this.native.generate(ids.native, mask?.native ?? null, {
      maxNewTokens: options.maxNewTokens ?? 32,
      temperature: options.temperature ?? 0,
      topK: options.topK ?? 0,
      topP: options.topP ?? 1,
      eosTokenIds: eos,
      padTokenId: options.padTokenId ?? this.config.pad_token_id ?? eos[0] ?? 0,
      seed: options.seed ?? 0,
    });
    return rows(new Tensor(out));
  }

  /** Number of parameters of the base model. */
  parameterCount(): number {
    return this.native.parameterCount();
  }

  /** Every module with parameters, by Hugging Face name ("model.layers.0.self_attn.q_proj", ...). */
  moduleNames(): string[] {
    const names = this.native.parameterSpecs().map((s) => s.name.replace(/\.(weight|bias)$/, ''));
    return [...new Set(names)];
  }

  /** The linear modules (what an adapter can wrap). */
  linearModuleNames(): string[] {
    return this.native.linearNames();
  }

  /** @internal The frozen weight and bias of a linear module (sharing storage). */
  linearParameters(module: string): { weight: Tensor; bias: Tensor | null } {
    const specs = new Set(this.native.parameterSpecs().map((s) => s.name));
    return {
      weight: new Tensor(this.native.parameter(`${module}.weight`)),
      bias: specs.has(`${module}.bias`) ? new Tensor(this.native.parameter(`${module}.bias`)) : null,
    };
  }

  [util.inspect.custom](): string {
    const c = this.resolvedConfig;
    return (
      `Model(${c.architecture}, layers=${c.numHiddenLayers}, hidden=${c.hiddenSize}, intermediate=${c.intermediateSize}, ` +
      `heads=${c.numAttentionHeads}/${c.numKeyValueHeads} kv, vocab=${c.vocabSize}, parameters=${this.parameterCount().toLocaleString('en-US')}, ` +
      `dtype=${this.dtype}, device=${this.device})`
    );
  }
}
