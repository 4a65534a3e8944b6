// Adapter: multi-head LoRA layers attached to a Model's linear modules, saved and loaded in the
// adapter folder of docs/ARCHITECTURE.md section 4 (PEFT's names and config keys for plain LoRA).
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as util from 'util';

import { assertNotTraining, attachedTo, setAttached, setOwner } from './activity';
import type { DataSettings } from './data';
import { LoraOptions, MultiHeadLoraLinear, ResolvedLoraOptions } from './layer';
import { Model } from './model';
import { forEachSafetensor, readSafetensorsHeader, saveSafetensors } from './safetensors';
import { Tensor } from './tensor';
import { renderModelCard } from './model-card';
import type { ModelCardInput } from './model-card';
import type { TextTokenizer, TokenizerFiles } from './tokenizer';
import { naming, writeFileFully } from './util/files';
import { budgetFor, withBudget } from './util/budget';
import { replaceFolder } from './replace-folder';
import { readJsonFile } from './util/json';
import { checkInstance, checkKeys, inspectSymbol, isPlainObject, show } from './util/options';
import { ADAPTER_CONFIG_FILE, ADAPTER_FILES, ADAPTER_WEIGHTS_FILE, RLORA_CONFIG_FILE } from './adapter-files';
import { checkHubOptions, HUB_OPTION_NAMES, HubOptions, resolveRepo } from './hub/resolve';


// eslint-disable-next-line @typescript-eslint/no-require-imports
const VERSION: string = (require('../package.json') as { version: string }).version;

export interface AdapterOptions extends LoraOptions {
  /**
   * Which linear modules to wrap: names as users know them ('q_proj', 'gate_proj', 'lm_head'),
   * matched against the last part of the full module names, or full names, or a RegExp tested
   * against full names ('model.layers.0.mlp.up_proj').
   */
  targetModules: string[] | RegExp;
}

const PREFIX = 'base_model.model.';

