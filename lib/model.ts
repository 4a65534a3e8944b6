// Model: a LLaMA/Qwen2/Mistral-family causal language model loaded from a Hugging Face folder
// (config.json + safetensors) or made from a config, computed natively (docs/ARCHITECTURE.md section 3).
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import { assertNotTraining, attachedTo } from './activity';
import { checkAborted, expandRows, GenerationDefaults, generationDefaults, GenerationRun, resolveSampling, ResolvedSampling, SAMPLING_OPTION_NAMES, SamplingOptions, stopList } from './generation';
import { native, NativeModel, NativeModelConfig } from './native';
import { dtypeByteSize, forEachSafetensor, readSafetensorsHeader, saveSafetensors } from './safetensors';
import { Device, Dtype, Tensor } from './tensor';
import { cuSeqlensTensor, longestPacked, oneRow, rows, toMaskTensor, toTokenTensor, TokenBatch } from './token-batch';
import { writeFileFully } from './util/files';
import { replaceFolder } from './replace-folder';
import { readJsonFile } from './util/json';
import { checkChoice, checkKeys, inspectSymbol, isPlainObject, show } from './util/options';
import { checkHubOptions, HUB_OPTION_NAMES, HubOptions, HubSource, resolveRepo } from './hub/resolve';


export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM', 'MistralForCausalLM', 'Phi3ForCausalLM', 'Gemma2ForCausalLM'] as const;
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
  /**
   * Keep every decoder layer's linear weight quantized, as QLoRA does (the embeddings, norms and a
   * separate lm_head stay in `dtype`): 'int8' (one absmax scale per output row) or 'nf4' (4-bit
   * NormalFloat in blocks of 64 values with one absmax each; input sizes must be multiples of 64).
   * Products dequantize a few rows at a time in forward and backward; the weights are frozen
   * (train adapters). An adapter trained on a quantized base loads on the float base. Default: none.
   */
  quantize?: 'int8' | 'nf4';
}

export type { TokenBatch };

export interface ForwardOptions {
  /** 1 for tokens, 0 for padding (left or right), same forms as the ids. */
  attentionMask?: TokenBatch;
  /** [batch, sequence] when the ids (and mask) are flat typed arrays. */
  shape?: [number, number];
  /**
   * Packing: the one row holds several examples end to end, example e at positions
   * [cuSeqlens[e], cuSeqlens[e + 1]) (from 0 to the row's length). Positions restart at each
   * example and attention never crosses one, so each example's logits are those it has alone.
   */
  cuSeqlens?: ArrayLike<number>;
}

const GENERATE_OPTION_NAMES = ['attentionMask', 'shape', 'padTokenId', 'stop', 'tokenizer', ...SAMPLING_OPTION_NAMES] as const satisfies readonly (keyof GenerateOptions)[];
const STREAM_OPTION_NAMES = ['shape', ...SAMPLING_OPTION_NAMES.filter((n) => n !== 'numReturnSequences')] as const;

/** The options of `Model.stream`: those of `Model.generate` for one row, one sequence, without padding. */
export type StreamOptions = Omit<SamplingOptions, 'numReturnSequences'> & Pick<ForwardOptions, 'shape'>;

/** What decodes token ids to text (a Tokenizer), for stop strings in Model.generate. */
export interface TokenDecoder {
  decode(ids: number[]): string;
}

export interface GenerateOptions extends ForwardOptions, SamplingOptions {
  /** Written after a row has stopped. Default: generation_config.json's pad_token_id, then config.json's, then the first eos id, then 0. */
  padTokenId?: number;
  /**
   * Strings that end a row: it stops after the token that completes one (the text functions,
   * generateText and generateChat, cut the text before it). Needs `tokenizer` to decode the rows.
   */
  stop?: string | string[];
  /** Decodes the new tokens for `stop` (a Tokenizer). */
  tokenizer?: TokenDecoder;
}

function architectureOf(config: HFConfig): Architecture {
  const named = Array.isArray(config.architectures) ? config.architectures[0] : undefined;
  const byType: Record<string, Architecture> = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', mistral: 'MistralForCausalLM', phi3: 'Phi3ForCausalLM', gemma2: 'Gemma2ForCausalLM' };
  const arch = named ?? (typeof config.model_type === 'string' && Object.hasOwn(byType, config.model_type) ? byType[config.model_type] : undefined);
  if (!arch || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new Error(
      `unsupported architecture ${JSON.stringify(named ?? config.model_type ?? null)}; rlora supports ${SUPPORTED_ARCHITECTURES.join(', ')}`,
    );
  }
  return arch as Architecture;
}

