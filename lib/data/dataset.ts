// MultiTaskDataset: tokenized examples of several tasks, read from JSON lines (one file or several)
// or built in code, and split per task into training and validation.
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import type { TextTokenizer } from '../tokenizer';
import { DatasetOptions, EncodedExample, encodeExample, resolveOptions, withIndex } from './encode';
import { DEFAULT_FIELDS, DEFAULT_TASK, Example, readRecord } from './formats';
import { forEachLine } from './jsonl';
import { Rng } from './rng';

import { describeKind as describe, inspectSymbol } from '../util/options';

/**
 * How a dataset turned records into tokens, as an adapter folder records it (rlora_config.json
 * `data`) so that evaluating the adapter later encodes data the same way.
 */
export interface DataSettings {
  /** The template string; null when none was given (prompt and response as they are). */
  template: string | null;
  /** True when the template was a function (it cannot be recorded: give it again). */
  templateFunction?: boolean;
  maxLength: number;
  fields: { task: string; prompt: string; response: string };
  addBos: boolean;
  addEos: boolean;
  /** 'byte' (ByteTokenizer), the tokenizer.json path it was read from, or null when unknown. */
  tokenizer: string | null;
  /** True when its records were conversations rendered with the tokenizer's chat template (generate with generateChat). */
  chat?: boolean;
}

/** The two parts of MultiTaskDataset.split. */
export interface DataSplit {
  train: MultiTaskDataset;
  validation: MultiTaskDataset;
}

/** A seed for one task's split: the split's seed with its low 32 bits xored with FNV-1a of the task's UTF-16 units. */
function taskSeed(seed: number, task: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < task.length; i++) h = Math.imul(h ^ task.charCodeAt(i), 0x01000193) >>> 0;
  const high = Math.floor(seed / 2 ** 32);
  return high * 2 ** 32 + ((seed - high * 2 ** 32) ^ h) >>> 0;
}

/** Tokenized examples of several tasks. */
export class MultiTaskDataset {
  readonly size: number;
  /** Sorted unique task names. */
  readonly tasks: string[];
  readonly countByTask: Record<string, number>;
  /** How many sequences were cut to maxLength. */
  readonly truncated: number;
  readonly tokenizer: TextTokenizer;
  readonly maxLength: number;
  readonly #examples: readonly EncodedExample[];
  readonly #byTask: Map<string, number[]>;
  readonly #options: DatasetOptions;