/** The base-model shape an adapter was made for (checked on load). */
interface BaseShape {
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
interface AdapterConfigJson {
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
interface RloraConfigJson {
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

/**
 * PEFT's per-module pattern lookup (peft.utils.other.get_pattern_key): the first key, in file
 * order, that matches the end of the full module name as a regular expression preceded by a dot
 * (or the whole name): `re.match(rf"(.*\.)?({key})$", name)`. Falls back to the full name itself as a key.
 */
function patternValue(pattern: Record<string, number>, name: string, fallback: number, what: string): number {
  for (const [key, value] of Object.entries(pattern)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:.*\\.)?(?:${key})$`);
    } catch (e) {
      throw new Error(`${what} key ${JSON.stringify(key)} is not a regular expression: ${(e as Error).message}`);
    }
    if (re.test(name)) return value;
  }
  return Object.hasOwn(pattern, name) ? pattern[name] : fallback;
}

/**
 * The layer index PEFT reads from a module name for `layers_to_transform`
 * (peft.tuners.tuners_utils.check_target_module_exists): the number after `.<layers_pattern>.`,
 * or, with no layers_pattern (PEFT's default, null), after any `.<name>.`.
 */
function layerIndex(name: string, layersPattern: string | string[] | null | undefined): number | undefined {
  const patterns = layersPattern == null || layersPattern.length === 0 ? null : typeof layersPattern === 'string' ? [layersPattern] : layersPattern;
  const regexes = patterns ? patterns.map((p) => new RegExp(`^.*\\.${p}\\.(\\d+)\\.`)) : [/^.*\.[^.]*\.(\d+)\./];
  for (const re of regexes) {
    const m = re.exec(name);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** Values of init_lora_weights whose initialisation rewrites the base weights (PiSSA, OLoRA, CorDA, LoftQ). */
const BASE_CHANGING_INIT = /^(pissa.*|olora|corda|loftq)$/i;

/** Refuses adapter_config.json options that rlora cannot reproduce, naming the option and the file. */
function refuseUnsupported(cfg: Record<string, unknown>, file: string): void {
  const no = (what: string): never => {
    throw new Error(`${file}: ${what}, which rlora does not support`);
  };
  if (cfg.use_dora === true) no('use_dora is true (DoRA, weight-decomposed LoRA)');
  const mts = cfg.modules_to_save;
  if (mts != null && !(Array.isArray(mts) && mts.length === 0)) no(`modules_to_save is ${JSON.stringify(mts)} (fully trained extra modules)`);
  if (cfg.bias !== undefined && cfg.bias !== 'none') no(`bias is ${JSON.stringify(cfg.bias)} (trained biases; only "none")`);
  if (cfg.fan_in_fan_out === true) no('fan_in_fan_out is true (Conv1D-style transposed weights)');
  if (cfg.task_type != null && cfg.task_type !== 'CAUSAL_LM') no(`task_type is ${JSON.stringify(cfg.task_type)} (only "CAUSAL_LM" or null)`);
  if (cfg.lora_bias === true) no('lora_bias is true (a bias on lora_B)');
  if (cfg.layer_replication != null) no('layer_replication is set');
  const tti = cfg.trainable_token_indices;
  if (tti != null && !(Array.isArray(tti) && tti.length === 0)) no('trainable_token_indices is set');
  const tp = cfg.target_parameters;
  if (tp != null && !(Array.isArray(tp) && tp.length === 0)) no('target_parameters is set');
  if (typeof cfg.init_lora_weights === 'string' && BASE_CHANGING_INIT.test(cfg.init_lora_weights)) {
    no(`init_lora_weights is ${JSON.stringify(cfg.init_lora_weights)} (an initialisation that rewrote the base weights)`);
  }
  for (const k of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = cfg[k];
    if (v != null && (typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'number'))) {
      throw new Error(`${file}: ${k} must be an object of module patterns to numbers, got ${JSON.stringify(v)}`);
    }
  }
  const ltt = cfg.layers_to_transform;
  if (ltt != null && !Number.isInteger(ltt) && !(Array.isArray(ltt) && ltt.every((x) => Number.isInteger(x)))) {
    throw new Error(`${file}: layers_to_transform must be a layer index or a list of them, got ${JSON.stringify(ltt)}`);
  }
}

/**
 * The modules a PEFT config targets, as PEFT chooses them: a string target_modules is a regular
 * expression matched against the whole name ("all-linear": every linear module but lm_head); a
 * list matches a name equal to an entry or ending in "." + entry, and only such suffix matches are
 * then limited to `layers_to_transform`; exclude_modules is taken out first.
 */
/** A regular expression an adapter config holds, compiled; a bad one names the file and key. */
function configRegExp(source: string, file: string, key: string): RegExp {
  try {
    return new RegExp(source);
  } catch (e) {
    throw new Error(`${file}: ${key} is not a valid regular expression (${(e as Error).message})`);
  }
}

/** exclude_modules / layers_pattern: null, a string, or a list of strings; anything else names the file and key. */
function stringOrList(v: unknown, file: string, key: string): string | string[] | null {
  if (v == null) return null;
  if (typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string'))) return v as string | string[];
  throw new Error(`${file}: ${key} must be a string, a list of strings or null, got ${JSON.stringify(v)}`);
}

function peftTargets(model: Model, cfg: Record<string, unknown>, file: string): string[] | RegExp {
  const tm = cfg.target_modules;
  const ltt = cfg.layers_to_transform as number | number[] | null | undefined;
  const usesLayers = ltt != null && !(Array.isArray(ltt) && ltt.length === 0);
  const ex = stringOrList(cfg.exclude_modules, file, 'exclude_modules');
  const layersPattern = stringOrList(cfg.layers_pattern, file, 'layers_pattern');
  for (const p of layersPattern === null ? [] : typeof layersPattern === 'string' ? [layersPattern] : layersPattern) configRegExp(p, file, 'layers_pattern');
  const exRe = typeof ex === 'string' ? configRegExp(`^(?:${ex})$`, file, 'exclude_modules') : null;
  const excluded = (n: string): boolean =>
    ex === null ? false : exRe ? exRe.test(n) : (ex as string[]).includes(n) || (ex as string[]).some((e) => n.endsWith(`.${e}`));
  if (typeof tm === 'string') {
    if (usesLayers) throw new Error(`${file}: layers_to_transform cannot be used when target_modules is a string (as in PEFT)`);
    const re = tm.toLowerCase() === 'all-linear' ? /^(?!lm_head$).*$/ : configRegExp(`^(?:${tm})$`, file, 'target_modules');
    if (ex === null) return re;
    return model.linearModuleNames().filter((n) => re.test(n) && !excluded(n));
  }
  if (!Array.isArray(tm) || tm.length === 0 || !tm.every((t) => typeof t === 'string')) {
    throw new Error(`${file}: target_modules must be a non-empty list of module names or a regular expression, got ${JSON.stringify(tm)}`);
  }
  if (!usesLayers && ex === null) return tm as string[];
  const chosen = resolveTargets(model, tm as string[]).filter((n) => {
    if (excluded(n)) return false;
    if (!usesLayers || tm.includes(n)) return true; // an exact full name ignores layers_to_transform, as in PEFT
    const i = layerIndex(n, layersPattern);
    return i !== undefined && (Array.isArray(ltt) ? ltt.includes(i) : i === ltt);
  });
  if (chosen.length === 0) throw new Error(`${file}: target_modules ${JSON.stringify(tm)} with layers_to_transform ${JSON.stringify(ltt)} selects no module of this model`);
  return chosen;
}

function baseShape(model: Model): BaseShape {
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

const short = (module: string): string => module.slice(module.lastIndexOf('.') + 1);

/** The linear modules `targets` names; errors name what was asked and what exists. */
function resolveTargets(model: Model, targets: string[] | RegExp): string[] {
  const linear = model.linearModuleNames();
  const all = model.moduleNames();
  const available = [...new Set(linear.map(short))].join(', ');
  if (targets instanceof RegExp) {
    const hit = linear.filter((n) => targets.test(n));
    if (hit.length === 0) {
      const nonLinear = all.filter((n) => targets.test(n));
      if (nonLinear.length) throw new Error(`targetModules ${targets} matches only modules that are not linear: ${nonLinear.slice(0, 5).join(', ')}`);
      throw new Error(`targetModules ${targets} matches no module; the linear modules are ${available} (e.g. ${linear[0]})`);
    }
    return hit;
  }
  if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string')) {
    throw new TypeError(`targetModules must be a non-empty array of module names or a RegExp, got ${util.inspect(targets, { depth: 0 })}`);
  }
  const chosen = new Set<string>();
  const fusedInto: Record<string, string> = { q_proj: 'qkv_proj', k_proj: 'qkv_proj', v_proj: 'qkv_proj', gate_proj: 'gate_up_proj', up_proj: 'gate_up_proj' };
  for (const t of targets) {
    const named = all.filter((n) => n === t || n.endsWith(`.${t}`));
    const fused = fusedInto[t];
    if (named.length === 0 && fused && linear.some((n) => n.endsWith(`.${fused}`))) {
      throw new Error(
        `target module "${t}": ${model.resolvedConfig.architecture} fuses ${fused === 'qkv_proj' ? 'q_proj, k_proj and v_proj' : 'gate_proj and up_proj'} into one ${fused}; ` +
          `target "${fused}" (one adapter over the fused projection, as PEFT does); the linear modules are ${available}`,
      );
    }
    if (named.length === 0) throw new Error(`target module "${t}" matches no module of this model; the linear modules are ${available}`);
    const notLinear = named.filter((n) => !linear.includes(n));
    if (notLinear.length) throw new Error(`target module "${t}" is not a linear layer (${notLinear[0]}); the linear modules are ${available}`);
    for (const n of named) chosen.add(n);
  }
  return linear.filter((n) => chosen.has(n));
}

/**
 * The seed of one module's layer in an adapter of seed `seed`: the first 48 bits (big-endian) of
 * SHA-256 of the text `rlora/<seed>/<full module name>`, e.g. `rlora/0/model.layers.0.mlp.gate_proj`.
 * Hashing the name (rather than counting modules) keeps the streams of different seeds and
 * modules apart: seed 1's first module does not draw what seed 0's second drew.
 */
export function moduleSeed(seed: number, module: string): number {
  return hash48(`rlora/${seed}/${module}`);
}

/** @internal The first 48 bits (big-endian) of SHA-256 of `text`, as a number. */
export function hash48(text: string): number {
  return createHash('sha256').update(text).digest().readUIntBE(0, 6);
}

export interface AdapterSaveOptions {
  /** Also write its tokenizer.json and tokenizer_config.json, so the folder is complete for sharing (Tokenizer.fromFile reads it back). */
  tokenizer?: TextTokenizer;
  /** Also write README.md, a model card (true), with an evaluation table and a paragraph of your own when given. */
  modelCard?: boolean | { metrics?: ModelCardInput['metrics']; description?: string };
}

/** The files of an adapter folder (the rest is the user's, and kept by save). */

/**
 * How many values an adapter of `heads` heads and rank `rankOf(module)` holds on `modules` (A, the
 * heads B_i, the router); undefined when a size is no integer within the layer's bounds (kMaxRank
 * 65536, kMaxHeads 1024 in native/rlora/options.h), whose own check then names it.
 */
function adapterValueCount(model: Model, modules: string[], rankOf: (module: string) => unknown, heads: unknown): number | undefined {
  const ok = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= max;
  if (!ok(heads, 1024)) return undefined;
  let n = 0;
  for (const name of modules) {
    const rank = rankOf(name);
    if (!ok(rank, 65536)) return undefined;
    const [out, inp] = model.linearParameters(name).weight.shape;
    n += rank * inp + heads * rank * out + (heads > 1 ? heads * inp : 0);
  }
  return n;
}

/**
 * The largest magnitude an adapter weight file may hold: the product of two such values (A x, then
 * B (A x)) reaches float32's limit (3.4e38). Trained adapters hold values many orders below it.
 */
export const MAX_ADAPTER_VALUE = 1e18;

/** Options of Adapter.load: where a Hub id comes from (HubOptions), and the name to load it under. */
export interface AdapterLoadOptions extends HubOptions {
  /**
   * Load it under this name beside the model's other adapters (as PEFT's load_adapter): it becomes
   * active when none is, else it waits for Adapter.setActive(model, name). Without a name it is
   * the model's 'default' adapter and no other may be attached.
   */
  name?: string;
}

/** The adapters loaded by name on each model (Adapter.loaded, Adapter.setActive). */
const loadedAdapters = new WeakMap<Model, Map<string, Adapter>>();

/** An unnamed adapter is the model's 'default': refused while another holds that name (inactive). */
function checkNoDefault(model: Model): void {
  const other = loadedAdapters.get(model)?.get('default');
  if (other && !attachedTo(model)) throw new Error('this model has an adapter named "default" loaded (not active); give this one a name (Adapter.load(model, dir, {name})) or detach() that one first');
}

export class Adapter {
  readonly model: Model;
  /** Wrapped modules by full name, in model order. */
  readonly layers: ReadonlyMap<string, MultiHeadLoraLinear>;
  /**
   * The shared layer options (seeds differ per module). A PEFT adapter with rank_pattern /
   * alpha_pattern gives some modules their own rank and alpha: each layer's `options` say what is
   * in force for that module; these are the file's defaults (`r`, `lora_alpha`).
   */
  readonly options: ResolvedLoraOptions;
  readonly targetModules: string[] | RegExp;
  /**
   * How the data it was trained on was encoded (template, maxLength, fields, tokenizer): set by
   * Trainer.fit, written by save() into rlora_config.json (`data`), read back by load(), and used
   * by `rlora eval` so the adapter is evaluated on data encoded as in training.
   */
  trainingData?: DataSettings;
  /**
   * Its name on the model ('default' unless Adapter.load was given one). Several named adapters
   * can be loaded on one model, one active at a time (Adapter.setActive), as PEFT's
   * load_adapter / set_adapter.
   */
  get name(): string {
    return this.#name;
  }
  #name = 'default';
  private live = true;
  /** Its layers are in the model's forward (false: loaded under a name, another one active). */
  private active = true;
  private disposed = false;

  private constructor(model: Model, layers: Map<string, MultiHeadLoraLinear>, options: ResolvedLoraOptions, targets: string[] | RegExp) {
    this.model = model;
    this.layers = layers;
    this.options = options;
    this.targetModules = targets;
  }

  /**
   * Wraps every matching linear module of `model` with a MultiHeadLoraLinear (base weights stay
   * frozen and untouched). Each module gets its own seed, `moduleSeed(options.seed, name)`, so
   * every (seed, module) pair draws an independent stream of initial values and dropout masks. The adapter
   * starts in evaluation mode (no dropout); Trainer.fit switches it to training mode while it runs.
   */
  static attach(model: Model, options: AdapterOptions): Adapter {
    const { targetModules, ...layerOptions } = options ?? ({} as AdapterOptions);
    checkNoDefault(model);
    const adapter = Adapter.build(model, targetModules, layerOptions);
    adapter.register('default');
    return adapter;
  }

  /**
   * attach, with optional per-module rank and alpha (PEFT's rank_pattern / alpha_pattern):
   * `perModule(name)` overrides the shared options of one module. `options` of the Adapter stay the
   * shared ones; each layer's `options` are the ones in force for that module.
   */
  private static build(model: Model, targetModules: string[] | RegExp, layerOptions: LoraOptions, perModule?: (name: string) => Partial<LoraOptions>): Adapter {
    checkInstance(model, Model, 'Adapter.attach: the model');
    if (attachedTo(model)) throw new Error('this model already has an adapter attached; detach() it first');
    const modules = resolveTargets(model, targetModules);
    const seed = layerOptions.seed ?? 0;
    if (typeof seed !== 'number') throw new TypeError(`seed must be a non-negative integer, got ${show(seed)}`);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer, got ${show(seed)}`);
    // sizes the user gave that this machine cannot hold (float32 values) are refused before allocating
    const values = adapterValueCount(model, modules, (name) => perModule?.(name).rank ?? layerOptions.rank, layerOptions.heads ?? 1);
    if (values !== undefined && values * 4 > os.totalmem()) {
      throw new RangeError(`rank ${layerOptions.rank} and ${layerOptions.heads ?? 1} heads on ${modules.length} modules make ${values} adapter values (${(values * 4 / 2 ** 30).toFixed(1)} GiB as float32), more than this machine's memory (${(os.totalmem() / 2 ** 30).toFixed(1)} GiB)`);
    }
    const layers = new Map<string, MultiHeadLoraLinear>();
    try {
      for (const name of modules) {
        const own = perModule?.(name) ?? {};
        try {
          layers.set(name, new MultiHeadLoraLinear(model.linearParameters(name), { ...layerOptions, ...own, seed: moduleSeed(seed, name) }).eval());
        } catch (e) {
          throw perModule ? new Error(`module ${name}: ${(e as Error).message}`) : e;
        }
      }
    } catch (e) {
      for (const l of layers.values()) l.dispose();
      throw e;
    }
    for (const [name, layer] of layers) {
      model.native.setAdapter(name, layer.native);
      setOwner(layer, model); // training the model holds its adapter's layers too (activity.ts)
    }
    const first = layers.values().next().value as MultiHeadLoraLinear;
    let shared: ResolvedLoraOptions = { ...first.options, seed };
    if (perModule) {
      // the shared (default) rank and alpha, which no module may use when every one has its own
      const rank = layerOptions.rank ?? shared.rank;
      const alpha = layerOptions.alpha ?? shared.alpha;
      const same = [...layers.values()].find((l) => l.options.rank === rank && l.options.alpha === alpha);
      const scaling = same ? same.options.scaling : shared.rankStabilization ? alpha / Math.sqrt(rank) : alpha / rank;
      shared = { ...shared, rank, alpha, scaling };
    }
    const adapter = new Adapter(model, layers, shared, targetModules);
    setAttached(model, adapter);
    return adapter;
  }

