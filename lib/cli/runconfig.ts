// run.json, the file `rlora train --config` reads: its keys (one table that both checks a file
// and writes the key reference of `rlora train --help`), validation with errors that name the
// bad key, and path resolution relative to the file. Nothing here loads the native addon.
import * as fs from 'fs';
import * as path from 'path';

import type { AdapterOptions } from '../adapter';
import type { DatasetOptions } from '../data';
import type { HFConfig } from '../model';
import type { Dtype } from '../tensor';
import type { TrainerOptions } from '../trainer';
import { closest, InputError } from './args';

// ---------------------------------------------------------------------------------------------
// The keys

type Spec =
  | { kind: 'string' }
  | { kind: 'path' }
  | { kind: 'boolean' }
  | { kind: 'number'; integer?: boolean; min?: number; max?: number; minOpen?: boolean; maxOpen?: boolean }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'object'; keys: Record<string, Key> }
  /** Any JSON object, checked by whoever uses it (a Hugging Face config). */
  | { kind: 'json-object' }
  | { kind: 'string-array' }
  | { kind: 'one-of'; options: Spec[] };

interface Key {
  spec: Spec;
  required?: boolean;
  /** How the value looks, for the help (defaults to one made from the spec). */
  type?: string;
  doc: string;
}

const int = (min: number): Spec => ({ kind: 'number', integer: true, min });
const num = (min?: number, minOpen = false, max?: number, maxOpen = false): Spec => ({ kind: 'number', min, minOpen, max, maxOpen });
const bool: Spec = { kind: 'boolean' };
const str: Spec = { kind: 'string' };
const pth: Spec = { kind: 'path' };
const oneOf = (...values: string[]): Spec => ({ kind: 'enum', values });

const INIT_SCHEMES = ['kaiming', 'gaussian', 'unit', 'zeros', 'orthogonal'];
/** The built-in metrics of lib/trainer.ts (BUILTIN_METRICS), the only ones run.json can name. */
export const BUILTIN_METRIC_NAMES: readonly string[] = ['exactMatch', 'charF1'];

const MODEL_KEYS: Record<string, Key> = {
  path: { spec: pth, doc: 'a Hugging Face model folder (config.json, model.safetensors)' },
  config: { spec: { kind: 'json-object' }, type: '{...}', doc: 'a Hugging Face config.json object: a new model with random weights' },
  seed: { spec: int(0), doc: 'seed of the random weights of config (default 0)' },
  dtype: { spec: oneOf('float32', 'bfloat16', 'float64'), doc: 'parameter dtype (default float32)' },
  device: { spec: str, doc: '"cpu" (default), "cuda" or "cuda:N"' },
};

const DATA_KEYS: Record<string, Key> = {
  train: { spec: pth, required: true, doc: 'JSON lines file of {"task", "prompt", "response"} records' },
  eval: { spec: pth, doc: 'JSON lines file evaluated per task (loss, exact-match accuracy) during and after training' },
  template: { spec: str, doc: 'how a record becomes text, e.g. "Q: {prompt}\\nA: {response}" ({task} too); the loss starts at {response}; default "{prompt}\\n{response}"' },
  maxLength: { spec: int(2), doc: 'most tokens of a sequence, longer ones are cut (default 512)' },
  fields: {
    spec: { kind: 'object', keys: { task: { spec: str, doc: '' }, prompt: { spec: str, doc: '' }, response: { spec: str, doc: '' } } },
    type: '{task?, prompt?, response?}',
    doc: 'the records\' field names, when not "task", "prompt", "response"',
  },
  addBos: { spec: bool, doc: 'put the tokenizer\'s bos first (default true)' },
  addEos: { spec: bool, doc: 'put the tokenizer\'s eos last (default true)' },
};

const INIT_KEYS: Record<string, Key> = {
  a: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  b: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  router: { spec: oneOf(...INIT_SCHEMES), doc: '' },
  scale: { spec: oneOf('none', 'stable', 'reference'), doc: '' },
  gamma: { spec: num(0, true), doc: '' },
  stableBase: { spec: oneOf('rank', 'out'), doc: '' },
  offset: { spec: bool, doc: '' },
};