/**
 * Fills the defaults of each architecture's transformers config class, and refuses values that
 * cannot make a model with finite outputs, naming the key as config.json spells it.
 */
export function normalizeConfig(config: HFConfig): NativeModelConfig {
  if (!isPlainObject(config)) throw new TypeError('config must be an object (the contents of config.json)');
  const architecture = architectureOf(config);
  /** obj[key] when `ok`; null or absent gives `fallback` when there is one. */
  function read<T>(key: string, what: string, ok: (v: unknown) => boolean, fallback?: T, obj: Record<string, unknown> = config, prefix = ''): T {
    const v = obj[key];
    if (v == null && fallback !== undefined) return fallback;
    if (!ok(v)) throw new Error(`config.${prefix}${key} must be ${what}, got ${typeof v === 'number' ? v : JSON.stringify(v) ?? v}`);
    return v as T;
  }
  const int = (key: string, fallback?: number, min = 1): number =>
    read(key, min === 1 ? 'a positive integer' : 'a non-negative integer', (v) => Number.isSafeInteger(v) && (v as number) >= min, fallback);
  const finite = (test: (v: number) => boolean) => (v: unknown) => typeof v === 'number' && Number.isFinite(v) && test(v);
  const flag = (key: string): boolean => read(key, 'true or false', (v) => typeof v === 'boolean', false);

  const hidden = int('hidden_size');
  const heads = int('num_attention_heads');
  const kvHeads = int('num_key_value_heads', heads);
  if (heads % kvHeads !== 0) {
    throw new Error(`config.num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`);
  }
  const qwen3 = architecture === 'Qwen3ForCausalLM';
  const gemma2 = architecture === 'Gemma2ForCausalLM';
  if (config.head_dim == null && hidden % heads !== 0 && !qwen3 && !gemma2) {
    throw new Error(`config.hidden_size (${hidden}) must be a multiple of num_attention_heads (${heads}) unless head_dim is set`);
  }
  // Qwen3Config's head_dim defaults to 128, not hidden_size / num_attention_heads
  const headDim = int('head_dim', qwen3 ? 128 : gemma2 ? 256 : hidden / heads);
  if (headDim % 2 !== 0) {
    const what = config.head_dim == null ? 'hidden_size / num_attention_heads' : 'head_dim';
    throw new Error(`config.${what} must be even for rotary embeddings, got ${headDim}`);
  }
  int('max_position_embeddings', 1); // unused here, but below 1 it is a broken config
  for (const key of ['bos_token_id', 'eos_token_id', 'pad_token_id']) {
    read(key, 'a token id, a list of token ids, or null', (v) => [v].flat().every((id) => Number.isSafeInteger(id)), null);
  }

  let ropeScaling: NativeModelConfig['ropeScaling'] = null;
  const rs = read<Record<string, unknown>>('rope_scaling', 'an object or null', isPlainObject, {});
  const kind = rs.rope_type ?? rs.type;
  if (kind !== undefined && kind !== 'llama3' && kind !== 'default') {
    throw new Error(`rope_scaling of type ${JSON.stringify(kind)} is not supported; supported: llama3`);
  }
  if (kind === 'llama3') {
    const rope = (key: string, what: string, ok: (v: unknown) => boolean, fallback: number): number => read(key, what, ok, fallback, rs, 'rope_scaling.');
    const low = rope('low_freq_factor', 'a finite number > 0', finite((v) => v > 0), 1);
    ropeScaling = {
      // >= 1 as transformers' llama3 check says: a smaller factor raises the frequencies (1e-300: infinite)
      factor: rope('factor', 'a finite number >= 1', finite((v) => v >= 1), 8),
      lowFreqFactor: low,
      highFreqFactor: rope('high_freq_factor', `a finite number > low_freq_factor (${low})`, finite((v) => v > low), 4),
      originalMaxPositionEmbeddings: rope('original_max_position_embeddings', 'a positive integer', (v) => Number.isSafeInteger(v) && (v as number) >= 1, 8192),
    };
  }
  const slidingWindow = int('sliding_window', architecture === 'Gemma2ForCausalLM' ? 4096 : 0, 0);
  const phi3 = architecture === 'Phi3ForCausalLM';
  if (phi3) {
    const prf = read<number>('partial_rotary_factor', 'a number', (v) => typeof v === 'number', 1);
    if (prf !== 1) throw new Error(`config.partial_rotary_factor must be 1 (rlora rotates every dimension of a head), got ${prf}`);
  }
  // Phi3 masks by sliding_window whenever it is set (Phi-3-mini-4k: 2047)
  let gemma = { attnLogitSoftcapping: 0, finalLogitSoftcapping: 0, queryPreAttnScalar: 0 };
  if (gemma2) {
    const act = config.hidden_activation ?? config.hidden_act ?? 'gelu_pytorch_tanh';
    if (act !== 'gelu_pytorch_tanh') throw new Error(`config.hidden_activation must be "gelu_pytorch_tanh" for Gemma2 (rlora's GeGLU uses the tanh GELU), got ${JSON.stringify(act)}`);
    // null turns soft-capping off, as in transformers; absent keys take Gemma2Config's defaults
    const cap = (key: string, dflt: number): number => (config[key] === null ? 0 : read(key, 'a finite number > 0 or null', finite((v) => v > 0), dflt));
    gemma = {
      attnLogitSoftcapping: cap('attn_logit_softcapping', 50),
      finalLogitSoftcapping: cap('final_logit_softcapping', 30),
      queryPreAttnScalar: read('query_pre_attn_scalar', 'a finite number > 0', finite((v) => v > 0), 256),
    };
  }
  const windowed = architecture === 'MistralForCausalLM' || phi3 || gemma2 || ((architecture === 'Qwen2ForCausalLM' || qwen3) && flag('use_sliding_window'));
  const llama = architecture === 'LlamaForCausalLM';
  return {
    architecture,
    vocabSize: int('vocab_size'),
    hiddenSize: hidden,
    intermediateSize: int('intermediate_size'),
    numHiddenLayers: int('num_hidden_layers'),
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
    rmsNormEps: read('rms_norm_eps', 'a finite number > 0', finite((v) => v > 0), phi3 ? 1e-5 : 1e-6),
    // theta <= 1 makes rotary frequencies of 1 and above (1e-300: infinite, NaN logits)
    ropeTheta: read('rope_theta', 'a finite number > 1', finite((v) => v > 1), 10000),
    ropeScaling,
    qkvBias: architecture === 'Qwen2ForCausalLM',
    qkNorm: qwen3,
    fused: phi3,
    gemma2,
    ...gemma,
    attentionBias: flag('attention_bias') && (llama || qwen3),
    mlpBias: flag('mlp_bias') && llama,
    tieWordEmbeddings: gemma2 ? read('tie_word_embeddings', 'true or false', (v) => typeof v === 'boolean', true) : flag('tie_word_embeddings'),
    initializerRange: read('initializer_range', 'a finite number >= 0', finite((v) => v >= 0), 0.02),
    slidingWindow: windowed ? slidingWindow : 0,
  };
}



