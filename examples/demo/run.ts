// The demo's experiment: pretrain (or reuse) a tiny byte-level LLaMA on Moby-Dick, fine-tune LoRA,
// HydraLoRA, R-LoRA and two R-LoRA ablations on a real multi-task mixture with the same seed and
// data order, evaluate on the held-out split, measure head similarity, write results and figures.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import {
  AdamW,
  Adapter,
  AdapterOptions,
  ByteTokenizer,
  HFConfig,
  memoryStats,
  Model,
  MultiTaskDataset,
  resetPeakMemory,
  setNumThreads,
  TaskEval,
  Trainer,
  trainStep,
} from '../../lib';
import { buildTasks, pretrainingText, rng, SplitSizes, TASKS } from './data';
import { writeFigure } from './figure';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const VERSION: string = (require('../../package.json') as { version: string }).version;

export interface PretrainSettings {
  steps: number;
  batchSize: number;
  sequenceLength: number;
  learningRate: number;
  warmupSteps: number;
  seed: number;
}

export interface Settings {
  name: 'quick' | 'default';
  base: HFConfig;
  pretrain: PretrainSettings;
  sizes: SplitSizes;
  /** Fine-tuning: optimizer steps, rows per step, learning rate (shared by every method). */
  steps: number;
  batchSize: number;
  learningRate: number;
  rank: number;
  heads: number;
  alpha: number;
  dropout: number;
  warmupRatio: number;
}

const tok = new ByteTokenizer();
const TARGETS = ['gate_proj', 'up_proj', 'down_proj'];
const KINDS = ['gate', 'up', 'down'] as const;

const llama = (hidden: number, intermediate: number, layers: number): HFConfig => ({
  architectures: ['LlamaForCausalLM'],
  vocab_size: tok.vocabSize,
  hidden_size: hidden,
  intermediate_size: intermediate,
  num_hidden_layers: layers,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  max_position_embeddings: 256,
  tie_word_embeddings: true,
  bos_token_id: tok.bosTokenId,
  eos_token_id: tok.eosTokenId,
  pad_token_id: tok.padTokenId,
});

/**
 * The published run (Qwen2.5-0.5B, r = 4, alpha = 32, N = 5, dropout 0.1, gate/up/down, cosine with
 * 3% warm-up, lr 2e-4) scaled down to a tiny model and a few hundred steps. The learning rate is
 * larger than the published 2e-4 because the run is short; one value for every method. It has not
 * been tuned yet: `npm run demo -- --tune` chooses it on the validation split (never on test).
 */
export const SETTINGS: Record<'quick' | 'default', Settings> = {
  quick: {
    name: 'quick',
    base: llama(64, 176, 2),
    pretrain: { steps: 40, batchSize: 16, sequenceLength: 64, learningRate: 3e-3, warmupSteps: 4, seed: 0 },
    sizes: { train: 96, validation: 16, test: 16 },
    steps: 20,
    batchSize: 16,
    learningRate: 5e-3,
    rank: 4,
    heads: 5,
    alpha: 32,
    dropout: 0.1,
    warmupRatio: 0.03,
  },
  default: {
    name: 'default',
    base: llama(128, 344, 4),
    pretrain: { steps: 240, batchSize: 16, sequenceLength: 128, learningRate: 2e-3, warmupSteps: 12, seed: 0 },
    sizes: { train: 400, validation: 40, test: 60 },
    steps: 100,
    batchSize: 16,
    learningRate: 5e-3,
    rank: 4,
    heads: 5,
    alpha: 32,
    dropout: 0.1,
    warmupRatio: 0.03,
  },
};

export interface MethodSpec {
  name: string;
  what: string;
  options: Omit<AdapterOptions, 'targetModules' | 'seed'>;
}