const ADAPTER_KEYS: Record<string, Key> = {
  method: { spec: oneOf('lora', 'hydralora', 'rlora'), doc: 'preset for every key not given (default rlora)' },
  targetModules: {
    spec: { kind: 'one-of', options: [{ kind: 'string-array' }, { kind: 'object', keys: { regex: { spec: str, required: true, doc: '' } } }] },
    required: true,
    type: '["q_proj", ...] | {"regex": "..."}',
    doc: 'linear modules to adapt: short names ("gate_proj"), full names, or a regular expression on full names',
  },
  rank: { spec: int(1), doc: 'rank r of the shared A (default 8)' },
  heads: { spec: int(1), doc: 'number of heads N (default 1 for lora, 5 otherwise)' },
  alpha: { spec: num(0, true), doc: 'scaling alpha / r, or alpha / sqrt(r) with rankStabilization (default 16)' },
  dropout: { spec: num(0, false, 1, true), doc: 'dropout probability in [0, 1) (default 0.1)' },
  dropoutOn: { spec: oneOf('input', 'rank'), doc: 'dropout on x (lora, hydralora) or on A x (rlora)' },
  multiHeadDropout: { spec: bool, doc: 'a dropout mask per head (rlora: true)' },
  rankStabilization: { spec: bool, doc: 'rsLoRA scaling alpha / sqrt(r) (rlora: true)' },
  init: {
    spec: { kind: 'object', keys: INIT_KEYS },
    type: '{a, b, router, scale, gamma, stableBase, offset}',
    doc: `initialisation (see InitOptions): a, b, router: ${INIT_SCHEMES.join('|')}; scale: none|stable|reference; gamma; stableBase: rank|out; offset`,
  },
  seed: { spec: int(0), doc: 'seed of the adapter\'s initial values and dropout masks (default 0)' },
};

