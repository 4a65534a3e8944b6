// Trainer: multi-task fine-tuning of an adapter (DESIGN.md section 5): one native call per
// optimizer step, per-task logging, evaluation, atomic checkpoints and exact resume.
import * as fs from 'fs';
import * as path from 'path';

import { SingleBar } from 'cli-progress';

import { Adapter } from './adapter';
import { Batch, BatchSampler, MultiTaskDataset, promptBatch, Sampling, SamplerState } from './data';
import { Model } from './model';
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
  /** Where log.jsonl and checkpoint-<step>/ go. No files when absent. */
  outputDir?: string;
  /** Keep only the newest this many checkpoints (older ones are deleted after a new one is complete); 0 keeps all. Default 0. */
  keepCheckpoints?: number;
  /** A progress bar on stderr. Default: on when stdout is a terminal. */
  progress?: boolean;
  /**
   * 'float32' (default), or 'bfloat16': forward and backward under bfloat16 autocast on the
   * model's device (CPU or CUDA), as torch.autocast does; parameters, gradients and optimizer
   * state stay in the model's dtype. Evaluation runs without autocast.
   */
  precision?: 'float32' | 'bfloat16';
  /** Where training runs: the model's device (load the model there); given, it must match. */
  device?: string;
  /** Skip a step whose loss is NaN or infinite (no update) instead of stopping. Default false. */
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
  /** Why fit returned: 'completed' or 'aborted'. */
  stopped: 'completed' | 'aborted';
  /** The last checkpoint written, if any. */
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
  /** Summed loss and labelled tokens of each row, micro-batches in order. */
  rowLoss: Float64Array;
  rowTokens: number[];
}

/**
 * One optimizer step over one or more micro-batches (gradient accumulation): forward, masked
 * cross-entropy, backward, clipping, AdamW and the schedule, in one native call off the JS thread.
 * The building block of Trainer.fit, for custom loops (e.g. pretraining with an AdamW over a Model).
 */
export async function trainStep(
  model: Model,
  batches: Pick<Batch, 'inputIds' | 'attentionMask' | 'labels'>[],
  optimizer: AdamW,
  options: { precision?: 'float32' | 'bfloat16' } = {},
): Promise<TrainStepResult> {
  if (!(model instanceof Model)) throw new TypeError('trainStep: model must be a Model');
  if (!(optimizer instanceof AdamW)) throw new TypeError('trainStep: optimizer must be an AdamW');
  const r = await native.lmTrainStep(model.native, batches.map(toLmBatch), optimizer.native, options.precision ?? 'float32');
  return {
    loss: r.loss,
    finite: r.finite,
    lr: r.lr,
    gradNorm: r.gradNorm,
    rowLoss: new Tensor(r.rows.lossSum).data() as Float64Array,
    rowTokens: Array.from(new Tensor(r.rows.tokens).data() as BigInt64Array, Number),
  };
}