/** The safetensors files of a model folder: model.safetensors, or the shards of its index. */
function weightFiles(dir: string): string[] {
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [single];
  const index = path.join(dir, 'model.safetensors.index.json');
  if (!fs.existsSync(index)) throw new Error(`no weights in ${dir}: expected model.safetensors or model.safetensors.index.json`);
  const json = readJsonFile(index);
  const map = isPlainObject(json) ? json.weight_map : undefined;
  if (!isPlainObject(map)) throw new Error(`${index} has no weight_map (an object of tensor name -> file name)`);
  const root = path.resolve(dir);
  const files = new Set<string>();
  for (const [name, file] of Object.entries(map)) {
    const entry = `weight_map[${JSON.stringify(name)}] = ${JSON.stringify(file)}`;
    if (typeof file !== 'string') throw new Error(`${index}: ${entry} is not a file name`);
    // Checked on the path as written, not through links: the Hugging Face cache links every file
    // of a snapshot folder to a blob outside it.
    const full = path.resolve(root, file);
    const rel = path.relative(root, full);
    if (path.isAbsolute(file) || rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      throw new Error(`${index}: ${entry} names a file outside the model folder ${root}`);
    }
    if (!fs.existsSync(full)) throw new Error(`shard ${full} listed in ${index} does not exist`);
    files.add(full);
  }
  return [...files];
}


/** A quantization format ModelOptions.quantize names, or a RangeError naming the value. */
function checkQuantize(kind: unknown): asserts kind is 'int8' | 'nf4' {
  if (kind !== 'int8' && kind !== 'nf4') throw new RangeError(`quantize must be 'int8' or 'nf4', got ${util.inspect(kind)}`);
}