const TRAINER_KEYS: Record<string, Key> = {
  learningRate: { spec: num(0, true), doc: 'AdamW learning rate (default 2e-4)' },
  epochs: { spec: num(0, true), doc: 'passes over data.train (default 1), unless maxSteps' },
  maxSteps: { spec: int(1), doc: 'optimizer steps; overrides epochs' },
  batchSize: { spec: int(1), doc: 'rows per micro-batch (default 8)' },
  gradientAccumulation: { spec: int(1), doc: 'micro-batches per optimizer step (default 1)' },
  schedule: { spec: oneOf('cosine', 'linear', 'constant'), doc: 'learning-rate schedule after warm-up (default cosine)' },
  warmupRatio: { spec: num(0, false, 1, true), doc: 'warm-up as a fraction of all steps (default 0.03)' },
  warmupSteps: { spec: int(0), doc: 'warm-up steps; overrides warmupRatio' },
  weightDecay: { spec: num(0), doc: 'decoupled weight decay (default 0)' },
  maxGradNorm: { spec: num(0), doc: 'clip the gradient norm to this; 0 is off (default 1)' },
  seed: { spec: int(0), doc: 'seed of the data order (default 0)' },
  sampling: { spec: oneOf('proportional', 'uniform', 'temperature'), doc: 'how tasks mix in a batch (default proportional)' },
  samplingTemperature: { spec: num(0, true), doc: 'T of temperature sampling (default 2)' },
  groupByLength: { spec: bool, doc: 'batches of similar lengths (default false)' },
  evalEvery: { spec: int(0), doc: 'evaluate data.eval every this many steps; 0: at the end only (default 0)' },
  saveEvery: { spec: int(0), doc: 'checkpoint every this many steps; 0: at the end only (default 0)' },
  keepCheckpoints: { spec: int(0), doc: 'keep only the newest this many checkpoints; 0 keeps all (default 0)' },
  progress: { spec: bool, doc: 'progress bar (default: when stdout is a terminal; else a line now and then on stderr)' },
  device: { spec: str, doc: 'where training runs; the model is loaded there unless model.device says otherwise' },
  precision: { spec: oneOf('float32', 'bfloat16'), doc: '"float32" (default) or "bfloat16": forward and backward under bfloat16 autocast' },
  skipNonFinite: { spec: bool, doc: 'skip a step whose loss is NaN or infinite instead of stopping (default false)' },
  evalExtraTokens: { spec: int(0), doc: 'greedy generation in evaluation runs this many tokens past the response length (default 4)' },
  evalBatchSize: { spec: int(1), doc: 'rows per evaluation batch (default: batchSize)' },
  gradientCheckpointing: { spec: bool, doc: 'recompute each decoder layer in backward instead of keeping its activations: less memory, same results (default false)' },
  metrics: {
    spec: { kind: 'string-array' },
    type: '["exactMatch", "charF1"]',
    doc: 'built-in metrics evaluated beside loss and accuracy, averaged per task: exactMatch (prediction equals response, trimmed), charF1 (F1 of the characters as multisets)',
  },
  earlyStopping: {
    spec: {
      kind: 'object',
      keys: {
        metric: { spec: str, required: true, doc: '"loss", "accuracy" or a name of trainer.metrics, averaged over the tasks' },
        patience: { spec: int(1), doc: 'evaluations without improvement before stopping (default 1)' },
        minDelta: { spec: num(0), doc: 'an improvement must exceed this (default 0)' },
        mode: { spec: oneOf('min', 'max'), doc: 'lower or higher is better (default min for loss, max otherwise)' },
      },
    },
    type: '{metric, patience?, minDelta?, mode?}',
    doc: 'stop when the eval metric stops improving; needs evalEvery > 0 and data.eval:',
  },
  saveBest: {
    spec: { kind: 'one-of', options: [str, { kind: 'object', keys: { metric: { spec: str, required: true, doc: '' }, mode: { spec: oneOf('min', 'max'), doc: '' } } }] },
    type: '"<metric>" | {metric, mode}',
    doc: 'keep the checkpoint of the best evaluation by this metric (never deleted by keepCheckpoints); needs evalEvery > 0 and data.eval',
  },
  loadBestAtEnd: { spec: bool, doc: 'load the best checkpoint\'s adapter (saveBest) at the end, so outputDir/adapter is the best one (default false)' },
  distributed: {
    spec: {
      kind: 'object',
      keys: {
        backend: { spec: oneOf('gloo', 'nccl'), doc: '"gloo" (CPU) or "nccl" (CUDA, where the build has it); default: nccl for a CUDA model where available, else gloo' },
        timeoutMs: { spec: int(1), doc: 'how long a collective may wait for the other ranks (default 600000)' },
        bucketCapMb: { spec: num(0), doc: 'MiB of gradients exchanged per bucket while backward runs; 0: one all-reduce after backward (default 25 with nccl, 0 with gloo)' },
      },
    },
    type: '{backend?, timeoutMs?, bucketCapMb?}',
    doc: 'data parallelism under --nproc-per-node or torchrun\'s variables (on when WORLD_SIZE > 1):',
  },
};

const TOP_KEYS: Record<string, Key> = {
  model: {
    spec: { kind: 'one-of', options: [pth, { kind: 'object', keys: MODEL_KEYS }] },
    required: true,
    type: '"<folder>" | {...}',
    doc: 'the base model: a Hugging Face folder, or an object with exactly one of path and config:',
  },
  tokenizer: {
    spec: str,
    type: '"<file or folder>" | "byte"',
    doc: 'a tokenizer.json (or a folder holding one); "byte" for the byte tokenizer (vocabulary 259). Default: the model folder\'s tokenizer.json',
  },
  data: { spec: { kind: 'object', keys: DATA_KEYS }, required: true, type: '{...}', doc: 'the examples:' },
  adapter: { spec: { kind: 'object', keys: ADAPTER_KEYS }, required: true, type: '{...}', doc: 'the multi-head LoRA adapter (AdapterOptions):' },
  trainer: { spec: { kind: 'object', keys: TRAINER_KEYS }, type: '{...}', doc: 'training options (TrainerOptions):' },
  outputDir: { spec: pth, required: true, doc: 'where log.jsonl, checkpoint-<step>/, adapter/ and run.json go' },
  resume: { spec: pth, doc: 'a checkpoint folder to continue from (its adapter, optimizer, data position and trainer options)' },
};