  /** The adapters loaded on `model` by name (the active one and those loaded beside it). */
  static loaded(model: Model): ReadonlyMap<string, Adapter> {
    return new Map(loadedAdapters.get(model) ?? []);
  }

  /**
   * Makes the adapter loaded under `name` the active one of `model` (its layers in every forward
   * and generation from now on), or none with null (the base model alone), as PEFT's set_adapter /
   * disable_adapter. Refused while the model trains; a generation that started with other adapters
   * refuses to go on afterwards (its key/value cache holds what they made).
   */
  static setActive(model: Model, name: string | null): void {
    checkInstance(model, Model, 'Adapter.setActive: the model');
    assertNotTraining(model, 'Adapter.setActive');
    const current = Adapter.of(model);
    if (name === null) {
      current?.deactivate();
      return;
    }
    if (typeof name !== 'string') throw new TypeError(`Adapter.setActive: name must be a string or null, got ${show(name)}`);
    const next = Adapter.loaded(model).get(name);
    if (!next) {
      const names = [...Adapter.loaded(model).keys()];
      throw new RangeError(`Adapter.setActive: no adapter named ${JSON.stringify(name)} is loaded on this model${names.length ? `; loaded: ${names.join(', ')}` : ''}`);
    }
    if (next === current) return;
    current?.deactivate();
    next.activate();
  }

