// The adapter folder's format (docs/ARCHITECTURE.md section 4), in one place: the tensor names'
// prefix, adapter_config.json (PEFT's keys) and rlora_config.json (rlora's own), read and checked,
// or built for writing (the file names are files.ts's). It loads nothing native; the weights
// themselves are read and written by the Adapter (adapter.ts) under these names.
import * as fs from 'fs';
import * as path from 'path';

import type { DataSettings } from '../data';
import type { ResolvedLoraOptions } from '../lora-options';
import type { Model } from '../model';
import { readJsonFile } from '../util/json';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, RLORA_CONFIG_FILE } from './files';

/** What PEFT puts before a module's name in adapter_model.safetensors: `base_model.model.<module>.lora_A.weight`. */
export const TENSOR_PREFIX = 'base_model.model.';

/** The base-model shape an adapter was made for (checked on load). */
export interface BaseShape {
  architecture: string;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  vocab_size: number;
}

/**
 * adapter_config.json: exactly the keys PEFT's LoraConfig writes (PEFT 0.9 and later load it; older
 * PEFT raises a TypeError on keys it does not know, so nothing of rlora's own goes here). Written for
 * every method, so tools that read r / lora_alpha / target_modules work on any rlora adapter; but
 * only a plain LoRA adapter (one head, no offset) says `peft_type: "LORA"`. A multi-head or offset
 * adapter says `"RLORA"`, which is no PEFT type: PEFT then refuses the folder outright instead of
 * loading lora_A/lora_B and silently dropping the other heads, the router and the offset.
 * rlora_config.json says the same in words (`peft_loadable`).
 */
export interface AdapterConfigJson {
  alpha_pattern: Record<string, number>;
  base_model_name_or_path: string | null;
  bias: string;
  fan_in_fan_out: boolean;
  inference_mode: boolean;
  init_lora_weights: boolean | string;
  layers_pattern: string | string[] | null;
  layers_to_transform: number | number[] | null;
  lora_alpha: number;
  lora_dropout: number;
  modules_to_save: string[] | null;
  peft_type: string;
  r: number;
  rank_pattern: Record<string, number>;
  revision: string | null;
  target_modules: string[] | string;
  task_type: string | null;
  use_dora: boolean;
  use_rslora: boolean;
}

/**
 * rlora_config.json: rlora's own settings, next to adapter_config.json. Adapters saved by rlora
 * 0.x before this file existed hold the same fields as an `rlora` section inside
 * adapter_config.json; load still reads that.
 */
export interface RloraConfigJson {
  version: string;
  method: ResolvedLoraOptions['method'];
  heads: number;
  dropout_on: ResolvedLoraOptions['dropoutOn'];
  multi_head_dropout: boolean;
  init: ResolvedLoraOptions['init'];
  seed: number;
  modules: string[];
  base_model: BaseShape;
  /** Whether PEFT can load this folder (plain LoRA: one head, no offset). */
  peft_loadable?: boolean;
  /** How the training data was encoded (Adapter.trainingData), when a Trainer trained it. */
  data?: DataSettings;
}

/** The shape of `model` as rlora_config.json records it. */
export function baseShape(model: Model): BaseShape {
  const c = model.resolvedConfig;
  return {
    architecture: c.architecture,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_key_value_heads: c.numKeyValueHeads,
    vocab_size: c.vocabSize,
  };
}

/** An adapter folder's two configs as read: `rlora` is undefined for a PEFT folder. */
export interface AdapterFolder {
  configPath: string;
  rloraPath: string;
  weightsPath: string;
  /** adapter_config.json; its values are the file's, checked by whoever reads them. */
  config: Partial<AdapterConfigJson> & Record<string, unknown>;
  /** rlora_config.json, or the `rlora` section of adapter_config.json written by earlier rlora versions. */
  rlora?: RloraConfigJson;
}

/**
 * Reads the configs of the adapter folder `dir` (adapter_config.json and the weights file must
 * exist) and checks what rlora wrote into them: each a JSON object, rlora_config.json's `data`.
 * Errors name the file (and the key).
 */
