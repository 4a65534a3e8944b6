// Adapter: multi-head LoRA layers attached to a Model's linear modules, saved and loaded in the
// adapter folder of DESIGN.md section 4 (PEFT's names and config keys for plain LoRA).
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import { assertNotTraining } from './activity';
import { LoraOptions, MultiHeadLoraLinear, ResolvedLoraOptions } from './layer';
import { Model, readJsonFile } from './model';
import { forEachSafetensor, saveSafetensors } from './safetensors';
import { Tensor } from './tensor';

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
const attached = new WeakMap<Model, Adapter>();

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

interface AdapterConfigJson {
  peft_type: string;
  task_type: string;
  base_model_name_or_path: string | null;
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  use_rslora: boolean;
  bias: string;
  fan_in_fan_out: boolean;
  init_lora_weights: boolean;
  inference_mode: boolean;
  modules_to_save: null;
  rlora?: {
    version: string;
    method: ResolvedLoraOptions['method'];
    heads: number;
    dropout_on: ResolvedLoraOptions['dropoutOn'];
    multi_head_dropout: boolean;
    init: ResolvedLoraOptions['init'];
    seed: number;
    modules: string[];
    base_model: BaseShape;
  };
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
  for (const t of targets) {
    const named = all.filter((n) => n === t || n.endsWith(`.${t}`));
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
  return createHash('sha256').update(`rlora/${seed}/${module}`).digest().readUIntBE(0, 6);
}

export class Adapter {
  readonly model: Model;
  /** Wrapped modules by full name, in model order. */
  readonly layers: ReadonlyMap<string, MultiHeadLoraLinear>;
  /** The layer options in force (shared by every module; seeds differ per module). */
  readonly options: ResolvedLoraOptions;
  readonly targetModules: string[] | RegExp;
  private live = true;
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
    if (!(model instanceof Model)) throw new TypeError('Adapter.attach: first argument must be a Model');
    if (attached.has(model)) throw new Error('this model already has an adapter attached; detach() it first');
    const { targetModules, ...layerOptions } = options ?? ({} as AdapterOptions);
    const modules = resolveTargets(model, targetModules);
    const seed = layerOptions.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new TypeError(`seed must be a non-negative integer, got ${JSON.stringify(seed)}`);
    const layers = new Map<string, MultiHeadLoraLinear>();
    for (const name of modules) {
      layers.set(name, new MultiHeadLoraLinear(model.linearParameters(name), { ...layerOptions, seed: moduleSeed(seed, name) }).eval());
    }
    for (const [name, layer] of layers) model.native.setAdapter(name, layer.native);
    const first = layers.values().next().value as MultiHeadLoraLinear;
    const adapter = new Adapter(model, layers, { ...first.options, seed }, targetModules);
    attached.set(model, adapter);
    return adapter;
  }

  /** The adapter attached to a model, if any. */
  static of(model: Model): Adapter | undefined {
    return attached.get(model);
  }

  /**
   * Attaches the adapter saved in `dir` (by rlora, or a LoRA adapter saved by PEFT) to `model`.
   * On any error nothing stays attached.
   */
  static async load(model: Model, dir: string): Promise<Adapter> {
    const configPath = path.join(dir, 'adapter_config.json');
    const weightsPath = path.join(dir, 'adapter_model.safetensors');
    if (!fs.existsSync(configPath)) throw new Error(`no adapter_config.json in ${dir}`);
    if (!fs.existsSync(weightsPath)) throw new Error(`no adapter_model.safetensors in ${dir}`);
    const cfg = readJsonFile(configPath) as AdapterConfigJson;
    const r = cfg.rlora;
    if (r) {
      const want = baseShape(model);
      const diff = (Object.keys(want) as (keyof BaseShape)[]).filter((k) => want[k] !== r.base_model[k]);
      if (diff.length) {
        throw new Error(
          `the adapter in ${dir} was saved for a different model: ${diff.map((k) => `${k} ${r.base_model[k]} there, ${want[k]} here`).join('; ')}`,
        );
      }
    } else if (cfg.peft_type !== 'LORA') {
      throw new Error(`${configPath}: peft_type ${JSON.stringify(cfg.peft_type)} is not supported (rlora adapters or PEFT LORA)`);
    }
    const targets = r ? r.modules : Array.isArray(cfg.target_modules) ? cfg.target_modules : new RegExp(`^(?:${cfg.target_modules})$`);
    const adapter = Adapter.attach(model, {
      targetModules: targets,
      method: r?.method ?? 'lora',
      rank: cfg.r,
      heads: r?.heads ?? 1,
      alpha: cfg.lora_alpha,
      dropout: cfg.lora_dropout,
      dropoutOn: r?.dropout_on ?? 'input',
      multiHeadDropout: r?.multi_head_dropout ?? false,
      rankStabilization: cfg.use_rslora,
      init: r?.init ?? { offset: false },
      seed: r?.seed ?? 0,
    });
    try {
      const byModule = new Map<string, Record<string, Tensor>>();
      forEachSafetensor(weightsPath, (e, t) => {
        const key = e.name.startsWith(PREFIX) ? e.name.slice(PREFIX.length) : e.name;
        const cut = key.indexOf('.lora_');
        const module = cut < 0 ? '' : key.slice(0, cut);
        if (!adapter.layers.has(module)) throw new Error(`${weightsPath} holds ${e.name}, which belongs to no adapted module`);
        const entry = byModule.get(module) ?? {};
        entry[key.slice(cut + 1)] = t;
        byModule.set(module, entry);
      });
      for (const [module, layer] of adapter.layers) {
        try {
          layer.loadStateDict(byModule.get(module) ?? {});
        } catch (e) {
          throw new Error(`${weightsPath}, module ${module}: ${(e as Error).message}`);
        }
      }
    } catch (e) {
      adapter.detach();
      throw e;
    }
    return adapter;
  }

