// Trainer: multi-task fine-tuning of an adapter (DESIGN.md section 5): one native call per
// optimizer step, per-task logging, evaluation, atomic checkpoints and exact resume.
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import { SingleBar } from 'cli-progress';

import { beginTraining, endTraining, assertNotTraining } from './activity';
import { Adapter } from './adapter';
import { Batch, BatchSampler, MultiTaskDataset, promptBatch, Sampling, SamplerState } from './data';
import { Model, readJsonFile } from './model';
import { native, NativeAdamWState, NativeLmBatch } from './native';
import { AdamW, Schedule } from './optim';
import { forEachSafetensor, saveSafetensors } from './safetensors';
import { Tensor } from './tensor';

export interface TrainerOptions {
  /** Base learning rate of AdamW. Default 2e-4 (the published R-LoRA run). */
  learningRate?: number;
  /** Passes over the training set (default 1), unless maxSteps is given. */
  epochs?: number;
  /** Optimizer steps; overrides epochs. */
  maxSteps?: number;
  /** Rows per micro-batch. Default 8. */
  batchSize?: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradientAccumulation?: number;
  /** Default 'cosine'. */
  schedule?: Schedule;
  /** Warm-up as a fraction of all steps (default 0.03), unless warmupSteps is given. */
  warmupRatio?: number;
  warmupSteps?: number;
  /** Decoupled weight decay. Default 0. */
  weightDecay?: number;
  /** Clip the global gradient norm to this; 0 turns clipping off. Default 1. */
  maxGradNorm?: number;
  /** Seed of the data order (the adapter has its own). Default 0. */
  seed?: number;
  /** How tasks mix in a batch. Default 'proportional'. */
  sampling?: Sampling;
  /** T of 'temperature' sampling. Default 2. */
  samplingTemperature?: number;
  /** Batches of similar lengths (less padding). Default false. */
  groupByLength?: boolean;
  /** Evaluate the evalDataset every this many steps (and at the end); 0: only at the end. Default 0. */
  evalEvery?: number;
  /** Write a checkpoint every this many steps (and at the end); 0: only at the end. Needs outputDir. */
  saveEvery?: number;
  /**
   * Where log.jsonl and checkpoint-<step>/ go. No files when absent. Trainer.resume defaults it to
   * the checkpoint's parent folder.
   */
  outputDir?: string;
  /** Keep only the newest this many checkpoints (older ones are deleted after a new one is complete); 0 keeps all. Default 0. */
  keepCheckpoints?: number;
  /** A progress bar on stderr. Default: on when stderr is a terminal. */
  progress?: boolean;
  /**
   * 'float32' (default), or 'bfloat16': forward and backward under bfloat16 autocast on the
   * model's device (CPU or CUDA), as torch.autocast does; parameters, gradients and optimizer
   * state stay in the model's dtype. Evaluation runs without autocast.
   */
  precision?: 'float32' | 'bfloat16';
  /** Where training runs: the model's device (load the model there); given, it must match. */
  device?: string;
  /**
   * Skip a step whose loss is NaN or infinite (no update) instead of stopping. fit() counts the
   * skipped steps (History.skippedSteps, and a warning), and stops with `stopped: 'nonFinite'` as
   * soon as more than half of its steps were skipped. An update that leaves the parameters
   * non-finite cannot be skipped (it is made): fit() always stops with an error then. Default false.
   */
  skipNonFinite?: boolean;
  /** Longest greedy generation in evaluate() beyond the response length. Default 4 tokens more. */
  evalExtraTokens?: number;
}

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  /** Mean loss per labelled token of each task present in the step. */
  taskLoss: Record<string, number>;
  lr: number;
  gradNorm: number;
  tokens: number;
  tokensPerSecond: number;
  skipped?: boolean;
}

export interface TaskEval {
  /** Mean cross-entropy per response token. */
  loss: number;
  /** Exact match of greedy generation against the response. */
  accuracy: number;
  count: number;
}

export interface EvalRecord {
  step: number;
  tasks: Record<string, TaskEval>;
}

export interface History {
  steps: StepRecord[];
  evals: EvalRecord[];
  /**
   * Why fit returned: 'completed'; 'aborted' (the signal); or 'nonFinite': with skipNonFinite,
   * more than half of this fit's steps had a non-finite loss and were skipped (fit stops as soon as
   * that is so; a checkpoint is written, no final evaluation is made).
   */
  stopped: 'completed' | 'aborted' | 'nonFinite';
  /** Steps of this fit skipped for a non-finite loss (skipNonFinite). */
  skippedSteps: number;
  /** The folder log.jsonl and the checkpoints went to (options.outputDir); absent when none. */
  outputDir?: string;
  /** The last checkpoint written (or resumed from), if any; its values are finite. */
  lastCheckpoint?: string;
}

