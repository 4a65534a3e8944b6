// run.json, the file `rlora train --config` reads: its keys (one table that both checks a file
// and writes the key reference of `rlora train --help`), validation with errors that name the
// bad key, and path resolution relative to the file. Nothing here loads the native addon.
import * as fs from 'fs';
import * as path from 'path';

import type { AdapterOptions } from '../adapter';
import type { DatasetOptions } from '../data';
import type { HFConfig } from '../model';
import type { Dtype } from '../tensor';
import { DEFAULTS, ResolvedTrainerOptions, runJsonTrainerKeys, trainerOptionProblems } from '../trainer/options';
import type { TrainerOptions } from '../trainer/options';
import { isPlainObject, show } from '../util/options';
import { check, describeKeys, int, Key, keyPaths, num, oneOf, pth, safeInt, Spec, str } from '../util/spec';
import { MAX_CONFIG_JSON_BYTES, readTextFile } from '../util/json';
import { ENCODING_KEYS } from '../config-keys';
import { loraKeys } from '../lora-options';
import { isRepoId, revisionProblem } from '../hub/cache';
import { isPathLike } from '../hub/resolve';
import { InputError } from './args';

// ---------------------------------------------------------------------------------------------
// The keys

const MODEL_KEYS: Record<string, Key> = {
  path: { spec: pth, doc: 'a Hugging Face model folder (config.json, model.safetensors), or a Hub repo id "org/name" where no such folder is next to run.json (the Hugging Face cache, else a download into it)' },
  revision: { spec: str, doc: 'with a Hub repo id: a branch, tag or commit hash (default main)' },
  config: { spec: { kind: 'json-object' }, type: '{...}', doc: 'a Hugging Face config.json object: a new model with random weights' },
  seed: { spec: int(0), doc: 'seed of the random weights of config (default 0)' },
  dtype: { spec: oneOf('float32', 'bfloat16', 'float64'), doc: 'parameter dtype (default float32)' },
  device: { spec: str, doc: '"cpu" (default), "cuda" or "cuda:N"' },
};

const DATA_KEYS: Record<string, Key> = {
  train: {
    spec: { kind: 'one-of', options: [pth, { kind: 'array', of: pth, min: 1 }] },
    required: true,
    type: 'path | path[]',
    doc: 'JSON lines file(s) of records: {"task", "prompt", "response"}, {"task", "messages"}, {"text"}, {"prompt", "completion"}, Alpaca\'s {"instruction", "input", "output"} (README "Data"); a record without "task" belongs to task "default", or with several files to its file\'s name without the extension',
  },
  eval: { spec: pth, doc: 'JSON lines file evaluated per task (loss, exact-match accuracy) during and after training' },
  validationSplit: { spec: num(0, true, 1, true), doc: 'without data.eval: this fraction of each task\'s training examples (rounded up, at most all but one) is held out and evaluated on instead' },
  splitSeed: { spec: safeInt(0), doc: 'seed of the validationSplit draw (default 0)' },
  ...ENCODING_KEYS,
};

const ADAPTER_KEYS: Record<string, Key> = {
  targetModules: {
    spec: { kind: 'one-of', options: [{ kind: 'string-array' }, { kind: 'object', keys: { regex: { spec: str, required: true, doc: '' } } }] },
    required: true,
    type: '["q_proj", ...] | {"regex": "..."}',
    doc: 'linear modules to adapt: short names ("gate_proj"), full names, or a regular expression on full names',
  },
  ...loraKeys(),
  seed: { spec: int(0), doc: 'seed of the adapter\'s initial values and dropout masks (default 0)' },
};

const TRAINER_KEYS: Record<string, Key> = runJsonTrainerKeys();

