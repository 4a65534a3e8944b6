// Batches from a dataset, forever: tasks mixed proportionally, uniformly or by temperature, with a
// seeded order whose position can be saved and restored; and left-padded prompt batches for
// generation.
import * as util from 'util';

import { MultiTaskDataset } from './dataset';
import { EncodedExample, IGNORE_INDEX, inLossSpan } from './encode';
import { Rng } from './rng';
import { describeKind as describe, isRecord as isPlainObject } from '../util/options';

export type Sampling = 'proportional' | 'uniform' | 'temperature';
const SAMPLINGS: readonly Sampling[] = ['proportional', 'uniform', 'temperature'];

export interface SamplerOptions {
  batchSize: number;
  /**
   * 'proportional' (default): every example once per epoch, in a seeded shuffled order. 'uniform':
   * each row picks a task uniformly at random, then the next example of that task's own shuffled
   * cycle. 'temperature': like uniform, with task k picked with probability n_k^(1/T) / sum_j n_j^(1/T).
   */
  sampling?: Sampling;
  /** T of 'temperature' (default 2). */
  temperature?: number;
  /** Default 0. */
  seed?: number;
  /**
   * Batches of similar lengths (default false): rows are sorted by length within windows of 50
   * batches, cut into batches, and the batch order is shuffled (over the epoch for
   * 'proportional', within the window otherwise).
   */
  groupByLength?: boolean;
}

export interface Batch {
  /** Right-padded with padId to the longest sequence of the batch. */
  inputIds: number[][];
  /** 1 token, 0 padding. */
  attentionMask: number[][];
  /**
   * Hugging Face convention: the token id where the token gets loss (response tokens and eos),
   * -100 elsewhere (prompt, bos, padding); the model shifts internally.
   */
  labels: number[][];
  tasks: string[];
  /** Dataset index of each row. */
  indices: number[];
  /** Number of labels != -100 at positions >= 1 (those that count after the shift). */
  lossTokens: number;
  /**
   * Packed (packBatch): the one row holds the examples end to end, example e at positions
   * [cuSeqlens[e], cuSeqlens[e + 1]); absent: one example a row.
   */
  cuSeqlens?: number[];
}

/** A cycle through one task's examples (uniform and temperature sampling). */
interface TaskCycle {
  order: number[];
  position: number;
}

/** Where a sampler stands; JSON-serialisable. */
export interface SamplerState {
  version: 1;
  sampling: Sampling;
  batchSize: number;
  temperature: number | null;
  groupByLength: boolean;
  datasetSize: number;
  countByTask: Record<string, number>;
  /** xoshiro128** state (four unsigned 32-bit words). */
  rng: [number, number, number, number];
  /** Batches taken so far. */
  step: number;
  /** Batches drawn but not yet taken (dataset indices). */
  pending: number[][];
  /** Uniform and temperature sampling: each task's cycle, made when the task is first picked. */
  cycles: Record<string, { order: number[]; position: number }>;
}

const GROUP_WINDOW = 50;

function chunk(rows: number[], size: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size));
  return out;
}

/** Draws batches from a dataset, forever; its position can be saved and restored. */
export class BatchSampler {
  /** Batches per epoch: ceil(dataset.size / batchSize). */
  readonly stepsPerEpoch: number;
  readonly batchSize: number;
  readonly sampling: Sampling;
  readonly temperature: number;
  readonly groupByLength: boolean;
  readonly padId: number;
  /** Probability of each task per row (for 'proportional', its share n_k / N). */
  readonly taskProbabilities: Record<string, number>;
  readonly #dataset: MultiTaskDataset;
  readonly #cumulative: number[]; // cumulative task probabilities, in dataset.tasks order
  #rng: Rng;
  #step = 0;
  #pending: number[][] = [];
  #pendingPos = 0; // batches of #pending already taken
  #cycles = new Map<string, TaskCycle>();

