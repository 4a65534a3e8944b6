// Adapter: multi-head LoRA layers attached to a Model's linear modules (one adapter active at a
// time, others loaded beside it by name), saved and loaded as the adapter folder of
// docs/ARCHITECTURE.md section 4 (folder.ts owns its format; peft-config.ts reads a PEFT config;
// targets.ts resolves the modules).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { assertNotTraining, attachedTo, setAttached, setOwner } from '../activity';
import type { DataSettings } from '../data';
import { checkHubOptions, HUB_OPTION_NAMES, HubOptions, resolveRepo } from '../hub/resolve';
import { MultiHeadLoraLinear } from '../layer';
import type { LoraOptions, ResolvedLoraOptions } from '../lora-options';
import { Model } from '../model';
import { renderModelCard } from '../model-card';
import type { ModelCardInput } from '../model-card';
import { forEachSafetensor, readSafetensorsHeader, saveSafetensors } from '../safetensors';
import { Tensor } from '../tensor';
import type { TextTokenizer, TokenizerFiles } from '../tokenizer';
import { budgetFor, withBudget } from '../util/budget';
import { naming, writeFileFully } from '../util/files';
import { checkInstance, checkKeys, inspectSymbol, isPlainObject, show } from '../util/options';
import { replaceFolder } from '../replace-folder';
import { ADAPTER_CONFIG_FILE, ADAPTER_FILES, ADAPTER_WEIGHTS_FILE, RLORA_CONFIG_FILE } from './files';
import { checkBaseShape, folderConfigs, readAdapterFolder, short, TENSOR_PREFIX } from './folder';
import { peftTargets, perModuleRanks, refuseUnsupported } from './peft-config';
import { adapterValueCount, moduleSeed, resolveTargets } from './targets';


// eslint-disable-next-line @typescript-eslint/no-require-imports
const VERSION: string = (require('../../package.json') as { version: string }).version;

export interface AdapterOptions extends LoraOptions {
  /**
   * Which linear modules to wrap: names as users know them ('q_proj', 'gate_proj', 'lm_head'),
   * matched against the last part of the full module names, or full names, or a RegExp tested
   * against full names ('model.layers.0.mlp.up_proj').
   */
  targetModules: string[] | RegExp;
}

export interface AdapterSaveOptions {
  /** Also write its tokenizer.json and tokenizer_config.json, so the folder is complete for sharing (Tokenizer.fromFile reads it back). */
  tokenizer?: TextTokenizer;
  /** Also write README.md, a model card (true), with an evaluation table and a paragraph of your own when given. */
  modelCard?: boolean | { metrics?: ModelCardInput['metrics']; description?: string };
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
   * `perModule.get(name)` overrides the shared options of one module. `options` of the Adapter stay
   * the shared ones; each layer's `options` are the ones in force for that module. `resolved`: the
   * modules `targetModules` names, when the caller resolved them already (Adapter.load).
   */
  private static build(
    model: Model,
    targetModules: string[] | RegExp,
    layerOptions: LoraOptions,
    perModule?: ReadonlyMap<string, { rank: number; alpha: number }>,
    resolved?: readonly string[],
  ): Adapter {
    checkInstance(model, Model, 'Adapter.attach: the model');
    if (attachedTo(model)) throw new Error('this model already has an adapter attached; detach() it first');
    const modules = resolved ?? resolveTargets(model, targetModules);
    const seed = layerOptions.seed ?? 0;
    if (typeof seed !== 'number') throw new TypeError(`seed must be a non-negative integer, got ${show(seed)}`);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer, got ${show(seed)}`);
    // sizes the user gave that this machine cannot hold (float32 values) are refused before allocating
    const values = adapterValueCount(model, modules, (name) => perModule?.get(name)?.rank ?? layerOptions.rank, layerOptions.heads ?? 1);
    if (values !== undefined && values * 4 > os.totalmem()) {
      throw new RangeError(`rank ${layerOptions.rank} and ${layerOptions.heads ?? 1} heads on ${modules.length} modules make ${values} adapter values (${(values * 4 / 2 ** 30).toFixed(1)} GiB as float32), more than this machine's memory (${(os.totalmem() / 2 ** 30).toFixed(1)} GiB)`);
    }
    const layers = new Map<string, MultiHeadLoraLinear>();
    try {
      for (const name of modules) {
        const own = perModule?.get(name) ?? {};
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
    const folder = readAdapterFolder(dir);
    const { configPath, weightsPath, config: cfg, rlora: r } = folder;
    refuseUnsupported(cfg, configPath);
    checkBaseShape(folder, model, dir);
    if (!r && cfg.peft_type !== 'LORA') {
      throw new Error(`${configPath}: peft_type ${JSON.stringify(cfg.peft_type)} is not supported (rlora adapters or PEFT LORA)`);
    }
    const r0 = cfg.r as number;
    const alpha0 = cfg.lora_alpha as number;
    // target_modules, exclude_modules and the pattern keys are regular expressions from a file:
    // matched once, here, under a time budget (one like "(.|.)*z" backtracks for minutes); the
    // adapter is then built on the modules resolved here
    const keys = 2 + Object.keys(cfg.rank_pattern ?? {}).length + Object.keys(cfg.alpha_pattern ?? {}).length;
    const { targets, modules, perModule } = withBudget(
      budgetFor(model.moduleNames().join('.').length * keys),
      () => {
        const chosen = r ? { targets: r.modules, modules: resolveTargets(model, r.modules) } : peftTargets(model, cfg, configPath);
        return { ...chosen, perModule: perModuleRanks(cfg, chosen.modules, configPath) };
      },
      () => `${configPath}: target_modules, exclude_modules or a rank_pattern/alpha_pattern key is a regular expression that ran too long on this model's module names (one that backtracks?)`,
    );
    // the config's sizes, checked against what the weights file holds before anything is allocated
    // (heads 1024 and r 65536, each within its bound, took 10 GB and more, then failed on the file)
    const heads = r?.heads ?? 1;
    const needed = adapterValueCount(model, modules, (name) => perModule?.get(name)?.rank ?? r0, heads);
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
      modules,
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
      const key = e.name.startsWith(TENSOR_PREFIX) ? e.name.slice(TENSOR_PREFIX.length) : e.name;
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
      for (const [k, v] of Object.entries(layer.native.stateDict())) out[`${TENSOR_PREFIX}${module}.${k}`] = new Tensor(v);
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
    const { config, rlora } = folderConfigs({
      options: this.options,
      modules: new Map([...this.layers].map(([name, layer]) => [name, { rank: layer.options.rank, alpha: layer.options.alpha }])),
      model: this.model,
      version: VERSION,
      ...(this.trainingData ? { data: this.trainingData } : {}),
    });
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
