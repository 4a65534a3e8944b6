// Trainer: multi-task fine-tuning of an adapter (docs/ARCHITECTURE.md section 5): one native call per
// optimizer step, per-task logging, evaluation, atomic checkpoints and exact resume.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as util from 'util';

import * as distributed from './distributed';
import type { DistributedOptions } from './distributed';
import { assertNotTraining, beginTraining, duringCallback, endTraining } from './activity';
import { CHECKPOINT_FILES, checkpointName, checkpointSteps, evalPredictionsName, LEFTOVER_NAME, LOG_FILE, METRICS_CSV_FILE, OPTIMIZER_FILE, RNG_FILE, runFiles, TENSORBOARD_DIR, TRAINER_STATE_FILE } from './checkpoint-files';
import { Adapter, hash48, moduleSeed } from './adapter';
import { Batch, BatchSampler, MultiTaskDataset, promptBatch, Sampling, SamplerState } from './data';
import { Model } from './model';
import { CsvSink } from './logging/csv';
import type { MetricSink, Scalars } from './logging/sink';
import { TensorBoardSink } from './logging/tensorboard';
import { evalText, stepLine } from './logging/text';
import { ProgressLine } from './progress';
import { native, NativeAdamWState, NativeLmBatch } from './native';
import { AdamW, Schedule } from './optim';
import { forEachSafetensor, saveSafetensors } from './safetensors';
import { StepLog } from './steplog';
import { sameDevice, Tensor } from './tensor';
import { ensureFolder, removeAtomically, replaceFolder, writeFileAtomically, writeFileFully } from './util/files';
import { readJsonFile } from './util/json';
import { checkChoice, checkInstance, checkKeys, closest, isPlainObject, show } from './util/options';

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
  /**
   * Start over in an outputDir that holds an earlier run: fit removes its log.jsonl, checkpoint-N/
   * and eval-N.jsonl before writing (other files stay). Default false: such a folder is refused,
   * since appending would mix two runs in one log (Trainer.resume continues a run instead).
   */
  overwriteOutputDir?: boolean;
  /** Keep only the newest this many checkpoints (older ones are deleted after a new one is complete); 0 keeps all. Default 0. */
  keepCheckpoints?: number;
  /**
   * A progress bar on stderr. Default: on when stderr is a terminal; where it is not (a log file,
   * a pipe, CI), a line every `loggingSteps` steps and each evaluation's table instead. false:
   * nothing on stderr.
   */
  progress?: boolean;
  /** Where no progress bar is drawn (progress unset and stderr not a terminal): a step line every this many steps (and the first and last). Default 50. */
  loggingSteps?: number;
  /**
   * Where the numbers also go, besides log.jsonl (Hugging Face's report_to): 'csv' writes
   * outputDir/metrics.csv (step,name,value), 'tensorboard' writes TensorBoard event files into
   * outputDir/tensorboard/ (`tensorboard --logdir <outputDir>/tensorboard`). Needs outputDir.
   * Default: none.
   */
  reportTo?: ReportTo[];
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
  /**
   * Greedy generation in evaluate() stops at eos or after this many tokens beyond the example's
   * own response length (per row: the batch size never changes a prediction). Default 4.
   */
  evalExtraTokens?: number;
  /**
   * Rows per batch in evaluate() and in the evaluations during fit (loss and greedy generation
   * batched together). Evaluation keeps no activations for backward, so it can take larger batches
   * than training; larger ones are faster. Default: batchSize.
   */
  evalBatchSize?: number;
  /**
   * Data parallelism over processes (README "Data parallel"). 'auto' (default): on when the
   * environment's WORLD_SIZE is above 1 (torchrun's contract: MASTER_ADDR, MASTER_PORT, WORLD_SIZE,
   * RANK), or when distributed.init() made a group of several ranks. An object: as 'auto', with
   * these options for distributed.init (backend, timeoutMs); one process still makes no group.
   * The backend, unless named: 'nccl' for a CUDA model where the build has NCCL (each rank's model
   * must then be on cuda:LOCAL_RANK), else 'gloo'. bucketCapMb: gradients exchanged in buckets
   * while backward runs (default 25 with NCCL, 0 with Gloo). false: off. batchSize is per process; the
   * global batch is batchSize x gradientAccumulation x worldSize. Rank 0 alone writes checkpoints,
   * logs, evaluation files and the progress bar.
   */
  distributed?: 'auto' | false | DistributedOptions;
  /**
   * Activation checkpointing: the forward keeps only each decoder layer's input, and backward runs
   * each layer again (dropout draws the same masks), so the step's memory for activations falls
   * from all layers' to about one layer's, for about one more forward of compute. Same losses and
   * gradients as without. Default false.
   */
  gradientCheckpointing?: boolean;
  /**
   * Extra evaluation metrics, by name: a function of (prediction, reference, task), where the
   * prediction is the greedy generation decoded by the dataset's tokenizer (up to eos, special
   * tokens skipped) and the reference is the example's response text; or the name of a built-in
   * metric (BUILTIN_METRICS: 'exactMatch', 'charF1'). Averaged over the examples of each task and
   * reported in TaskEval.metrics. Functions are not saved in checkpoints (their names are):
   * Trainer.resume refuses until they are passed again. Names 'loss', 'accuracy' and 'count' are taken. Default: none.
   */
  metrics?: Record<string, MetricFn | BuiltinMetric>;
  /**
   * Stop fit when the evaluation `metric` (averaged over the tasks: 'loss', 'accuracy' or a name of
   * `metrics`) has not improved by more than `minDelta` (default 0) for `patience` (default 1)
   * evaluations in a row; History.stopped is then 'earlyStopping'. `mode`: 'min' (lower is better;
   * the default for 'loss') or 'max' (the default for any other metric). Needs evalEvery > 0 and
   * an evalDataset. Default: off.
   */
  earlyStopping?: EarlyStoppingOptions;
  /**
   * Keep the checkpoint of the best evaluation by this metric (as earlyStopping.metric; the mode
   * defaults as there, or is given as {metric, mode}): it is written when an evaluation improves
   * on every earlier one, named in History.bestCheckpoint, and never deleted by keepCheckpoints
   * (kept besides the newest keepCheckpoints). Needs outputDir, evalEvery > 0 and an evalDataset.
   * Default: off.
   */
  saveBest?: string | { metric: string; mode?: 'min' | 'max' };
  /**
   * At the end of fit (completed or early-stopped), load the adapter weights of the best
   * checkpoint (saveBest) back into the adapter; the last checkpoint still holds the last state.
   * Needs saveBest and outputDir. Default false.
   */
  loadBestAtEnd?: boolean;
}

/** A per-example evaluation metric: higher or lower is better as the metric's user says. */
export type MetricFn = (prediction: string, reference: string, task: string) => number;

export interface EarlyStoppingOptions {
  /** 'loss', 'accuracy' or a name of TrainerOptions.metrics, averaged over the tasks. */
  metric: string;
  /** Evaluations without improvement before fit stops. Default 1. */
  patience?: number;
  /** An improvement must exceed this. Default 0. */
  minDelta?: number;
  /** Default 'min' for 'loss', 'max' otherwise. */
  mode?: 'min' | 'max';
}

/** Characters (code points) with multiplicity. */
function charCounts(s: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const c of s) m.set(c, (m.get(c) ?? 0) + 1);
  return m;
}

/**
 * The built-in metrics (run.json's trainer.metrics may name only these):
 * - exactMatch: 1 when the prediction equals the reference after trimming whitespace at both ends, else 0.
 * - charF1: F1 of the characters (code points, as multisets) of prediction and reference:
 *   common = sum over characters of min(count in prediction, count in reference), precision =
 *   common / |prediction|, recall = common / |reference|, F1 = 2PR / (P + R); 1 when both are
 *   empty, 0 when only one is or nothing is shared.
 */
export const BUILTIN_METRICS = {
  exactMatch: (prediction: string, reference: string): number => (prediction.trim() === reference.trim() ? 1 : 0),
  charF1: (prediction: string, reference: string): number => {
    const p = charCounts(prediction), r = charCounts(reference);
    const np = [...prediction].length, nr = [...reference].length;
    if (np === 0 && nr === 0) return 1;
    let common = 0;
    for (const [c, k] of p) common += Math.min(k, r.get(c) ?? 0);
    if (common === 0) return 0;
    const precision = common / np, recall = common / nr;
    return (2 * precision * recall) / (precision + recall);
  },
} as const;
export type BuiltinMetric = keyof typeof BUILTIN_METRICS;