function typeOf(spec: Spec): string {
  switch (spec.kind) {
    case 'path':
      return 'path';
    case 'number':
      return spec.integer ? 'integer' : 'number';
    case 'enum':
      return spec.values.map((v) => JSON.stringify(v)).join('|');
    case 'string-array':
      return 'string[]';
    case 'json-object':
    case 'object':
      return 'object';
    case 'one-of':
      return spec.options.map(typeOf).join(' | ');
    default:
      return spec.kind;
  }
}

/** Words of `text` in lines of at most `width` characters; later lines start with `hang`. */
function wrap(first: string, text: string, hang: string, width = 100): string[] {
  const lines: string[] = [];
  let line = first;
  for (const word of text.split(' ')) {
    if (line.length + 1 + word.length > width && line.trim() !== '' && line.length > hang.length) {
      lines.push(line.trimEnd());
      line = hang + word;
    } else line += (line.endsWith(' ') || line === '' ? '' : ' ') + word;
  }
  lines.push(line.trimEnd());
  return lines;
}

/** The key reference of `rlora train --help`, made from the same table validation uses. */
export function describeRunConfig(): string {
  const lines: string[] = [];
  const walk = (keys: Record<string, Key>, indent: string): void => {
    const docd = Object.entries(keys).filter(([, k]) => k.doc !== '');
    const w = Math.max(...docd.map(([n]) => n.length + (keys[n].required ? 1 : 0)));
    for (const [name, key] of docd) {
      const type = key.type ?? typeOf(key.spec);
      const head = `${indent}${(name + (key.required ? '*' : '')).padEnd(w)}  `;
      lines.push(...wrap(head, `${type}: ${key.doc}`, ' '.repeat(head.length + 2)));
      const inner = key.spec.kind === 'object' ? key.spec : key.spec.kind === 'one-of' ? key.spec.options.find((o) => o.kind === 'object') : undefined;
      if (inner && inner.kind === 'object' && Object.values(inner.keys).some((k) => k.doc !== '')) walk(inner.keys, indent + '    ');
    }
  };
  walk(TOP_KEYS, '  ');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Validation

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Problems with `value` against `spec` at `where` ("trainer.batchSize"); empty when fine. */
function check(value: unknown, spec: Spec, where: string): string[] {
  switch (spec.kind) {
    case 'string':
    case 'path':
      if (typeof value !== 'string' || value === '') return [`${where} must be a non-empty ${spec.kind === 'path' ? 'path (a string)' : 'string'}, got ${describeValue(value)}`];
      return [];
    case 'boolean':
      return typeof value === 'boolean' ? [] : [`${where} must be true or false, got ${describeValue(value)}`];
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) return [`${where} must be a number, got ${describeValue(value)}`];
      if (spec.integer && !Number.isInteger(value)) return [`${where} must be an integer, got ${value}`];
      const lo = spec.min === undefined ? '' : spec.minOpen ? `> ${spec.min}` : `>= ${spec.min}`;
      const hi = spec.max === undefined ? '' : spec.maxOpen ? `< ${spec.max}` : `<= ${spec.max}`;
      const bad = (spec.min !== undefined && (spec.minOpen ? value <= spec.min : value < spec.min)) || (spec.max !== undefined && (spec.maxOpen ? value >= spec.max : value > spec.max));
      return bad ? [`${where} must be ${[lo, hi].filter(Boolean).join(' and ')}, got ${value}`] : [];
    }
    case 'enum':
      return spec.values.includes(value as string) ? [] : [`${where} must be one of ${spec.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(value)}`];
    case 'string-array':
      if (!Array.isArray(value) || value.length === 0) return [`${where} must be a non-empty array of strings, got ${describeValue(value)}`];
      return value.flatMap((v, i) => (typeof v === 'string' && v !== '' ? [] : [`${where}[${i}] must be a non-empty string, got ${describeValue(v)}`]));
    case 'json-object':
      return isObject(value) ? [] : [`${where} must be an object, got ${describeValue(value)}`];
    case 'object': {
      if (!isObject(value)) return [`${where || 'run.json'} must be ${where ? 'an object' : 'a JSON object'}, got ${describeValue(value)}`];
      const errors: string[] = [];
      const known = Object.keys(spec.keys);
      for (const [k, v] of Object.entries(value)) {
        const at = where ? `${where}.${k}` : k;
        const key = spec.keys[k];
        if (!key) {
          const near = closest(k, known);
          errors.push(`${at} is not a known key${near ? ` (did you mean ${where ? `${where}.` : ''}${near}?)` : ''}; known keys${where ? ` of ${where}` : ''}: ${known.join(', ')}`);
          continue;
        }
        if (v === undefined) continue;
        errors.push(...check(v, key.spec, at));
      }
      for (const [k, key] of Object.entries(spec.keys)) {
        if (key.required && value[k] === undefined) errors.push(`${where ? `${where}.` : ''}${k} is required: ${key.doc.replace(/:$/, '')}`);
      }
      return errors;
    }
    case 'one-of': {
      // Pick the alternative by the JSON type of the value, so errors speak of the right one.
      const byType = spec.options.find((o) => (isObject(value) ? o.kind === 'object' || o.kind === 'json-object' : Array.isArray(value) ? o.kind === 'string-array' : typeof value === 'string' ? o.kind === 'string' || o.kind === 'path' : false));
      if (!byType) return [`${where} must be ${spec.options.map(typeOf).join(' or ')}, got ${describeValue(value)}`];
      return check(value, byType, where);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The checked config, with paths resolved

export interface RunConfig {
  /** The run.json file (absolute). */
  file: string;
  /** The file as written (for the copy in outputDir). */
  raw: Record<string, unknown>;
  model: { path?: string; config?: HFConfig; seed: number; dtype?: Dtype; device?: string };
  /** 'byte', an absolute path, or undefined (the model folder's tokenizer). */
  tokenizer?: string;
  data: { train: string; eval?: string; options: Omit<DatasetOptions, 'tokenizer'> };
  adapter: AdapterOptions;
  trainer: TrainerOptions;
  outputDir: string;
  resume?: string;
}

/** Errors of one run.json, each naming its key; the message lists them all. */
export class RunConfigError extends InputError {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n${problems.map((p) => `  - ${p}`).join('\n')}`}`);
  }
}