export interface FitOptions {
  evalDataset?: MultiTaskDataset;
  /** Stops after the current step (and writes a checkpoint when outputDir is set). */
  signal?: AbortSignal;
  onStep?: (record: StepRecord) => void;
  onEval?: (record: EvalRecord) => void;
}

interface TrainerState {
  version: 1;
  step: number;
  totalSteps: number;
  options: TrainerOptions;
  sampler: SamplerState | null;
  dataset: { size: number; tasks: string[] };
}

const DEFAULTS = {
  learningRate: 2e-4,
  epochs: 1,
  batchSize: 8,
  gradientAccumulation: 1,
  schedule: 'cosine' as Schedule,
  warmupRatio: 0.03,
  weightDecay: 0,
  maxGradNorm: 1,
  seed: 0,
  sampling: 'proportional' as Sampling,
  samplingTemperature: 2,
  groupByLength: false,
  evalEvery: 0,
  saveEvery: 0,
  keepCheckpoints: 0,
  skipNonFinite: false,
  evalExtraTokens: 4,
};

function positiveInt(v: number, name: string): number {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be an integer >= 1, got ${v}`);
  return v;
}

function toLmBatch(b: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>): NativeLmBatch {
  const t = (rows: number[][]): Tensor => Tensor.from(rows, undefined, { dtype: 'int64' });
  return { ids: t(b.inputIds).native, mask: t(b.attentionMask).native, labels: t(b.labels).native };
}

export interface TrainStepResult {
  /** Mean cross-entropy per labelled token over all the micro-batches. */
  loss: number;
  /** false: the loss was NaN or infinite and no update was made. */
  finite: boolean;
  lr: number;
  gradNorm: number;
  /** L2 norm of the parameters the update changed (0 when no update was made). */
  paramNorm: number;
  /**
   * false: the update left a parameter NaN, infinite, or so large that its squared L2 norm overflows
   * its dtype (float32: a norm above about 1.8e19); such weights are unusable.
   */
  paramsFinite: boolean;
  /** Summed loss and labelled tokens of each row, micro-batches in order. */
  rowLoss: Float64Array;
  rowTokens: number[];
}

/**
 * One optimizer step over one or more micro-batches (gradient accumulation): forward, masked
 * cross-entropy, backward, clipping, AdamW and the schedule, in one native call off the JS thread.
 * The building block of Trainer.fit, for custom loops (e.g. pretraining with an AdamW over a Model).
 * The model counts as training until the step resolves (README "Calls during training").
 */
export async function trainStep(
  model: Model,
  batches: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>[],
  optimizer: AdamW,
  options: { precision?: 'float32' | 'bfloat16' } = {},
): Promise<TrainStepResult> {
  if (!(model instanceof Model)) throw new TypeError('trainStep: model must be a Model');
  if (!(optimizer instanceof AdamW)) throw new TypeError('trainStep: optimizer must be an AdamW');
  beginTraining(model, 'trainStep');
  try {
    return await step(model, batches, optimizer, options.precision ?? 'float32');
  } finally {
    endTraining(model);
  }
}

/** One optimizer step, unchecked: trainStep's and Trainer.fit's. */
async function step(model: Model, batches: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>[], optimizer: AdamW, precision: 'float32' | 'bfloat16'): Promise<TrainStepResult> {
  const r = await native.lmTrainStep(model.native, batches.map(toLmBatch), optimizer.native, precision);
  return {
    loss: r.loss,
    finite: r.finite,
    lr: r.lr,
    gradNorm: r.gradNorm,
    paramNorm: r.paramNorm,
    paramsFinite: r.paramsFinite,
    rowLoss: new Tensor(r.rows.lossSum).data() as Float64Array,
    rowTokens: Array.from(new Tensor(r.rows.tokens).data() as BigInt64Array, Number),
  };
}

/** A hidden sibling name for a file or folder being written or removed (`.<name>.<what>-<pid>-<time>`). */
function sideName(target: string, what: 'tmp' | 'deleting'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${what}-${process.pid}-${Date.now()}`);
}
const SIDE_NAME = /^\.(checkpoint-\d+|log\.jsonl)\.(tmp|deleting)-/;

