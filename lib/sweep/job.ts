// One job of a sweep: a variant at one learning rate and seed, trained on the train split and
// evaluated on one split (validation or test), with what the table reports (per-task loss and
// exact match, trainable parameters, tokens/s, peak memory, head similarity, the loss curve). Runs
// in a worker process (pool.ts); the base model, tokenizer and datasets are loaded once per process.
import * as fs from 'fs';
import * as path from 'path';

import type { Adapter, History, Model, MultiTaskDataset, TaskEval, TextTokenizer } from '../index';
import type { SweepAdapterOptions, SweepTrainerOptions } from './config';

/** A file a job reads, with what identifies its contents. */
export interface FileRef {
  file: string;
  sha256: string;
}

/** Everything that makes a job's result: two jobs alike in all of it give the same numbers (on the same BLAS kernels). */
export interface Job {
  variant: string;
  adapter: Omit<SweepAdapterOptions, 'targetModules'>;
  targetModules: string[] | { regex: string };
  learningRate: number;
  seed: number;
  /** The split it is evaluated on. */
  split: 'validation' | 'test';
  steps: number;
  batchSize: number;
  trainer: SweepTrainerOptions;
  /** The base model folder, its dtype and device, and the size and time of its files. */
  model: { path: string; dtype?: string; device: string; files: { name: string; size: number; mtimeMs: number }[] };
  /** 'byte', a tokenizer file or folder, or undefined (the model folder's tokenizer.json). */
  tokenizer?: string;
  data: { train: FileRef; evaluate: FileRef; options: { template?: string; maxLength?: number; fields?: { task?: string; prompt?: string; response?: string }; addBos?: boolean; addEos?: boolean } };
  threads: number;
}

export interface JobResult {
  variant: string;
  /** The variant's description. */
  what: string;
  seed: number;
  learningRate: number;
  split: 'validation' | 'test';
  steps: number;
  /** Trainable values of the adapter. */
  trainable: number;
  /** Loss and exact-match accuracy per task on `split`. */
  tasks: Record<string, TaskEval>;
  /** Means over the tasks. */
  meanAccuracy: number;
  meanLoss: number;
  /** Mean training loss of the last 10 steps (fewer when the job ran fewer). */
  trainLoss: number;
  /** Training alone, and training plus evaluation (and loading, for a worker's first job). */
  seconds: number;
  totalSeconds: number;
  /** Tokens of the training batches per second of training. */
  tokensPerSecond: number;
  /** Peak of libtorch's allocator during training (CPU: blocks of 1 MiB or more through its cache; see memoryStats). */
  peakAllocatedBytes: number;
  /** Mean off-diagonal cosine similarity of the heads B_i per module kind ("q_proj", ...); null for one head. */
  headCosine: Record<string, number | null>;
  /** Mean N x N head similarity over the modules of each kind. */
  headSimilarity: Record<string, number[][]>;
  /** Training loss of every step. */
  losses: number[];
  /** Why training ended ('completed'; 'nonFinite' with trainer.skipNonFinite) and the steps skipped for a non-finite loss. */
  stopped: History['stopped'];
  skippedSteps: number;
  /** The BLAS kernels it ran on (blasInfo()). */
  blas: string;
}

function meanOffDiagonal(m: number[][]): number | null {
  const n = m.length;
  if (n < 2) return null;
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) s += m[i][j];
  return s / (n * (n - 1));
}

/** Head similarity averaged over the modules of each kind (the last part of the module name), kinds in module order. */
function similarityByKind(adapter: Adapter): Record<string, number[][]> {
  const byKind = new Map<string, number[][][]>();
  for (const [name, t] of Object.entries(adapter.headSimilarity())) {
    const kind = name.slice(name.lastIndexOf('.') + 1);
    const n = t.shape[0];
    const v = Array.from(t.data() as ArrayLike<number>, Number);
    const m = Array.from({ length: n }, (_, i) => v.slice(i * n, (i + 1) * n));
    (byKind.get(kind) ?? byKind.set(kind, []).get(kind)!).push(m);
  }
  const out: Record<string, number[][]> = {};
  for (const [kind, mats] of byKind) {
    const n = mats[0].length;
    out[kind] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => mats.reduce((a, m) => a + m[i][j], 0) / mats.length));
  }
  return out;
}