/** trainer.metrics, earlyStopping, saveBest and loadBestAtEnd: what the key table cannot say. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkEvalKeys(j: Record<string, any>): string[] {
  const t = j.trainer;
  if (!isObject(t)) return [];
  const problems: string[] = [];
  const metrics = (t.metrics ?? []) as string[];
  metrics.forEach((m, i) => {
    if (!BUILTIN_METRIC_NAMES.includes(m)) problems.push(`trainer.metrics[${i}] must be one of ${BUILTIN_METRIC_NAMES.map((n) => JSON.stringify(n)).join(', ')} (run.json can name built-in metrics only), got ${JSON.stringify(m)}`);
  });
  const known = ['loss', 'accuracy', ...metrics];
  const metricOk = (where: string, v: unknown): void => {
    if (!known.includes(v as string)) problems.push(`${where} must be one of ${known.map((n) => JSON.stringify(n)).join(', ')} ("loss", "accuracy" or a name in trainer.metrics), got ${JSON.stringify(v)}`);
  };
  const evalEvery = (t.evalEvery ?? 0) as number;
  const needsEval = (what: string): void => {
    if (!(evalEvery > 0)) problems.push(`${what} needs trainer.evalEvery > 0 (evaluations during training); it is ${evalEvery}`);
    if (!isObject(j.data) || j.data.eval === undefined) problems.push(`${what} needs data.eval (the examples it evaluates)`);
  };
  if (isObject(t.earlyStopping)) {
    metricOk('trainer.earlyStopping.metric', t.earlyStopping.metric);
    needsEval('trainer.earlyStopping');
  }
  if (t.saveBest !== undefined) {
    metricOk(isObject(t.saveBest) ? 'trainer.saveBest.metric' : 'trainer.saveBest', isObject(t.saveBest) ? t.saveBest.metric : t.saveBest);
    needsEval('trainer.saveBest');
  }
  if (t.loadBestAtEnd === true && t.saveBest === undefined) problems.push('trainer.loadBestAtEnd needs trainer.saveBest (the metric that picks the best checkpoint)');
  return problems;
}

/** run.json's trainer object as TrainerOptions: metrics ["charF1"] become {charF1: 'charF1'}. */
function trainerOptions(t: Record<string, unknown>): TrainerOptions {
  const out: Record<string, unknown> = { ...t };
  if (Array.isArray(t.metrics)) out.metrics = Object.fromEntries((t.metrics as string[]).map((m) => [m, m]));
  return out as TrainerOptions;
}

