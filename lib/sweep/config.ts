// The definition of a sweep (SweepOptions, the keys of `rlora sweep --config sweep.json`): one table
// of keys that both checks a definition and writes the key reference of `rlora sweep --help`, the
// checks (unknown keys refused with "did you mean"; every error names the file, or "sweep", and the
// key), defaults, and paths resolved relative to the file. Nothing here loads the native addon.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { Example } from '../data';
import { ENCODING_KEYS } from '../config-keys';
import { loraKeys } from '../lora-options';
import { runJsonTrainerKeys } from '../trainer/options';
import { readJsonFile } from '../util/json';
import { closest, isPlainObject, show } from '../util/options';
import { bool, check, describeKeys, Key, keyPaths, num, oneOf, Problem, pth, safeInt, Spec, str } from '../util/spec';
import type { SweepAdapterOptions, SweepProgress, SweepTrainerOptions } from './types';

// ---------------------------------------------------------------------------------------------
// The options

/** Examples of one split: a JSON lines file of {"task", "prompt", "response"} records, or the records. */
export type SweepData = string | Example[];

/** One adapter variant of a sweep: a preset plus overrides, and its learning-rate grid. */
export interface SweepVariant {
  /** Its name in tables, comparisons and file names: letters, digits and . _ + - (unique in the sweep). */
  name: string;
  /** One line saying what it is, for the table (default: its adapter options). */
  what?: string;
  /**
   * Adapter options on top of the sweep's `adapter` (init merged key by key): `method` picks the
   * preset ('lora', 'hydralora', 'rlora'), the rest override it.
   */
  adapter?: SweepAdapterOptions;
  /** Learning rates to try (default: the sweep's `learningRates`). One rate: nothing to pick, no validation jobs. */
  learningRates?: number[];
}

/**
 * A sweep: every variant at every learning rate of its grid and every seed, trained on
 * `data.train`, scored on `data.validation`; each variant's rate is picked there by the mean over
 * the seeds, and the picks are trained again and scored on `data.test` (when given). Jobs run in
 * worker processes; each job's result is a file under `outputDir/jobs/`, so running the same sweep
 * again skips the finished jobs.
 */
export interface SweepOptions {
  /** The base model: a Hugging Face model folder (config.json, model.safetensors). */
  model: string;
  /** Parameter dtype of the base (default 'float32'). */
  dtype?: 'float32' | 'bfloat16' | 'float64';
  /** 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
  /** 'byte' (the byte tokenizer), a tokenizer.json or a folder holding one. Default: the model folder's tokenizer.json. */
  tokenizer?: string;
  /** The examples (records {task, prompt, response}) and how they become tokens. */
  data: {
    train: SweepData;
    /** Where learning rates are picked. */
    validation: SweepData;
    /** Where the picks are evaluated (optional: without it, the picks' validation runs are the results). */
    test?: SweepData;
    /** As DatasetOptions.template (default "{prompt}\n{response}"). */
    template?: string;
    /** Most tokens of a sequence (default 512). */
    maxLength?: number;
    fields?: { task?: string; prompt?: string; response?: string };
    addBos?: boolean;
    addEos?: boolean;
  };
  /** Adapter options every variant starts from; `targetModules` here or in every variant. */
  adapter?: SweepAdapterOptions;
  /** The variants to compare (at least one). */
  variants: SweepVariant[];
  /** Learning rates tried for each variant without its own (needed unless every variant has them). */
  learningRates?: number[];
  /** Seeds: a count n (seeds 0 .. n-1) or the list. Default 3. Each seed sets the adapter's initial values and dropout and the data order. */
  seeds?: number | number[];
  /** Optimizer steps of every job. */
  steps: number;
  /** Rows per step (default 8). */
  batchSize?: number;
  /** Other trainer options of every job (the Trainer's defaults otherwise). */
  trainer?: SweepTrainerOptions;
  /** How a rate is picked on validation: the best mean over seeds of 'accuracy' (exact match, mean over tasks; default; ties: lower loss) or of 'loss' (lowest). */
  pickBy?: 'accuracy' | 'loss';
  /** Pairs [a, b] of variant names: a - b per seed on the final split, with its 95% interval. */
  compare?: [string, string][];
  /** Worker processes running jobs side by side (default: the usable cores / threads on the CPU, 1 on CUDA). */
  workers?: number;
  /** Threads of each job's matrix products (default 1). */
  threads?: number;
  /** Where jobs/, sweep.json, table.md and figure.svg/.png go. */
  outputDir: string;
  /** The figure's title (default "rlora sweep: <n> tasks, seed <first seed>"). */
  title?: string;
  /** Draw figure.svg and figure.png (default true). */
  figure?: boolean;
  /** Where the sweep's lines go (default: stderr); null: nowhere. */
  log?: ((line: string) => void) | null;
  /** Called for each finished job instead of logging its line. */
  onProgress?: (p: SweepProgress) => void;
}