/** A hidden sibling name for a folder being written or removed (`.<name>.<what>-<pid>-<time>`). */
function sideName(dir: string, what: 'tmp' | 'deleting'): string {
  return path.join(path.dirname(dir), `.${path.basename(dir)}.${what}-${process.pid}-${Date.now()}`);
}
const SIDE_NAME = /^\.checkpoint-\d+\.(tmp|deleting)-/;

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
    for (const f of fs.readdirSync(tmp)) {
      const fd = fs.openSync(path.join(tmp, f), 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    }
    const old = fs.existsSync(dir) ? sideName(dir, 'deleting') : undefined;
    if (old) fs.renameSync(dir, old);
    fs.renameSync(tmp, dir);
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

export class Trainer {
  readonly model: Model;
  readonly adapter: Adapter;
  readonly options: Required<Omit<TrainerOptions, 'maxSteps' | 'warmupSteps' | 'outputDir' | 'progress' | 'precision' | 'device'>> & TrainerOptions;
  /** Optimizer steps taken so far. */
  step = 0;
  private optimizer?: AdamW;
  private sampler?: BatchSampler;
  private pendingSampler: SamplerState | null = null;
  private pendingOptimizer?: NativeAdamWState;
  private totalSteps?: number;
  private lastCheckpoint?: string;
  private trainInfo?: { size: number; tasks: string[] };
  private resumedFrom?: number;
  private pendingTrainInfo?: { size: number; tasks: string[] };

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

  /** Fine-tunes the adapter on `train`; resolves with the history. Runs each step off the JS thread. */
  async fit(train: MultiTaskDataset, fitOptions: FitOptions = {}): Promise<History> {
    const o = this.options;
    if (!(train instanceof MultiTaskDataset)) throw new TypeError('fit: the training set must be a MultiTaskDataset');
    const padId = train.tokenizer.padTokenId ?? train.tokenizer.eosTokenId ?? 0;
    this.trainInfo = { size: train.size, tasks: train.tasks };
    const was = this.pendingTrainInfo;
    if (was && (was.size !== train.size || was.tasks.join('\0') !== train.tasks.join('\0'))) {
      throw new Error(
        `the checkpoint was trained on ${was.size} examples of tasks ${was.tasks.join(', ')}; ` +
          `this training set has ${train.size} of ${train.tasks.join(', ')}: resume needs the same data`,
      );
    }
    this.sampler ??= new BatchSampler(train, { batchSize: o.batchSize, sampling: o.sampling, temperature: o.samplingTemperature, seed: o.seed, groupByLength: o.groupByLength }, padId);
    if (this.pendingSampler) {
      this.sampler.setState(this.pendingSampler);
      this.pendingSampler = null;
    }
    const total = (this.totalSteps ??= o.maxSteps ?? Math.max(1, Math.ceil((o.epochs * this.sampler.stepsPerEpoch) / o.gradientAccumulation)));
    const warmup = o.warmupSteps ?? Math.round(o.warmupRatio * total);
    if (!this.optimizer) {
      this.optimizer = new AdamW([...this.adapter.layers.values()], {
        lr: o.learningRate,
        weightDecay: o.weightDecay,
        maxGradNorm: o.maxGradNorm,
        schedule: o.schedule,
        warmupSteps: warmup,
        totalSteps: o.schedule === 'constant' ? Math.max(total, warmup + 1) : total,
      });
      if (this.pendingOptimizer) this.optimizer.native.setState(this.pendingOptimizer);
    }
    this.adapter.train();
    const history: History = { steps: [], evals: [], stopped: 'completed', lastCheckpoint: this.lastCheckpoint };
    const log = o.outputDir ? path.join(o.outputDir, 'log.jsonl') : undefined;
    if (o.outputDir) {
      fs.mkdirSync(o.outputDir, { recursive: true });
      // half-written or half-deleted checkpoints of a process that was killed
      for (const f of fs.readdirSync(o.outputDir)) if (SIDE_NAME.test(f)) fs.rmSync(path.join(o.outputDir, f), { recursive: true, force: true });
    }
    if (log && this.resumedFrom !== undefined && fs.existsSync(log)) {
      // resuming from an older checkpoint: the steps after it are about to be logged again
      const keep = fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.trim() && (JSON.parse(l) as { step: number }).step <= this.resumedFrom!);
      fs.writeFileSync(log, keep.map((l) => l + '\n').join(''));
    }
    this.resumedFrom = undefined;
    const bar = (o.progress ?? Boolean(process.stdout.isTTY))
      ? new SingleBar({ format: 'step {value}/{total} |{bar}| loss {loss} | {tps} tok/s | ETA {eta_formatted}', hideCursor: true, stream: process.stdout })
      : undefined;
    bar?.start(total, this.step, { loss: '-', tps: '-' });
    const evaluate = async (): Promise<void> => {
      if (!fitOptions.evalDataset) return;
      const rec: EvalRecord = { step: this.step, tasks: await this.evaluate(fitOptions.evalDataset) };
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
        const r = await trainStep(this.model, micro, this.optimizer, { precision: o.precision ?? 'float32' });
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        const tokens = micro.reduce((a, b) => a + b.attentionMask.flat().reduce((x, y) => x + y, 0), 0);
        if (!r.finite && !o.skipNonFinite) {
          throw new Error(
            `the loss became ${r.loss} at step ${this.step + 1}; no update was made. Last good checkpoint: ${this.lastCheckpoint ?? 'none'} ` +
              '(lower the learning rate, or set skipNonFinite to skip such steps)',
          );
        }
        this.step += 1;
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
        if (o.outputDir && o.saveEvery > 0 && this.step % o.saveEvery === 0 && this.step < total) history.lastCheckpoint = this.saveCheckpoint();
        if (fitOptions.signal?.aborted) {
          history.stopped = 'aborted';
          break;
        }
      }
      if (history.stopped === 'completed') await evaluate();
      if (o.outputDir) history.lastCheckpoint = this.saveCheckpoint();
    } finally {
      bar?.stop();
      this.adapter.eval();
    }
    return history;
  }

  /**
   * Per task: mean cross-entropy per response token, and exact-match accuracy of greedy generation
   * (the generated tokens up to eos must equal the response's tokens).
   */
  async evaluate(dataset: MultiTaskDataset): Promise<Record<string, TaskEval>> {
    if (!(dataset instanceof MultiTaskDataset)) throw new TypeError('evaluate: expected a MultiTaskDataset');
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
      const gen = await this.model.generate(prompts.inputIds, {
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
    const dir0 = this.options.outputDir;
    if (!dir0) throw new Error('saveCheckpoint needs outputDir');
    if (!this.optimizer || !this.sampler) throw new Error('nothing to checkpoint before fit() has started');
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

  /**
   * A trainer that continues from `checkpointDir` on `model` (the same base model, no adapter
   * attached): the next fit() with the same training set continues as if never stopped.
   */
  static async resume(checkpointDir: string, model: Model, overrides: Pick<TrainerOptions, 'outputDir' | 'progress'> = {}): Promise<Trainer> {
    const statePath = path.join(checkpointDir, 'trainer_state.json');
    if (!fs.existsSync(statePath)) throw new Error(`${checkpointDir} is not a checkpoint: no trainer_state.json`);
    const state = JSON.parse(fs.readFileSync(statePath, 'utf8')) as TrainerState;
    const adapter = await Adapter.load(model, checkpointDir);
    const trainer = new Trainer(model, adapter, { ...state.options, ...overrides });
    trainer.step = state.step;
    trainer.resumedFrom = state.step;
    trainer.totalSteps = state.totalSteps;
    trainer.pendingSampler = state.sampler;
    trainer.pendingTrainInfo = state.dataset;
    trainer.lastCheckpoint = checkpointDir;
    const params: { step: number; expAvg?: Tensor; expAvgSq?: Tensor }[] = [];
    const header = forEachSafetensor(path.join(checkpointDir, 'optimizer.safetensors'), (e, t) => {
      const [i, kind] = e.name.split('.');
      const p = (params[Number(i)] ??= { step: 0 });
      if (kind === 'exp_avg') p.expAvg = t;
      else p.expAvgSq = t;
    });
    const steps = JSON.parse(header.metadata.param_steps) as number[];
    trainer.pendingOptimizer = {
      steps: Number(header.metadata.steps),
      params: params.map((p, i) => ({ step: steps[i], expAvg: p.expAvg!.native, expAvgSq: p.expAvgSq!.native })),
    };
    forEachSafetensor(path.join(checkpointDir, 'rng.safetensors'), (e, t) => {
      const layer = adapter.layers.get(e.name);
      if (!layer) throw new Error(`${checkpointDir}/rng.safetensors names ${e.name}, which the adapter does not wrap`);
      layer.native.setGeneratorState(t.native);
    });
    return trainer;
  }
}