/** One evaluated example (evaluate(..., {returnPredictions: true}), and outputDir/eval-<step>.jsonl). */
export interface Prediction {
  task: string;
  prompt: string;
  reference: string;
  prediction: string;
  /** Exact match of the generated tokens with the response's (as TaskEval.accuracy counts). */
  correct: boolean;
}

export interface EvaluateOptions {
  /** Also return every example's prediction. Default false. */
  returnPredictions?: boolean;
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
  /** The mean of each of TrainerOptions.metrics over the task's examples; absent without metrics. */
  metrics?: Record<string, number>;
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
   * that is so; a checkpoint is written, no final evaluation is made); 'earlyStopping': the
   * earlyStopping metric stopped improving (a checkpoint is written, no further evaluation);
   * 'callback': a TrainerCallback returned {stop: true} (a checkpoint is written, as for the signal).
   */
  stopped: 'completed' | 'aborted' | 'nonFinite' | 'earlyStopping' | 'callback';
  /** Steps of this fit skipped for a non-finite loss (skipNonFinite). */
  skippedSteps: number;
  /** The folder log.jsonl and the checkpoints went to (options.outputDir); absent when none. */
  outputDir?: string;
  /** The last checkpoint written (or resumed from), if any; its values are finite. */
  lastCheckpoint?: string;
  /** saveBest: the checkpoint of the best evaluation so far, and its metric value. */
  bestCheckpoint?: string;
  bestMetric?: number;
}

export interface FitOptions {
  evalDataset?: MultiTaskDataset;
  /** Stops after the current step (and writes a checkpoint when outputDir is set). */
  signal?: { readonly aborted: boolean };
  /** Called after each step's record (as TrainerCallback.onStepEnd, without the way to stop). */
  onStep?: (record: StepRecord) => void;
  /** Called after each evaluation (as TrainerCallback.onEvaluate, without the way to stop). */
  onEval?: (record: EvalRecord) => void;
  /** Hooks in the shape of Hugging Face's TrainerCallback; each may stop the fit. Called in order. */
  callbacks?: TrainerCallback[];
  /**
   * Ctrl-C (SIGINT) while this fit runs finishes the current step, writes a checkpoint (with
   * outputDir) and returns with stopped 'aborted', as `rlora train` does; a second Ctrl-C quits at
   * once (exit code 130). Without it a script dies at Ctrl-C with no checkpoint. Default false.
   */
  stopOnSigint?: boolean;
}

/** What a callback may return: `{stop: true}` ends the fit after this step (History.stopped 'callback'), as control.should_training_stop does. */
export type CallbackResult = void | undefined | { stop?: boolean } | Promise<void | undefined | { stop?: boolean }>;

/** Where the fit is, for callbacks. */
export interface CallbackState {
  /** Steps done so far (the trainer's step). */
  step: number;
  /** The steps this fit runs to. */
  totalSteps: number;
}

/**
 * Hooks called by Trainer.fit, in the shape of Hugging Face's TrainerCallback (on_step_end, on_log,
 * on_evaluate, on_save, on_train_end). They run on the JS thread between steps: in a hook's
 * synchronous part the adapter may be read or changed (stateDict, loadStateDict, save); a native
 * job started there is refused (README "Calls during training"). A hook that returns a Promise is
 * awaited before the next step. An exception in a hook ends the fit with it.
 */
export interface TrainerCallback {
  /** Before the first step of this fit. */
  onTrainBegin?(state: CallbackState): CallbackResult;
  /** After each optimizer step, with its record. */
  onStepEnd?(record: StepRecord, state: CallbackState): CallbackResult;
  /** With the numbers of each step and each evaluation, as reportTo receives them (`train/loss`, `eval/<task>/accuracy`, ...). */
  onLog?(step: number, scalars: Record<string, number>, state: CallbackState): CallbackResult;
  /** After each evaluation. */
  onEvaluate?(record: EvalRecord, state: CallbackState): CallbackResult;
  /** After each checkpoint is written, with its folder. */
  onSave?(checkpoint: string, state: CallbackState): CallbackResult;
  /** When the fit ends (any way but an exception), with its history. */
  onTrainEnd?(history: History, state: CallbackState): void | Promise<void>;
}

interface TrainerState {
  version: 1;
  step: number;
  totalSteps: number;
  options: TrainerOptions;
  sampler: SamplerState;
  dataset: { size: number; tasks: string[] };
  /** earlyStopping's and saveBest's progress (absent in older checkpoints). */
  best?: { stop?: { best: number; bad: number }; save?: { value: number; checkpoint: string } };
  /** Names of the metric functions the run evaluated (a checkpoint cannot hold functions): resume asks for them again. */
  customMetrics?: string[];
}

/** Where a run's numbers can go besides log.jsonl (TrainerOptions.reportTo). */
export const REPORT_TO = ['csv', 'tensorboard'] as const;
export type ReportTo = (typeof REPORT_TO)[number];

/** Every option the Trainer takes (others are refused, naming the closest). */
export const TRAINER_OPTION_NAMES = [
  'learningRate', 'epochs', 'maxSteps', 'batchSize', 'gradientAccumulation', 'schedule', 'warmupRatio', 'warmupSteps',
  'weightDecay', 'maxGradNorm', 'seed', 'sampling', 'samplingTemperature', 'groupByLength', 'evalEvery', 'saveEvery',
  'outputDir', 'overwriteOutputDir', 'keepCheckpoints', 'progress', 'loggingSteps', 'reportTo', 'precision', 'device', 'skipNonFinite', 'evalExtraTokens', 'evalBatchSize',
  'metrics', 'earlyStopping', 'saveBest', 'loadBestAtEnd', 'distributed', 'gradientCheckpointing',
] as const satisfies readonly (keyof TrainerOptions)[];
// every key of TrainerOptions is listed (a compile error names one that is not)
type Unlisted = Exclude<keyof TrainerOptions, (typeof TRAINER_OPTION_NAMES)[number]>;
const allListed: [Unlisted] extends [never] ? true : Unlisted = true;
void allListed;

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
  loadBestAtEnd: false,
  overwriteOutputDir: false,
  loggingSteps: 50,
  reportTo: [] as ReportTo[],
};

const RESERVED_METRICS = ['loss', 'accuracy', 'count'];

/** The mean over tasks of an evaluation's metric (loss, accuracy or a custom one). */
function metricOf(tasks: Record<string, TaskEval>, metric: string): number {
  const vals = Object.values(tasks).map((t) => (metric === 'loss' ? t.loss : metric === 'accuracy' ? t.accuracy : t.metrics?.[metric] ?? NaN));
  return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : NaN;
}

/** Whether `value` improves on `best` by more than `minDelta`. */
function improves(value: number, best: number | undefined, mode: 'min' | 'max', minDelta: number): boolean {
  if (!Number.isFinite(value)) return false;
  if (best === undefined || Number.isNaN(best)) return true;
  return mode === 'min' ? value < best - minDelta : value > best + minDelta;
}

/** An optional true/false option: undefined, or a TypeError naming it and the value. */
function optionalBool(v: unknown, name: string): void {
  if (v !== undefined && typeof v !== 'boolean') throw new TypeError(`${name} must be true or false, got ${util.inspect(v)}`);
}

const CALLBACK_HOOKS = ['onTrainBegin', 'onStepEnd', 'onLog', 'onEvaluate', 'onSave', 'onTrainEnd'] as const;

/** FitOptions.callbacks checked: an array of objects; a plain object's keys must be hooks (a typo would never be called). */
function checkCallbacks(callbacks: unknown): TrainerCallback[] {
  if (callbacks === undefined) return [];
  if (!Array.isArray(callbacks)) throw new TypeError(`fit: callbacks must be an array of TrainerCallback objects, got ${show(callbacks)}`);
  callbacks.forEach((cb, i) => {
    if (typeof cb !== 'object' || cb === null) throw new TypeError(`fit: callbacks[${i}] must be an object with hooks (${CALLBACK_HOOKS.join(', ')}), got ${show(cb)}`);
    if (isPlainObject(cb)) checkKeys(cb, CALLBACK_HOOKS, `fit: callbacks[${i}]`);
    for (const h of CALLBACK_HOOKS) {
      const fn = (cb as Record<string, unknown>)[h];
      if (fn !== undefined && typeof fn !== 'function') throw new TypeError(`fit: callbacks[${i}].${h} must be a function, got ${show(fn)}`);
    }
  });
  return callbacks as TrainerCallback[];
}

/** A hash of a dataset's tokens, tasks and prompt lengths, in order. */
function datasetHash(ds: MultiTaskDataset): number {
  const h = createHash('sha256');
  for (let i = 0; i < ds.size; i++) {
    const e = ds.get(i);
    h.update(`${e.task}\u0000${e.promptLength}\u0000`);
    h.update(Buffer.from(Int32Array.from(e.inputIds).buffer));
  }
  return h.digest().readUIntBE(0, 6);
}

