// exportGguf and exportGgufLora: a model (with a LoRA merged in beforehand, or none) as a GGUF file
// that llama.cpp, node-llama-cpp and Ollama load, and a plain LoRA adapter as a GGUF LoRA adapter
// over that file. The format is format.ts's, the names and layouts llama.ts's, the vocabulary
// tokenizer.ts's; this module gathers the tensors and the metadata.
import * as path from 'path';

import { assertNotTraining, attachedTo } from '../activity';
import { Adapter } from '../adapter';
import { Model } from '../model';
import { Tensor } from '../tensor';
import { ByteTokenizer, Tokenizer } from '../tokenizer';
import { ensureFolder } from '../util/files';
import { checkChoice, checkInstance, checkKeys, show } from '../util/options';
import { GgufTensorInput, GgufTensorType, GgufValue, writeGguf } from './format';
import {
  architectureMetadata, GGUF_DTYPES, GGUF_FILE_TYPES, GgufArchitecture, ggufArchitecture, GgufDtype, ggufTensorName, permutedHeads, permuteRows, ropeFreqs, tensorTypeFor,
} from './llama';
import { tokenizerMetadata } from './tokenizer';

/** The model a file was made from (general.base_model.0.*). */
export interface GgufBaseModel {
  name: string;
  /** Where it is published, e.g. https://huggingface.co/owner/name. */
  repoUrl?: string;
}

export interface GgufExportOptions {
  /** The tokenizer written into the file (llama.cpp loads no model without one). Required. */
  tokenizer: Tokenizer | ByteTokenizer;
  /** Type of the weight matrices: 'f32' (default), 'f16', 'bf16' or 'q8_0'; norms, biases and rope factors stay f32. */
  dtype?: GgufDtype;
  /** general.name. Default: the name of the folder the model was loaded from, else "model". */
  name?: string;
  /** The model this one was made from (a base model with a LoRA merged in), written as general.base_model.0.*. Default: none. */
  baseModel?: GgufBaseModel;
}

export interface GgufLoraExportOptions {
  /** Type of lora_a and lora_b: 'f32' (default), 'f16', 'bf16' or 'q8_0' (F16 where the rank is no multiple of 32). */
  dtype?: GgufDtype;
  /** general.name. Default: "<base name>-lora". */
  name?: string;
  /** general.base_model.0.*. Default: the name of the folder the base model was loaded from, when it was. */
  baseModel?: GgufBaseModel;
}

/** What was written. */
export interface GgufExportResult {
  file: string;
  architecture: GgufArchitecture;
  /** Tensors written, by type. */
  types: Partial<Record<GgufTensorType, number>>;
  /** exportGgufLora: adapter.lora.alpha as written (the scale alpha / rank, times the rank, with rsLoRA's scale folded in). */
  alpha?: number;
  /** exportGgufLora: the rank of each module's lora_a (twice the adapter's when it removes an initial product). */
  ranks?: number[];
}

const DTYPE_ALIASES: Record<string, GgufDtype> = { float32: 'f32', fp32: 'f32', float16: 'f16', fp16: 'f16', half: 'f16', bfloat16: 'bf16', q8: 'q8_0', q80: 'q8_0', int8: 'q8_0' };

function checkFile(file: unknown, where: string): string {
  if (typeof file !== 'string' || file.length === 0) throw new TypeError(`${where}: file must be a path, got ${show(file)}`);
  ensureFolder(path.dirname(path.resolve(file)), `${where}: the folder of`);
  return file;
}

function checkBaseModel(b: unknown, where: string): GgufBaseModel | undefined {
  if (b === undefined) return undefined;
  checkKeys(b, ['name', 'repoUrl'], `${where}: baseModel`);
  const o = b as Partial<GgufBaseModel>;
  if (typeof o.name !== 'string' || o.name.length === 0) throw new TypeError(`${where}: baseModel.name must be a non-empty string, got ${show(o.name)}`);
  if (o.repoUrl !== undefined && typeof o.repoUrl !== 'string') throw new TypeError(`${where}: baseModel.repoUrl must be a string, got ${show(o.repoUrl)}`);
  return { name: o.name, repoUrl: o.repoUrl };
}

function checkName(v: unknown, where: string): string | undefined {
  if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw new TypeError(`${where}: name must be a non-empty string, got ${show(v)}`);
  return v as string | undefined;
}