/** Checks a parsed run.json; `file` resolves relative paths and names the file in errors. */
export function parseRunConfig(json: unknown, file: string): RunConfig {
  const abs = path.resolve(file);
  const problems = check(json, { kind: 'object', keys: TOP_KEYS }, '');
  if (problems.length === 0 && isObject((json as Record<string, unknown>).model)) {
    const m = (json as { model: Record<string, unknown> }).model;
    if ((m.path === undefined) === (m.config === undefined)) problems.push('model needs exactly one of model.path (a folder) and model.config (a config.json object)');
    if (m.path !== undefined && m.seed !== undefined) problems.push('model.seed applies to model.config (random weights) only, not to model.path');
  }
  if (problems.length === 0) problems.push(...checkEvalKeys(json as Record<string, any>)); // eslint-disable-line @typescript-eslint/no-explicit-any
  if (problems.length) throw new RunConfigError(file, problems);
  const j = json as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const dir = path.dirname(abs);
  const at = (p: string): string => path.resolve(dir, p);
  const m = typeof j.model === 'string' ? { path: j.model } : j.model;
  const targets = j.adapter.targetModules;
  let targetModules: string[] | RegExp;
  if (Array.isArray(targets)) targetModules = targets;
  else {
    try {
      targetModules = new RegExp(targets.regex);
    } catch (e) {
      throw new RunConfigError(file, [`adapter.targetModules.regex is not a valid regular expression: ${(e as Error).message}`]);
    }
  }
  const d = j.data;
  return {
    file: abs,
    raw: j,
    model: { path: m.path === undefined ? undefined : at(m.path), config: m.config, seed: m.seed ?? 0, dtype: m.dtype, device: m.device },
    tokenizer: j.tokenizer === undefined ? undefined : j.tokenizer === 'byte' ? 'byte' : at(j.tokenizer),
    data: {
      train: at(d.train),
      eval: d.eval === undefined ? undefined : at(d.eval),
      options: { template: d.template, maxLength: d.maxLength, fields: d.fields, addBos: d.addBos, addEos: d.addEos },
    },
    adapter: { ...j.adapter, targetModules },
    trainer: trainerOptions(j.trainer ?? {}),
    outputDir: at(j.outputDir),
    resume: j.resume === undefined ? undefined : at(j.resume),
  };
}

/** Reads and checks a run.json file. */
export function readRunConfig(file: string): RunConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new InputError(err.code === 'ENOENT' ? `${file}: no such file` : err.code === 'EISDIR' ? `${file} is a folder, not a run.json file` : `${file}: ${err.message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  return parseRunConfig(json, file);
}

/** Every documented key of run.json as a dotted path ("trainer.learningRate"), for tests and tools. */
export function runConfigKeys(): string[] {
  const out: string[] = [];
  const walk = (keys: Record<string, Key>, prefix: string): void => {
    for (const [name, key] of Object.entries(keys)) {
      if (key.doc === '') continue;
      out.push(prefix + name);
      const inner = key.spec.kind === 'object' ? key.spec : key.spec.kind === 'one-of' ? key.spec.options.find((o) => o.kind === 'object') : undefined;
      if (inner && inner.kind === 'object') walk(inner.keys, `${prefix}${name}.`);
    }
  };
  walk(TOP_KEYS, '');
  return out;
}