/** A sink of TrainerOptions.reportTo in outputDir; a continued run (from step `from` > 0) keeps the rows up to it. */
function openSink(kind: ReportTo, outputDir: string, from: number): MetricSink {
  if (kind === 'csv') return new CsvSink(path.join(outputDir, METRICS_CSV_FILE), from > 0 ? from : undefined);
  return new TensorBoardSink(path.join(outputDir, TENSORBOARD_DIR));
}

/** A step's numbers under TensorBoard-style names (finite ones only). */
function stepScalars(rec: StepRecord): Scalars {
  const all: Scalars = { 'train/loss': rec.loss, 'train/learning_rate': rec.lr, 'train/grad_norm': rec.gradNorm, 'train/tokens_per_second': rec.tokensPerSecond };
  for (const [t, l] of Object.entries(rec.taskLoss)) all[`train/loss/${t}`] = l;
  return Object.fromEntries(Object.entries(all).filter(([, v]) => Number.isFinite(v)));
}

/** An evaluation's numbers: each task's loss, accuracy and metrics, and their means over the tasks. */
function evalScalars(tasks: Record<string, TaskEval>): Scalars {
  const all: [string, number][] = [];
  for (const [t, r] of Object.entries(tasks)) {
    all.push([`eval/${t}/loss`, r.loss], [`eval/${t}/accuracy`, r.accuracy]);
    for (const [m, v] of Object.entries(r.metrics ?? {})) all.push([`eval/${t}/${m}`, v]);
  }
  const rs = Object.values(tasks);
  if (rs.length) all.push(['eval/loss', rs.reduce((a, r) => a + r.loss, 0) / rs.length], ['eval/accuracy', rs.reduce((a, r) => a + r.accuracy, 0) / rs.length]);
  return Object.fromEntries(all.filter(([, v]) => Number.isFinite(v)));
}

/** An object keyed by task name with no prototype: a task named "__proto__" or "constructor" is a key like any other. */
function byTask<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

function positiveInt(v: number, name: string, max = Number.MAX_SAFE_INTEGER): number {
  const range = max < Number.MAX_SAFE_INTEGER ? `from 1 to ${max}` : '>= 1';
  if (typeof v !== 'number') throw new TypeError(`${name} must be an integer ${range}, got ${show(v)}`);
  if (!Number.isInteger(v) || v < 1 || v > max) throw new RangeError(`${name} must be an integer ${range}, got ${show(v)}`);
  return v;
}