/** The dtypes a model's parameters may have. */
export const MODEL_DTYPES = ['float32', 'bfloat16', 'float16', 'float64'] as const;
const DTYPE_ALIASES: Record<string, (typeof MODEL_DTYPES)[number]> = { fp32: 'float32', float: 'float32', bf16: 'bfloat16', fp16: 'float16', half: 'float16', fp64: 'float64', double: 'float64' };

/**
 * Checks Model options before anything is read or allocated: unknown keys (with "did you mean"),
 * the dtype and device, quantize, and whether libtorch can compute in that dtype on this CPU.
 */
function checkModelOptions(options: unknown, where: string, extra: readonly string[] = []): ModelOptions {
  checkKeys(options, ['dtype', 'device', 'quantize', ...extra], where);
  const o = options as ModelOptions;
  const dtype = o.dtype === undefined ? 'float32' : checkChoice(o.dtype, MODEL_DTYPES, `${where}: dtype`, DTYPE_ALIASES);
  const device = o.device ?? 'cpu';
  if (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device)) {
    throw new (typeof device === 'string' ? RangeError : TypeError)(`${where}: device must be 'cpu', 'cuda' or 'cuda:N', got ${show(device)}`);
  }
  if (o.quantize !== undefined) checkQuantize(o.quantize);
  if (device === 'cpu' && dtype !== 'float32' && dtype !== 'float64') {
    const problem = native.cpuDtypeProblem(dtype);
    if (problem) throw new Error(cpuDtypeAdvice(where, dtype, problem));
  }
  return o;
}

/** Why a dtype cannot compute on this CPU, and what to use instead. */
function cpuDtypeAdvice(where: string, dtype: string, problem: string): string {
  const torch = native.buildInfo.torchVersion;
  const first = problem.split('\n')[0];
  if (dtype === 'float16') {
    return `${where}: dtype 'float16' cannot compute on the CPU with libtorch ${torch} (libtorch: ${first}): use 'bfloat16' (the same 2 bytes a value) or 'float32' on the CPU; 'float16' runs on CUDA`;
  }
  const isa = process.env.ONEDNN_MAX_CPU_ISA || process.env.DNNL_MAX_CPU_ISA;
  const cap = isa
    ? `; ONEDNN_MAX_CPU_ISA=${isa} caps oneDNN below the AVX-512 that libtorch sees on this CPU and sends bfloat16 products to: unset it, or use dtype 'float32'`
    : `: use dtype 'float32'`;
  return `${where}: dtype '${dtype}' cannot compute on this CPU with libtorch ${torch} (libtorch: ${first})${cap}`;
}

/** The entries of a model folder that Model.save writes (the rest is the user's, and kept). */
function isModelFile(name: string): boolean {
  return ['config.json', 'generation_config.json', 'model.safetensors', 'model.safetensors.index.json'].includes(name) || /^model-\d{5}-of-\d{5}\.safetensors$/.test(name);
}

/** Options of Model.save. */
export interface ModelSaveOptions {
  /** Weights over this many bytes go into shards (default 5 GB, as transformers' save_pretrained). */
  maxShardSize?: number;
  /**
   * Files copied into the folder with the weights (a tokenizer's files, say), under their own
   * names, as part of the same replacement: the folder never holds new weights beside old copies.
   */
  copyFiles?: readonly string[];
}

/** Model.save's default shard limit: 5 GB, as transformers' save_pretrained. */
export const DEFAULT_MAX_SHARD_SIZE = 5_000_000_000;


export class Model {
  /** @internal */
  readonly native: NativeModel;
  /** The Hugging Face config (as read, or as given). */
  readonly config: HFConfig;
  /** The config with every default filled in. */
  readonly resolvedConfig: NativeModelConfig;
  /** The folder it was loaded from, if any (for a Hub repo: its snapshot folder in the cache). */
  readonly source?: string;
  /** The Hub repo, revision and commit it was loaded from, when fromPretrained was given a repo id. */
  readonly hub?: HubSource;
  /** generation_config.json of that folder, when it had one (save() writes it again). */
  generationConfig?: Record<string, unknown>;

  private constructor(config: HFConfig, resolved: NativeModelConfig, options: ModelOptions, source?: string, hub?: HubSource) {
    this.config = config;
    this.resolvedConfig = resolved;
    this.native = new native.NativeModel(resolved, options.dtype ?? 'float32', options.device ?? 'cpu');
    this.source = source;
    if (hub) this.hub = hub;
  }