  constructor(dataset: MultiTaskDataset, options: SamplerOptions, padId: number) {
    const where = 'BatchSampler';
    if (!(dataset instanceof MultiTaskDataset)) throw new TypeError(`${where}: dataset must be a MultiTaskDataset, got ${describe(dataset)}`);
    if (dataset.size === 0) throw new Error(`${where}: the dataset is empty`);
    if (!isPlainObject(options)) throw new TypeError(`${where}: options must be an object with a batchSize, got ${describe(options)}`);
    const { batchSize, sampling = 'proportional', temperature = 2, seed = 0, groupByLength = false } = options;
    if (typeof batchSize !== 'number' || !Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`${where}: batchSize must be an integer >= 1, got ${describe(batchSize)}`);
    }
    if (!SAMPLINGS.includes(sampling)) throw new Error(`${where}: unknown sampling ${describe(sampling)} (known: ${SAMPLINGS.join(', ')})`);
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature <= 0) {
      throw new RangeError(`${where}: temperature must be a finite number > 0, got ${describe(temperature)}`);
    }
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw new TypeError(`${where}: seed must be an integer, got ${describe(seed)}`);
    if (typeof groupByLength !== 'boolean') throw new TypeError(`${where}: groupByLength must be a boolean, got ${describe(groupByLength)}`);
    if (typeof padId !== 'number' || !Number.isInteger(padId) || padId < 0) {
      throw new RangeError(`${where}: padId must be a non-negative integer token id, got ${describe(padId)}`);
    }
    this.#dataset = dataset;
    this.batchSize = batchSize;
    this.sampling = sampling;
    this.temperature = temperature;
    this.groupByLength = groupByLength;
    this.padId = padId;
    this.stepsPerEpoch = Math.ceil(dataset.size / batchSize);
    this.#rng = Rng.fromSeed(seed);

    const counts = dataset.tasks.map((t) => dataset.countByTask[t]);
    let weights: number[];
    if (sampling === 'proportional') weights = counts.slice();
    else if (sampling === 'uniform') weights = counts.map(() => 1);
    else {
      // n^(1/T), relative to the largest task (no overflow for small T).
      const logMax = Math.log(Math.max(...counts));
      weights = counts.map((n) => Math.exp((Math.log(n) - logMax) / temperature));
    }
    const total = weights.reduce((a, b) => a + b, 0);
    const probs = weights.map((w) => w / total);
    this.taskProbabilities = Object.freeze(Object.fromEntries(dataset.tasks.map((t, k) => [t, probs[k]])));
    let acc = 0;
    this.#cumulative = probs.map((p) => (acc += p));
  }

  /** Epochs completed (batches taken / stepsPerEpoch, rounded down). */
  get epoch(): number {
    return Math.floor(this.#step / this.stepsPerEpoch);
  }

  /** Batches taken so far. */
  get step(): number {
    return this.#step;
  }

  /** The next batch; never ends (a new epoch starts with a new shuffle when one is used up). */
  next(): Batch {
    if (this.#pendingPos >= this.#pending.length) {
      this.#pending = this.sampling === 'proportional' ? this.#epochBatches() : this.#drawBatches();
      this.#pendingPos = 0;
    }
    const rows = this.#pending[this.#pendingPos++];
    this.#step++;
    return this.#collate(rows);
  }

  /** One epoch of 'proportional': every example once. */
  #epochBatches(): number[][] {
    const order = this.#rng.shuffle(Array.from({ length: this.#dataset.size }, (_, i) => i));
    if (!this.groupByLength) return chunk(order, this.batchSize);
    const window = GROUP_WINDOW * this.batchSize;
    const batches: number[][] = [];
    for (let i = 0; i < order.length; i += window) batches.push(...chunk(this.#byLength(order.slice(i, i + window)), this.batchSize));
    return this.#rng.shuffle(batches);
  }

  /** 'uniform' and 'temperature': one batch, or a window of batches grouped by length. */
  #drawBatches(): number[][] {
    const count = this.groupByLength ? GROUP_WINDOW : 1;
    const rows: number[] = [];
    for (let i = 0; i < count * this.batchSize; i++) rows.push(this.#nextOfTask(this.#pickTask()));
    if (!this.groupByLength) return [rows];
    return this.#rng.shuffle(chunk(this.#byLength(rows), this.batchSize));
  }

  #pickTask(): string {
    const tasks = this.#dataset.tasks;
    const u = this.#rng.float();
    const k = this.#cumulative.findIndex((c) => u < c);
    return tasks[k < 0 ? tasks.length - 1 : k];
  }

  #nextOfTask(task: string): number {
    let cycle = this.#cycles.get(task);
    if (!cycle) {
      cycle = { order: this.#rng.shuffle(this.#dataset.indicesOf(task)), position: 0 };
      this.#cycles.set(task, cycle);
    } else if (cycle.position >= cycle.order.length) {
      this.#rng.shuffle(cycle.order);
      cycle.position = 0;
    }
    return cycle.order[cycle.position++];
  }

  /** Stable sort by length, longest first. */
  #byLength(rows: number[]): number[] {
    const length = new Map(rows.map((i) => [i, this.#dataset.get(i).inputIds.length]));
    return rows.sort((a, b) => length.get(b)! - length.get(a)!);
  }

  #collate(rows: number[]): Batch {
    const examples = rows.map((i) => this.#dataset.get(i));
    const width = Math.max(...examples.map((e) => e.inputIds.length));
    const batch: Batch = { inputIds: [], attentionMask: [], labels: [], tasks: [], indices: rows.slice(), lossTokens: 0 };
    for (const e of examples) {
      const n = e.inputIds.length;
      const ids: number[] = [];
      const mask: number[] = [];
      const labels: number[] = [];
      for (let t = 0; t < n; t++) {
        const id = e.inputIds[t];
        ids.push(id);
        mask.push(1);
        labels.push(t >= e.promptLength || inLossSpan(e, t) ? id : IGNORE_INDEX);
      }
      for (let t = n; t < width; t++) {
        ids.push(this.padId);
        mask.push(0);
        labels.push(IGNORE_INDEX);
      }
      batch.lossTokens += n - Math.max(e.promptLength, 1) + (e.lossSpans ?? []).reduce((a, [s0, s1]) => a + s1 - Math.max(s0, 1), 0);
      batch.inputIds.push(ids);
      batch.attentionMask.push(mask);
      batch.labels.push(labels);
      batch.tasks.push(e.task);
    }
    return batch;
  }

  /** Where the sampler stands (a deep copy, JSON-serialisable). */
  state(): SamplerState {
    return {
      version: 1,
      sampling: this.sampling,
      batchSize: this.batchSize,
      temperature: this.sampling === 'temperature' ? this.temperature : null,
      groupByLength: this.groupByLength,
      datasetSize: this.#dataset.size,
      countByTask: { ...this.#dataset.countByTask },
      rng: Array.from(this.#rng.s) as [number, number, number, number],
      step: this.#step,
      pending: this.#pending.slice(this.#pendingPos).map((b) => b.slice()),
      cycles: Object.fromEntries([...this.#cycles].map(([t, c]) => [t, { order: c.order.slice(), position: c.position }])),
    };
  }

  /**
   * Continues from a state of a sampler with the same dataset and options (the seed may differ:
   * the state holds the generator's state); the batches that follow are those the original gave.
   */
  setState(state: SamplerState): void {
    const where = 'BatchSampler.setState';
    if (!isPlainObject(state)) throw new TypeError(`${where}: state must be an object from BatchSampler.state(), got ${describe(state)}`);
    if (state.version !== 1) throw new Error(`${where}: unknown state version ${describe(state.version)} (expected 1)`);
    const mismatch = (what: string, saved: unknown, here: unknown): Error =>
      new Error(`${where}: the state was saved with ${what} ${util.inspect(saved)}, this sampler has ${util.inspect(here)}`);
    if (state.sampling !== this.sampling) throw mismatch('sampling', state.sampling, this.sampling);
    if (state.batchSize !== this.batchSize) throw mismatch('batchSize', state.batchSize, this.batchSize);
    if (this.sampling === 'temperature' && state.temperature !== this.temperature) throw mismatch('temperature', state.temperature, this.temperature);
    if (state.groupByLength !== this.groupByLength) throw mismatch('groupByLength', state.groupByLength, this.groupByLength);
    if (state.datasetSize !== this.#dataset.size) throw mismatch('a dataset of size', state.datasetSize, this.#dataset.size);
    const counts = this.#dataset.countByTask;
    if (!isPlainObject(state.countByTask) || util.isDeepStrictEqual({ ...state.countByTask }, { ...counts }) === false) {
      throw mismatch('examples per task', state.countByTask, counts);
    }
    const rng = state.rng;
    if (!Array.isArray(rng) || rng.length !== 4 || !rng.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32) || rng.every((w) => w === 0)) {
      throw new Error(`${where}: state.rng must be four unsigned 32-bit integers, not all zero, got ${util.inspect(rng)}`);
    }
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`${where}: state.step must be a non-negative integer, got ${describe(state.step)}`);
    const size = this.#dataset.size;
    const checkIndices = (what: string, list: unknown): number[] => {
      if (!Array.isArray(list) || !list.every((i) => Number.isInteger(i) && i >= 0 && i < size)) {
        throw new Error(`${where}: ${what} must be an array of dataset indices (0..${size - 1})`);
      }
      return list.slice();
    };
    if (!Array.isArray(state.pending)) throw new Error(`${where}: state.pending must be an array of batches`);
    const pending = state.pending.map((b, k) => checkIndices(`state.pending[${k}]`, b));
    if (pending.some((b) => b.length === 0)) throw new Error(`${where}: state.pending has an empty batch`);
    if (!isPlainObject(state.cycles)) throw new Error(`${where}: state.cycles must be an object`);
    const cycles = new Map<string, TaskCycle>();
    for (const task of this.#dataset.tasks) {
      // own keys only: a task named "__proto__" whose cycle is not made yet would read Object.prototype
      const c = Object.hasOwn(state.cycles, task) ? (state.cycles as Record<string, TaskCycle>)[task] : undefined;
      if (c === undefined) continue;
      const order = checkIndices(`state.cycles[${JSON.stringify(task)}].order`, isPlainObject(c) ? c.order : undefined);
      if (order.length !== counts[task] || !Number.isInteger(c.position) || c.position < 0 || c.position > order.length) {
        throw new Error(`${where}: state.cycles[${JSON.stringify(task)}] does not fit task ${JSON.stringify(task)} (${counts[task]} examples)`);
      }
      cycles.set(task, { order, position: c.position });
    }
    this.#rng = new Rng(rng);
    this.#step = state.step;
    this.#pending = pending;
    this.#pendingPos = 0;
    this.#cycles = cycles;
  }
}

/** Left-padded prompts (bos + prompt tokens) for generation, with their mask. */
export function promptBatch(examples: EncodedExample[], padId: number): { inputIds: number[][]; attentionMask: number[][] } {
  const where = 'promptBatch';
  if (!Array.isArray(examples) || examples.length === 0) throw new Error(`${where}: examples must be a non-empty array of encoded examples, got ${describe(examples)}`);
  if (typeof padId !== 'number' || !Number.isInteger(padId) || padId < 0) {
    throw new RangeError(`${where}: padId must be a non-negative integer token id, got ${describe(padId)}`);
  }
  examples.forEach((e, i) => {
    if (!isPlainObject(e) || !Array.isArray(e.inputIds) || !Number.isInteger(e.promptLength)) {
      throw new TypeError(`${where}: examples[${i}] is not an encoded example (from MultiTaskDataset.get), got ${describe(e)}`);
    }
    if (e.promptLength < 1) {
      throw new Error(`${where}: examples[${i}] (index ${e.index}) has no prompt token (no bos and an empty prompt): generation needs at least one`);
    }
  });
  const width = Math.max(...examples.map((e) => e.promptLength));
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (const e of examples) {
    const pad = width - e.promptLength;
    inputIds.push(new Array<number>(pad).fill(padId).concat(e.inputIds.slice(0, e.promptLength)));
    attentionMask.push(new Array<number>(pad).fill(0).concat(new Array<number>(e.promptLength).fill(1)));
  }
  return { inputIds, attentionMask };
}