/** Flushes a file or folder (its entries) to disk. */
function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Removes a folder atomically as far as readers can tell: renamed away first, then deleted. */
function removeAtomically(dir: string): void {
  const trash = sideName(dir, 'deleting');
  fs.renameSync(dir, trash);
  fs.rmSync(trash, { recursive: true, force: true });
}

/**
 * Writes a folder atomically: fill a hidden sibling, fsync, rename into place (an existing folder
 * of that name is renamed away first), so a reader sees the folder complete or not at all.
 */
function writeAtomically(dir: string, fill: (tmp: string) => void): void {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = sideName(dir, 'tmp');
  fs.mkdirSync(tmp);
  try {
    fill(tmp);
    for (const f of fs.readdirSync(tmp)) fsyncPath(path.join(tmp, f));
    const old = fs.existsSync(dir) ? sideName(dir, 'deleting') : undefined;
    if (old) fs.renameSync(dir, old);
    fs.renameSync(tmp, dir);
    fsyncPath(path.dirname(dir));
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Replaces a file atomically: a hidden sibling written and fsynced, then renamed over it. */
function writeFileAtomically(file: string, text: string): void {
  const tmp = sideName(file, 'tmp');
  try {
    fs.writeFileSync(tmp, text);
    fsyncPath(tmp);
    fs.renameSync(tmp, file);
    fsyncPath(path.dirname(file));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

function messageOf(e: unknown): string {
  return util.types.isNativeError(e) ? e.message : String(e);
}

/** Runs fn; an error whose message does not name `file` is thrown again with it in front. */
function naming<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (messageOf(e).includes(file)) throw e;
    throw new Error(`${file}: ${messageOf(e)}`);
  }
}

/**
 * Keeps the records of a training log up to `step` (those after it are about to be logged again),
 * rewriting the file atomically. A last line cut short (a process killed while appending) is dropped
 * with a warning; any other line that is not a record is an error naming the file and line.
 * Returns how many records it dropped.
 * @internal (the CLI reports the count)
 */
export function trimLog(file: string, step: number): number {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const keep: string[] = [];
  let dropped = 0;
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (e) {
      // the last piece has no line end: a record being appended when the process stopped
      if (i === lines.length - 1) {
        console.warn(`rlora: ${file}:${i + 1}: dropped a half-written last line (${line.length} characters)`);
        return;
      }
      throw new Error(`${file}:${i + 1}: invalid JSON (${messageOf(e)}): not a training log line`);
    }
    const at = (record as { step?: unknown } | null)?.step;
    if (typeof at !== 'number') throw new Error(`${file}:${i + 1}: a log record without a step`);
    if (at <= step) keep.push(line + '\n');
    else dropped++;
  });
  writeFileAtomically(file, keep.join(''));
  return dropped;
}

/** Reads and checks trainer_state.json; errors name the file. */
function readTrainerState(file: string): TrainerState {
  const state = readJsonFile(file) as TrainerState;
  const bad = (what: string): never => {
    throw new Error(`${file}: ${what}`);
  };
  if (typeof state !== 'object' || state === null || Array.isArray(state)) bad('not a JSON object');
  if (state.version !== 1) bad(`unknown version ${util.inspect(state.version)} (expected 1)`);
  if (!Number.isInteger(state.step) || state.step < 0) bad(`step must be a non-negative integer, got ${util.inspect(state.step)}`);
  if (!Number.isInteger(state.totalSteps) || state.totalSteps < 1) bad(`totalSteps must be an integer >= 1, got ${util.inspect(state.totalSteps)}`);
  if (typeof state.options !== 'object' || state.options === null || Array.isArray(state.options)) bad('options must be an object');
  const d = state.dataset;
  if (typeof d !== 'object' || d === null || !Number.isInteger(d.size) || !Array.isArray(d.tasks) || !d.tasks.every((t) => typeof t === 'string')) {
    bad('dataset must be {size, tasks}');
  }
  if (state.sampler !== null && (typeof state.sampler !== 'object' || Array.isArray(state.sampler))) bad('sampler must be an object or null');
  return state;
}