  private constructor(examples: EncodedExample[], options: DatasetOptions, where: string) {
    if (examples.length === 0) throw new Error(`${where}: no examples (an empty dataset cannot be trained or evaluated on)`);
    this.#examples = examples;
    this.#options = options;
    this.tokenizer = options.tokenizer;
    this.maxLength = options.maxLength ?? 512;
    this.size = examples.length;
    const byTask = new Map<string, number[]>();
    let truncated = 0;
    for (const e of examples) {
      let list = byTask.get(e.task);
      if (!list) byTask.set(e.task, (list = []));
      list.push(e.index);
      if (e.truncated) truncated++;
    }
    this.truncated = truncated;
    this.tasks = [...byTask.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.#byTask = new Map(this.tasks.map((t) => [t, byTask.get(t)!]));
    this.countByTask = Object.fromEntries(this.tasks.map((t) => [t, byTask.get(t)!.length]));
    Object.freeze(this.tasks);
    Object.freeze(this.countByTask);
  }

  /** How this dataset encodes records (template, maxLength, fields, bos/eos, tokenizer). */
  settings(): DataSettings {
    const o = this.#options;
    const t = o.tokenizer as { source?: unknown; constructor?: { name?: string } };
    const tokenizer = t.constructor?.name === 'ByteTokenizer' ? 'byte' : typeof t.source === 'string' && t.source !== 'JSON' ? t.source : null;
    return {
      template: typeof o.template === 'string' ? o.template : null,
      ...(typeof o.template === 'function' ? { templateFunction: true } : {}),
      maxLength: this.maxLength,
      fields: { task: o.fields?.task ?? DEFAULT_FIELDS.task, prompt: o.fields?.prompt ?? DEFAULT_FIELDS.prompt, response: o.fields?.response ?? DEFAULT_FIELDS.response },
      addBos: o.addBos ?? true,
      addEos: o.addEos ?? true,
      tokenizer,
      ...(this.#examples.some((e) => e.chat) ? { chat: true } : {}),
    };
  }

  /**
   * Reads a JSON lines file (UTF-8), one record per line (blank lines skipped; lines end in `\n` or
   * `\r\n`), streaming it in chunks; or several, one after the other. A line longer than
   * `options.maxLineBytes` (default 64 MiB) is an error. Errors name the file and line:
   * `data.jsonl:7: ...`. A record without a task belongs to task "default" (DEFAULT_TASK); with
   * several files, to its file's name without the extension (`math.jsonl`: "math").
   */
  static async fromJsonl(path: string | readonly string[], options: DatasetOptions): Promise<MultiTaskDataset> {
    const where = 'MultiTaskDataset.fromJsonl';
    const files = typeof path === 'string' ? [path] : path;
    if (!Array.isArray(files) || files.length === 0 || files.some((f) => typeof f !== 'string')) {
      throw new TypeError(`${where}: path must be a string or a non-empty array of strings, got ${describe(path)}`);
    }
    const o = resolveOptions(where, options);
    const examples: EncodedExample[] = [];
    for (const file of files) await readJsonl(where, file, o, files.length > 1 ? fileTask(file) : DEFAULT_TASK, examples);
    return new MultiTaskDataset(examples, options, `${where}: ${files.join(', ')}`);
  }

  /** Examples from records in any of the formats (README "Data"; field names as in `options.fields`). Errors name `examples[i]`. */
  static fromArray(examples: ReadonlyArray<Example | Record<string, unknown>>, options: DatasetOptions): MultiTaskDataset {
    const where = 'MultiTaskDataset.fromArray';
    if (!Array.isArray(examples)) throw new TypeError(`${where}: examples must be an array of records, got ${describe(examples)}`);
    const o = resolveOptions(where, options);
    const encoded = examples.map((record, i) => {
      const at = `${where}: examples[${i}]`;
      return encodeExample(at, i, readRecord(at, record, o.fields), o);
    });
    return new MultiTaskDataset(encoded, options, where);
  }

  get(i: number): EncodedExample {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= this.size) {
      throw new RangeError(`MultiTaskDataset.get: index ${describe(i)} is out of range (size ${this.size}, indices 0..${this.size - 1})`);
    }
    return this.#examples[i];
  }

  /** Indices of the examples of `task`, in dataset order (a copy). */
  indicesOf(task: string): number[] {
    const list = this.#byTask.get(task);
    if (!list) throw new Error(`MultiTaskDataset.indicesOf: unknown task ${describe(task)} (tasks: ${this.tasks.map((t) => JSON.stringify(t)).join(', ')})`);
    return list.slice();
  }

  /**
   * Splits off a validation set, per task: `fraction` (> 0 and < 1) of each task's examples,
   * rounded up as Hugging Face's train_test_split does, but at most all but one (a task of one
   * example stays in train), drawn by a generator seeded with `seed` (default 0) and the task's
   * name, so a task's split depends on nothing else (not on the other tasks, nor on the order of
   * the tasks). Both parts keep dataset order. A RangeError when no task has two examples.
   */
  split(fraction: number, seed = 0): DataSplit {
    const where = 'MultiTaskDataset.split';
    if (typeof fraction !== 'number' || !(fraction > 0 && fraction < 1)) throw new RangeError(`${where}: fraction must be a number > 0 and < 1, got ${describe(fraction)}`);
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`${where}: seed must be an integer >= 0, got ${describe(seed)}`);
    const validation: number[] = [];
    for (const task of this.tasks) {
      const list = this.#byTask.get(task)!;
      const n = Math.min(list.length - 1, Math.ceil(fraction * list.length - 1e-9));
      validation.push(...Rng.fromSeed(taskSeed(seed, task)).shuffle(list.slice()).slice(0, n));
    }
    if (validation.length === 0) throw new RangeError(`${where}: no task has two examples, so a validation split of ${fraction} leaves none to validate on (${this.size} examples)`);
    const chosen = new Set(validation);
    const train = Array.from({ length: this.size }, (_, i) => i).filter((i) => !chosen.has(i));
    return { train: this.subset(train), validation: this.subset(validation.sort((a, b) => a - b)) };
  }
  /**
   * A dataset of the examples at these indices, in this order (same tokenizer and options), for
   * splits. Its examples are numbered 0..indices.length-1; an index may appear more than once.
   */
  subset(indices: number[]): MultiTaskDataset {
    const where = 'MultiTaskDataset.subset';
    if (!Array.isArray(indices)) throw new TypeError(`${where}: indices must be an array, got ${describe(indices)}`);
    const picked = indices.map((i, k) => {
      if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= this.size) {
        throw new RangeError(`${where}: indices[${k}] is ${describe(i)}, not an index of this dataset (size ${this.size})`);
      }
      return withIndex(this.#examples[i], k);
    });
    return new MultiTaskDataset(picked, this.#options, where);
  }

  [inspectSymbol](): string {
    const counts = this.tasks.map((t) => `${t}: ${this.countByTask[t]}`).join(', ');
    return `MultiTaskDataset(size=${this.size}, tasks={${counts}}, maxLength=${this.maxLength}, truncated=${this.truncated})`;
  }
}

/** The task of a file's records without one, when a dataset reads several files: its name without the extension. */
function fileTask(file: string): string {
  const base = path.basename(file);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}

/** Reads one JSON lines file's records onto `examples` (numbered on from its length). */
async function readJsonl(where: string, file: string, o: ReturnType<typeof resolveOptions>, defaultTask: string, examples: EncodedExample[]): Promise<void> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`${where}: file not found: ${file}`);
    throw new Error(`${where}: cannot read ${file}: ${err.message}`);
  }
  if ((await handle.stat()).isDirectory()) {
    await handle.close();
    throw new Error(`${where}: ${file} is a directory, not a JSON lines file`);
  }
  try {
    await forEachLine(where, file, handle, o.maxLineBytes, (line, lineNumber) => {
      if (lineNumber === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
      if (line.trim() === '') return;
      const at = `${file}:${lineNumber}`;
      let record: unknown;
      try {
        record = JSON.parse(line);
      } catch (e) {
        throw new Error(`${at}: invalid JSON (${(e as Error).message})`);
      }
      try {
        examples.push(encodeExample(at, examples.length, readRecord(at, record, o.fields, defaultTask), o));
      } catch (e) {
        // errors of ours name the line; others (e.g. a tokenizer's) get it here
        if (util.types.isNativeError(e) && e.message.startsWith(`${at}: `)) throw e;
        throw new Error(`${at}: ${util.types.isNativeError(e) ? e.message : String(e)}`);
      }
    });
  } finally {
    await handle.close().catch(() => undefined);
  }
}