/** A finite number in [min, max] (or above min, exclusive, where `aboveMin`): a TypeError for a string such as '1e-3', a RangeError naming the value otherwise. */
function finiteNumber(v: unknown, name: string, min: number, aboveMin = false, max = Number.MAX_VALUE): number {
  const range = `${aboveMin ? '>' : '>='} ${min}${max < Number.MAX_VALUE ? ` and <= ${max}` : ''}`;
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number ${range}, got ${show(v)}${typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? ` (a string: write ${Number(v)} without quotes)` : ''}`);
  if (!Number.isFinite(v) || (aboveMin ? v <= min : v < min) || v > max) throw new RangeError(`${name} must be a finite number ${range}, got ${show(v)}`);
  return v;
}

/** The most micro-batches one optimizer step may accumulate (each is a native call; 1e9 ran the JS heap out of memory). */
export const MAX_GRADIENT_ACCUMULATION = 65536;

function toLmBatch(b: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>): NativeLmBatch {
  const t = (rows: number[][]): Tensor => Tensor.from(rows, undefined, { dtype: 'int64' });
  return { ids: t(b.inputIds).native, mask: t(b.attentionMask).native, labels: t(b.labels).native };
}

/**
 * Summed cross-entropy of each row's labelled tokens (labels -100 are ignored; each token predicts
 * the next, as in training) and the count of labelled tokens per row, computed natively without a
 * gradient, off the JS thread. Refused while the model trains.
 */
export async function evalLoss(model: Model, batch: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>): Promise<{ lossSum: Float64Array; tokens: number[] }> {
  checkInstance(model, Model, 'evalLoss: the model');
  assertNotTraining(model, 'evalLoss');
  return rowLosses(model, batch);
}

async function rowLosses(model: Model, batch: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>): Promise<{ lossSum: Float64Array; tokens: number[] }> {
  const l = await native.lmEvalLoss(model.native, toLmBatch(batch));
  return { lossSum: new Tensor(l.lossSum).data() as Float64Array, tokens: Array.from(new Tensor(l.tokens).data() as BigInt64Array, Number) };
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
 * In a process group of several ranks (distributed.init) the step is data-parallel unless
 * `distributed: false`: each rank passes its own rows, the loss is normalised by every rank's
 * labelled tokens and the gradients are summed over the ranks, so all make the same update.
 * The building block of Trainer.fit, for custom loops (e.g. pretraining with an AdamW over a Model).
 * The model counts as training until the step resolves (README "Calls during training").
 */
export async function trainStep(
  model: Model,
  batches: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>[],
  optimizer: AdamW,
  options: { precision?: 'float32' | 'bfloat16'; distributed?: boolean; gradientCheckpointing?: boolean } = {},
): Promise<TrainStepResult> {
  checkInstance(model, Model, 'trainStep: the model');
  if (!(optimizer instanceof AdamW)) throw new TypeError('trainStep: optimizer must be an AdamW');
  optionalBool(options.distributed, 'trainStep: distributed');
  optionalBool(options.gradientCheckpointing, 'trainStep: gradientCheckpointing');
  const dataParallel = options.distributed ?? (distributed.worldSize() > 1);
  beginTraining(model, 'trainStep');
  try {
    return await step(model, batches, optimizer, options.precision ?? 'float32', dataParallel, options.gradientCheckpointing ?? false);
  } finally {
    endTraining(model);
  }
}

/** One optimizer step, unchecked: trainStep's and Trainer.fit's. */
async function step(model: Model, batches: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>[], optimizer: AdamW, precision: 'float32' | 'bfloat16', dataParallel = false, checkpointing = false): Promise<TrainStepResult> {
  const r = await native.lmTrainStep(model.native, batches.map(toLmBatch), optimizer.native, { precision, distributed: dataParallel, gradientCheckpointing: checkpointing });
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

/**
 * Rank `rank`'s share of a global batch: rows floor(rank n / W) to floor((rank + 1) n / W). A rank
 * whose share is empty (fewer rows than ranks) gets one row without labels and no tasks: it still
 * takes part in the step's collectives and adds nothing to the loss or the gradients.
 */
function rankSlice(b: Batch, rank: number, worldSize: number): Batch {
  const n = b.inputIds.length;
  const lo = Math.floor((rank * n) / worldSize), hi = Math.floor(((rank + 1) * n) / worldSize);
  if (hi > lo) {
    const labels = b.labels.slice(lo, hi);
    return {
      inputIds: b.inputIds.slice(lo, hi),
      attentionMask: b.attentionMask.slice(lo, hi),
      labels,
      tasks: b.tasks.slice(lo, hi),
      indices: b.indices.slice(lo, hi),
      lossTokens: labels.reduce((a, row) => a + row.filter((v, i) => i > 0 && v !== -100).length, 0),
    };
  }
  return { inputIds: [b.inputIds[0]], attentionMask: [b.attentionMask[0]], labels: [b.labels[0].map(() => -100)], tasks: [], indices: [], lossTokens: 0 };
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
  // every checkpoint rlora writes has the data position: without it a resume would start the data over, silently
  if (typeof state.sampler !== 'object' || state.sampler === null || Array.isArray(state.sampler)) bad(`sampler must be the data position (an object), got ${util.inspect(state.sampler)}`);
  const b = state.best;
  if (b !== undefined) {
    const num = (v: unknown): boolean => typeof v === 'number' || v === null; // NaN is written as null
    if (typeof b !== 'object' || b === null || Array.isArray(b)) bad('best must be an object');
    if (b.stop !== undefined && !(num(b.stop.best) && Number.isInteger(b.stop.bad))) bad(`best.stop must be {best, bad}, got ${util.inspect(b.stop)}`);
    if (b.save !== undefined && !(typeof b.save.value === 'number' && typeof b.save.checkpoint === 'string')) bad(`best.save must be {value, checkpoint}, got ${util.inspect(b.save)}`);
    if (b.stop && b.stop.best === null) b.stop.best = NaN;
  }
  if (state.customMetrics !== undefined && !(Array.isArray(state.customMetrics) && state.customMetrics.every((m) => typeof m === 'string'))) {
    bad(`customMetrics must be an array of metric names, got ${util.inspect(state.customMetrics)}`);
  }
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
  readonly options: Required<Omit<TrainerOptions, 'maxSteps' | 'warmupSteps' | 'outputDir' | 'progress' | 'precision' | 'device' | 'metrics' | 'earlyStopping' | 'saveBest' | 'evalBatchSize' | 'distributed' | 'gradientCheckpointing'>> & TrainerOptions;
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
  /** Dropout generator states of ranks > 0 from a checkpoint (`rank<R>/<module>`). */
  private rankRng = new Map<string, Tensor>();
  /** Whether this rank's dropout generators were set for data parallelism. */
  private rankSeeded = false;
  /** The step whose update left the parameters non-finite; nothing can continue from there. */
  private brokenAt?: { step: number; paramNorm: number };
  /** earlyStopping's best value and evaluations since it; saveBest's best value and checkpoint. */
  private best: NonNullable<TrainerState['best']> = {};

  constructor(model: Model, adapter: Adapter, options: TrainerOptions = {}) {
    checkInstance(model, Model, 'Trainer: the model (first argument)');
    checkInstance(adapter, Adapter, 'Trainer: the adapter (second argument)');
    if (adapter.model !== model) throw new TypeError('Trainer: the adapter (second argument) must be attached to that model');
    if (options.precision !== undefined && options.precision !== 'float32' && options.precision !== 'bfloat16') {
      throw new RangeError(`precision must be 'float32' or 'bfloat16', got ${JSON.stringify(options.precision)}`);
    }
    if (options.device !== undefined && !sameDevice(options.device, model.device)) {
      throw new RangeError(`device ${JSON.stringify(options.device)} differs from the model's (${model.device}): load the model with {device: ${JSON.stringify(options.device)}}`);
    }
    this.model = model;
    this.adapter = adapter;
    // an explicit undefined means "the default", as an absent key does
    if (typeof options !== 'object' || options === null) throw new TypeError(`Trainer: options must be an object, got ${util.inspect(options)}`);
    for (const k of Object.keys(options)) {
      if (!(TRAINER_OPTION_NAMES as readonly string[]).includes(k)) {
        const near = closest(k, [...TRAINER_OPTION_NAMES]);
        throw new RangeError(`Trainer: unknown option ${JSON.stringify(k)}${near ? ` (did you mean ${near}?)` : ''}; known: ${TRAINER_OPTION_NAMES.join(', ')}`);
      }
    }
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TrainerOptions;
    this.options = { ...DEFAULTS, ...given };
    const o = this.options;
    positiveInt(o.batchSize, 'batchSize');
    if (o.evalBatchSize !== undefined) positiveInt(o.evalBatchSize, 'evalBatchSize');
    optionalBool(o.gradientCheckpointing, 'gradientCheckpointing');
    optionalBool(o.overwriteOutputDir, 'overwriteOutputDir');
    positiveInt(o.loggingSteps, 'loggingSteps');
    if (!Array.isArray(o.reportTo)) throw new TypeError(`reportTo must be an array of ${REPORT_TO.map((r) => JSON.stringify(r)).join(', ')}, got ${show(o.reportTo)}`);
    for (const r of o.reportTo) checkChoice(r, REPORT_TO, 'reportTo[]');
    if (o.reportTo.length && !o.outputDir) throw new Error(`reportTo ${JSON.stringify(o.reportTo)} needs outputDir (the files are written there)`);
    if (o.distributed !== undefined && o.distributed !== 'auto' && o.distributed !== false) {
      if (typeof o.distributed !== 'object' || o.distributed === null) throw new TypeError(`distributed must be 'auto', false or an object {backend?, timeoutMs?}, got ${util.inspect(o.distributed)}`);
      distributed.resolveOptions({ ...o.distributed, rank: 0, worldSize: 1 }); // names a bad key or value now
    }
    positiveInt(o.gradientAccumulation, 'gradientAccumulation', MAX_GRADIENT_ACCUMULATION);
    if (o.maxSteps !== undefined) positiveInt(o.maxSteps, 'maxSteps');
    finiteNumber(o.learningRate, 'learningRate', 0, true);
    finiteNumber(o.weightDecay, 'weightDecay', 0);
    finiteNumber(o.maxGradNorm, 'maxGradNorm', 0);
    finiteNumber(o.samplingTemperature, 'samplingTemperature', 0, true);
    if (o.warmupSteps !== undefined) finiteNumber(o.warmupSteps, 'warmupSteps', 0);
    if (!(o.epochs > 0)) throw new RangeError(`epochs must be > 0, got ${o.epochs}`);
    if (!(o.warmupRatio >= 0 && o.warmupRatio < 1)) throw new RangeError(`warmupRatio must be in [0, 1), got ${o.warmupRatio}`);
    if (o.saveEvery > 0 && !o.outputDir) throw new Error('saveEvery needs outputDir');
    this.checkEvalOptions();
  }

  /** metrics, earlyStopping, saveBest and loadBestAtEnd; errors name the bad value. */
  private checkEvalOptions(): void {
    const o = this.options;
    const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
    if (o.metrics !== undefined) {
      if (!isObj(o.metrics)) throw new TypeError(`metrics must be an object of name -> function or built-in metric name, got ${util.inspect(o.metrics)}`);
      for (const [name, m] of Object.entries(o.metrics)) {
        if (RESERVED_METRICS.includes(name)) throw new RangeError(`metrics.${name}: the name ${JSON.stringify(name)} is taken (${RESERVED_METRICS.join(', ')} are reported anyway)`);
        if (typeof m === 'string' ? !Object.hasOwn(BUILTIN_METRICS, m) : typeof m !== 'function') {
          throw new TypeError(`metrics.${name} must be a function (prediction, reference, task) => number or one of ${Object.keys(BUILTIN_METRICS).map((k) => JSON.stringify(k)).join(', ')}, got ${util.inspect(m)}`);
        }
      }
    }
    const known = ['loss', 'accuracy', ...Object.keys(o.metrics ?? {})];
    const checkMetric = (metric: unknown, where: string): void => {
      if (typeof metric !== 'string' || !known.includes(metric)) {
        throw new RangeError(`${where} must be one of ${known.map((k) => JSON.stringify(k)).join(', ')} ('loss', 'accuracy' or a name of metrics), got ${util.inspect(metric)}`);
      }
    };
    const checkMode = (mode: unknown, where: string): void => {
      if (mode !== undefined && mode !== 'min' && mode !== 'max') throw new RangeError(`${where} must be 'min' or 'max', got ${util.inspect(mode)}`);
    };
    const needsEval = (what: string): void => {
      if (!(o.evalEvery > 0)) throw new RangeError(`${what} needs evalEvery > 0 (evaluations during training) and an evalDataset in fit(); evalEvery is ${o.evalEvery}`);
    };
    const es = o.earlyStopping;
    if (es !== undefined) {
      if (!isObj(es)) throw new TypeError(`earlyStopping must be an object {metric, patience?, minDelta?, mode?}, got ${util.inspect(es)}`);
      const unknown = Object.keys(es).filter((k) => !['metric', 'patience', 'minDelta', 'mode'].includes(k));
      if (unknown.length) throw new RangeError(`earlyStopping.${unknown[0]} is not an option; known: metric, patience, minDelta, mode`);
      checkMetric(es.metric, 'earlyStopping.metric');
      if (es.patience !== undefined) positiveInt(es.patience, 'earlyStopping.patience');
      if (es.minDelta !== undefined && !(typeof es.minDelta === 'number' && es.minDelta >= 0)) throw new RangeError(`earlyStopping.minDelta must be a number >= 0, got ${util.inspect(es.minDelta)}`);
      checkMode(es.mode, 'earlyStopping.mode');
      needsEval('earlyStopping');
    }
    const sb = o.saveBest;
    if (sb !== undefined) {
      if (isObj(sb)) {
        const unknown = Object.keys(sb).filter((k) => !['metric', 'mode'].includes(k));
        if (unknown.length) throw new RangeError(`saveBest.${unknown[0]} is not an option; known: metric, mode`);
        checkMetric(sb.metric, 'saveBest.metric');
        checkMode(sb.mode, 'saveBest.mode');
      } else if (typeof sb === 'string') checkMetric(sb, 'saveBest');
      else throw new TypeError(`saveBest must be a metric name or {metric, mode}, got ${util.inspect(sb)}`);
      if (!o.outputDir) throw new Error('saveBest needs outputDir (the best checkpoint is written there)');
      needsEval('saveBest');
    }
    optionalBool(o.loadBestAtEnd, 'loadBestAtEnd');
    if (o.loadBestAtEnd) {
      if (sb === undefined) throw new Error('loadBestAtEnd needs saveBest (the metric that picks the best checkpoint)');
      if (!o.outputDir) throw new Error('loadBestAtEnd needs outputDir');
    }
  }

  /**
   * Joins (or finds) the process group when data parallelism is on, checks that every rank runs
   * the same configuration, and gives ranks > 0 dropout streams of their own. Undefined: one process.
   */
  private async joinProcessGroup(train: MultiTaskDataset): Promise<{ rank: number; worldSize: number } | undefined> {
    const want = this.options.distributed ?? 'auto';
    if (want === false) return undefined;
    if (!distributed.isInitialized()) {
      // one process (no WORLD_SIZE, or 1): no group, whatever the option says (a group of one
      // would listen on MASTER_PORT for nothing, and fail when another job holds that port)
      if (distributed.worldSizeFromEnv() <= 1) return undefined;
      const given = typeof want === 'object' ? want : {};
      await distributed.init({ ...given, backend: given.backend ?? distributed.defaultBackend(this.model.device) });
    }
    const W = distributed.worldSize(), R = distributed.rank();
    if (W <= 1) return undefined;
    const commDevice = distributed.device() ?? 'cpu';
    if (commDevice !== 'cpu' && !sameDevice(commDevice, this.model.device)) {
      throw new Error(`data parallel: rank ${R}'s ${distributed.backendName()} group works on ${commDevice} (its LOCAL_RANK), but the model is on ${this.model.device}: load the model with {device: '${commDevice}'}`);
    }
    if (this.sampler && this.sampler.batchSize !== this.options.batchSize * W) {
      throw new Error(`this Trainer already trained with a global batch of ${this.sampler.batchSize} rows; with ${W} processes it would be ${this.options.batchSize * W}: make a new Trainer (or resume from a checkpoint)`);
    }
    // every rank must train the same thing: compare a hash of model, adapter, options and data
    const same = { ...this.savedOptions(), progress: undefined, outputDir: undefined, distributed: undefined, device: undefined }; // each rank has its own GPU
    // ... and the data's tokens and the base weights themselves, not only their sizes
    const parts = {
      configuration: hash48(JSON.stringify({ model: this.model.config, adapter: this.adapter.options, trainer: same, data: { size: train.size, tasks: train.tasks }, step: this.step })),
      'training data': datasetHash(train),
      'base weights': hash48(String(this.model.native.fingerprint())),
    };
    // one collective after the other: every rank must start them in the same order
    const gathered: number[][] = [];
    for (const v of Object.values(parts)) gathered.push(await distributed.allgather(v));
    const names = Object.keys(parts);
    const problems = gathered.flatMap((all, k) => {
      const differ = all.flatMap((v, i) => (v !== all[0] ? [i] : []));
      return differ.length ? [`rank${differ.length > 1 ? 's' : ''} ${differ.join(', ')} ${differ.length > 1 ? 'have' : 'has'} other ${names[k] === 'configuration' ? 'model config, adapter, trainer options, training set size or step' : names[k]}`] : [];
    });
    if (problems.length) {
      throw new Error(`data parallel over ${W} processes: ${problems.join('; ')} than rank 0: every rank must run the same configuration on the same data and base model`);
    }
    if (!this.rankSeeded) {
      // rank 0 keeps the adapter's streams (one process is rank 0 of 1); the others draw their own
      if (R > 0) {
        const seed = this.adapter.options.seed ?? 0;
        for (const [name, layer] of this.adapter.layers) {
          const saved = this.rankRng.get(`rank${R}/${name}`);
          if (saved) layer.native.setGeneratorState(saved.native);
          else layer.native.reseed(moduleSeed(seed, `${name}/rank${R}/step${this.step}`));
        }
      }
      this.rankSeeded = true;
    }
    return { rank: R, worldSize: W };
  }

  /** Every rank's dropout generator states, keyed as rng.safetensors stores them (rank 0: the module name). */
  private async gatherGeneratorStates(): Promise<Record<string, Tensor>> {
    const mine: Record<string, string> = {};
    for (const [name, layer] of this.adapter.layers) mine[name] = Buffer.from(new Tensor(layer.native.generatorState()).data() as Uint8Array).toString('base64');
    const all = await distributed.gatherJson(mine);
    const out: Record<string, Tensor> = {};
    all.forEach((states, r) => {
      for (const [name, b64] of Object.entries(states)) {
        const bytes = new Uint8Array(Buffer.from(b64, 'base64'));
        out[r === 0 ? name : `rank${r}/${name}`] = Tensor.fromBytes(bytes, 'uint8', [bytes.length]);
      }
    });
    return out;
  }

  /** earlyStopping's settings with defaults, or undefined. */
  private stopRule(): { metric: string; patience: number; minDelta: number; mode: 'min' | 'max' } | undefined {
    const es = this.options.earlyStopping;
    if (!es) return undefined;
    return { metric: es.metric, patience: es.patience ?? 1, minDelta: es.minDelta ?? 0, mode: es.mode ?? (es.metric === 'loss' ? 'min' : 'max') };
  }

  /** saveBest's metric and mode, or undefined. */
  private bestRule(): { metric: string; mode: 'min' | 'max' } | undefined {
    const sb = this.options.saveBest;
    if (sb === undefined) return undefined;
    const metric = typeof sb === 'string' ? sb : sb.metric;
    const mode = typeof sb === 'string' ? undefined : sb.mode;
    return { metric, mode: mode ?? (metric === 'loss' ? 'min' : 'max') };
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
    checkInstance(train, MultiTaskDataset, 'fit: the training set');
    checkKeys(fitOptions, ['evalDataset', 'signal', 'onStep', 'onEval', 'callbacks', 'stopOnSigint'], 'fit');
    optionalBool(fitOptions.stopOnSigint, 'fit: stopOnSigint');
    this.checkLive();
    const current = Adapter.of(this.model);
    if (current !== this.adapter) {
      // it would train nothing (the detached adapter's layers are not in the model) and report success
      throw new Error(
        `Trainer.fit refused: this Trainer's adapter is no longer attached to its model (it was detached or merged${current ? '; another adapter is attached now' : ''}); make a new Trainer with the adapter the model has`,
      );
    }
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
    this.adapter.trainingData = train.settings(); // saved with the adapter: evaluation encodes data the same way
    const was = this.pendingTrainInfo;
    if (was && (was.size !== train.size || was.tasks.join('\0') !== train.tasks.join('\0'))) {
      throw new Error(
        `the checkpoint was trained on ${was.size} examples of tasks ${was.tasks.join(', ')}; ` +
          `this training set has ${train.size} of ${train.tasks.join(', ')}: resume needs the same data`,
      );
    }
    if (this.brokenAt) throw this.brokenError();
    const dp = await this.joinProcessGroup(train);
    const W = dp?.worldSize ?? 1, R = dp?.rank ?? 0;
    /** Rank 0 (or the only process) writes files and shows progress. */
    const writer = R === 0;
    // one seeded stream of global batches (batchSize x worldSize rows): the data order does not
    // depend on the number of processes; each rank takes its slice
    this.sampler ??= new BatchSampler(train, { batchSize: o.batchSize * W, sampling: o.sampling, temperature: o.samplingTemperature, seed: o.seed, groupByLength: o.groupByLength }, padId);
    if (this.pendingSampler) {
      const [sampler, state] = [this.sampler, this.pendingSampler];
      if (state.batchSize !== o.batchSize * W && state.batchSize % o.batchSize === 0 && state.datasetSize === train.size) {
        // another number of processes: the global batch changed, so the saved order cannot go on;
        // the same seeded order restarts at the batch that covers the examples already seen
        const skip = Math.floor((state.step * state.batchSize) / (o.batchSize * W));
        for (let k = 0; k < skip; k++) sampler.next();
        if (writer) {
          process.stderr.write(
            `rlora: the checkpoint was trained with a global batch of ${state.batchSize} rows (${state.batchSize / o.batchSize} process(es)); this run has ${o.batchSize * W} ` +
              `(${W} process(es)): continuing at step ${this.step} with the data order of the new batch, from about example ${skip * o.batchSize * W} of the run (not the order an unchanged run would take)\n`,
          );
        }
      } else naming(this.resumedState!, () => sampler.setState(state));
      this.pendingSampler = null;
    }
    const total = (this.totalSteps ??= o.maxSteps ?? Math.max(1, Math.ceil((o.epochs * this.sampler.stepsPerEpoch) / o.gradientAccumulation)));
    if (this.step >= total) {
      // it used to return {steps: []}, as if it had trained
      throw new Error(
        `Trainer.fit refused: this Trainer has run all its ${total} steps (step ${this.step} of ${total}), so a second fit would train nothing: ` +
          'make a new Trainer for another run, or continue from a checkpoint with Trainer.resume(dir, model, {maxSteps}) and more steps',
      );
    }
    this.optimizer ??= this.createOptimizer(total);
    const stopRule = this.stopRule(), bestRule = this.bestRule();
    if ((stopRule || bestRule) && !fitOptions.evalDataset) {
      throw new Error(`${stopRule ? 'earlyStopping' : 'saveBest'} needs an evalDataset: pass fit(train, {evalDataset})`);
    }
    this.adapter.setMode(true);
    const history: History = { steps: [], evals: [], stopped: 'completed', skippedSteps: 0, outputDir: o.outputDir, lastCheckpoint: this.lastCheckpoint };
    /** The steps, in columns until fit returns (a long run's history is then 8 bytes a value). */
    const steps = new StepLog();
    if (this.best.save) {
      history.bestCheckpoint = this.best.save.checkpoint;
      history.bestMetric = this.best.save.value;
    }
    /** The step of the checkpoint written last in this fit. */
    let savedAt = -1;
    const callbacks = checkCallbacks(fitOptions.callbacks);
    const state = (): CallbackState => ({ step: this.step, totalSteps: total });
    /** Set when a callback returns {stop: true}: the fit ends after the current step. */
    let stopRequested = false;
    const notify = async <K extends Exclude<keyof TrainerCallback, 'onTrainEnd'>>(hook: K, ...args: Parameters<NonNullable<TrainerCallback[K]>>): Promise<void> => {
      for (const cb of callbacks) {
        const fn = cb[hook] as ((...a: unknown[]) => CallbackResult) | undefined;
        if (!fn) continue;
        const r = duringCallback(this.model, () => fn.apply(cb, args));
        const v = r instanceof Promise ? await r : r;
        if (typeof v === 'object' && v !== null && v.stop === true) stopRequested = true;
      }
    };
    const save = async (): Promise<void> => {
      // rank 0 writes while the others wait: every rank goes on once the checkpoint is complete
      const rng = dp ? await this.gatherGeneratorStates() : undefined;
      history.lastCheckpoint = writer ? this.saveCheckpointUnchecked(rng) : path.join(o.outputDir!, checkpointName(this.step));
      if (!writer) this.lastCheckpoint = history.lastCheckpoint;
      if (dp) await distributed.barrier();
      savedAt = this.step;
      await notify('onSave', history.lastCheckpoint, state());
    };
    const log = o.outputDir && writer ? path.join(o.outputDir, LOG_FILE) : undefined;
    if (o.outputDir && writer) {
      // a folder holding another run: refused, or emptied of it (overwriteOutputDir); this Trainer's
      // own earlier fits and a resumed run continue there
      const earlier = this.step === 0 && this.resumedFrom === undefined ? runFiles(o.outputDir).filter((f) => !LEFTOVER_NAME.test(f)) : [];
      if (earlier.length && !o.overwriteOutputDir) {
        throw new Error(
          `Trainer.fit refused: outputDir ${o.outputDir} holds an earlier run (${earlier.sort().join(', ')}); logging into it would mix two runs: ` +
            'choose another outputDir, set overwriteOutputDir: true to start over there, or continue that run with Trainer.resume',
        );
      }
      for (const f of earlier) fs.rmSync(path.join(o.outputDir, f), { recursive: true, force: true });
      ensureFolder(o.outputDir, 'outputDir');
      // half-written or half-deleted checkpoints and logs of a process that was killed
      for (const f of fs.readdirSync(o.outputDir)) if (LEFTOVER_NAME.test(f)) fs.rmSync(path.join(o.outputDir, f), { recursive: true, force: true });
    }
    // resuming from an older checkpoint: the steps after it are about to be logged again
    if (log && this.resumedFrom !== undefined && fs.existsSync(log)) trimLog(log, this.resumedFrom);
    this.resumedFrom = undefined;
    const firstStep = this.step;
    const showBar = writer && (o.progress ?? Boolean(process.stderr.isTTY));
    // no bar where stderr is no terminal (a log file, CI): a line now and then, and the evaluations
    const showLines = writer && o.progress === undefined && !process.stderr.isTTY;
    const sinks: MetricSink[] = o.outputDir && writer ? o.reportTo.map((r) => openSink(r, o.outputDir!, firstStep)) : [];
    if (dp && writer) {
      process.stderr.write(`rlora: data parallel over ${W} processes (${distributed.backendName()}): global batch ${o.batchSize} x ${o.gradientAccumulation} accumulated x ${W} = ${o.batchSize * o.gradientAccumulation * W} rows per step\n`);
    }
    const bar = showBar ? new ProgressLine(process.stderr, total, this.step) : undefined;
    /** Evaluates; true when earlyStopping says stop. */
    const evaluate = async (): Promise<boolean> => {
      if (!fitOptions.evalDataset) return false;
      const { tasks, predictions } = await this.evaluateUnchecked(fitOptions.evalDataset, Boolean(o.outputDir), dp);
      const rec: EvalRecord = { step: this.step, tasks };
      this.adapter.setMode(true);
      history.evals.push(rec);
      if (log) fs.appendFileSync(log, JSON.stringify({ type: 'eval', ...rec }) + '\n');
      for (const sink of sinks) sink.log(rec.step, evalScalars(rec.tasks));
      if (showLines) process.stderr.write(`eval at step ${rec.step}:\n${evalText(tasks).replace(/^/gm, '  ')}\n`);
      if (o.outputDir && writer) writeFileAtomically(path.join(o.outputDir, evalPredictionsName(this.step)), predictions.map((p) => JSON.stringify(p) + '\n').join(''));
      if (fitOptions.onEval) duringCallback(this.model, () => fitOptions.onEval!(rec));
      await notify('onEvaluate', rec, state());
      if (callbacks.length) await notify('onLog', rec.step, evalScalars(tasks), state());
      if (bestRule) {
        const value = metricOf(tasks, bestRule.metric);
        if (improves(value, this.best.save?.value, bestRule.mode, 0)) {
          // set first: the checkpoint records that it is the best, and pruning spares it
          this.best.save = { value, checkpoint: path.join(o.outputDir!, checkpointName(this.step)) };
          await save();
          history.bestCheckpoint = this.best.save.checkpoint;
          history.bestMetric = value;
        }
      }
      if (stopRule) {
        const value = metricOf(tasks, stopRule.metric);
        const was = this.best.stop;
        if (improves(value, was?.best, stopRule.mode, stopRule.minDelta)) this.best.stop = { best: value, bad: 0 };
        else this.best.stop = { best: was?.best ?? NaN, bad: (was?.bad ?? 0) + 1 };
        if (this.best.stop.bad >= stopRule.patience) return true;
      }
      return false;
    };
    const sigint = { requested: false };
    const onSigint = (): void => {
      if (sigint.requested) process.exit(130); // the second Ctrl-C: at once, without a checkpoint
      sigint.requested = true;
      process.stderr.write(`\nrlora: Ctrl-C: stopping after step ${this.step + 1}${o.outputDir ? ' and writing a checkpoint' : ''} (Ctrl-C again to quit at once)\n`);
    };
    if (fitOptions.stopOnSigint) process.on('SIGINT', onSigint);
    try {
      await notify('onTrainBegin', state());
      while (this.step < total && !stopRequested) {
        const micro: Batch[] = [];
        for (let k = 0; k < o.gradientAccumulation; k++) micro.push(dp ? rankSlice(this.sampler.next(), R, W) : this.sampler.next());
        const t0 = process.hrtime.bigint();
        const r = await step(this.model, micro, this.optimizer, o.precision ?? 'float32', Boolean(dp), o.gradientCheckpointing ?? false);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        let tokens = micro.reduce((a, b) => a + (b.tasks.length ? b.attentionMask.flat().reduce((x, y) => x + y, 0) : 0), 0);
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
        let taskSum: Record<string, number> = byTask(), taskCount: Record<string, number> = byTask();
        micro.flatMap((b) => (b.tasks.length ? b.tasks : [undefined])).forEach((task, i) => {
          if (task === undefined) return; // a rank's empty slice (one row without labels)
          taskSum[task] = (taskSum[task] ?? 0) + sums[i];
          taskCount[task] = (taskCount[task] ?? 0) + counts[i];
        });
        if (dp) {
          // the step's tokens and per-task losses over every rank
          const names = train.tasks;
          const v = await distributed.allreduceSum([tokens, ...names.map((t) => taskSum[t] ?? 0), ...names.map((t) => taskCount[t] ?? 0)]);
          tokens = v[0];
          taskSum = Object.assign(byTask<number>(), Object.fromEntries(names.map((t, i) => [t, v[1 + i]])));
          taskCount = Object.assign(byTask<number>(), Object.fromEntries(names.map((t, i) => [t, v[1 + names.length + i]])));
        }
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
        steps.push(rec);
        if (log) fs.appendFileSync(log, JSON.stringify(rec) + '\n');
        for (const sink of sinks) sink.log(rec.step, stepScalars(rec));
        bar?.update(this.step, rec.loss.toFixed(4), String(Math.round(rec.tokensPerSecond)));
        if (showLines && (rec.step === firstStep + 1 || rec.step % o.loggingSteps === 0 || rec.step === total)) process.stderr.write(stepLine(rec, total) + '\n');
        if (fitOptions.onStep) duringCallback(this.model, () => fitOptions.onStep!(rec));
        await notify('onStepEnd', rec, state());
        if (callbacks.length) await notify('onLog', rec.step, stepScalars(rec), state());
        if (o.evalEvery > 0 && this.step % o.evalEvery === 0 && this.step < total && (await evaluate())) {
          history.stopped = 'earlyStopping';
          break;
        }
        if (o.outputDir && o.saveEvery > 0 && this.step % o.saveEvery === 0 && this.step < total && savedAt !== this.step) await save();
        if (2 * history.skippedSteps > total - firstStep) {
          history.stopped = 'nonFinite';
          break;
        }
        let aborted = Boolean(fitOptions.signal?.aborted) || sigint.requested;
        let stopped = stopRequested;
        // one decision for every rank: any rank's abort (Ctrl-C) or callback stops them all after this step
        if (dp) [aborted, stopped] = (await distributed.allreduceSum([aborted ? 1 : 0, stopped ? 1 : 0])).map((v) => v > 0);
        if (aborted || stopped) {
          history.stopped = aborted ? 'aborted' : 'callback';
          break;
        }
      }
      if (stopRequested && history.stopped === 'completed') history.stopped = 'callback'; // onTrainBegin asked
      if (history.stopped === 'completed') await evaluate();
      if (o.outputDir && savedAt !== this.step) await save();
      if (o.loadBestAtEnd && history.bestCheckpoint && (history.stopped === 'completed' || history.stopped === 'earlyStopping')) {
        this.loadAdapterWeights(history.bestCheckpoint);
      }
    } finally {
      if (fitOptions.stopOnSigint) process.off('SIGINT', onSigint);
      bar?.stop();
      this.adapter.setMode(false);
    }
    history.steps = steps.records();
    if (history.skippedSteps > 0) {
      console.warn(
        `rlora: skipped ${history.skippedSteps} of ${history.steps.length} steps (${firstStep + 1}..${this.step}) for a non-finite loss` +
          (history.stopped === 'nonFinite' ? `; stopped, as more than half of the ${total - firstStep} steps planned were skipped` : '') +
          ' (lower the learning rate?)',
      );
    }
    for (const cb of callbacks) if (cb.onTrainEnd) await duringCallback(this.model, () => cb.onTrainEnd!(history, state()));
    return history;
  }

  /**
   * Per task: mean cross-entropy per response token, and exact-match accuracy of greedy generation
   * (the generated tokens up to eos must equal the response's tokens).
   */
  async evaluate(dataset: MultiTaskDataset, options?: EvaluateOptions & { returnPredictions?: false }): Promise<Record<string, TaskEval>>;
  /** With returnPredictions: the per-task results and every example's prediction, in dataset order. */
  async evaluate(dataset: MultiTaskDataset, options: EvaluateOptions & { returnPredictions: true }): Promise<{ tasks: Record<string, TaskEval>; predictions: Prediction[] }>;
  async evaluate(dataset: MultiTaskDataset, options: EvaluateOptions = {}): Promise<Record<string, TaskEval> | { tasks: Record<string, TaskEval>; predictions: Prediction[] }> {
    checkInstance(dataset, MultiTaskDataset, 'evaluate: the dataset');
    if (typeof options !== 'object' || options === null) throw new TypeError(`evaluate: options must be an object, got ${util.inspect(options)}`);
    const unknown = Object.keys(options).filter((k) => k !== 'returnPredictions');
    if (unknown.length) throw new RangeError(`evaluate: unknown option ${JSON.stringify(unknown[0])} (known: returnPredictions)`);
    optionalBool(options.returnPredictions, 'evaluate: returnPredictions');
    this.checkLive();
    assertNotTraining(this.model, 'Trainer.evaluate');
    const r = await this.evaluateUnchecked(dataset, Boolean(options.returnPredictions));
    return options.returnPredictions ? r : r.tasks;
  }

  /**
   * dp: data parallelism: this rank evaluates every worldSize-th example (from its rank on), and the
   * ranks' sums and predictions are gathered, so every rank returns the same whole evaluation.
   */
  private async evaluateUnchecked(dataset: MultiTaskDataset, keepPredictions: boolean, dp?: { rank: number; worldSize: number }): Promise<{ tasks: Record<string, TaskEval>; predictions: Prediction[] }> {
    const o = this.options;
    const metrics = Object.entries(o.metrics ?? {}).map(([name, m]) => [name, typeof m === 'string' ? BUILTIN_METRICS[m] : m] as [string, MetricFn]);
    const metricSum: Record<string, Record<string, number>> = byTask();
    const predictions: Prediction[] = [];
    const tok = dataset.tokenizer;
    const padId = tok.padTokenId ?? tok.eosTokenId ?? 0;
    const eos = tok.eosTokenId;
    this.adapter.setMode(false);
    const sum: Record<string, number> = byTask(), count: Record<string, number> = byTask(), right: Record<string, number> = byTask(), n: Record<string, number> = byTask();
    const rows = o.evalBatchSize ?? o.batchSize;
    const mine = Array.from({ length: dataset.size }, (_, i) => i).filter((i) => !dp || i % dp.worldSize === dp.rank);
    const order: number[] = []; // dataset index of each prediction
    for (let start = 0; start < mine.length; start += rows) {
      const exs = mine.slice(start, start + rows).map((i) => dataset.get(i));
      const width = Math.max(...exs.map((e) => e.inputIds.length));
      const pad = (row: number[], v: number): number[] => [...row, ...new Array(width - row.length).fill(v)];
      const batch = {
        inputIds: exs.map((e) => pad(e.inputIds, padId)),
        attentionMask: exs.map((e) => pad(e.inputIds.map(() => 1), 0)),
        labels: exs.map((e) => pad(e.inputIds.map((id, i) => (i < e.promptLength ? -100 : id)), -100)),
      };
      const { lossSum: sums, tokens: toks } = await rowLosses(this.model, batch);
      // greedy generation from the prompt
      // the answer generation must give: the response's tokens up to its (first) eos; a chat
      // template may write more after it (e.g. a newline), which generation never reaches
      const responses = exs.map((e) => {
        const r = e.inputIds.slice(e.promptLength);
        const stop = eos === undefined ? -1 : r.indexOf(eos);
        return stop < 0 ? r : r.slice(0, stop);
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
        // each row up to its own response length + evalExtraTokens, so batching changes nothing
        const width = prompts.inputIds[i].length;
        const out = gen[i].slice(width, width + responses[i].length + o.evalExtraTokens);
        const stop = eos === undefined ? -1 : out.indexOf(eos);
        const produced = stop < 0 ? out : out.slice(0, stop);
        const ok = produced.length === responses[i].length && produced.every((t, k) => t === responses[i][k]);
        if (metrics.length || keepPredictions) {
          const prediction = tok.decode(produced, { skipSpecialTokens: true });
          if (keepPredictions) {
            predictions.push({ task: e.task, prompt: e.prompt, reference: e.response, prediction, correct: ok });
            order.push(e.index);
          }
          const ms = (metricSum[e.task] ??= {});
          for (const [name, fn] of metrics) {
            const v = fn(prediction, e.response, e.task);
            if (typeof v !== 'number') throw new TypeError(`metrics.${name} returned ${util.inspect(v)} for example ${e.index} (task ${e.task}): expected a number`);
            ms[name] = (ms[name] ?? 0) + v;
          }
        }
        sum[e.task] = (sum[e.task] ?? 0) + sums[i];
        count[e.task] = (count[e.task] ?? 0) + toks[i];
        right[e.task] = (right[e.task] ?? 0) + (ok ? 1 : 0);
        n[e.task] = (n[e.task] ?? 0) + 1;
      });
    }
    if (dp) {
      // every rank's share, merged in rank order (sums) and dataset order (predictions)
      const shares = await distributed.gatherJson({ sum, count, right, n, metricSum, predictions, order });
      for (const x of [sum, count, right, n, metricSum]) for (const k of Object.keys(x)) delete x[k];
      const add = (into: Record<string, number>, from: Record<string, number>): void => {
        for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
      };
      const all: [number, Prediction][] = [];
      for (const sh of shares) {
        add(sum, sh.sum), add(count, sh.count), add(right, sh.right), add(n, sh.n);
        for (const [t, ms] of Object.entries(sh.metricSum)) add((metricSum[t] ??= {}), ms);
        sh.predictions.forEach((p, i) => all.push([sh.order[i], p]));
      }
      predictions.splice(0, predictions.length, ...all.sort((a, b) => a[0] - b[0]).map(([, p]) => p));
    }
    const tasks: Record<string, TaskEval> = Object.fromEntries(
      Object.keys(n).sort().map((t) => {
        const r: TaskEval = { loss: count[t] > 0 ? sum[t] / count[t] : NaN, accuracy: right[t] / n[t], count: n[t] };
        if (metrics.length) r.metrics = Object.fromEntries(metrics.map(([name]) => [name, metricSum[t][name] / n[t]]));
        return [t, r];
      }),
    );
    return { tasks, predictions };
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

  private saveCheckpointUnchecked(rngStates?: Record<string, Tensor>): string {
    const dir0 = this.options.outputDir;
    if (!dir0) throw new Error('saveCheckpoint needs outputDir');
    if (!this.optimizer || !this.sampler) throw new Error('nothing to checkpoint before fit() has started');
    if (this.brokenAt) throw this.brokenError();
    const dir = path.join(dir0, checkpointName(this.step));
    const opt = this.optimizer.native.state();
    const sampler = this.sampler;
    replaceFolder(dir, (tmp) => {
      this.adapter.write(tmp);
      const optTensors: Record<string, Tensor> = {};
      opt.params.forEach((p, i) => {
        optTensors[`${i}.exp_avg`] = new Tensor(p.expAvg);
        optTensors[`${i}.exp_avg_sq`] = new Tensor(p.expAvgSq);
      });
      saveSafetensors(path.join(tmp, OPTIMIZER_FILE), optTensors, {
        steps: String(opt.steps),
        param_steps: JSON.stringify(opt.params.map((p) => p.step)),
      });
      let rng = rngStates;
      if (!rng) {
        rng = {};
        for (const [name, layer] of this.adapter.layers) rng[name] = new Tensor(layer.native.generatorState());
      }
      saveSafetensors(path.join(tmp, RNG_FILE), rng);
      const state: TrainerState = {
        version: 1,
        step: this.step,
        totalSteps: this.totalSteps!,
        options: this.savedOptions(),
        sampler: sampler.state(),
        dataset: this.trainInfo!,
        best: this.best,
        customMetrics: Object.entries(this.options.metrics ?? {}).filter(([, v]) => typeof v === 'function').map(([k]) => k),
      };
      writeFileFully(path.join(tmp, TRAINER_STATE_FILE), JSON.stringify(state, null, 2) + '\n');
    });
    this.lastCheckpoint = dir;
    const keep = this.options.keepCheckpoints;
    if (keep > 0) {
      const best = this.best.save?.checkpoint;
      const steps = checkpointSteps(dir0).filter((s) => best === undefined || path.resolve(dir0, checkpointName(s)) !== path.resolve(best)); // saveBest's is never pruned
      for (const s of steps.reverse().slice(keep)) removeAtomically(path.join(dir0, checkpointName(s)));
    }
    return dir;
  }

  /** The options as trainer_state.json keeps them: metric functions left out (names stay). */
  private savedOptions(): TrainerOptions {
    const m = this.options.metrics;
    if (!m) return this.options;
    const named = Object.fromEntries(Object.entries(m).filter(([, v]) => typeof v === 'string'));
    return { ...this.options, metrics: named };
  }

  /** Loads the adapter weights of a checkpoint (saveBest's) into the adapter. */
  private loadAdapterWeights(dir: string): void {
    const file = path.join(dir, 'adapter_model.safetensors');
    naming(file, () => this.adapter.loadWeights(file));
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
   *
   * `overrides.maxSteps` sets a new total number of steps (above the checkpoint's step): the run
   * is extended (or shortened) and the learning-rate schedule (and a warmupRatio warm-up) is
   * recomputed for the new total, with a console.warn saying so. `overrides.metrics` gives the
   * metric functions again (checkpoints keep only built-in metric names). Training continues on
   * `model`'s device, whichever device wrote the checkpoint.
   */
  static async resume(checkpointDir: string, model: Model, overrides: Pick<TrainerOptions, 'outputDir' | 'progress' | 'maxSteps' | 'metrics'> = {}): Promise<Trainer> {
    if (typeof overrides !== 'object' || overrides === null) throw new TypeError(`Trainer.resume: overrides must be an object, got ${util.inspect(overrides)}`);
    const unknown = Object.keys(overrides).filter((k) => !['outputDir', 'progress', 'maxSteps', 'metrics'].includes(k));
    if (unknown.length) throw new RangeError(`Trainer.resume: ${JSON.stringify(unknown[0])} cannot be changed on resume (known: outputDir, progress, maxSteps, metrics)`);
    const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as typeof overrides;
    if (given.maxSteps !== undefined) positiveInt(given.maxSteps, 'maxSteps');
    const file = (name: string): string => path.join(checkpointDir, name);
    for (const name of CHECKPOINT_FILES) {
      if (!fs.existsSync(file(name))) throw new Error(`${checkpointDir} is not a complete checkpoint: no ${name}`);
    }
    const statePath = file(TRAINER_STATE_FILE);
    const state = readTrainerState(statePath);
    const optimizerState = readOptimizerState(file(OPTIMIZER_FILE));
    const rngPath = file(RNG_FILE);
    const rng = new Map<string, Tensor>();
    naming(rngPath, () => forEachSafetensor(rngPath, (e, t) => rng.set(e.name, t)));
    // metric functions cannot be saved: the run's are required again, not dropped silently
    const missing = (state.customMetrics ?? []).filter((m) => typeof given.metrics?.[m] !== 'function');
    if (missing.length) {
      throw new Error(
        `${statePath}: the run evaluated the metric function${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, which a checkpoint cannot hold: ` +
          `pass ${missing.length > 1 ? 'them' : 'it'} again, Trainer.resume(dir, model, {metrics: {${missing.join(', ')}}})`,
      );
    }
    const adapter = await Adapter.load(model, checkpointDir); // attaches nothing when it fails (NaN or infinite weights included)
    try {
      const outputDir = given.outputDir ?? path.dirname(path.resolve(checkpointDir));
      let total = state.totalSteps;
      if (given.maxSteps !== undefined && given.maxSteps !== state.totalSteps) {
        if (given.maxSteps <= state.step) {
          throw new RangeError(`maxSteps ${given.maxSteps} must be above the checkpoint's step (${state.step}): ${checkpointDir} has nothing left to train for it`);
        }
        console.warn(
          `rlora: resuming ${checkpointDir} with maxSteps ${given.maxSteps} instead of its ${state.totalSteps}: ` +
            `the ${state.options.schedule ?? DEFAULTS.schedule} learning-rate schedule is recomputed for ${given.maxSteps} steps in all (${given.maxSteps - state.step} more)`,
        );
        total = given.maxSteps;
      }
      // the run goes on on the model's device, wherever the checkpoint was written (as
      // torch.load's map_location): a checkpoint of a CUDA run resumes on the CPU and back
      const options = { ...state.options, ...given, ...(total !== state.totalSteps ? { maxSteps: total } : {}), outputDir, device: model.device };
      const trainer = naming(statePath, () => new Trainer(model, adapter, options));
      trainer.step = state.step;
      trainer.resumedFrom = state.step;
      trainer.resumedState = statePath;
      trainer.totalSteps = total;
      if (state.best !== undefined) trainer.best = state.best;
      trainer.pendingSampler = state.sampler;
      trainer.pendingTrainInfo = state.dataset;
      trainer.lastCheckpoint = checkpointDir;
      const optimizer = naming(statePath, () => trainer.createOptimizer(total));
      naming(file(OPTIMIZER_FILE), () => optimizer.native.setState(optimizerState));
      trainer.optimizer = optimizer;
      for (const [name, t] of rng) {
        if (/^rank\d+\//.test(name)) {
          trainer.rankRng.set(name, t); // another rank's stream (data parallelism): taken when it joins
          continue;
        }
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