/** LoRA gets the rank that makes its trainable parameter count closest to the multi-head methods'. */
export function methods(s: Settings): MethodSpec[] {
  const h = s.base.hidden_size, i = s.base.intermediate_size;
  const multi = 2 * (s.rank * h + s.heads * i * s.rank + s.heads * h) + (s.rank * i + s.heads * h * s.rank + s.heads * i);
  const perRank = 3 * (h + i);
  const loraRank = Math.max(1, Math.round(multi / perRank));
  const common = { alpha: s.alpha, dropout: s.dropout };
  return [
    { name: 'lora', what: `LoRA, rank ${loraRank}`, options: { method: 'lora', rank: loraRank, ...common } },
    { name: 'hydralora', what: `HydraLoRA, r ${s.rank}, N ${s.heads}`, options: { method: 'hydralora', rank: s.rank, heads: s.heads, ...common } },
    { name: 'rlora', what: `R-LoRA, r ${s.rank}, N ${s.heads}`, options: { method: 'rlora', rank: s.rank, heads: s.heads, ...common } },
    {
      name: 'rlora-init-only',
      what: 'R-LoRA init (B unit + offset), one shared dropout mask',
      options: { method: 'rlora', rank: s.rank, heads: s.heads, ...common, multiHeadDropout: false },
    },
    {
      name: 'rlora-dropout-only',
      what: 'R-LoRA multi-head dropout, B zeros, no offset',
      options: { method: 'rlora', rank: s.rank, heads: s.heads, ...common, multiHeadDropout: true, init: { b: 'zeros', offset: false } },
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// The base model: pretrained once, cached by its config and a hash of the data and settings.

export function cacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'rlora');
}

function sha256(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

export interface BaseInfo {
  dir: string;
  cached: boolean;
  seconds: number;
  parameters: number;
  /** Mean cross-entropy per byte on the held-out last chapter, before and after pretraining. */
  heldOutLossBefore: number;
  heldOutLoss: number;
  key: string;
}

async function heldOutLoss(model: Model, bytes: Buffer, seq: number): Promise<number> {
  let sum = 0, n = 0;
  const rows: number[][] = [];
  for (let at = 0; at + seq <= bytes.length && rows.length < 8; at += seq) rows.push(Array.from(bytes.subarray(at, at + seq)));
  const logits = (await model.forward(rows)).data() as Float32Array;
  const V = tok.vocabSize;
  rows.forEach((row, b) => {
    for (let p = 0; p + 1 < seq; p++) {
      const o = (b * seq + p) * V;
      let mx = -Infinity;
      for (let v = 0; v < V; v++) mx = Math.max(mx, logits[o + v]);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(logits[o + v] - mx);
      sum += mx + Math.log(z) - logits[o + row[p + 1]];
      n++;
    }
  });
  return sum / n;
}

/** Loads the cached base model for these settings, or pretrains it on Moby-Dick and caches it. */
export async function baseModel(s: Settings, device: string, log: (line: string) => void): Promise<{ model: Model; info: BaseInfo }> {
  const text = pretrainingText();
  const train = Buffer.from(text.train, 'utf8');
  const heldOut = Buffer.from(text.heldOut, 'utf8');
  const key = sha256(JSON.stringify({ v: 1, config: s.base, pretrain: s.pretrain, data: sha256(train) })).slice(0, 16);
  const dir = path.join(cacheRoot(), `demo-base-${key}`);
  const infoPath = path.join(dir, 'pretrain.json');
  if (fs.existsSync(infoPath) && fs.existsSync(path.join(dir, 'model.safetensors'))) {
    const model = await Model.fromPretrained(dir, { device: device as 'cpu' });
    const info = JSON.parse(fs.readFileSync(infoPath, 'utf8')) as BaseInfo;
    log(`base model: reusing ${dir} (pretrained in ${info.seconds.toFixed(0)} s; held-out loss ${info.heldOutLoss.toFixed(3)} nats/byte)`);
    return { model, info: { ...info, dir, cached: true } };
  }
  const p = s.pretrain;
  const model = Model.fromConfig(s.base, { seed: p.seed, device: device as 'cpu' });
  log(`base model: pretraining ${model.parameterCount().toLocaleString('en-US')} parameters on Moby-Dick (${(train.length / 1e6).toFixed(1)} MB), ${p.steps} steps of ${p.batchSize} x ${p.sequenceLength} bytes...`);
  const before = await heldOutLoss(model, heldOut, p.sequenceLength);
  const opt = new AdamW(model, { lr: p.learningRate, weightDecay: 0.01, maxGradNorm: 1, schedule: 'cosine', warmupSteps: p.warmupSteps, totalSteps: p.steps });
  const random = rng(p.seed + 17);
  const t0 = performance.now();
  let last = t0;
  for (let step = 1; step <= p.steps; step++) {
    const inputIds = Array.from({ length: p.batchSize }, () => {
      const at = Math.floor(random() * (train.length - p.sequenceLength));
      return Array.from(train.subarray(at, at + p.sequenceLength));
    });
    const r = await trainStep(model, [{ inputIds, attentionMask: inputIds.map((row) => row.map(() => 1)), labels: inputIds }], opt);
    if (!r.finite) throw new Error(`pretraining diverged at step ${step} (loss ${r.loss})`);
    if (performance.now() - last > 10000 || step === p.steps) {
      last = performance.now();
      log(`  step ${step}/${p.steps}: loss ${r.loss.toFixed(3)} (${((last - t0) / 1000).toFixed(0)} s)`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const after = await heldOutLoss(model, heldOut, p.sequenceLength);
  const info: BaseInfo = { dir, cached: false, seconds, parameters: model.parameterCount(), heldOutLossBefore: before, heldOutLoss: after, key };
  // write to a temporary folder and rename, so a crash never leaves half a model in the cache
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  model.save(tmp);
  fs.writeFileSync(path.join(tmp, 'pretrain.json'), JSON.stringify({ ...info, settings: p, config: s.base, rlora: VERSION }, null, 2) + '\n');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  log(`base model: ${seconds.toFixed(0)} s; held-out loss ${before.toFixed(3)} -> ${after.toFixed(3)} nats/byte; cached in ${dir}`);
  return { model, info };
}

// ---------------------------------------------------------------------------------------------
// Fine-tuning and evaluation of one method.

export interface MethodResult {
  method: string;
  what: string;
  seed: number;
  trainable: number;
  tasks: Record<string, TaskEval>;
  meanAccuracy: number;
  meanLoss: number;
  seconds: number;
  tokensPerSecond: number;
  /** libtorch's CPU caching allocator (blocks of 1 MiB or more) during fit. */
  peakAllocatedBytes: number;
  /** The process's largest resident set so far. */
  maxRssBytes: number;
  /** Mean off-diagonal cosine similarity of the heads B_i, per module kind (null for one head). */
  headCosine: Record<string, number | null>;
  /** Mean N x N head similarity over the modules of each kind. */
  headSimilarity: Record<string, number[][]>;
  /** Training loss of every step. */
  losses: number[];
}

function meanOffDiagonal(m: number[][]): number | null {
  const n = m.length;
  if (n < 2) return null;
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) s += m[i][j];
  return s / (n * (n - 1));
}

function similarityByKind(adapter: Adapter): Record<string, number[][]> {
  const out: Record<string, number[][]> = {};
  const sims = adapter.headSimilarity();
  for (const kind of KINDS) {
    const mats = Object.entries(sims).filter(([name]) => name.endsWith(`.${kind}_proj`)).map(([, t]) => {
      const n = t.shape[0];
      const v = Array.from(t.data() as ArrayLike<number>, Number);
      return Array.from({ length: n }, (_, i) => v.slice(i * n, (i + 1) * n));
    });
    const n = mats[0].length;
    out[kind] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => mats.reduce((a, m) => a + m[i][j], 0) / mats.length));
  }
  return out;
}

export async function fineTune(
  model: Model,
  spec: MethodSpec,
  s: Settings,
  seed: number,
  data: { train: MultiTaskDataset; evaluate: MultiTaskDataset },
  device: string,
): Promise<MethodResult> {
  const adapter = Adapter.attach(model, { ...spec.options, targetModules: TARGETS, seed });
  try {
    const trainer = new Trainer(model, adapter, {
      learningRate: s.learningRate,
      maxSteps: s.steps,
      batchSize: s.batchSize,
      schedule: 'cosine',
      warmupRatio: s.warmupRatio,
      weightDecay: 0,
      maxGradNorm: 1,
      seed,
      sampling: 'proportional',
      progress: false,
      device,
    });
    resetPeakMemory();
    const t0 = performance.now();
    const history = await trainer.fit(data.train);
    const seconds = (performance.now() - t0) / 1000;
    const peak = memoryStats().peakAllocatedBytes;
    const tokens = history.steps.reduce((a, r) => a + r.tokens, 0);
    const tasks = await trainer.evaluate(data.evaluate);
    const accs = Object.values(tasks).map((t) => t.accuracy);
    const losses = Object.values(tasks).map((t) => t.loss);
    const headSimilarity = similarityByKind(adapter);
    return {
      method: spec.name,
      what: spec.what,
      seed,
      trainable: adapter.trainableParameterCount(),
      tasks,
      meanAccuracy: accs.reduce((a, b) => a + b, 0) / accs.length,
      meanLoss: losses.reduce((a, b) => a + b, 0) / losses.length,
      seconds,
      tokensPerSecond: tokens / seconds,
      peakAllocatedBytes: peak,
      maxRssBytes: process.resourceUsage().maxRSS * 1024,
      headCosine: Object.fromEntries(KINDS.map((k) => [k, meanOffDiagonal(headSimilarity[k])])),
      headSimilarity,
      losses: history.steps.map((r) => r.loss),
    };
  } finally {
    adapter.detach();
  }
}

// ---------------------------------------------------------------------------------------------
// The whole run.

export interface DemoOptions {
  quick?: boolean;
  seeds?: number;
  out?: string;
  device?: string;
  /** Choose the learning rate on the validation split instead of running the comparison. */
  tune?: boolean;
  threads?: number;
  log?: (line: string) => void;
}

export interface Summary {
  method: string;
  what: string;
  trainable: number;
  /** Per task and overall: mean over seeds and sample standard deviation (0 for one seed). */
  accuracy: Record<string, { mean: number; std: number }>;
  loss: Record<string, { mean: number; std: number }>;
  meanAccuracy: { mean: number; std: number };
  seconds: number;
  tokensPerSecond: number;
  peakAllocatedBytes: number;
  maxRssBytes: number;
  headCosine: Record<string, { mean: number; std: number } | null>;
}

export interface Results {
  command: string;
  machine: { cpus: number; cpuModel: string; platform: string; node: string; device: string; threads: number };
  settings: Settings;
  base: BaseInfo;
  data: { train: number; validation: number; test: number; tasks: string[] };
  seeds: number[];
  evaluatedOn: 'test' | 'validation';
  runs: MethodResult[];
  summary: Summary[];
  totalSeconds: number;
}

const stats = (v: number[]): { mean: number; std: number } => {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
  return { mean, std };
};

export function summarize(runs: MethodResult[]): Summary[] {
  const names = [...new Set(runs.map((r) => r.method))];
  return names.map((method) => {
    const rs = runs.filter((r) => r.method === method);
    const tasks = Object.keys(rs[0].tasks);
    return {
      method,
      what: rs[0].what,
      trainable: rs[0].trainable,
      accuracy: Object.fromEntries(tasks.map((t) => [t, stats(rs.map((r) => r.tasks[t].accuracy))])),
      loss: Object.fromEntries(tasks.map((t) => [t, stats(rs.map((r) => r.tasks[t].loss))])),
      meanAccuracy: stats(rs.map((r) => r.meanAccuracy)),
      seconds: stats(rs.map((r) => r.seconds)).mean,
      tokensPerSecond: stats(rs.map((r) => r.tokensPerSecond)).mean,
      peakAllocatedBytes: Math.max(...rs.map((r) => r.peakAllocatedBytes)),
      maxRssBytes: Math.max(...rs.map((r) => r.maxRssBytes)),
      headCosine: Object.fromEntries(KINDS.map((k) => [k, rs[0].headCosine[k] === null ? null : stats(rs.map((r) => r.headCosine[k] as number))])),
    };
  });
}

const pct = (v: { mean: number; std: number }, spread: boolean): string => `${(100 * v.mean).toFixed(1)}${spread ? `±${(100 * v.std).toFixed(1)}` : ''}`;

/** The results as one text table. */
export function table(summary: Summary[], tasks: string[], spread: boolean): string {
  const w = spread ? 11 : 6;
  const head = [
    'method'.padEnd(19),
    'trainable'.padStart(9),
    ...tasks.map((t) => t.slice(0, w).padStart(w)),
    'mean'.padStart(w),
    'time s'.padStart(7),
    'tok/s'.padStart(6),
    'peak MB'.padStart(7),
    'cos gate'.padStart(8),
    'cos up'.padStart(7),
    'cos down'.padStart(8),
  ].join(' ');
  const lines = summary.map((r) =>
    [
      r.method.padEnd(19),
      String(r.trainable).padStart(9),
      ...tasks.map((t) => pct(r.accuracy[t], spread).padStart(w)),
      pct(r.meanAccuracy, spread).padStart(w),
      r.seconds.toFixed(1).padStart(7),
      r.tokensPerSecond.toFixed(0).padStart(6),
      (r.peakAllocatedBytes / 2 ** 20).toFixed(0).padStart(7),
      ...KINDS.map((k, i) => {
        const c = r.headCosine[k];
        return (c === null ? '-' : c.mean.toFixed(3)).padStart(i === 1 ? 7 : 8);
      }),
    ].join(' '),
  );
  return [head, ...lines].join('\n');
}

export async function runDemo(o: DemoOptions = {}): Promise<Results> {
  const log = o.log ?? ((line: string) => console.log(line));
  const s = SETTINGS[o.quick ? 'quick' : 'default'];
  const device = o.device ?? 'cpu';
  const out = path.resolve(o.out ?? 'demo-out');
  const threads = o.threads ?? 1;
  setNumThreads(threads);
  const T0 = performance.now();
  const seeds = Array.from({ length: Math.max(1, o.seeds ?? 1) }, (_, i) => i);
  log(`rlora demo (${s.name}${o.tune ? ', tuning on validation' : ''}): LoRA vs HydraLoRA vs R-LoRA on ${TASKS.length} real tasks, ${device}, ${threads} thread(s)`);

  const { model, info } = await baseModel(s, device, log);
  const split = buildTasks(s.sizes, 0);
  const opts = { tokenizer: tok, maxLength: 160 };
  const train = MultiTaskDataset.fromArray(split.train, opts);
  const evaluate = MultiTaskDataset.fromArray(o.tune ? split.validation : split.test, opts);
  log(`data: ${split.train.length} train, ${split.validation.length} validation, ${split.test.length} test examples; tasks ${TASKS.join(', ')}`);
  const specs = methods(s);

  if (o.tune) {
    const grid = [2e-3, 5e-3, 1e-2];
    const rows: { lr: number; method: string; accuracy: number; loss: number }[] = [];
    for (const lr of grid) {
      for (const spec of specs.slice(0, 3)) {
        const r = await fineTune(model, spec, { ...s, learningRate: lr }, 0, { train, evaluate }, device);
        rows.push({ lr, method: spec.name, accuracy: r.meanAccuracy, loss: r.meanLoss });
        log(`  lr ${lr}: ${spec.name.padEnd(10)} validation accuracy ${(100 * r.meanAccuracy).toFixed(1)}%, loss ${r.meanLoss.toFixed(3)}`);
      }
    }
    const score = (lr: number): number => rows.filter((r) => r.lr === lr).reduce((a, r) => a + r.accuracy, 0);
    const best = grid.reduce((a, b) => (score(b) > score(a) ? b : a));
    log(`best shared learning rate on validation (mean accuracy of lora, hydralora, rlora): ${best}`);
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'tune.json'), JSON.stringify({ settings: s, grid, rows, best }, null, 2) + '\n');
  }

  const runs: MethodResult[] = [];
  if (!o.tune) {
    for (const seed of seeds) {
      for (const spec of specs) {
        const r = await fineTune(model, spec, s, seed, { train, evaluate }, device);
        runs.push(r);
        const accs = TASKS.map((t) => `${t} ${(100 * r.tasks[t].accuracy).toFixed(0)}%`).join(', ');
        log(`  seed ${seed} ${spec.name.padEnd(18)} ${r.seconds.toFixed(1).padStart(5)} s  mean ${(100 * r.meanAccuracy).toFixed(1)}%  (${accs})`);
      }
    }
  }
  const summary = summarize(runs);
  const results: Results = {
    command: `npm run demo --${process.argv.slice(2).length ? ' ' + process.argv.slice(2).join(' ') : ''}`,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', platform: `${os.platform()} ${os.release()}`, node: process.version, device, threads },
    settings: s,
    base: info,
    data: { train: split.train.length, validation: split.validation.length, test: split.test.length, tasks: [...TASKS] },
    seeds,
    evaluatedOn: o.tune ? 'validation' : 'test',
    runs,
    summary,
    totalSeconds: (performance.now() - T0) / 1000,
  };
  if (o.tune) return results;

  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  const figures = await writeFigure(results, out);
  results.totalSeconds = (performance.now() - T0) / 1000;
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n');

  log(`\nHeld-out exact-match accuracy (%) on ${split.test.length / TASKS.length} test examples per task${seeds.length > 1 ? `, mean±std over ${seeds.length} seeds` : ''}; ${s.steps} steps of ${s.batchSize}, lr ${s.learningRate}:`);
  log(table(summary, [...TASKS], seeds.length > 1));
  log('cos: mean cosine similarity between different heads B_i, averaged over the modules of a kind (HydraLoRA heads start identical).');
  log('peak MB: libtorch CPU allocator (blocks >= 1 MiB) during training.');
  const by = (m: string): Summary | undefined => summary.find((r) => r.method === m);
  const r = by('rlora')!, h = by('hydralora')!, l = by('lora')!;
  const avgCos = (x: Summary): number => KINDS.reduce((a, k) => a + (x.headCosine[k]?.mean ?? 0), 0) / KINDS.length;
  log(
    `\nR-LoRA ${r.meanAccuracy.mean > h.meanAccuracy.mean ? 'beats' : r.meanAccuracy.mean === h.meanAccuracy.mean ? 'ties' : 'does not beat'} HydraLoRA here ` +
      `(${pct(r.meanAccuracy, false)}% vs ${pct(h.meanAccuracy, false)}% mean accuracy; LoRA ${pct(l.meanAccuracy, false)}%). ` +
      `Head similarity: R-LoRA ${avgCos(r).toFixed(3)}, HydraLoRA ${avgCos(h).toFixed(3)} (mean over gate/up/down).`,
  );
  log(`wrote ${path.join(out, 'results.json')}, ${figures.map((f) => path.join(out, f)).join(', ')} in ${results.totalSeconds.toFixed(0)} s total`);
  return results;
}