export function readAdapterFolder(dir: string): AdapterFolder {
  const configPath = path.join(dir, ADAPTER_CONFIG_FILE);
  const rloraPath = path.join(dir, RLORA_CONFIG_FILE);
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS_FILE);
  if (!fs.existsSync(configPath)) throw new Error(`no ${ADAPTER_CONFIG_FILE} in ${dir}`);
  if (!fs.existsSync(weightsPath)) throw new Error(`no ${ADAPTER_WEIGHTS_FILE} in ${dir}`);
  const raw = readJsonFile(configPath);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${configPath} must hold a JSON object`);
  const config = raw as Partial<AdapterConfigJson> & { rlora?: RloraConfigJson } & Record<string, unknown>;
  let rlora: RloraConfigJson | undefined = config.rlora;
  if (fs.existsSync(rloraPath)) {
    const rc = readJsonFile(rloraPath);
    if (typeof rc !== 'object' || rc === null || Array.isArray(rc)) throw new Error(`${rloraPath} must hold a JSON object`);
    rlora = rc as RloraConfigJson;
    const d = rlora.data as unknown;
    if (d !== undefined) {
      const ds = d as DataSettings;
      const ok = typeof d === 'object' && d !== null && !Array.isArray(d) && (typeof ds.template === 'string' || ds.template === null) &&
        Number.isSafeInteger(ds.maxLength) && ds.maxLength >= 2 && typeof ds.fields === 'object' && ds.fields !== null && (ds.chat === undefined || typeof ds.chat === 'boolean');
      if (!ok) throw new Error(`${rloraPath}: data must be {template, maxLength, fields, addBos, addEos, tokenizer} as rlora writes it, got ${JSON.stringify(d)}`);
    }
  }
  return { configPath, rloraPath, weightsPath, config, ...(rlora ? { rlora } : {}) };
}

/**
 * Refuses an rlora adapter saved for a model of another shape than `model`'s, naming each
 * difference (a PEFT folder records no shape: its weights' shapes are checked when loaded).
 */
export function checkBaseShape(folder: AdapterFolder, model: Model, dir: string): void {
  const r = folder.rlora;
  if (!r) return;
  const want = baseShape(model);
  const diff = (Object.keys(want) as (keyof BaseShape)[]).filter((k) => want[k] !== r.base_model?.[k]);
  if (diff.length) {
    throw new Error(`the adapter in ${dir} was saved for a different model: ${diff.map((k) => `${k} ${r.base_model?.[k]} there, ${want[k]} here`).join('; ')}`);
  }
}

/** The last part of a full module name, as target_modules lists it: 'q_proj' of 'model.layers.0.self_attn.q_proj'. */
export const short = (module: string): string => module.slice(module.lastIndexOf('.') + 1);

/** What the two configs of a saved adapter are made from. */
export interface FolderConfigInput {
  /** The adapter's shared options (the file's defaults `r`, `lora_alpha`). */
  options: ResolvedLoraOptions;
  /** Each adapted module (full name, in model order) with the rank and alpha in force there. */
  modules: ReadonlyMap<string, { rank: number; alpha: number }>;
  model: Model;
  version: string;
  data?: DataSettings;
}

/**
 * adapter_config.json and rlora_config.json of an adapter. Modules whose rank or alpha differ from
 * the shared options are listed by full name in rank_pattern / alpha_pattern; target_modules holds
 * the short names when they select exactly the adapted modules, else the full names.
 */
export function folderConfigs(input: FolderConfigInput): { config: AdapterConfigJson; rlora: RloraConfigJson } {
  const { options: o, modules: byName, model } = input;
  const modules = [...byName.keys()];
  const plain = o.heads === 1 && !o.init.offset;
  const shorts = [...new Set(modules.map(short))].sort();
  const byShorts = model.linearModuleNames().filter((n) => shorts.includes(short(n)));
  const exact = byShorts.length === modules.length && byShorts.every((n) => byName.has(n));
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const [name, m] of byName) {
    if (m.rank !== o.rank) rankPattern[name] = m.rank;
    if (m.alpha !== o.alpha) alphaPattern[name] = m.alpha;
  }
  const config: AdapterConfigJson = {
    alpha_pattern: alphaPattern,
    // a Hub repo by its id (and revision), as PEFT writes them; a folder by its path
    base_model_name_or_path: model.hub?.repo ?? model.source ?? null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: o.alpha,
    lora_dropout: o.dropout,
    modules_to_save: null,
    peft_type: plain ? 'LORA' : 'RLORA',
    r: o.rank,
    rank_pattern: rankPattern,
    revision: model.hub && model.hub.revision !== 'main' ? model.hub.revision : null,
    target_modules: exact ? shorts : modules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: o.rankStabilization,
  };
  const rlora: RloraConfigJson = {
    version: input.version,
    method: o.method,
    heads: o.heads,
    dropout_on: o.dropoutOn,
    multi_head_dropout: o.multiHeadDropout,
    init: o.init,
    seed: o.seed,
    modules,
    base_model: baseShape(model),
    peft_loadable: plain,
  };
  if (input.data) rlora.data = input.data;
  return { config, rlora };
}