  /** Takes this adapter's layers out of the model's forward; it stays loaded under its name. */
  private deactivate(): void {
    if (!this.active) return;
    for (const [module, layer] of this.layers) {
      this.model.native.setAdapter(module, null);
      setOwner(layer, undefined);
    }
    setAttached(this.model, undefined);
    this.active = false;
  }

  /** Puts this adapter's layers into the model's forward (none other may be active). */
  private activate(): void {
    if (this.active) return;
    for (const [module, layer] of this.layers) {
      this.model.native.setAdapter(module, layer.native);
      setOwner(layer, this.model);
    }
    setAttached(this.model, this);
    this.active = true;
  }

  private unregister(): void {
    const byName = loadedAdapters.get(this.model);
    if (byName?.get(this.#name) === this) byName.delete(this.#name);
  }

  /** Records this adapter under `name` on its model. */
  private register(name: string): void {
    this.unregister();
    const byName = loadedAdapters.get(this.model) ?? new Map<string, Adapter>();
    byName.set(name, this);
    loadedAdapters.set(this.model, byName);
    this.#name = name;
  }

  /** The adapter attached to a model, if any. */
  static of(model: Model): Adapter | undefined {
    const a = attachedTo(model);
    return a instanceof Adapter ? a : undefined;
  }

  /**
   * Attaches the adapter saved in `dir` (by rlora, or a LoRA adapter saved by PEFT) to `model`.
   * rlora's own settings come from rlora_config.json, or from the `rlora` section of
   * adapter_config.json in folders saved by earlier rlora versions; without either the folder is a
   * PEFT LoRA adapter: target_modules, exclude_modules, layers_to_transform / layers_pattern,
   * rank_pattern and alpha_pattern are read as PEFT reads them. Options rlora cannot reproduce
   * (use_dora, modules_to_save, bias other than "none", fan_in_fan_out, task_type other than
   * CAUSAL_LM, lora_bias, layer_replication, trainable_token_indices, target_parameters, an
   * init_lora_weights that rewrote the base weights) are refused, naming the option and the file.
   * On any error nothing stays attached.
   *
   * `dir` may be a Hugging Face Hub repo id where no such folder exists: the adapter then comes
   * from the Hugging Face cache, else it is downloaded into it (`options`: HubOptions), as
   * Model.fromPretrained does.
   */
  static async load(model: Model, dir: string, options: AdapterLoadOptions = {}): Promise<Adapter> {
    checkInstance(model, Model, 'Adapter.load: the model');
    const where = `Adapter.load(${JSON.stringify(dir)})`;
    checkKeys(options as unknown, ['name', ...HUB_OPTION_NAMES], where);
    const { name, ...hub } = options;
    checkHubOptions(hub, where);
    if (name !== undefined) {
      if (typeof name !== 'string') throw new TypeError(`${where}: name must be a string, got ${show(name)}`);
      if (!/^[\w.:-]{1,128}$/.test(name)) throw new RangeError(`${where}: name must be 1 to 128 letters, digits, '_', '.', ':' or '-', got ${show(name)}`);
      if (Adapter.loaded(model).has(name)) throw new RangeError(`${where}: an adapter named ${JSON.stringify(name)} is already loaded on this model`);
    } else checkNoDefault(model);
    const folder = (await resolveRepo(dir, { ...hub, kind: 'adapter' }, where)).path;
    if (name === undefined) {
      const adapter = await Adapter.loadOne(model, folder);
      adapter.register('default');
      return adapter;
    }
    // loaded beside the active adapter: that one is taken out while this one is built, then put back
    const current = Adapter.of(model);
    current?.deactivate();
    let loaded: Adapter | undefined;
    try {
      loaded = await Adapter.loadOne(model, folder);
      loaded.register(name);
      if (current) loaded.deactivate();
    } finally {
      current?.activate();
    }
    return loaded;
  }

  private static async loadOne(model: Model, dir: string): Promise<Adapter> {
    const configPath = path.join(dir, ADAPTER_CONFIG_FILE);
    const rloraPath = path.join(dir, RLORA_CONFIG_FILE);
    const weightsPath = path.join(dir, ADAPTER_WEIGHTS_FILE);
    if (!fs.existsSync(configPath)) throw new Error(`no adapter_config.json in ${dir}`);
    if (!fs.existsSync(weightsPath)) throw new Error(`no adapter_model.safetensors in ${dir}`);
    const raw = readJsonFile(configPath);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${configPath} must hold a JSON object`);
    const cfg = raw as Partial<AdapterConfigJson> & { rlora?: RloraConfigJson } & Record<string, unknown>;
    // rlora_config.json, or the `rlora` section of adapter_config.json written by earlier rlora versions
    let r: RloraConfigJson | undefined = cfg.rlora;
    if (fs.existsSync(rloraPath)) {
      const rc = readJsonFile(rloraPath);
      if (typeof rc !== 'object' || rc === null || Array.isArray(rc)) throw new Error(`${rloraPath} must hold a JSON object`);
      r = rc as RloraConfigJson;
      const d = r.data as unknown;
      if (d !== undefined) {
        const ds = d as DataSettings;
        const ok = typeof d === 'object' && d !== null && !Array.isArray(d) && (typeof ds.template === 'string' || ds.template === null) &&
          Number.isSafeInteger(ds.maxLength) && ds.maxLength >= 2 && typeof ds.fields === 'object' && ds.fields !== null && (ds.chat === undefined || typeof ds.chat === 'boolean');
        if (!ok) throw new Error(`${rloraPath}: data must be {template, maxLength, fields, addBos, addEos, tokenizer} as rlora writes it, got ${JSON.stringify(d)}`);
      }
    }
    refuseUnsupported(cfg, configPath);
    if (r) {
      const want = baseShape(model);
      const diff = (Object.keys(want) as (keyof BaseShape)[]).filter((k) => want[k] !== r.base_model?.[k]);
      if (diff.length) {
        throw new Error(
          `the adapter in ${dir} was saved for a different model: ${diff.map((k) => `${k} ${r.base_model?.[k]} there, ${want[k]} here`).join('; ')}`,
        );
      }
    } else if (cfg.peft_type !== 'LORA') {
      throw new Error(`${configPath}: peft_type ${JSON.stringify(cfg.peft_type)} is not supported (rlora adapters or PEFT LORA)`);
    }
    const rankPattern = cfg.rank_pattern ?? {};
    const alphaPattern = cfg.alpha_pattern ?? {};
    const patterned = Object.keys(rankPattern).length + Object.keys(alphaPattern).length > 0;
    const r0 = cfg.r as number;
    const alpha0 = cfg.lora_alpha as number;
    // target_modules, exclude_modules and the pattern keys are regular expressions from a file:
    // matched once here under a time budget (one like "(.|.)*z" backtracks for minutes); the same
    // matching when the adapter is built then costs no more than it did here
    const keys = 2 + Object.keys(rankPattern).length + Object.keys(alphaPattern).length;
    const { targets, perName } = withBudget(
      budgetFor(model.moduleNames().join('.').length * keys),
      () => {
        const targets = r ? r.modules : peftTargets(model, cfg, configPath);
        const perName = patterned
          ? new Map(resolveTargets(model, targets).map((name): [string, Partial<LoraOptions>] => [name, {
              rank: patternValue(rankPattern, name, r0, `${configPath}: rank_pattern`),
              alpha: patternValue(alphaPattern, name, alpha0, `${configPath}: alpha_pattern`),
            }]))
          : (resolveTargets(model, targets), undefined);
        return { targets, perName };
      },
      () => `${configPath}: target_modules, exclude_modules or a rank_pattern/alpha_pattern key is a regular expression that ran too long on this model's module names (one that backtracks?)`,
    );
    const perModule = perName ? (name: string): Partial<LoraOptions> => perName.get(name) ?? {} : undefined;
    // the config's sizes, checked against what the weights file holds before anything is allocated
    // (heads 1024 and r 65536, each within its bound, took 10 GB and more, then failed on the file)
    const heads = r?.heads ?? 1;
    const modules = resolveTargets(model, targets);
    const needed = adapterValueCount(model, modules, (name) => perName?.get(name)?.rank ?? r0, heads);
    const held = readSafetensorsHeader(weightsPath).entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
    if (needed !== undefined && needed > held) {
      throw new Error(`${configPath}: r ${r0} and ${heads} head${heads === 1 ? '' : 's'} on ${modules.length} modules make ${needed} adapter values, but ${weightsPath} holds ${held}: the config does not describe these weights`);
    }
    // a value out of range names the files it was read from ("r": 0 said only "rank must be ...")
    const adapter = naming(r ? `${configPath} / ${RLORA_CONFIG_FILE}` : configPath, () => Adapter.build(
      model,
      targets,
      {
        method: r?.method ?? 'lora',
        rank: r0,
        heads: r?.heads ?? 1,
        alpha: alpha0,
        dropout: cfg.lora_dropout,
        dropoutOn: r?.dropout_on ?? 'input',
        multiHeadDropout: r?.multi_head_dropout ?? false,
        rankStabilization: cfg.use_rslora ?? false,
        init: r?.init ?? { offset: false },
        seed: r?.seed ?? 0,
      },
      perModule,
    ));
    try {
      adapter.loadWeights(weightsPath);
    } catch (e) {
      adapter.detach();
      throw e;
    }
    if (r?.data !== undefined) adapter.trainingData = r.data;
    return adapter;
  }

  /**
   * @internal Loads every module's weights from an adapter_model.safetensors (rlora's or PEFT's
   * names) into this adapter's layers. Adapter.load, and Trainer's loadBestAtEnd.
   */
  loadWeights(file: string): void {
    assertNotTraining(this.model, 'Adapter.loadWeights', true);
    const byModule = new Map<string, Record<string, Tensor>>();
    forEachSafetensor(file, (e, t) => {
      const key = e.name.startsWith(PREFIX) ? e.name.slice(PREFIX.length) : e.name;
      const cut = key.indexOf('.lora_');
      const module = cut < 0 ? '' : key.slice(0, cut);
      if (!this.layers.has(module)) throw new Error(`${file} holds ${e.name}, which belongs to no adapted module`);
      // as a base weight would be: NaN or infinite values make every output non-finite, silently
      const values = (t.dtype === 'float32' || t.dtype === 'float64' ? t : t.to('float32')).data() as Float32Array | Float64Array;
      let largest = 0;
      for (const v of values) {
        if (!Number.isFinite(v)) throw new Error(`${file}: ${e.name} holds NaN or infinite values`);
        largest = Math.max(largest, Math.abs(v));
      }
      // a value this large makes the layer's products overflow float32 (1e38 in lora_A loaded and every logit was infinite)
      if (largest > MAX_ADAPTER_VALUE) throw new Error(`${file}: ${e.name} holds a value of magnitude ${largest.toExponential(3)}, above ${MAX_ADAPTER_VALUE.toExponential(0)}: the adapter's outputs would overflow to infinity`);
      const entry = byModule.get(module) ?? {};
      entry[key.slice(cut + 1)] = t;
      byModule.set(module, entry);
    });
    for (const [module, layer] of this.layers) {
      try {
        layer.loadValues(byModule.get(module) ?? {});
      } catch (e) {
        throw new Error(`${file}, module ${module}: ${(e as Error).message}`);
      }
    }
  }

  private check(): void {
    if (this.disposed) throw new Error('this Adapter was disposed');
    if (!this.live) throw new Error('this adapter has been detached or merged');
    if (!this.active) throw new Error(`the adapter ${JSON.stringify(this.#name)} is not active on its model: Adapter.setActive(model, ${JSON.stringify(this.#name)}) first`);
  }
  /**
   * Frees the native memory now instead of when the collector gets to it (rlora tells V8 how much
   * native memory each object holds, so dropped objects are collected in time anyway). A live adapter is detached first (the model is as before it). Using
   * the Adapter afterwards throws "this Adapter was disposed". `using x = ...` calls it at the end of
   * the block. Refused while the model trains.
   */
  dispose(): void {
    if (this.disposed) return;
    assertNotTraining(this.model, 'Adapter.dispose');
    if (this.live) this.detach();
    for (const layer of this.layers.values()) layer.dispose();
    this.disposed = true;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** PEFT-style tensors: `base_model.model.<module>.lora_A.weight`, ... Refused while the model trains. */
  stateDict(): Record<string, Tensor> {
    this.check();
    assertNotTraining(this.model, 'Adapter.stateDict', true);
    return this.values();
  }

  /** @internal stateDict() for the Trainer's own reads between steps (refused during a step, as stateDict is). */
  values(): Record<string, Tensor> {
    assertNotTraining(this.model, 'Adapter.values', true);
    const out: Record<string, Tensor> = {};
    for (const [module, layer] of this.layers) {
      for (const [k, v] of Object.entries(layer.native.stateDict())) out[`${PREFIX}${module}.${k}`] = new Tensor(v);
    }
    return out;
  }

  /**
   * Writes adapter_config.json (PEFT's LoraConfig keys only), rlora_config.json (rlora's own
   * settings) and adapter_model.safetensors into `dir` (created if needed). Modules whose rank or
   * alpha differ from the adapter's options are listed by full name in rank_pattern / alpha_pattern;
   * target_modules holds the short names when they select exactly the adapted modules, else the full names.
   */
  save(dir: string, options: AdapterSaveOptions = {}): void {
    this.check();
    assertNotTraining(this.model, 'Adapter.save', true);
    checkKeys(options, ['tokenizer', 'modelCard'], 'Adapter.save');
    const tok = options.tokenizer;
    if (tok !== undefined && typeof (tok as { files?: unknown }).files !== 'function') {
      throw new TypeError('Adapter.save: tokenizer must be a Tokenizer or a ByteTokenizer (something with files()), got ' + show(tok));
    }
    const card = options.modelCard;
    if (card !== undefined && typeof card !== 'boolean' && !isPlainObject(card)) throw new TypeError(`Adapter.save: modelCard must be true or {metrics?, description?}, got ${show(card)}`);
    if (isPlainObject(card)) checkKeys(card, ['metrics', 'description'], 'Adapter.save: modelCard');
    // written beside the old folder and swapped in when complete (util/files.ts): a crash or a full
    // disk never leaves new weights beside an old config; the user's other files in it are kept
    replaceFolder(dir, (tmp) => {
      this.write(tmp);
      if (tok) for (const [name, content] of Object.entries((tok as { files(): TokenizerFiles }).files())) writeFileFully(path.join(tmp, name), JSON.stringify(content, null, 2) + '\n');
      if (card) {
        const c = card === true ? {} : (card as { metrics?: ModelCardInput['metrics']; description?: string });
        writeFileFully(path.join(tmp, 'README.md'), renderModelCard({
          name: path.basename(path.resolve(dir)), version: VERSION, baseModel: this.model.source ?? null, options: this.options,
          targetModules: [...new Set([...this.layers.keys()].map(short))].sort(), trainableParameters: this.trainableParameterCount(),
          ...(this.trainingData ? { data: this.trainingData } : {}), ...(c.metrics ? { metrics: c.metrics } : {}), ...(c.description ? { description: c.description } : {}),
        }));
      }
    }, {
      owns: (name) => (ADAPTER_FILES as readonly string[]).includes(name),
      verify: (tmp) => void readSafetensorsHeader(path.join(tmp, ADAPTER_WEIGHTS_FILE)),
    });
  }

  /** @internal Writes the adapter's files into the folder `dir` as they are (save() without its swap: the Trainer's checkpoints between steps; refused during a step). */
  write(dir: string): void {
    assertNotTraining(this.model, 'Adapter.write', true);
    fs.mkdirSync(dir, { recursive: true });
    const o = this.options;
    const modules = [...this.layers.keys()];
    const plain = o.heads === 1 && !o.init.offset;
    const shorts = [...new Set(modules.map(short))].sort();
    const byShorts = this.model.linearModuleNames().filter((n) => shorts.includes(short(n)));
    const exact = byShorts.length === modules.length && byShorts.every((n) => this.layers.has(n));
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    for (const [name, layer] of this.layers) {
      if (layer.options.rank !== o.rank) rankPattern[name] = layer.options.rank;
      if (layer.options.alpha !== o.alpha) alphaPattern[name] = layer.options.alpha;
    }
    const config: AdapterConfigJson = {
      alpha_pattern: alphaPattern,
      // a Hub repo by its id (and revision), as PEFT writes them; a folder by its path
      base_model_name_or_path: this.model.hub?.repo ?? this.model.source ?? null,
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
      revision: this.model.hub && this.model.hub.revision !== 'main' ? this.model.hub.revision : null,
      target_modules: exact ? shorts : modules,
      task_type: 'CAUSAL_LM',
      use_dora: false,
      use_rslora: o.rankStabilization,
    };
    const rlora: RloraConfigJson = {
      version: VERSION,
      method: o.method,
      heads: o.heads,
      dropout_on: o.dropoutOn,
      multi_head_dropout: o.multiHeadDropout,
      init: o.init,
      seed: o.seed,
      modules,
      base_model: baseShape(this.model),
      peft_loadable: plain,
    };
    if (this.trainingData) rlora.data = this.trainingData;
    saveSafetensors(path.join(dir, ADAPTER_WEIGHTS_FILE), this.values(), { format: 'pt' });
    writeFileFully(path.join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
    writeFileFully(path.join(dir, RLORA_CONFIG_FILE), JSON.stringify(rlora, null, 2) + '\n');
  }

  /** Removes every layer; the base model is exactly as before (its weights were never changed). */
  detach(): void {
    if (!this.disposed && this.live && !this.active) {
      // loaded under a name beside the active one: it only leaves the list
      this.unregister();
      this.live = false;
      return;
    }
    this.check();
    assertNotTraining(this.model, 'Adapter.detach');
    this.unregister();
    for (const [name, layer] of this.layers) {
      this.model.native.setAdapter(name, null);
      setOwner(layer, undefined);
    }
    setAttached(this.model, undefined);
    this.live = false;
  }

  /**
   * Folds a single-head (lora) adapter into the base weights (W0 + s B A, minus the offset) and
   * detaches it. Multi-head adapters cannot be merged: the router depends on the input.
   */
  merge(): void {
    this.check();
    assertNotTraining(this.model, 'Adapter.merge');
    if (this.options.heads !== 1) {
      throw new Error(`only a single-head (lora) adapter can be merged: this one has ${this.options.heads} heads, whose router depends on the input`);
    }
    this.unregister();
    for (const [name, layer] of this.layers) {
      const merged = new Tensor(layer.native.mergedWeight());
      this.model.native.setAdapter(name, null);
      this.model.native.setParameter(`${name}.weight`, merged.native);
      setOwner(layer, undefined);
    }
    setAttached(this.model, undefined);
    this.live = false;
  }

  /** N x N head similarity of each wrapped module. */
  headSimilarity(): Record<string, Tensor> {
    this.check();
    assertNotTraining(this.model, 'Adapter.headSimilarity', true);
    return Object.fromEntries([...this.layers].map(([n, l]) => [n, l.headSimilarity()]));
  }

  trainableParameterCount(): number {
    let n = 0;
    for (const l of this.layers.values()) n += l.parameterCount();
    return n;
  }

  /** Training mode (dropout on) or not. Refused while the model trains: Trainer.fit sets it itself. */
  train(on = true): this {
    assertNotTraining(this.model, on ? 'Adapter.train' : 'Adapter.eval', true);
    this.setMode(on);
    return this;
  }
  /** @internal train() without the training check: Trainer.fit switching modes around evaluation. */
  setMode(on: boolean): void {
    for (const l of this.layers.values()) l.native.setTraining(on);
  }
  eval(): this {
    return this.train(false);
  }

  [inspectSymbol](): string {
    const o = this.options;
    return `Adapter(method=${o.method}, rank=${o.rank}, heads=${o.heads}, modules=${this.layers.size}, trainable=${this.trainableParameterCount().toLocaleString('en-US')}${this.live ? '' : ', detached'})`;
  }
}