// the library, loaded when a job runs (this file is loaded by lib/index.ts too)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const lib = (): typeof import('../index') => require('../index');

const models = new Map<string, Model>();
const tokenizers = new Map<string, TextTokenizer>();
const datasets = new Map<string, MultiTaskDataset>();

async function tokenizerOf(job: Job): Promise<TextTokenizer> {
  const { ByteTokenizer, Tokenizer } = lib();
  const key = job.tokenizer ?? `model:${job.model.path}`;
  let t = tokenizers.get(key);
  if (t) return t;
  if (job.tokenizer === 'byte') t = new ByteTokenizer();
  else if (job.tokenizer) t = await Tokenizer.fromFile(job.tokenizer);
  else if (fs.existsSync(path.join(job.model.path, 'tokenizer.json'))) t = await Tokenizer.fromFile(job.model.path);
  else throw new Error(`no tokenizer given and the model folder ${job.model.path} has no tokenizer.json: set tokenizer (a tokenizer.json, a folder holding one, or "byte")`);
  tokenizers.set(key, t);
  return t;
}

async function datasetOf(ref: FileRef, job: Job): Promise<MultiTaskDataset> {
  const key = JSON.stringify([ref, job.tokenizer ?? job.model.path, job.data.options]);
  let d = datasets.get(key);
  if (!d) {
    const o = job.data.options;
    const options = { tokenizer: await tokenizerOf(job), ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
    datasets.set(key, (d = await lib().MultiTaskDataset.fromJsonl(ref.file, options)));
  }
  return d;
}

/** Runs one job in this process. */
export async function runJob(job: Job, what: string): Promise<JobResult> {
  const T0 = performance.now();
  const { Adapter, Model, Trainer, blasInfo, memoryStats, resetPeakMemory, setNumThreads } = lib();
  setNumThreads(job.threads);
  const key = JSON.stringify([job.model.path, job.model.device, job.model.dtype]);
  let model = models.get(key);
  if (!model) models.set(key, (model = await Model.fromPretrained(job.model.path, { device: job.model.device as 'cpu', ...(job.model.dtype ? { dtype: job.model.dtype as 'float32' } : {}) })));
  const train = await datasetOf(job.data.train, job);
  const evaluate = await datasetOf(job.data.evaluate, job);
  const t = job.targetModules;
  const adapter = Adapter.attach(model, { ...job.adapter, targetModules: Array.isArray(t) ? t : new RegExp(t.regex), seed: job.seed });
  try {
    const trainer = new Trainer(model, adapter, {
      ...job.trainer,
      learningRate: job.learningRate,
      maxSteps: job.steps,
      batchSize: job.batchSize,
      seed: job.seed,
      progress: false,
      device: job.model.device,
    });
    resetPeakMemory();
    const t0 = performance.now();
    const history = await trainer.fit(train);
    const seconds = (performance.now() - t0) / 1000;
    const peak = memoryStats().peakAllocatedBytes;
    const tokens = history.steps.reduce((a, r) => a + r.tokens, 0);
    const tasks = await trainer.evaluate(evaluate);
    const accs = Object.values(tasks).map((x) => x.accuracy);
    const losses = Object.values(tasks).map((x) => x.loss);
    const headSimilarity = similarityByKind(adapter);
    const curve = history.steps.map((r) => r.loss);
    const last = curve.slice(-10);
    return {
      variant: job.variant,
      what,
      seed: job.seed,
      learningRate: job.learningRate,
      split: job.split,
      steps: job.steps,
      trainable: adapter.trainableParameterCount(),
      tasks,
      meanAccuracy: accs.reduce((a, b) => a + b, 0) / accs.length,
      meanLoss: losses.reduce((a, b) => a + b, 0) / losses.length,
      trainLoss: last.reduce((a, b) => a + b, 0) / last.length,
      seconds,
      totalSeconds: (performance.now() - T0) / 1000,
      tokensPerSecond: tokens / seconds,
      peakAllocatedBytes: peak,
      headCosine: Object.fromEntries(Object.entries(headSimilarity).map(([k, m]) => [k, meanOffDiagonal(m)])),
      headSimilarity,
      losses: curve,
      stopped: history.stopped,
      skippedSteps: history.skippedSteps,
      blas: blasInfo(),
    };
  } finally {
    adapter.detach();
  }
}