// ---------------------------------------------------------------------------------------------
// The key table (lib/util/spec.ts's specs; the values only a sweep has are custom specs)

/** A problem of the kind given, for the custom specs below. */
const problem = (kind: Problem['kind'], message: string): Problem[] => [{ kind, message }];

/** A split's examples: a path, or (in the API) a non-empty array of records. */
const data: Spec = {
  kind: 'custom',
  type: 'path',
  check: (value, where, api) => {
    if (typeof value === 'string' && value !== '') return [];
    if (api && Array.isArray(value)) return value.length ? [] : problem('range', `${where} must be a non-empty array of records, got []`);
    return problem(typeof value === 'string' ? 'range' : 'type', `${where} must be a non-empty path to a JSON lines file${api ? ' or a non-empty array of records' : ''}, got ${show(value)}`);
  },
};

/** The most jobs one sweep may hold (variants x rates x seeds, and the test jobs): seeds 1e8 built a 3.8 GB grid before any job started. */
export const MAX_SWEEP_JOBS = 10_000;

/** A count n (seeds 0 .. n-1, n at most MAX_SWEEP_JOBS) or a list of distinct seeds. */
const seeds: Spec = {
  kind: 'custom',
  type: 'integer | integer[]',
  check: (value, where) => {
    if (!Array.isArray(value)) {
      const ok = typeof value === 'number' && check(value, safeInt(1), where).length === 0;
      if (ok && (value as number) > MAX_SWEEP_JOBS) return problem('range', `${where} is ${value} seeds, more than the ${MAX_SWEEP_JOBS.toLocaleString('en-US')} jobs a sweep may hold`);
      return ok ? [] : problem(typeof value === 'number' ? 'range' : 'type', `${where} must be a count (an integer >= 1) or a non-empty array of seeds (integers >= 0), got ${show(value)}`);
    }
    const p = check(value, { kind: 'array', of: safeInt(0), min: 1 }, where);
    const dup = value.find((v, i) => value.indexOf(v) !== i);
    return p.length || dup === undefined ? p : problem('range', `${where} lists seed ${dup} twice`);
  },
};

/** ["q_proj", ...], {"regex": "..."}, or (in the API) a RegExp. */
const targets: Spec = {
  kind: 'custom',
  type: '["q_proj", ...] | {"regex": "..."}',
  check: (value, where, api) => {
    if (api && value instanceof RegExp) return [];
    if (Array.isArray(value)) return check(value, { kind: 'string-array' }, where);
    if (!isPlainObject(value)) return problem('type', `${where} must be an array of module names or {"regex": "..."}${api ? ' or a RegExp' : ''}, got ${show(value)}`);
    const p = check(value, { kind: 'object', keys: { regex: { spec: str, required: true, doc: 'a regular expression on full module names' } } }, where, api);
    if (p.length) return p;
    try {
      new RegExp(value.regex as string);
    } catch (e) {
      return problem('range', `${where}.regex is not a valid regular expression: ${(e as Error).message}`);
    }
    return [];
  },
};