/** Reads optimizer.safetensors (the AdamW state saveCheckpoint writes); errors name the file. */
function readOptimizerState(file: string): NativeAdamWState {
  return naming(file, () => {
    const params: { expAvg?: Tensor; expAvgSq?: Tensor }[] = [];
    const header = forEachSafetensor(file, (e, t) => {
      const m = /^(\d+)\.(exp_avg|exp_avg_sq)$/.exec(e.name);
      if (!m) throw new Error(`unexpected tensor ${JSON.stringify(e.name)} (expected <i>.exp_avg, <i>.exp_avg_sq)`);
      const p = (params[Number(m[1])] ??= {});
      if (m[2] === 'exp_avg') p.expAvg = t;
      else p.expAvgSq = t;
    });
    const steps = Number(header.metadata.steps);
    if (!Number.isInteger(steps) || steps < 0) throw new Error(`metadata "steps" must be a non-negative integer, got ${util.inspect(header.metadata.steps)}`);
    let paramSteps: unknown;
    try {
      paramSteps = JSON.parse(header.metadata.param_steps ?? '');
    } catch {
      throw new Error(`metadata "param_steps" must be a JSON array of step counts, got ${util.inspect(header.metadata.param_steps)}`);
    }
    if (!Array.isArray(paramSteps) || paramSteps.length !== params.length || !paramSteps.every((n) => Number.isInteger(n) && n >= 0)) {
      throw new Error(`metadata "param_steps" must hold one step count for each of the ${params.length} parameters, got ${util.inspect(header.metadata.param_steps)}`);
    }
    return {
      steps,
      params: Array.from(params, (p, i) => {
        if (!p?.expAvg || !p.expAvgSq) throw new Error(`parameter ${i} lacks exp_avg or exp_avg_sq`);
        return { step: paramSteps[i] as number, expAvg: p.expAvg.native, expAvgSq: p.expAvgSq.native };
      }),
    };
  });
}

export class Trainer {
  readonly model: Model;
  readonly adapter: Adapter;
  readonly options: Required<Omit<TrainerOptions, 'maxSteps' | 'warmupSteps' | 'outputDir' | 'progress' | 'precision' | 'device'>> & TrainerOptions;
  /** Optimizer steps taken so far. */
  step = 0;
  private optimizer?: AdamW;
  private disposed = false;
  private sampler?: BatchSampler;
  private pendingSampler: SamplerState | null = null;
  private totalSteps?: number;
  /** Always a checkpoint of finite values: none is written after an update broke the parameters. */
  private lastCheckpoint?: string;
  private trainInfo?: { size: number; tasks: string[] };
  private resumedFrom?: number;
  /** trainer_state.json of the checkpoint resumed from, for errors about its data position. */
  private resumedState?: string;
  private pendingTrainInfo?: { size: number; tasks: string[] };
  /** The step whose update left the parameters non-finite; nothing can continue from there. */
  private brokenAt?: { step: number; paramNorm: number };

  constructor(model: Model, adapter: Adapter, options: TrainerOptions = {}) {
    if (!(model instanceof Model)) throw new TypeError('Trainer: first argument must be a Model');
    if (!(adapter instanceof Adapter) || adapter.model !== model) throw new TypeError('Trainer: second argument must be an Adapter attached to that model');
    if (options.precision !== undefined && options.precision !== 'float32' && options.precision !== 'bfloat16') {
      throw new RangeError(`precision must be 'float32' or 'bfloat16', got ${JSON.stringify(options.precision)}`);
    }
    if (options.device !== undefined && options.device !== model.device) {
      throw new RangeError(`device ${JSON.stringify(options.device)} differs from the model's (${model.device}): load the model with {device: ${JSON.stringify(options.device)}}`);
    }
    this.model = model;
    this.adapter = adapter;
    // an explicit undefined means "the default", as an absent key does
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TrainerOptions;
    this.options = { ...DEFAULTS, ...given };
    const o = this.options;
    positiveInt(o.batchSize, 'batchSize');
    positiveInt(o.gradientAccumulation, 'gradientAccumulation');
    if (o.maxSteps !== undefined) positiveInt(o.maxSteps, 'maxSteps');
    if (!(o.epochs > 0)) throw new RangeError(`epochs must be > 0, got ${o.epochs}`);
    if (!(o.warmupRatio >= 0 && o.warmupRatio < 1)) throw new RangeError(`warmupRatio must be in [0, 1), got ${o.warmupRatio}`);
    if (o.saveEvery > 0 && !o.outputDir) throw new Error('saveEvery needs outputDir');
  }