/** The general.* keys every file gets. */
function generalMetadata(arch: GgufArchitecture, type: 'model' | 'adapter', name: string, dtype: GgufDtype, base: GgufBaseModel | undefined): [string, GgufValue][] {
  const kv: [string, GgufValue][] = [
    ['general.architecture', { type: 'string', value: arch }],
    ['general.type', { type: 'string', value: type }],
    ['general.name', { type: 'string', value: name }],
    ['general.file_type', { type: 'uint32', value: GGUF_FILE_TYPES[dtype] }],
    ['general.quantization_version', { type: 'uint32', value: 2 }],
  ];
  if (base) {
    kv.push(['general.base_model.count', { type: 'uint32', value: 1 }], ['general.base_model.0.name', { type: 'string', value: base.name }]);
    if (base.repoUrl) kv.push(['general.base_model.0.repo_url', { type: 'string', value: base.repoUrl }]);
  }
  return kv;
}

/** A tensor's values as float32, on the CPU. */
function float32(t: Tensor): Float32Array {
  const cpu = t.device === 'cpu' ? t : t.to('cpu');
  const d = cpu.data();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

function count(tensors: GgufTensorInput[]): Partial<Record<GgufTensorType, number>> {
  const out: Partial<Record<GgufTensorType, number>> = {};
  for (const t of tensors) out[t.type] = (out[t.type] ?? 0) + 1;
  return out;
}

/**
 * Writes `model` as a GGUF file that llama.cpp loads (LLaMA and Qwen2): its architecture's
 * metadata, every weight under llama.cpp's name and layout (LLaMA's q/k rows permuted for its
 * rotary layout), and the tokenizer. To ship a fine-tuned LoRA, merge it first (`adapter.merge()`);
 * a model with an adapter still attached is refused, since the file would hold the base alone.
 * Multi-head adapters cannot be merged: export the base and use them in rlora.
 */
export function exportGguf(model: Model, file: string, options: GgufExportOptions): GgufExportResult {
  const where = 'exportGguf';
  checkInstance(model, Model, `${where}: the model`);
  checkKeys(options, ['tokenizer', 'dtype', 'name', 'baseModel'], where);
  assertNotTraining(model, where);
  if (attachedTo(model)) {
    throw new Error(`${where}: the model has an adapter attached, which the file would leave out: merge it first (adapter.merge(), single-head LoRA only) or export it apart with exportGgufLora`);
  }
  if (model.quantization !== null) throw new Error(`${where}: the model's weights are quantized (${model.quantization}); load it without quantize to export it`);
  const tokenizer = options.tokenizer;
  if (!(tokenizer instanceof Tokenizer) && !(tokenizer instanceof ByteTokenizer)) throw new TypeError(`${where}: tokenizer must be a Tokenizer or a ByteTokenizer, got ${show(tokenizer)}`);
  const dtype = options.dtype === undefined ? 'f32' : checkChoice(options.dtype, Object.keys(GGUF_DTYPES) as GgufDtype[], `${where}: dtype`, DTYPE_ALIASES);
  const name = checkName(options.name, where) ?? (model.source ? path.basename(path.resolve(model.source)) : 'model');
  const base = checkBaseModel(options.baseModel, where);
  file = checkFile(file, where);
  const c = model.resolvedConfig;
  const arch = ggufArchitecture(c);

  const metadata: [string, GgufValue][] = [
    ...generalMetadata(arch, 'model', name, dtype, base),
    ...architectureMetadata(arch, model.config, c),
    ...tokenizerMetadata(tokenizer, c.vocabSize),
  ];
  const tensors: GgufTensorInput[] = [];
  const freqs = ropeFreqs(c);
  if (freqs) tensors.push({ name: 'rope_freqs.weight', shape: [freqs.length], type: 'F32', data: () => freqs });
  for (const { name: hf, shape } of model.native.parameterSpecs()) {
    if (hf === 'lm_head.weight' && c.tieWordEmbeddings) continue;
    const g = ggufTensorName(hf);
    if (g === undefined) throw new Error(`${where}: ${hf} has no llama.cpp name for ${c.architecture} (a parameter rlora's export does not know)`);
    const heads = permutedHeads(arch, c, hf.replace(/\.(weight|bias)$/, ''));
    tensors.push({
      name: g,
      shape,
      type: tensorTypeFor(g, shape, dtype),
      data: () => {
        const v = float32(new Tensor(model.native.parameter(hf)));
        return heads ? permuteRows(v, shape[0], shape.length > 1 ? shape[1] : 1, heads) : v;
      },
    });
  }
  writeGguf(file, metadata, tensors);
  return { file, architecture: arch, types: count(tensors) };
}

/**
 * Writes a plain (single-head) LoRA adapter as a GGUF LoRA adapter (general.type "adapter",
 * adapter.type "lora") that llama.cpp applies over the base model's GGUF file (node-llama-cpp:
 * `model.createContext({lora: file})`). llama.cpp scales each module by adapter.lora.alpha / rank:
 * the file's alpha is the adapter's scale times its rank, so rsLoRA's alpha / sqrt(r) carries over;
 * a module whose scale differs (PEFT's rank_pattern / alpha_pattern) has it folded into lora_b.
 * An adapter that removes its initial product from the base (R-LoRA's offset) is written with
 * that product as a second half of rank: lora_a = [A; A0], lora_b = [B, -B0].
 */
export function exportGgufLora(adapter: Adapter, file: string, options: GgufLoraExportOptions = {}): GgufExportResult {
  const where = 'exportGgufLora';
  checkInstance(adapter, Adapter, `${where}: the adapter`);
  checkKeys(options, ['dtype', 'name', 'baseModel'], where);
  const model = adapter.model;
  assertNotTraining(model, where);
  if (attachedTo(model) !== adapter) throw new Error(`${where}: the adapter has been detached or merged; load or attach it again`);
  if (adapter.options.heads !== 1) {
    throw new Error(`${where}: a ${adapter.options.method} adapter with ${adapter.options.heads} heads cannot be written as a LoRA: its router mixes the heads differently for every token, which llama.cpp's LoRA (one fixed B A per module) cannot express`);
  }
  const dtype = options.dtype === undefined ? 'f32' : checkChoice(options.dtype, Object.keys(GGUF_DTYPES) as GgufDtype[], `${where}: dtype`, DTYPE_ALIASES);
  const baseName = model.source ? path.basename(path.resolve(model.source)) : undefined;
  const base = checkBaseModel(options.baseModel, where) ?? (baseName ? { name: baseName } : undefined);
  const name = checkName(options.name, where) ?? `${baseName ?? 'model'}-lora`;
  file = checkFile(file, where);
  const c = model.resolvedConfig;
  const arch = ggufArchitecture(c);

  interface Part { module: string; a: Float32Array; b: Float32Array; rank: number; inF: number; outF: number; scaling: number }
  const partsOf: Part[] = [];
  for (const [module, layer] of adapter.layers) {
    const sd = layer.stateDict();
    const a = sd['lora_A.weight'], b = sd['lora_B.weight'];
    if (!a || !b) throw new Error(`${where}: module ${module} has no lora_A.weight and lora_B.weight (it has ${Object.keys(sd).join(', ')})`);
    const [r, inF] = a.shape, outF = b.shape[0];
    let av = float32(a), bv = float32(b), rank = r;
    const a0 = sd['lora_offset_A.weight'], b0 = sd['lora_offset_B.weight'];
    if (a0 && b0) {
      // delta = s (B A - B0 A0) = s [B, -B0] [A; A0]
      const a0v = float32(a0), b0v = float32(b0);
      const cat = new Float32Array(2 * r * inF);
      cat.set(av);
      cat.set(a0v, r * inF);
      const bc = new Float32Array(outF * 2 * r);
      for (let o = 0; o < outF; o++) {
        for (let k = 0; k < r; k++) {
          bc[o * 2 * r + k] = bv[o * r + k];
          bc[o * 2 * r + r + k] = -b0v[o * r + k];
        }
      }
      av = cat;
      bv = bc;
      rank = 2 * r;
    }
    partsOf.push({ module, a: av, b: bv, rank, inF, outF, scaling: layer.options.scaling });
  }
  if (partsOf.length === 0) throw new Error(`${where}: the adapter wraps no module`);
  // llama.cpp: scale = alpha / rank, one alpha for the file (rank read from each lora_b)
  const alpha = partsOf[0].scaling * partsOf[0].rank;
  const tensors: GgufTensorInput[] = [];
  for (const p of partsOf) {
    const g = ggufTensorName(`${p.module}.weight`);
    if (g === undefined) throw new Error(`${where}: module ${p.module} has no llama.cpp name`);
    const fold = p.scaling / (alpha / p.rank);
    let b = p.b;
    if (Math.abs(fold - 1) > 1e-12) b = b.map((v) => v * fold);
    const heads = permutedHeads(arch, c, p.module);
    if (heads) b = permuteRows(b, p.outF, p.rank, heads);
    const aShape = [p.rank, p.inF], bShape = [p.outF, p.rank];
    const av = p.a, bv = b;
    tensors.push({ name: `${g}.lora_a`, shape: aShape, type: tensorTypeFor(`${g}.lora_a`, aShape, dtype), data: () => av });
    tensors.push({ name: `${g}.lora_b`, shape: bShape, type: tensorTypeFor(`${g}.lora_b`, bShape, dtype), data: () => bv });
  }
  const metadata: [string, GgufValue][] = [
    ...generalMetadata(arch, 'adapter', name, dtype, base),
    ['adapter.type', { type: 'string', value: 'lora' }],
    ['adapter.lora.alpha', { type: 'float32', value: alpha }],
  ];
  writeGguf(file, metadata, tensors);
  return { file, architecture: arch, types: count(tensors), alpha, ranks: partsOf.map((p) => p.rank) };
}