/** [a, b]: two variant names. */
const pair: Spec = {
  kind: 'custom',
  type: '["a", "b"]',
  check: (value, where) => {
    if (!Array.isArray(value) || value.length !== 2 || value.some((v) => typeof v !== 'string')) return problem(Array.isArray(value) ? 'range' : 'type', `${where} must be a pair ["a", "b"] of variant names, got ${show(value)}`);
    return value[0] === value[1] ? problem('range', `${where} compares ${JSON.stringify(value[0])} with itself`) : [];
  },
};

/** A function or null (only in code: the key is apiOnly). `nullable` says so in the message. */
const func = (nullable: boolean): Spec => ({
  kind: 'custom',
  type: 'function',
  check: (value, where, api) => {
    if (!api) return problem('type', `${where} cannot be given in a JSON file`);
    return value === null || typeof value === 'function' ? [] : problem('type', `${where} must be a function${nullable ? ' or null' : ''}, got ${show(value)}`);
  },
});

const rates: Spec = { kind: 'array', of: num(0, true), min: 1 };

const ADAPTER_KEYS: Record<string, Key> = {
  targetModules: { spec: targets, doc: 'linear modules to adapt: short names, full names, or a regular expression on full names' },
  ...loraKeys(", merged key by key over the sweep's"),
  seed: { spec: safeInt(0), doc: '', refused: "the sweep sets the adapter's seed: each job's seed from `seeds`" },
};

/** The Trainer's options a sweep passes on (its table's rows), and those it sets itself (refused, saying where they go). */
const PASSED_ON = ['schedule', 'warmupRatio', 'warmupSteps', 'weightDecay', 'maxGradNorm', 'gradientAccumulation', 'sampling', 'samplingTemperature', 'groupByLength', 'packing', 'evalBatchSize', 'evalExtraTokens', 'precision', 'gradientCheckpointing', 'skipNonFinite'] as const satisfies readonly (keyof SweepTrainerOptions)[];
const TRAINER_KEYS: Record<string, Key> = {
  ...Object.fromEntries(PASSED_ON.map((k) => [k, runJsonTrainerKeys()[k]])),
  skipNonFinite: { ...runJsonTrainerKeys().skipNonFinite, doc: 'skip steps with a non-finite loss instead of failing the job (default false): a rate that diverges then scores low instead of stopping the sweep' },
  learningRate: { spec: num(), doc: '', refused: 'set by the sweep: give the grid as learningRates (top level or per variant)' },
  maxSteps: { spec: num(), doc: '', refused: 'set by the sweep: give it as steps (top level)' },
  epochs: { spec: num(), doc: '', refused: 'a sweep counts steps: give steps (top level)' },
  batchSize: { spec: num(), doc: '', refused: 'give it as batchSize (top level)' },
  seed: { spec: num(), doc: '', refused: 'set by the sweep: each job\'s seed from seeds (top level)' },
};

const DATA_KEYS: Record<string, Key> = {
  train: { spec: data, required: true, doc: 'JSON lines file of {"task", "prompt", "response"} records (the API also takes the records)' },
  validation: { spec: data, required: true, doc: 'the same, where learning rates are picked' },
  test: { spec: data, doc: 'the same, where the picks are evaluated (optional: without it the results are the picks\' validation runs)' },
  ...ENCODING_KEYS,
};

const VARIANT_KEYS: Record<string, Key> = {
  name: { spec: str, required: true, doc: 'its name in tables and file names (letters, digits, . _ + -; unique)' },
  what: { spec: str, doc: 'one line saying what it is (default: its adapter options)' },
  adapter: { spec: { kind: 'object', keys: ADAPTER_KEYS }, type: '{...}', doc: 'adapter options over the top-level adapter\'s (init merged key by key)' },
  learningRates: { spec: rates, type: 'number[]', doc: 'its own learning-rate grid (default: the top-level one); one rate: nothing to pick' },
};

