// One job of a sweep: a variant at one learning rate and seed, trained on the train split (or its
// adapter loaded, when the validation job of the same rate and seed trained it) and evaluated on
// one split (validation or test), with what the table reports (per-task loss and
// exact match, trainable parameters, tokens/s, peak memory, head similarity, the loss curve). Runs
// in a worker process (pool.ts); the base model, tokenizer and datasets are loaded once per process.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter } from '../adapter';
import { MultiTaskDataset } from '../data';
import { Model } from '../model';
import { native } from '../native';
import { ByteTokenizer, TextTokenizer, Tokenizer } from '../tokenizer';
import { Trainer } from '../trainer';
import type { FileRef, Job, JobResult, TrainingNumbers } from './types';

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


const models = new Map<string, Model>();
const tokenizers = new Map<string, TextTokenizer>();
const datasets = new Map<string, MultiTaskDataset>();

async function tokenizerOf(job: Job): Promise<TextTokenizer> {
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
    datasets.set(key, (d = await MultiTaskDataset.fromJsonl(ref.file, options)));
  }
  return d;
}

/** Runs one job in this process. */
export async function runJob(job: Job, what: string): Promise<JobResult> {
  const T0 = performance.now();
  native.setNumThreads(job.threads);
  const key = JSON.stringify([job.model.path, job.model.device, job.model.dtype]);
  let model = models.get(key);
  if (!model) models.set(key, (model = await Model.fromPretrained(job.model.path, { device: job.model.device as 'cpu', ...(job.model.dtype ? { dtype: job.model.dtype as 'float32' } : {}) })));
  const train = await datasetOf(job.data.train, job);
  const evaluate = await datasetOf(job.data.evaluate, job);
  const t = job.targetModules;
  // the validation job of this rate and seed trained it already: evaluate its adapter
  const adapter = job.trainedBy
    ? await Adapter.load(model, job.adapterDir)
    : Adapter.attach(model, { ...job.adapter, targetModules: Array.isArray(t) ? t : new RegExp(t.regex), seed: job.seed });
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
    const training = job.trainedBy ?? (await trainAdapter(trainer, train));
    if (!job.trainedBy) adapter.save(job.adapterDir);
    const tasks = await trainer.evaluate(evaluate);
    const accs = Object.values(tasks).map((x) => x.accuracy);
    const losses = Object.values(tasks).map((x) => x.loss);
    const headSimilarity = similarityByKind(adapter);
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
      ...training,
      totalSeconds: (performance.now() - T0) / 1000,
      headCosine: Object.fromEntries(Object.entries(headSimilarity).map(([k, m]) => [k, meanOffDiagonal(m)])),
      headSimilarity,
      blas: native.blasInfo(),
    };
  } finally {
    adapter.detach();
  }
}

/** Trains the job's adapter and returns what the training measured. */
async function trainAdapter(trainer: Trainer, train: MultiTaskDataset): Promise<TrainingNumbers> {
  native.resetPeakMemory();
  const t0 = performance.now();
  const history = await trainer.fit(train);
  const seconds = (performance.now() - t0) / 1000;
  const tokens = history.steps.reduce((a, r) => a + r.tokens, 0);
  const curve = history.steps.map((r) => r.loss);
  const last = curve.slice(-10);
  return {
    trainLoss: last.reduce((a, b) => a + b, 0) / last.length,
    seconds,
    tokensPerSecond: tokens / seconds,
    peakAllocatedBytes: native.memoryStats().peakAllocatedBytes,
    losses: curve,
    stopped: history.stopped,
    skippedSteps: history.skippedSteps,
  };
}