  /** A new model with random weights (Hugging Face initialisation), for tests, demos and pretraining. */
  static fromConfig(config: HFConfig, options: ModelOptions & { seed?: number } = {}): Model {
    checkModelOptions(options, 'Model.fromConfig', ['seed']);
    const resolved = normalizeConfig(config);
    const m = new Model({ ...config, architectures: [resolved.architecture] }, resolved, options);
    // with quantize, each decoder weight is quantized as soon as it is drawn (the float weights
    // never exist all at once); the values are those of drawing everything, then quantizing
    if (options.quantize !== undefined) checkQuantize(options.quantize);
    m.native.initRandom({ seed: options.seed ?? 0, quantize: options.quantize });
    if (options.quantize !== undefined) m.quantize(options.quantize);
    return m;
  }

  /**
   * Loads `dir/config.json` and `dir/model.safetensors` (or the shards listed in
   * `model.safetensors.index.json`), converting F32/F16/BF16 weights to `options.dtype`. Checks
   * every header before it allocates the model, then reads one tensor at a time.
   *
   * `dir` may be a Hugging Face Hub repo id ("Qwen/Qwen2.5-0.5B-Instruct") where no such folder
   * exists: the model then comes from the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
   * ~/.cache/huggingface/hub, shared with Python), else it is downloaded into it (config.json, the
   * safetensors weights, generation_config.json and the tokenizer files; `revision`, `token`,
   * `localFilesOnly`: HubOptions).
   */
  static async fromPretrained(dir: string, options: ModelOptions & HubOptions = {}): Promise<Model> {
    const where = `Model.fromPretrained(${JSON.stringify(dir)})`;
    checkModelOptions(options, where, HUB_OPTION_NAMES);
    checkHubOptions(options, where);
    const { revision, token, localFilesOnly } = options;
    const found = await resolveRepo(dir, { revision, token, localFilesOnly, kind: 'model' }, where);
    dir = found.path;
    const configPath = path.join(dir, 'config.json');
    if (!fs.existsSync(configPath)) throw new Error(`no config.json in ${dir}: expected a Hugging Face model folder`);
    const config = readJsonFile(configPath) as HFConfig;
    let resolved: NativeModelConfig;
    try {
      resolved = normalizeConfig(config);
    } catch (e) {
      throw new Error(`${configPath}: ${(e as Error).message}`);
    }
    const fileOf = new Map<string, string>(); // tensor name -> the file that holds it
    for (const file of weightFiles(dir)) {
      for (const { name } of readSafetensorsHeader(file).entries) {
        const other = fileOf.get(name);
        if (other !== undefined) throw new Error(`tensor ${name} is in two files: ${other} and ${file}`);
        fileOf.set(name, file);
      }
    }
    // Before allocating: a config asking for more layers than the checkpoint has cannot load (and
    // a hostile num_hidden_layers would otherwise allocate until memory runs out).
    const layers = new Set([...fileOf.keys()].map((n) => /^model\.layers\.(\d+)\./.exec(n)?.[1]).filter((i) => i !== undefined));
    if (resolved.numHiddenLayers > layers.size) {
      throw new Error(`${configPath}: num_hidden_layers is ${resolved.numHiddenLayers} but the checkpoint in ${dir} has ${layers.size} layer(s)`);
    }
    let model: Model;
    try {
      model = new Model(config, resolved, options, dir, found.hub);
    } catch (e) {
      throw new Error(`${configPath}: cannot make the model it describes: ${(e as Error).message}`);
    }
    const genPath = path.join(dir, 'generation_config.json');
    if (fs.existsSync(genPath)) {
      const g = readJsonFile(genPath);
      if (typeof g !== 'object' || g === null || Array.isArray(g)) throw new Error(`${genPath} must hold a JSON object`);
      model.generationConfig = g as Record<string, unknown>;
    }
    const expected = new Set(model.native.parameterSpecs().map((s) => s.name));
    for (const [name, file] of fileOf) {
      const ignorable = name.endsWith('.rotary_emb.inv_freq') || (resolved.tieWordEmbeddings && name === 'lm_head.weight');
      if (!expected.has(name) && !ignorable) throw new Error(`${file} holds ${name}, which a ${resolved.architecture} with this config does not have`);
    }
    const missing = [...expected].filter((n) => !fileOf.has(n));
    if (missing.length) {
      throw new Error(`the checkpoint in ${dir} lacks ${missing.length} tensor(s): ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
    }
    // with quantize: each decoder weight is quantized as soon as it is read, so the float weights
    // never exist all at once (the peak is the rest of the model, the codes and one float weight)
    const q = options.quantize;
    if (q !== undefined) checkQuantize(q);
    const quantizable = new Set(q === undefined ? [] : model.linearModuleNames().filter((n) => n !== 'lm_head').map((n) => `${n}.weight`));
    for (const file of new Set(fileOf.values())) {
      forEachSafetensor(
        file,
        (e, t) => {
          try {
            model.native.setParameter(e.name, t.native);
            t.dispose(); // copied into the model: free the read copy now, not when the collector runs
            if (quantizable.has(e.name)) model.native.quantizeModule(e.name.slice(0, -'.weight'.length), q!);
          } catch (err) {
            throw new Error(`${file}: ${(err as Error).message}`);
          }
        },
        (e) => expected.has(e.name),
      );
    }
    if (q !== undefined) model.quantize(q);
    return model;
  }

  /**
   * Writes config.json, the weights (Hugging Face names; transformers loads them) and
   * generation_config.json when the model has one. Weights over `maxShardSize` bytes (default 5 GB,
   * as transformers' save_pretrained) go into shards `model-00001-of-0000N.safetensors` with the
   * index `model.safetensors.index.json`; a tensor larger than the limit gets a shard of its own.
   */
  save(dir: string, options: ModelSaveOptions = {}): void {
    assertNotTraining(this, 'Model.save');
    checkKeys(options as unknown, ['maxShardSize', 'copyFiles'], 'Model.save');
    const copies = options.copyFiles ?? [];
    if (!Array.isArray(copies) || copies.some((f) => typeof f !== 'string')) throw new TypeError(`Model.save: copyFiles must be a list of file paths, got ${show(options.copyFiles)}`);
    for (const f of copies) {
      if (!fs.statSync(f, { throwIfNoEntry: false })?.isFile()) throw new Error(`Model.save: copyFiles names ${f}, which is not a file`);
    }
    const limit = options.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE;
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`Model.save: maxShardSize must be a whole number of bytes >= 1, got ${util.inspect(options.maxShardSize)}`);
    const shards: { names: string[]; bytes: number }[] = [{ names: [], bytes: 0 }];
    let total = 0;
    for (const { name } of this.native.parameterSpecs()) {
      const t = new Tensor(this.native.parameter(name));
      const bytes = t.numel * dtypeByteSize(t.dtype);
      total += bytes;
      const last = shards[shards.length - 1];
      if (last.names.length && last.bytes + bytes > limit) shards.push({ names: [name], bytes });
      else {
        last.names.push(name);
        last.bytes += bytes;
      }
    }
    const tensorsOf = (names: string[]): Record<string, Tensor> => Object.fromEntries(names.map((n) => [n, new Tensor(this.native.parameter(n))]));
    // The whole folder is written beside the old one and swapped in when complete (util/files.ts):
    // a crash or a full disk leaves the old model loadable. A previous save's weights in another
    // layout are not carried over (they would load beside these); the user's other files are.
    replaceFolder(
      dir,
      (tmp) => {
        if (shards.length === 1) saveSafetensors(path.join(tmp, 'model.safetensors'), tensorsOf(shards[0].names), { format: 'pt' });
        else {
          const weightMap: Record<string, string> = {};
          const pad = (i: number): string => String(i).padStart(5, '0');
          shards.forEach((sh, i) => {
            const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
            saveSafetensors(path.join(tmp, file), tensorsOf(sh.names), { format: 'pt' });
            for (const n of sh.names) weightMap[n] = file;
          });
          writeFileFully(path.join(tmp, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
        }
        const config = { ...this.config, architectures: [this.resolvedConfig.architecture], torch_dtype: this.dtype };
        writeFileFully(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
        if (this.generationConfig) writeFileFully(path.join(tmp, 'generation_config.json'), JSON.stringify(this.generationConfig, null, 2) + '\n');
        for (const f of copies) fs.copyFileSync(f, path.join(tmp, path.basename(f))); // flushed with the rest before the swap
      },
      { owns: isModelFile, verify: (tmp) => weightFiles(tmp).forEach((f) => readSafetensorsHeader(f)) },
    );
  }

  get dtype(): Dtype {
    return this.native.dtype;
  }
  get device(): string {
    return this.native.device;
  }

  /**
   * Logits [batch, sequence, vocab] for a batch of token ids. Runs off the JS thread. Refused while
   * the model trains (README "Calls during training").
   */
  async forward(inputIds: TokenBatch, options: ForwardOptions = {}): Promise<Tensor> {
    assertNotTraining(this, 'Model.forward');
    checkKeys(options as unknown, ['attentionMask', 'shape', 'cuSeqlens'], 'Model.forward');
    const ids = toTokenTensor(inputIds, 'inputIds', options.shape);
    const cu = options.cuSeqlens === undefined ? null : cuSeqlensTensor(options.cuSeqlens, 'Model.forward: cuSeqlens');
    this.checkLength('Model.forward', options.cuSeqlens === undefined ? ids.shape[1] : longestPacked(options.cuSeqlens), 0);
    const mask = options.attentionMask === undefined ? null : toMaskTensor(options.attentionMask, options.shape);
    return new Tensor(await this.native.forward(ids.native, mask?.native ?? null, cu?.native ?? null));
  }

  /**
   * Refuses sequences longer than the model's max_position_embeddings (config.json), before any
   * memory is taken: a 20,000-token prompt used to grow to 9 GB on a model made for 2,048.
   */
  private checkLength(where: string, tokens: number, newTokens: number): void {
    const limit = this.config.max_position_embeddings;
    if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1 || tokens + newTokens <= limit) return;
    throw new RangeError(
      `${where}: ${tokens} tokens${newTokens ? ` plus ${newTokens} new ones` : ''} are more than the model's max_position_embeddings (${limit}, in its config): shorten the input${newTokens ? ' or maxNewTokens' : ''}`,
    );
  }

  /** The eos and pad defaults of generation (generation_config.json, then config.json). */
  generationDefaults(): GenerationDefaults {
    return generationDefaults(this.config, this.generationConfig);
  }

  /**
   * Continues each row (left-padded when lengths differ) with the key/value cache. Returns the full
   * rows: prompt then new tokens; a row that stopped early is filled with padTokenId. With
   * numReturnSequences n, each prompt row gives n rows in a row. Refused while the model trains
   * (README "Calls during training").
   */
  async generate(inputIds: TokenBatch, options: GenerateOptions = {}): Promise<number[][]> {
    assertNotTraining(this, 'Model.generate');
    const where = 'Model.generate';
    const o = resolveSampling(options, GENERATE_OPTION_NAMES, where, this.generationDefaults()); // "maxTokens" was ignored: 32 tokens came
    const stop = stopList(options.stop, where);
    if (stop.length && typeof options.tokenizer?.decode !== 'function') throw new TypeError(`${where}: stop needs the tokenizer option (a Tokenizer) to decode the new tokens`);
    const ids = toTokenTensor(inputIds, 'inputIds', options.shape);
    // (the Trainer's evaluation, through generateUnchecked, is bounded by the dataset's maxLength)
    this.checkLength(where, ids.shape[1], o.maxNewTokens);
    return this.generateFrom(ids, options, o, stop);
  }

  /**
   * The new tokens of one row (`[[id, ...]]`; more rows are refused), yielded as they come, with the
   * options of generate(); stops after an eos token (which it yields) or maxNewTokens. It runs the
   * same generation as generate(): with the same seed it yields the same tokens.
   */
  async *stream(inputIds: TokenBatch, options: StreamOptions = {}): AsyncGenerator<number, void, undefined> {
    if (options !== null && typeof options === 'object' && (options as GenerateOptions).attentionMask !== undefined) {
      throw new TypeError('Model.stream: attentionMask is not supported (one row needs no padding)');
    }
    const o = resolveSampling(options, STREAM_OPTION_NAMES, 'Model.stream', this.generationDefaults());
    const seq = oneRow(inputIds, options.shape);
    // before the first token: a stream used to print up to the limit, then fail
    this.checkLength('Model.stream', seq.length, o.maxNewTokens);
    assertNotTraining(this, 'Model.stream');
    const run = new GenerationRun(this.native, Tensor.from([seq], undefined, { dtype: 'int64' }), null, o);
    try {
      while (!run.finished) {
        checkAborted(o.signal);
        const [fresh] = await run.step(1);
        for (const token of fresh) yield token;
        assertNotTraining(this, 'Model.stream');
      }
    } finally {
      run.dispose();
    }
  }

  /** @internal generate() for the Trainer's own evaluation, which runs between its steps. */
  async generateUnchecked(inputIds: TokenBatch, options: GenerateOptions = {}): Promise<number[][]> {
    const o = resolveSampling(options, GENERATE_OPTION_NAMES, 'Model.generate', this.generationDefaults());
    return this.generateFrom(toTokenTensor(inputIds, 'inputIds', options.shape), options, o, []);
  }

  /**
   * @internal A generation over token rows for the text functions (lib/generate.ts): the run, which
   * they step and end themselves. Checks the length and the training state first.
   */
  startGeneration(ids: Tensor, mask: Tensor | null, o: ResolvedSampling, where: string): GenerationRun {
    assertNotTraining(this, where);
    this.checkLength(where, ids.shape[1], o.maxNewTokens);
    return this.run(ids, mask, o);
  }

  /** A generation over the rows, each repeated numReturnSequences times. */
  private run(ids: Tensor, mask: Tensor | null, o: ResolvedSampling): GenerationRun {
    const expanded = expandRows(ids, mask, o.numReturnSequences);
    return new GenerationRun(this.native, expanded.ids, expanded.mask, o);
  }

  private async generateFrom(ids: Tensor, options: GenerateOptions, o: ResolvedSampling, stop: string[]): Promise<number[][]> {
    const mask = options.attentionMask === undefined ? null : toMaskTensor(options.attentionMask, options.shape);
    if (options.padTokenId !== undefined) {
      if (!Number.isSafeInteger(options.padTokenId) || options.padTokenId < 0) throw new RangeError(`Model.generate: padTokenId must be a token id, got ${show(options.padTokenId)}`);
      o = { ...o, padTokenId: options.padTokenId };
    }
    const run = this.run(ids, mask, o);
    const prompt = rows(ids).flatMap((r) => new Array<number[]>(o.numReturnSequences).fill(r)); // as run() repeats them
    const fresh: number[][] = prompt.map(() => []);
    try {
      if (!stop.length && !o.signal) {
        (await run.step(o.maxNewTokens)).forEach((r, i) => fresh[i].push(...r));
      } else {
        const ended = prompt.map(() => false);
        while (!run.finished) {
          checkAborted(o.signal);
          const step = await run.step(1);
          step.forEach((r, i) => fresh[i].push(...r));
          if (!stop.length) continue;
          // a row ends after the token that completes a stop string (in the new tokens' text)
          const now = fresh.map((r, i) => !ended[i] && !r.some((t) => o.eosTokenIds.includes(t)) && stop.some((s) => options.tokenizer!.decode(r).includes(s)));
          now.forEach((e, i) => (ended[i] ||= e));
          run.endRows(now);
        }
      }
    } finally {
      run.dispose();
    }
    return prompt.map((p, i) => [...p, ...fresh[i]]);
  }

  /**
   * Frees the native memory now instead of when the collector gets to it (rlora tells V8 how much
   * native memory each object holds, so dropped objects are collected in time anyway). Its attached adapter, if any, is disposed too. Using
   * the Model afterwards throws "this Model was disposed". `using x = ...` calls it at the end of
   * the block. Refused while the model trains.
   */
  dispose(): void {
    assertNotTraining(this, 'Model.dispose');
    attachedTo(this)?.dispose(); // its adapter
    this.native.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
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

  /** Quantizes the frozen decoder weights now (ModelOptions.quantize says how); refused with adapters attached. */
  quantize(kind: 'int8' | 'nf4'): void {
    assertNotTraining(this, 'Model.quantize');
    checkQuantize(kind);
    this.native.quantize(kind);
  }

  /** 'int8', 'nf4', or null when the weights are not quantized. */
  get quantization(): 'int8' | 'nf4' | null {
    const q = this.native.quantization();
    return q === '' ? null : (q as 'int8' | 'nf4');
  }

  /** @internal The frozen weight and bias of a linear module (sharing storage). */
  linearParameters(module: string): { weight: Tensor; bias: Tensor | null } {
    const specs = new Set(this.native.parameterSpecs().map((s) => s.name));
    return {
      // a quantized module gives a placeholder of its shape (the layer takes its product from the model)
      weight: new Tensor(this.native.linearWeight(module)),
      bias: specs.has(`${module}.bias`) ? new Tensor(this.native.parameter(`${module}.bias`)) : null,
    };
  }

  [inspectSymbol](): string {
    const c = this.resolvedConfig;
    return (
      `Model(${c.architecture}, layers=${c.numHiddenLayers}, hidden=${c.hiddenSize}, intermediate=${c.intermediateSize}, ` +
      `heads=${c.numAttentionHeads}/${c.numKeyValueHeads} kv, vocab=${c.vocabSize}, parameters=${this.parameterCount().toLocaleString('en-US')}, ` +
      `dtype=${this.dtype}, device=${this.device})`
    );
  }
}