  /** What the REPL and console.log show: a one-line summary, not the private fields. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const o = this.options;
    const total = this.totalSteps ?? o.maxSteps;
    const parts = [
      total !== undefined ? `step ${this.step} of ${total}` : `step ${this.step}, ${o.epochs} epoch${o.epochs === 1 ? '' : 's'}`,
      `lr ${o.learningRate}`,
      `batch ${o.batchSize}${o.gradientAccumulation > 1 ? ` x ${o.gradientAccumulation} accumulated` : ''}`,
      `method ${this.adapter.options.method}`,
      `${this.adapter.layers.size} module${this.adapter.layers.size === 1 ? '' : 's'}`,
    ];
    if (o.precision === 'bfloat16') parts.push('bfloat16');
    if (o.outputDir) parts.push(`outputDir ${o.outputDir}`);
    if (this.disposed) parts.push('disposed');
    return `Trainer(${parts.join(', ')})`;
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('this Trainer was disposed');
  }

  /**
   * Frees the optimizer state now (the collector would later). The model and the adapter are the
   * caller's and stay. Using the Trainer afterwards throws "this Trainer was disposed"; refused
   * while it trains. `using trainer = ...` calls it at the end of the block.
   */
  dispose(): void {
    if (this.disposed) return;
    assertNotTraining(this.model, 'Trainer.dispose');
    this.optimizer?.dispose();
    this.optimizer = undefined;
    this.disposed = true;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Fine-tunes the adapter on `train`; resolves with the history. Runs each step off the JS thread.
   * The model counts as training until it resolves (README "Calls during training").
   */
  async fit(train: MultiTaskDataset, fitOptions: FitOptions = {}): Promise<History> {
    if (!(train instanceof MultiTaskDataset)) throw new TypeError('fit: the training set must be a MultiTaskDataset');
    this.checkLive();
    beginTraining(this.model, 'Trainer.fit');
    try {
      return await this.fitUnchecked(train, fitOptions);
    } finally {
      endTraining(this.model);
    }
  }

  private async fitUnchecked(train: MultiTaskDataset, fitOptions: FitOptions): Promise<History> {
    const o = this.options;
    const padId = train.tokenizer.padTokenId ?? train.tokenizer.eosTokenId ?? 0;
    this.trainInfo = { size: train.size, tasks: train.tasks };
    const was = this.pendingTrainInfo;
    if (was && (was.size !== train.size || was.tasks.join('\0') !== train.tasks.join('\0'))) {
      throw new Error(
        `the checkpoint was trained on ${was.size} examples of tasks ${was.tasks.join(', ')}; ` +
          `this training set has ${train.size} of ${train.tasks.join(', ')}: resume needs the same data`,
      );
    }
    if (this.brokenAt) throw this.brokenError();
    this.sampler ??= new BatchSampler(train, { batchSize: o.batchSize, sampling: o.sampling, temperature: o.samplingTemperature, seed: o.seed, groupByLength: o.groupByLength }, padId);
    if (this.pendingSampler) {
      const [sampler, state] = [this.sampler, this.pendingSampler];
      naming(this.resumedState!, () => sampler.setState(state));
      this.pendingSampler = null;
    }
    const total = (this.totalSteps ??= o.maxSteps ?? Math.max(1, Math.ceil((o.epochs * this.sampler.stepsPerEpoch) / o.gradientAccumulation)));
    this.optimizer ??= this.createOptimizer(total);
    this.adapter.train();
    const history: History = { steps: [], evals: [], stopped: 'completed', skippedSteps: 0, outputDir: o.outputDir, lastCheckpoint: this.lastCheckpoint };
    const log = o.outputDir ? path.join(o.outputDir, 'log.jsonl') : undefined;
    if (o.outputDir) {
      fs.mkdirSync(o.outputDir, { recursive: true });
      // half-written or half-deleted checkpoints and logs of a process that was killed
      for (const f of fs.readdirSync(o.outputDir)) if (SIDE_NAME.test(f)) fs.rmSync(path.join(o.outputDir, f), { recursive: true, force: true });
    }
    // resuming from an older checkpoint: the steps after it are about to be logged again
    if (log && this.resumedFrom !== undefined && fs.existsSync(log)) trimLog(log, this.resumedFrom);
    this.resumedFrom = undefined;
    const firstStep = this.step;
    const bar = (o.progress ?? Boolean(process.stderr.isTTY))
      ? new SingleBar({ format: 'step {value}/{total} |{bar}| loss {loss} | {tps} tok/s | ETA {eta_formatted}', hideCursor: true, stream: process.stderr })
      : undefined;
    bar?.start(total, this.step, { loss: '-', tps: '-' });
    const evaluate = async (): Promise<void> => {
      if (!fitOptions.evalDataset) return;
      const rec: EvalRecord = { step: this.step, tasks: await this.evaluateUnchecked(fitOptions.evalDataset) };
      this.adapter.train();
      history.evals.push(rec);
      if (log) fs.appendFileSync(log, JSON.stringify({ type: 'eval', ...rec }) + '\n');
      fitOptions.onEval?.(rec);
    };
    try {
      while (this.step < total) {
        const micro: Batch[] = [];
        for (let k = 0; k < o.gradientAccumulation; k++) micro.push(this.sampler.next());
        const t0 = process.hrtime.bigint();
        const r = await step(this.model, micro, this.optimizer, o.precision ?? 'float32');
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        const tokens = micro.reduce((a, b) => a + b.attentionMask.flat().reduce((x, y) => x + y, 0), 0);
        if (!r.finite && !o.skipNonFinite) {
          throw new Error(
            `the loss became ${r.loss} at step ${this.step + 1}; no update was made. Last good checkpoint: ${this.lastCheckpoint ?? 'none'} ` +
              '(lower the learning rate, or set skipNonFinite to skip such steps)',
          );
        }
        if (!r.paramsFinite) {
          this.brokenAt = { step: this.step + 1, paramNorm: r.paramNorm };
          throw this.brokenError();
        }
        this.step += 1;
        if (!r.finite) history.skippedSteps += 1;
        const sums = r.rowLoss;
        const counts = r.rowTokens;
        const taskSum: Record<string, number> = {}, taskCount: Record<string, number> = {};
        micro.flatMap((b) => b.tasks).forEach((task, i) => {
          taskSum[task] = (taskSum[task] ?? 0) + sums[i];
          taskCount[task] = (taskCount[task] ?? 0) + counts[i];
        });
        const rec: StepRecord = {
          step: this.step,
          epoch: this.sampler.epoch,
          loss: r.loss,
          taskLoss: Object.fromEntries(Object.keys(taskSum).sort().filter((k) => taskCount[k] > 0).map((k) => [k, taskSum[k] / taskCount[k]])),
          lr: r.lr,
          gradNorm: r.gradNorm,
          tokens,
          tokensPerSecond: tokens / seconds,
          ...(r.finite ? {} : { skipped: true }),
        };
        history.steps.push(rec);
        if (log) fs.appendFileSync(log, JSON.stringify(rec) + '\n');
        bar?.update(this.step, { loss: rec.loss.toFixed(4), tps: Math.round(rec.tokensPerSecond) });
        fitOptions.onStep?.(rec);
        if (o.evalEvery > 0 && this.step % o.evalEvery === 0 && this.step < total) await evaluate();
        if (o.outputDir && o.saveEvery > 0 && this.step % o.saveEvery === 0 && this.step < total) history.lastCheckpoint = this.saveCheckpointUnchecked();
        if (2 * history.skippedSteps > total - firstStep) {
          history.stopped = 'nonFinite';
          break;
        }
        if (fitOptions.signal?.aborted) {
          history.stopped = 'aborted';
          break;
        }
      }
      if (history.stopped === 'completed') await evaluate();
      if (o.outputDir) history.lastCheckpoint = this.saveCheckpointUnchecked();
    } finally {
      bar?.stop();
      this.adapter.eval();
    }
    if (history.skippedSteps > 0) {
      console.warn(
        `rlora: skipped ${history.skippedSteps} of ${history.steps.length} steps (${firstStep + 1}..${this.step}) for a non-finite loss` +
          (history.stopped === 'nonFinite' ? `; stopped, as more than half of the ${total - firstStep} steps planned were skipped` : '') +
          ' (lower the learning rate?)',
      );
    }
    return history;
  }

  /**
   * Per task: mean cross-entropy per response token, and exact-match accuracy of greedy generation
   * (the generated tokens up to eos must equal the response's tokens).
   */
  async evaluate(dataset: MultiTaskDataset): Promise<Record<string, TaskEval>> {
    if (!(dataset instanceof MultiTaskDataset)) throw new TypeError('evaluate: expected a MultiTaskDataset');
    this.checkLive();
    assertNotTraining(this.model, 'Trainer.evaluate');
    return this.evaluateUnchecked(dataset);
  }

  private async evaluateUnchecked(dataset: MultiTaskDataset): Promise<Record<string, TaskEval>> {
    const o = this.options;
    const tok = dataset.tokenizer;
    const padId = tok.padTokenId ?? tok.eosTokenId ?? 0;
    const eos = tok.eosTokenId;
    this.adapter.eval();
    const sum: Record<string, number> = {}, count: Record<string, number> = {}, right: Record<string, number> = {}, n: Record<string, number> = {};
    for (let start = 0; start < dataset.size; start += o.batchSize) {
      const exs = Array.from({ length: Math.min(o.batchSize, dataset.size - start) }, (_, i) => dataset.get(start + i));
      const width = Math.max(...exs.map((e) => e.inputIds.length));
      const pad = (row: number[], v: number): number[] => [...row, ...new Array(width - row.length).fill(v)];
      const batch = {
        inputIds: exs.map((e) => pad(e.inputIds, padId)),
        attentionMask: exs.map((e) => pad(e.inputIds.map(() => 1), 0)),
        labels: exs.map((e) => pad(e.inputIds.map((id, i) => (i < e.promptLength ? -100 : id)), -100)),
      };
      const l = await native.lmEvalLoss(this.model.native, toLmBatch(batch));
      const sums = new Tensor(l.lossSum).data() as Float64Array;
      const toks = new Tensor(l.tokens).data() as BigInt64Array;
      // greedy generation from the prompt
      const responses = exs.map((e) => {
        const r = e.inputIds.slice(e.promptLength);
        return eos !== undefined && r[r.length - 1] === eos ? r.slice(0, -1) : r;
      });
      const prompts = promptBatch(exs, padId);
      const maxNew = Math.max(...responses.map((r) => r.length)) + o.evalExtraTokens;
      const gen = await this.model.generateUnchecked(prompts.inputIds, {
        attentionMask: prompts.attentionMask,
        maxNewTokens: maxNew,
        eosTokenId: eos === undefined ? [] : [eos],
        padTokenId: padId,
      });
      exs.forEach((e, i) => {
        const out = gen[i].slice(prompts.inputIds[i].length);
        const stop = eos === undefined ? -1 : out.indexOf(eos);
        const produced = stop < 0 ? out : out.slice(0, stop);
        const ok = produced.length === responses[i].length && produced.every((t, k) => t === responses[i][k]);
        sum[e.task] = (sum[e.task] ?? 0) + sums[i];
        count[e.task] = (count[e.task] ?? 0) + Number(toks[i]);
        right[e.task] = (right[e.task] ?? 0) + (ok ? 1 : 0);
        n[e.task] = (n[e.task] ?? 0) + 1;
      });
    }
    return Object.fromEntries(
      Object.keys(n).sort().map((t) => [t, { loss: count[t] > 0 ? sum[t] / count[t] : NaN, accuracy: right[t] / n[t], count: n[t] }]),
    );
  }

  /**
   * Writes outputDir/checkpoint-<step>: the adapter, the optimizer state, the dropout generators,
   * the data position and the options, atomically (a temporary folder renamed when complete).
   */
  saveCheckpoint(): string {
    this.checkLive();
    assertNotTraining(this.model, 'Trainer.saveCheckpoint');
    return this.saveCheckpointUnchecked();
  }

  private saveCheckpointUnchecked(): string {
    const dir0 = this.options.outputDir;
    if (!dir0) throw new Error('saveCheckpoint needs outputDir');
    if (!this.optimizer || !this.sampler) throw new Error('nothing to checkpoint before fit() has started');
    if (this.brokenAt) throw this.brokenError();
    const dir = path.join(dir0, `checkpoint-${this.step}`);
    const opt = this.optimizer.native.state();
    const sampler = this.sampler;
    writeAtomically(dir, (tmp) => {
      this.adapter.save(tmp);
      const optTensors: Record<string, Tensor> = {};
      opt.params.forEach((p, i) => {
        optTensors[`${i}.exp_avg`] = new Tensor(p.expAvg);
        optTensors[`${i}.exp_avg_sq`] = new Tensor(p.expAvgSq);
      });
      saveSafetensors(path.join(tmp, 'optimizer.safetensors'), optTensors, {
        steps: String(opt.steps),
        param_steps: JSON.stringify(opt.params.map((p) => p.step)),
      });
      const rng: Record<string, Tensor> = {};
      for (const [name, layer] of this.adapter.layers) rng[name] = new Tensor(layer.native.generatorState());
      saveSafetensors(path.join(tmp, 'rng.safetensors'), rng);
      const state: TrainerState = {
        version: 1,
        step: this.step,
        totalSteps: this.totalSteps!,
        options: this.options,
        sampler: sampler.state(),
        dataset: this.trainInfo!,
      };
      fs.writeFileSync(path.join(tmp, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
    });
    this.lastCheckpoint = dir;
    const keep = this.options.keepCheckpoints;
    if (keep > 0) {
      const steps = fs.readdirSync(dir0).map((f) => /^checkpoint-(\d+)$/.exec(f)).filter((m): m is RegExpExecArray => m !== null).map((m) => Number(m[1]));
      for (const s of steps.sort((x, y) => y - x).slice(keep)) removeAtomically(path.join(dir0, `checkpoint-${s}`));
    }
    return dir;
  }

  private createOptimizer(total: number): AdamW {
    const o = this.options;
    const warmup = o.warmupSteps ?? Math.round(o.warmupRatio * total);
    return new AdamW([...this.adapter.layers.values()], {
      lr: o.learningRate,
      weightDecay: o.weightDecay,
      maxGradNorm: o.maxGradNorm,
      schedule: o.schedule,
      warmupSteps: warmup,
      totalSteps: o.schedule === 'constant' ? Math.max(total, warmup + 1) : total,
    });
  }

  private brokenError(): Error {
    const b = this.brokenAt!;
    return new Error(
      `the update of step ${b.step} left the trainable parameters non-finite or too large (L2 norm ${b.paramNorm}); ` +
        `the adapter in memory holds them, so nothing is saved or trained from here. Last good checkpoint: ${this.lastCheckpoint ?? 'none'} ` +
        '(lower the learning rate and resume from it)',
    );
  }

  /**
   * A trainer that continues from `checkpointDir` on `model` (the same base model, no adapter
   * attached): the next fit() with the same training set continues as if never stopped. It writes
   * to `overrides.outputDir` when given, else to the checkpoint's parent folder (wherever the
   * checkpoint now lies); `trainer.options.outputDir` says which. Every file of the checkpoint is
   * read and checked here: on any error (naming the file) nothing stays attached to the model.
   */
  static async resume(checkpointDir: string, model: Model, overrides: Pick<TrainerOptions, 'outputDir' | 'progress'> = {}): Promise<Trainer> {
    const file = (name: string): string => path.join(checkpointDir, name);
    for (const name of ['trainer_state.json', 'optimizer.safetensors', 'rng.safetensors']) {
      if (!fs.existsSync(file(name))) throw new Error(`${checkpointDir} is not a complete checkpoint: no ${name}`);
    }
    const statePath = file('trainer_state.json');
    const state = readTrainerState(statePath);
    const optimizerState = readOptimizerState(file('optimizer.safetensors'));
    const rngPath = file('rng.safetensors');
    const rng = new Map<string, Tensor>();
    naming(rngPath, () => forEachSafetensor(rngPath, (e, t) => rng.set(e.name, t)));
    const adapter = await Adapter.load(model, checkpointDir); // attaches nothing when it fails
    try {
      const weightsPath = file('adapter_model.safetensors');
      for (const [name, t] of Object.entries(adapter.stateDict())) {
        if (!(t.data() as Float32Array).every(Number.isFinite)) {
          throw new Error(`${weightsPath}: ${name} holds NaN or infinite values: not a checkpoint to continue from`);
        }
      }
      const outputDir = overrides.outputDir ?? path.dirname(path.resolve(checkpointDir));
      const trainer = naming(statePath, () => new Trainer(model, adapter, { ...state.options, ...overrides, outputDir }));
      trainer.step = state.step;
      trainer.resumedFrom = state.step;
      trainer.resumedState = statePath;
      trainer.totalSteps = state.totalSteps;
      trainer.pendingSampler = state.sampler;
      trainer.pendingTrainInfo = state.dataset;
      trainer.lastCheckpoint = checkpointDir;
      const optimizer = naming(statePath, () => trainer.createOptimizer(state.totalSteps));
      naming(file('optimizer.safetensors'), () => optimizer.native.setState(optimizerState));
      trainer.optimizer = optimizer;
      for (const [name, t] of rng) {
        const layer = adapter.layers.get(name);
        if (!layer) throw new Error(`${rngPath} names ${name}, which the adapter does not wrap`);
        naming(rngPath, () => layer.native.setGeneratorState(t.native));
      }
      const missing = [...adapter.layers.keys()].filter((name) => !rng.has(name));
      if (missing.length) throw new Error(`${rngPath} has no generator state for ${missing.join(', ')}`);
      return trainer;
    } catch (e) {
      adapter.detach();
      throw e;
    }
  }
}