const TOP_KEYS: Record<string, Key> = {
  model: {
    spec: { kind: 'one-of', options: [pth, { kind: 'object', keys: MODEL_KEYS }] },
    required: true,
    type: '"<folder>" | {...}',
    doc: 'the base model: a Hugging Face folder or Hub repo id ("org/name"), or an object with exactly one of path and config:',
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

/** The key reference of `rlora train --help`, made from the same table validation uses. */
export function describeRunConfig(): string {
  return describeKeys(TOP_KEYS, '  ');
}

// ---------------------------------------------------------------------------------------------
// Validation

const isObject = isPlainObject;

/** The messages of `value`'s problems against `spec` at `where`. */
function problemsOf(value: unknown, spec: Spec, where: string): string[] {
  return check(value, spec, where).map((p) => p.message);
}

// ---------------------------------------------------------------------------------------------
// The checked config, with paths resolved

export interface RunConfig {
  /** The run.json file (absolute). */
  file: string;
  /** The file as written (for the copy in outputDir). */
  raw: Record<string, unknown>;
  /** path: an absolute folder, or a Hub repo id. */
  model: { path?: string; revision?: string; config?: HFConfig; seed: number; dtype?: Dtype; device?: string };
  /** 'byte', an absolute path, or undefined (the model folder's tokenizer). */
  tokenizer?: string;
  /** train: one file, or several (their records without a task belong to the file's name). */
  data: { train: string | string[]; eval?: string; validationSplit?: number; splitSeed: number; options: Omit<DatasetOptions, 'tokenizer'> };
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

/** The rules across trainer options (the Trainer's own, lib/trainer/options.ts), and that evaluations need data.eval. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkTrainerRules(j: Record<string, any>): string[] {
  const t = j.trainer;
  if (!isObject(t)) return [];
  const problems = trainerOptionProblems({ ...DEFAULTS, ...t } as ResolvedTrainerOptions, 'trainer.', true).map((p) => p.message);
  const noEval = !isObject(j.data) || (j.data.eval === undefined && j.data.validationSplit === undefined);
  for (const what of ['earlyStopping', 'saveBest']) {
    if (t[what] !== undefined && noEval) problems.push(`trainer.${what} needs data.eval or data.validationSplit (the examples it evaluates)`);
  }
  return problems;
}

/** data.validationSplit holds out part of data.train instead of data.eval; splitSeed goes with it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function checkDataRules(d: Record<string, any>): string[] {
  const problems: string[] = [];
  if (d.validationSplit !== undefined && d.eval !== undefined) problems.push('data.validationSplit and data.eval exclude each other: validationSplit holds out part of data.train when there is no data.eval');
  if (d.splitSeed !== undefined && d.validationSplit === undefined) problems.push('data.splitSeed applies to data.validationSplit only');
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
  const problems = isObject(json) ? problemsOf(json, { kind: 'object', keys: TOP_KEYS }, '') : [`run.json must be a JSON object, got ${show(json)}`];
  if (problems.length === 0 && isObject((json as Record<string, unknown>).model)) {
    const m = (json as { model: Record<string, unknown> }).model;
    if ((m.path === undefined) === (m.config === undefined)) problems.push('model needs exactly one of model.path (a folder) and model.config (a config.json object)');
    if (m.path !== undefined && m.seed !== undefined) problems.push('model.seed applies to model.config (random weights) only, not to model.path');
    if (m.revision !== undefined && m.path === undefined) problems.push('model.revision applies to a Hub repo id in model.path only');
    if (typeof m.revision === 'string' && revisionProblem(m.revision)) problems.push(`model.revision ${JSON.stringify(m.revision)} is refused: ${revisionProblem(m.revision)}`);
  }
  if (problems.length === 0) problems.push(...checkDataRules((json as Record<string, any>).data), ...checkTrainerRules(json as Record<string, any>)); // eslint-disable-line @typescript-eslint/no-explicit-any
  if (problems.length) throw new RunConfigError(file, problems);
  const j = json as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const dir = path.dirname(abs);
  const at = (p: string): string => path.resolve(dir, p);
  // a model path that is no folder next to run.json but an "org/name" repo id stays an id (the Hub's)
  const modelAt = (p: string): string => (fs.existsSync(at(p)) || isPathLike(p) || !p.includes('/') || !isRepoId(p) ? at(p) : p);
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
    model: { path: m.path === undefined ? undefined : modelAt(m.path), revision: m.revision, config: m.config, seed: m.seed ?? 0, dtype: m.dtype, device: m.device },
    tokenizer: j.tokenizer === undefined ? undefined : j.tokenizer === 'byte' ? 'byte' : at(j.tokenizer),
    data: {
      train: Array.isArray(d.train) ? d.train.map(at) : at(d.train),
      eval: d.eval === undefined ? undefined : at(d.eval),
      validationSplit: d.validationSplit,
      splitSeed: d.splitSeed ?? 0,
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
    if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${file} is a folder, not a run.json file`);
    text = readTextFile(file, { maxBytes: MAX_CONFIG_JSON_BYTES, kind: 'run.json' }); // a regular file of bounded size: not /dev/zero
  } catch (e) {
    throw new InputError((e as Error).message);
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
  return keyPaths(TOP_KEYS);
}