  private check(): void {
    if (this.disposed) throw new Error('this Adapter was disposed');
    if (!this.live) throw new Error('this adapter has been detached or merged');
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

  /** PEFT-style tensors: `base_model.model.<module>.lora_A.weight`, ... */
  stateDict(): Record<string, Tensor> {
    this.check();
    const out: Record<string, Tensor> = {};
    for (const [module, layer] of this.layers) {
      for (const [k, v] of Object.entries(layer.stateDict())) out[`${PREFIX}${module}.${k}`] = v;
    }
    return out;
  }

  /** Writes adapter_config.json and adapter_model.safetensors into `dir` (created if needed). */
  save(dir: string): void {
    this.check();
    fs.mkdirSync(dir, { recursive: true });
    const o = this.options;
    const modules = [...this.layers.keys()];
    const plain = o.heads === 1 && !o.init.offset;
    const config: AdapterConfigJson = {
      peft_type: plain ? 'LORA' : 'RLORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: this.model.source ?? null,
      r: o.rank,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      target_modules: [...new Set(modules.map(short))].sort(),
      use_rslora: o.rankStabilization,
      bias: 'none',
      fan_in_fan_out: false,
      init_lora_weights: true,
      inference_mode: false,
      modules_to_save: null,
      rlora: {
        version: VERSION,
        method: o.method,
        heads: o.heads,
        dropout_on: o.dropoutOn,
        multi_head_dropout: o.multiHeadDropout,
        init: o.init,
        seed: o.seed,
        modules,
        base_model: baseShape(this.model),
      },
    };
    saveSafetensors(path.join(dir, 'adapter_model.safetensors'), this.stateDict(), { format: 'pt' });
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  }

  /** Removes every layer; the base model is exactly as before (its weights were never changed). */
  detach(): void {
    this.check();
    assertNotTraining(this.model, 'Adapter.detach');
    for (const name of this.layers.keys()) this.model.native.setAdapter(name, null);
    attached.delete(this.model);
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
    for (const [name, layer] of this.layers) {
      const merged = new Tensor(layer.native.mergedWeight());
      this.model.native.setAdapter(name, null);
      this.model.native.setParameter(`${name}.weight`, merged.native);
    }
    attached.delete(this.model);
    this.live = false;
  }

  /** N x N head similarity of each wrapped module. */
  headSimilarity(): Record<string, Tensor> {
    this.check();
    return Object.fromEntries([...this.layers].map(([n, l]) => [n, l.headSimilarity()]));
  }

  trainableParameterCount(): number {
    let n = 0;
    for (const l of this.layers.values()) n += l.parameterCount();
    return n;
  }

  train(on = true): this {
    for (const l of this.layers.values()) l.train(on);
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  [util.inspect.custom](): string {
    const o = this.options;
    return `Adapter(method=${o.method}, rank=${o.rank}, heads=${o.heads}, modules=${this.layers.size}, trainable=${this.trainableParameterCount().toLocaleString('en-US')}${this.live ? '' : ', detached'})`;
  }
}