const TOP_KEYS: Record<string, Key> = {
  model: { spec: pth, required: true, doc: 'the base model: a Hugging Face folder (config.json, model.safetensors)' },
  dtype: { spec: oneOf('float32', 'bfloat16', 'float64'), doc: 'the base\'s parameter dtype (default float32)' },
  device: { spec: str, doc: '"cpu" (default), "cuda" or "cuda:N"' },
  tokenizer: { spec: str, type: '"<file or folder>" | "byte"', doc: 'a tokenizer.json (or a folder with one), or "byte"; default the model folder\'s tokenizer.json' },
  data: { spec: { kind: 'object', keys: DATA_KEYS }, required: true, type: '{...}', doc: 'the examples:' },
  adapter: { spec: { kind: 'object', keys: ADAPTER_KEYS }, type: '{...}', doc: 'adapter options every variant starts from (AdapterOptions; targetModules here or in each variant):' },
  variants: {
    spec: { kind: 'array', of: { kind: 'object', keys: VARIANT_KEYS }, min: 1 },
    required: true,
    type: '[{...}, ...]',
    doc: 'the adapter variants to compare, each:',
  },
  learningRates: { spec: rates, type: 'number[]', doc: 'learning rates tried for every variant without its own' },
  seeds: { spec: seeds, doc: 'a count n (seeds 0..n-1) or the seeds (default 3); a seed sets the adapter\'s start, its dropout and the data order' },
  steps: { spec: safeInt(1), required: true, doc: 'optimizer steps of every job' },
  batchSize: { spec: safeInt(1), doc: 'rows per step (default 8)' },
  trainer: { spec: { kind: 'object', keys: TRAINER_KEYS }, type: '{...}', doc: 'other trainer options of every job:' },
  pickBy: { spec: oneOf('accuracy', 'loss'), doc: 'a variant\'s rate is the best mean over seeds on validation of exact-match accuracy (default; ties: lower loss) or of loss' },
  compare: { spec: { kind: 'array', of: pair }, type: '[["a", "b"], ...]', doc: 'variant pairs: a - b per seed with its 95% interval' },
  workers: { spec: safeInt(1), doc: 'worker processes running jobs side by side (default: usable cores / threads on the CPU, 1 on CUDA)' },
  threads: { spec: safeInt(1), doc: 'threads of each job (default 1)' },
  outputDir: { spec: pth, required: true, doc: 'where jobs/, sweep.json, table.md and figure.svg/png go' },
  title: { spec: str, doc: 'the figure\'s title' },
  figure: { spec: bool, doc: 'draw figure.svg and figure.png (default true)' },
  log: { spec: func(true), apiOnly: true, doc: 'where lines go (default stderr); null: nowhere' },
  onProgress: { spec: func(false), apiOnly: true, doc: 'called for each finished job instead of its line' },
};

// ---------------------------------------------------------------------------------------------
// The key reference and the checks (lib/util/spec.ts)

/** The key reference of a sweep.json (`rlora sweep --help`), made from the table the checks use. */
export function describeSweepConfig(): string {
  return describeKeys(TOP_KEYS, '  ');
}

/** Every documented key of sweep.json as a dotted path ("trainer.schedule"; "variants[].name"), for tests and tools. */
export function sweepConfigKeys(): string[] {
  return keyPaths(TOP_KEYS);
}

/** A sweep definition with problems; `problems` each name a key, the message names the file (or "sweep"). */
export class SweepConfigError extends Error {
  constructor(
    readonly where: string,
    readonly problems: string[],
  ) {
    super(`${where}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n${problems.map((p) => `  - ${p}`).join('\n')}`}`);
    this.name = 'SweepConfigError';
  }
}

// ---------------------------------------------------------------------------------------------
// The checked definition

export interface ResolvedVariant {
  name: string;
  what: string;
  /** The sweep's adapter options with the variant's on top (init merged), without targetModules. */
  adapter: Omit<SweepAdapterOptions, 'targetModules'>;
  /** As written: module names, or {regex}. */
  targetModules: string[] | { regex: string };
  learningRates: number[];
}

export type ResolvedData = { file: string } | { examples: Example[] };

export interface ResolvedSweep {
  /** The sweep.json file (absolute), or "sweep" for options given in code: errors start with it. */
  where: string;
  /** The sweep.json file, when read from one. */
  file?: string;
  model: string;
  dtype?: 'float32' | 'bfloat16' | 'float64';
  device: string;
  tokenizer?: string;
  data: {
    train: ResolvedData;
    validation: ResolvedData;
    test?: ResolvedData;
    options: { template?: string; maxLength?: number; fields?: { task?: string; prompt?: string; response?: string }; addBos?: boolean; addEos?: boolean };
  };
  variants: ResolvedVariant[];
  seeds: number[];
  steps: number;
  batchSize: number;
  trainer: SweepTrainerOptions;
  pickBy: 'accuracy' | 'loss';
  compare: [string, string][];
  workers: number;
  threads: number;
  outputDir: string;
  title?: string;
  figure: boolean;
  log: ((line: string) => void) | null;
  onProgress?: (p: SweepProgress) => void;
}

/** A variant name as it may appear in a file name. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** A short description of adapter options: `method, rank 4, heads 5, ...` (the keys given). */
export function describeAdapter(a: Omit<SweepAdapterOptions, 'targetModules'>): string {
  const { method, init, ...rest } = a;
  const bits = [method ?? 'rlora', ...Object.entries(rest).map(([k, v]) => `${k} ${JSON.stringify(v)}`)];
  if (init && Object.keys(init).length) bits.push(`init ${Object.entries(init).map(([k, v]) => `${k}=${v}`).join(',')}`);
  return bits.join(', ');
}

/**
 * Checks sweep options and fills in the defaults. `file`: the sweep.json they were read from
 * (relative paths are then relative to its folder, and functions are refused); without it, the
 * options come from code (paths relative to the working folder, records and RegExps allowed).
 * Throws a SweepConfigError listing every problem.
 */
export function resolveSweep(options: unknown, file?: string): ResolvedSweep {
  const api = file === undefined;
  const where = api ? 'sweep' : path.resolve(file);
  if (!isPlainObject(options)) throw new SweepConfigError(where, [`the sweep must be ${api ? 'an object' : 'a JSON object'}, got ${show(options)}`]);
  const problems = check(options, { kind: 'object', keys: TOP_KEYS }, '', api).map((p) => p.message);
  if (problems.length) throw new SweepConfigError(where, problems);
  const o = options as unknown as SweepOptions;
  const shared = (o.adapter ?? {}) as SweepAdapterOptions & Record<string, unknown>;
  // what the key table cannot say
  const names = o.variants.map((v) => v.name);
  o.variants.forEach((v, i) => {
    if (!NAME.test(v.name)) problems.push(`variants[${i}].name must start with a letter or digit and hold only letters, digits, ".", "_", "+" and "-" (it names files), got ${JSON.stringify(v.name)}`);
    if (names.indexOf(v.name) !== i) problems.push(`variants[${i}].name ${JSON.stringify(v.name)} is the name of variants[${names.indexOf(v.name)}] too`);
    if ((v.adapter?.targetModules ?? shared.targetModules) === undefined) problems.push(`variants[${i}] (${v.name}) has no targetModules: give adapter.targetModules (for every variant) or variants[${i}].adapter.targetModules`);
    if ((v.learningRates ?? o.learningRates) === undefined) problems.push(`variants[${i}] (${v.name}) has no learning rates: give learningRates (for every variant) or variants[${i}].learningRates`);
  });
  const twice = (lrs: number[] | undefined, key: string): void => {
    const dup = lrs?.find((r, j) => lrs.indexOf(r) !== j);
    if (dup !== undefined) problems.push(`${key} lists ${dup} twice`);
  };
  twice(o.learningRates, 'learningRates');
  o.variants.forEach((v, i) => twice(v.learningRates, `variants[${i}].learningRates`));
  (o.compare ?? []).forEach(([a, b], i) => {
    for (const [j, n] of [a, b].entries()) {
      if (!names.includes(n)) {
        const near = names.find((x) => n.length > 1 && x.startsWith(n)) ?? closest(n, names);
        problems.push(`compare[${i}][${j}] names no variant: ${JSON.stringify(n)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; the variants: ${names.join(', ')}`);
      }
    }
  });
  // every count that multiplies jobs, before any grid is built
  if (!problems.length) {
    const nSeeds = o.seeds === undefined ? 3 : typeof o.seeds === 'number' ? o.seeds : o.seeds.length;
    const rates = o.variants.map((v) => (v.learningRates ?? o.learningRates ?? []).length);
    const jobs = rates.reduce((n, k) => n + (k > 1 ? k : 0) * nSeeds + nSeeds, 0); // validation jobs where a rate is picked, then one final job a seed
    if (jobs > MAX_SWEEP_JOBS) {
      problems.push(
        `the sweep holds ${jobs.toLocaleString('en-US')} jobs (${o.variants.length} variants, ${rates.reduce((a, b) => a + b, 0)} learning rates in all, ${nSeeds} seeds), more than the ${MAX_SWEEP_JOBS.toLocaleString('en-US')} a sweep may hold: fewer seeds, rates or variants`,
      );
    }
  }
  if (!api && path.resolve(path.dirname(where), o.outputDir, 'sweep.json') === where) problems.push(`outputDir is the folder of this file, where the results (sweep.json) would replace it: name another folder`);
  if (problems.length) throw new SweepConfigError(where, problems);

  const base = api ? process.cwd() : path.dirname(where);
  const at = (p: string): string => path.resolve(base, p);
  const data = (d: SweepData): ResolvedData => (typeof d === 'string' ? { file: at(d) } : { examples: d });
  const device = o.device ?? 'cpu';
  const threads = o.threads ?? 1;
  const { targetModules: sharedTargets, init: sharedInit, ...sharedRest } = shared;
  const targets = (t: SweepAdapterOptions['targetModules']): string[] | { regex: string } =>
    t instanceof RegExp ? { regex: t.source } : Array.isArray(t) ? [...t] : { regex: (t as unknown as { regex: string }).regex };
  const variants = o.variants.map((v): ResolvedVariant => {
    const { targetModules, init, ...rest } = v.adapter ?? {};
    const mergedInit = sharedInit || init ? { ...sharedInit, ...init } : undefined;
    const adapter = { ...sharedRest, ...rest, ...(mergedInit ? { init: mergedInit } : {}) };
    return { name: v.name, what: v.what ?? describeAdapter(adapter), adapter, targetModules: targets(targetModules ?? sharedTargets), learningRates: [...(v.learningRates ?? o.learningRates!)] };
  });
  const seeds = o.seeds === undefined ? [0, 1, 2] : typeof o.seeds === 'number' ? Array.from({ length: o.seeds }, (_, i) => i) : [...o.seeds];
  return {
    where,
    file: api ? undefined : where,
    model: at(o.model),
    dtype: o.dtype,
    device,
    tokenizer: o.tokenizer === undefined || o.tokenizer === 'byte' ? o.tokenizer : at(o.tokenizer),
    data: {
      train: data(o.data.train),
      validation: data(o.data.validation),
      test: o.data.test === undefined ? undefined : data(o.data.test),
      options: { template: o.data.template, maxLength: o.data.maxLength, fields: o.data.fields, addBos: o.data.addBos, addEos: o.data.addEos },
    },
    variants,
    seeds,
    steps: o.steps,
    batchSize: o.batchSize ?? 8,
    trainer: { ...(o.trainer ?? {}) },
    pickBy: o.pickBy ?? 'accuracy',
    compare: (o.compare ?? []).map(([a, b]) => [a, b]),
    workers: o.workers ?? (device.startsWith('cuda') ? 1 : Math.max(1, Math.floor(os.availableParallelism() / threads))),
    threads,
    outputDir: at(o.outputDir),
    title: o.title,
    figure: o.figure ?? true,
    log: o.log === undefined ? (line: string) => process.stderr.write(line + '\n') : o.log,
    onProgress: o.onProgress,
  };
}

/** Reads and checks a sweep.json file (errors name the file and the key). */
export function readSweepConfig(file: string): ResolvedSweep {
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new SweepConfigError(path.resolve(file), ['is a folder, not a sweep.json file']);
  return resolveSweep(readJsonFile(file, { where: 'the sweep definition' }), file);
}
