// The demo's experiment: load the shipped base model (examples/demo/base), fine-tune LoRA,
// HydraLoRA, R-LoRA and the paper's two R-LoRA ablations on a multi-task mixture over shared word
// inputs, several seeds each, evaluate on the held-out test split, compare with statistics, measure
// head similarity, write results and figures.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, AdapterOptions, blasInfo, HFConfig, Model, MultiTaskDataset, resetPeakMemory, memoryStats, setNumThreads, TaskEval, Trainer, ByteTokenizer } from '../../lib';
import { ALL_TASKS, buildTasks, majorityRates, SplitSizes, TaskName, TASKS } from './data';
import { writeFigure } from './figure';
import { BASE_DIR, PretrainReport } from './pretrain';
import { runJobs } from './pool';

const tok = new ByteTokenizer();
/** Adapters on every linear module of the decoder (on the MLP alone they learnt far less here). */
export const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
export const KINDS = TARGETS.map((t) => t.replace(/_proj$/, ''));

export type TunedMethod = 'lora' | 'hydralora' | 'rlora';

export interface Settings {
  name: 'quick' | 'default' | 'cuda';
  sizes: SplitSizes;
  /** Fine-tuning: optimizer steps and rows per step. */
  steps: number;
  batchSize: number;
  /**
   * Learning rate per method, chosen once on the validation split by `npm run demo -- --tune`
   * (examples/demo/tune.json); the R-LoRA ablations use R-LoRA's.
   */
  learningRates: Record<TunedMethod, number>;
  rank: number;
  heads: number;
  alpha: number;
  dropout: number;
  warmupRatio: number;
  seeds: number;
}

/** The learning-rate grid `--tune` tries for each method. */
export const TUNE_GRID = [1e-3, 2e-3, 3e-3, 5e-3];

/**
 * The published run (Qwen2.5-0.5B, r = 4, alpha = 32, N = 5, dropout 0.1, cosine with 3% warm-up)
 * scaled down to a 2.7M-parameter base and a short run. Learning rates: tuned per method.
 */
const SETTINGS_CPU: Record<'quick' | 'default', Settings> = {
  quick: {
    name: 'quick',
    sizes: { train: 400, validation: 40, test: 40 },
    steps: 30,
    batchSize: 32,
    learningRates: { lora: 3e-3, hydralora: 3e-3, rlora: 3e-3 },
    rank: 4,
    heads: 5,
    alpha: 32,
    dropout: 0.1,
    warmupRatio: 0.03,
    seeds: 1,
  },
  default: {
    name: 'default',
    sizes: { train: 2000, validation: 200, test: 200 },
    steps: 300,
    batchSize: 16,
    learningRates: { lora: 2e-3, hydralora: 2e-3, rlora: 2e-3 },
    rank: 4,
    heads: 5,
    alpha: 32,
    dropout: 0.1,
    warmupRatio: 0.03,
    seeds: 3,
  },
};

export const SETTINGS: Record<'quick' | 'default' | 'cuda', Settings> = {
  ...SETTINGS_CPU,
  // --device cuda (not --quick): the default run with 4 times the steps and 5 seeds, in one
  // process (one GPU). Untested: no GPU was lent to this project's CPU machines yet.
  cuda: { ...SETTINGS_CPU.default, name: 'cuda', steps: 1200, seeds: 5 },
};

export interface MethodSpec {
  name: string;
  what: string;
  /** Whose tuned learning rate it uses. */
  lrOf: TunedMethod;
  options: Omit<AdapterOptions, 'targetModules' | 'seed'>;
}

/** Trainable values of an adapter on TARGETS: multi-head (A, N heads, router) per module, or LoRA of rank R. */
function moduleShapes(c: HFConfig): [number, number][] {
  const h = c.hidden_size, i = c.intermediate_size;
  const kv = ((c.num_key_value_heads ?? c.num_attention_heads) * h) / c.num_attention_heads;
  const perLayer: [number, number][] = [[h, h], [h, kv], [h, kv], [h, h], [h, i], [h, i], [i, h]];
  return Array.from({ length: c.num_hidden_layers }, () => perLayer).flat();
}

/**
 * The five methods. LoRA gets the rank that makes its trainable count closest to the multi-head
 * methods'. The ablations are the paper's: R-LoRA without multi-head dropout (one mask shared by
 * the heads, all else R-LoRA) and R-LoRA without multi-head random initialisation (zero heads, no
 * offset, all else R-LoRA).
 */
export function methods(s: Settings, config: HFConfig): MethodSpec[] {
  const shapes = moduleShapes(config);
  const multi = shapes.reduce((a, [i, o]) => a + s.rank * i + s.heads * o * s.rank + s.heads * i, 0);
  const perRank = shapes.reduce((a, [i, o]) => a + i + o, 0);
  const loraRank = Math.max(1, Math.round(multi / perRank));
  const common = { alpha: s.alpha, dropout: s.dropout };
  const rl = { method: 'rlora', rank: s.rank, heads: s.heads, ...common } as const;
  return [
    { name: 'lora', what: `LoRA, rank ${loraRank}`, lrOf: 'lora', options: { method: 'lora', rank: loraRank, ...common } },
    { name: 'hydralora', what: `HydraLoRA, r ${s.rank}, N ${s.heads}`, lrOf: 'hydralora', options: { method: 'hydralora', rank: s.rank, heads: s.heads, ...common } },
    { name: 'rlora', what: `R-LoRA, r ${s.rank}, N ${s.heads}`, lrOf: 'rlora', options: rl },
    { name: 'rlora-shared-dropout', what: 'R-LoRA without multi-head dropout (one mask for all heads)', lrOf: 'rlora', options: { ...rl, multiHeadDropout: false } },
    { name: 'rlora-zero-init', what: 'R-LoRA without multi-head random init (zero heads, no offset)', lrOf: 'rlora', options: { ...rl, init: { b: 'zeros', offset: false } } },
  ];
}

// ---------------------------------------------------------------------------------------------
// The base model: shipped in examples/demo/base, pretrained by `npm run demo:pretrain`.

export interface BaseInfo {
  dir: string;
  parameters: number;
  config: HFConfig;
  /** Held-out loss per source (nats per byte) and their mean, from the base's pretrain.json. */
  heldOut: Record<string, number>;
  heldOutMean: number;
  pretrainMinutes: number;
  dataSha256: string;
}

export function baseInfo(dir = BASE_DIR): BaseInfo {
  const reportPath = path.join(dir, 'pretrain.json');
  if (!fs.existsSync(path.join(dir, 'model.safetensors')) || !fs.existsSync(reportPath)) {
    throw new Error(`the demo's base model is missing from ${dir} (model.safetensors and pretrain.json); it ships with the repository, or \`npm run demo:pretrain\` makes it again`);
  }
  const p = JSON.parse(fs.readFileSync(reportPath, 'utf8')) as PretrainReport;
  return { dir, parameters: p.parameters, config: p.recipe.config, heldOut: p.heldOut, heldOutMean: p.heldOutMean, pretrainMinutes: p.seconds / 60, dataSha256: p.data.sha256 };
}

// ---------------------------------------------------------------------------------------------
// Fine-tuning and evaluation of one method: one job, run in a worker process (pool.ts).

export interface Job {
  settings: Settings;
  spec: MethodSpec;
  seed: number;
  learningRate: number;
  split: 'test' | 'validation';
  tasks: TaskName[];
  device: string;
  threads: number;
  baseDir: string;
}

export interface MethodResult {
  method: string;
  what: string;
  seed: number;
  learningRate: number;
  trainable: number;
  tasks: Record<string, TaskEval>;
  meanAccuracy: number;
  meanLoss: number;
  /** Training alone, and training plus evaluation. */
  seconds: number;
  totalSeconds: number;
  tokensPerSecond: number;
  /** libtorch's CPU caching allocator (blocks of 1 MiB or more) during fit. */
  peakAllocatedBytes: number;
  /** Mean off-diagonal cosine similarity of the heads B_i, per module kind (null for one head). */
  headCosine: Record<string, number | null>;
  /** Mean N x N head similarity over the modules of each kind. */
  headSimilarity: Record<string, number[][]>;
  /** Training loss of every step. */
  losses: number[];
  /** The BLAS kernels the job ran on (blasInfo()). */
  blas: string;
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

const loaded = new Map<string, Model>();
const datasets = new Map<string, { train: MultiTaskDataset; evaluate: MultiTaskDataset }>();

/** Runs one job in this process (the base model and the data are loaded once per process). */
export async function runJob(job: Job): Promise<MethodResult> {
  const T0 = performance.now();
  setNumThreads(job.threads);
  const key = `${job.baseDir}\0${job.device}`;
  let model = loaded.get(key);
  if (!model) loaded.set(key, (model = await Model.fromPretrained(job.baseDir, { device: job.device as 'cpu' })));
  const dkey = JSON.stringify([job.settings.sizes, job.split, job.tasks]);
  let data = datasets.get(dkey);
  if (!data) {
    const split = buildTasks(job.settings.sizes, 0, job.tasks);
    const opts = { tokenizer: tok, maxLength: 64 };
    datasets.set(dkey, (data = { train: MultiTaskDataset.fromArray(split.train, opts), evaluate: MultiTaskDataset.fromArray(split[job.split], opts) }));
  }
  const s = job.settings;
  const adapter = Adapter.attach(model, { ...job.spec.options, targetModules: TARGETS, seed: job.seed });
  try {
    const trainer = new Trainer(model, adapter, {
      learningRate: job.learningRate,
      maxSteps: s.steps,
      batchSize: s.batchSize,
      schedule: 'cosine',
      warmupRatio: s.warmupRatio,
      weightDecay: 0,
      maxGradNorm: 1,
      seed: job.seed,
      sampling: 'proportional',
      groupByLength: true,
      // greedy generation stops one token past the answer: an answer that does not end there is
      // wrong anyway, so accuracy is what any longer limit gives, for less generation
      evalBatchSize: 200,
      evalExtraTokens: 1,
      progress: false,
      device: job.device,
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
      method: job.spec.name,
      what: job.spec.what,
      seed: job.seed,
      learningRate: job.learningRate,
      trainable: adapter.trainableParameterCount(),
      tasks,
      meanAccuracy: accs.reduce((a, b) => a + b, 0) / accs.length,
      meanLoss: losses.reduce((a, b) => a + b, 0) / losses.length,
      seconds,
      totalSeconds: (performance.now() - T0) / 1000,
      tokensPerSecond: tokens / seconds,
      peakAllocatedBytes: peak,
      headCosine: Object.fromEntries(KINDS.map((k) => [k, meanOffDiagonal(headSimilarity[k])])),
      headSimilarity,
      losses: history.steps.map((r) => r.loss),
      blas: blasInfo(),
    };
  } finally {
    adapter.detach();
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics over seeds.

export interface Stat {
  mean: number;
  /** Sample standard deviation (0 for one value). */
  std: number;
  n: number;
}

export function stats(v: number[]): Stat {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
  return { mean, std, n: v.length };
}

/** Two-sided 95% quantile of Student's t with df degrees of freedom (df 1..30; 1.96 beyond). */
export function t95(df: number): number {
  const T = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];
  if (!(df >= 1)) return NaN;
  return df <= 30 ? T[Math.floor(df) - 1] : 1.96;
}

export interface PairedDifference {
  a: string;
  b: string;
  /** a - b of mean test accuracy, per seed (same seed = same data order and a paired start). */
  perSeed: number[];
  mean: number;
  std: number;
  /** 95% confidence interval of the mean difference (Student's t over seeds); null for one seed. */
  ci95: [number, number] | null;
  verdict: 'wins' | 'loses' | 'within noise' | 'one seed: no interval';
}

export function pairedDifference(runs: MethodResult[], a: string, b: string): PairedDifference {
  const seeds = [...new Set(runs.map((r) => r.seed))].sort((x, y) => x - y);
  const perSeed = seeds.flatMap((s) => {
    const ra = runs.find((r) => r.method === a && r.seed === s), rb = runs.find((r) => r.method === b && r.seed === s);
    return ra && rb ? [ra.meanAccuracy - rb.meanAccuracy] : [];
  });
  const st = stats(perSeed);
  const half = perSeed.length > 1 ? (t95(perSeed.length - 1) * st.std) / Math.sqrt(perSeed.length) : NaN;
  const ci95: [number, number] | null = perSeed.length > 1 ? [st.mean - half, st.mean + half] : null;
  const verdict = !ci95 ? 'one seed: no interval' : ci95[0] > 0 ? 'wins' : ci95[1] < 0 ? 'loses' : 'within noise';
  return { a, b, perSeed, mean: st.mean, std: st.std, ci95, verdict };
}

export interface Summary {
  method: string;
  what: string;
  learningRate: number;
  trainable: number;
  /** Per task and overall, over seeds. */
  accuracy: Record<string, Stat>;
  loss: Record<string, Stat>;
  meanAccuracy: Stat;
  seconds: number;
  tokensPerSecond: number;
  peakAllocatedBytes: number;
  headCosine: Record<string, Stat | null>;
  /** Mean off-diagonal head cosine over every kind of module, over seeds (null for one head). */
  meanHeadCosine: Stat | null;
}

export function summarize(runs: MethodResult[]): Summary[] {
  const names = [...new Set(runs.map((r) => r.method))];
  return names.map((method) => {
    const rs = runs.filter((r) => r.method === method);
    const tasks = Object.keys(rs[0].tasks);
    const allCos = (r: MethodResult): number | null => {
      const v = KINDS.map((k) => r.headCosine[k]);
      return v.every((x) => x !== null) ? (v as number[]).reduce((a, b) => a + b, 0) / v.length : null;
    };
    return {
      method,
      what: rs[0].what,
      learningRate: rs[0].learningRate,
      trainable: rs[0].trainable,
      accuracy: Object.fromEntries(tasks.map((t) => [t, stats(rs.map((r) => r.tasks[t].accuracy))])),
      loss: Object.fromEntries(tasks.map((t) => [t, stats(rs.map((r) => r.tasks[t].loss))])),
      meanAccuracy: stats(rs.map((r) => r.meanAccuracy)),
      seconds: stats(rs.map((r) => r.seconds)).mean,
      tokensPerSecond: stats(rs.map((r) => r.tokensPerSecond)).mean,
      peakAllocatedBytes: Math.max(...rs.map((r) => r.peakAllocatedBytes)),
      headCosine: Object.fromEntries(KINDS.map((k) => [k, rs[0].headCosine[k] === null ? null : stats(rs.map((r) => r.headCosine[k] as number))])),
      meanHeadCosine: allCos(rs[0]) === null ? null : stats(rs.map((r) => allCos(r) as number)),
    };
  });
}

const pct = (v: Stat, spread: boolean): string => `${(100 * v.mean).toFixed(1)}${spread ? `±${(100 * v.std).toFixed(1)}` : ''}`;

/** The results as one text table. */
export function table(summary: Summary[], tasks: string[], majority: Record<string, { rate: number }>, spread: boolean): string {
  const w = spread ? 10 : 6;
  const head = ['method'.padEnd(21), 'lr'.padStart(6), 'trainable'.padStart(9), ...tasks.map((t) => t.slice(0, w).padStart(w)), 'mean'.padStart(w), 'head cos'.padStart(spread ? 12 : 8), 'train s'.padStart(7), 'tok/s'.padStart(6)].join(' ');
  const majorityMean = tasks.reduce((a, t) => a + majority[t].rate, 0) / tasks.length;
  const lines = summary.map((r) =>
    [
      r.method.padEnd(21),
      String(r.learningRate).padStart(6),
      String(r.trainable).padStart(9),
      ...tasks.map((t) => pct(r.accuracy[t], spread).padStart(w)),
      pct(r.meanAccuracy, spread).padStart(w),
      (r.meanHeadCosine === null ? '-' : `${r.meanHeadCosine.mean.toFixed(3)}${spread ? `±${r.meanHeadCosine.std.toFixed(3)}` : ''}`).padStart(spread ? 12 : 8),
      r.seconds.toFixed(1).padStart(7),
      r.tokensPerSecond.toFixed(0).padStart(6),
    ].join(' '),
  );
  const maj = ['majority answer'.padEnd(21), ''.padStart(6), ''.padStart(9), ...tasks.map((t) => (100 * majority[t].rate).toFixed(1).padStart(w)), (100 * majorityMean).toFixed(1).padStart(w)].join(' ');
  return [head, ...lines, maj].join('\n');
}

/** The closing sentences, computed from the numbers. */
export function conclusion(summary: Summary[], diff: PairedDifference, majorityMean: number): string {
  const by = (m: string): Summary => summary.find((r) => r.method === m)!;
  const r = by('rlora'), h = by('hydralora'), l = by('lora');
  const pts = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
  const lines: string[] = [];
  lines.push(
    `Mean test accuracy over ${r.meanAccuracy.n} seed(s): LoRA ${pct(l.meanAccuracy, false)}%, HydraLoRA ${pct(h.meanAccuracy, false)}%, R-LoRA ${pct(r.meanAccuracy, false)}% ` +
      `(always answering the majority answer: ${(100 * majorityMean).toFixed(1)}%).`,
  );
  if (diff.ci95) {
    const verdict = diff.verdict === 'wins' ? 'R-LoRA beats HydraLoRA here' : diff.verdict === 'loses' ? 'R-LoRA does worse than HydraLoRA here' : 'the two are within noise here';
    lines.push(`R-LoRA − HydraLoRA: ${pts(diff.mean)} points (95% interval ${pts(diff.ci95[0])} to ${pts(diff.ci95[1])} over ${diff.perSeed.length} paired seeds): ${verdict}.`);
  } else {
    lines.push(`R-LoRA − HydraLoRA: ${pts(diff.mean)} points on one seed; run several seeds for an interval.`);
  }
  if (r.meanHeadCosine && h.meanHeadCosine) {
    lines.push(
      `Head similarity (mean off-diagonal cosine of the B_i): R-LoRA ${r.meanHeadCosine.mean.toFixed(3)}, HydraLoRA ${h.meanHeadCosine.mean.toFixed(3)}: ` +
        `R-LoRA's heads are ${r.meanHeadCosine.mean < h.meanHeadCosine.mean ? 'less' : 'not less'} alike.`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// The whole run.

export interface DemoOptions {
  quick?: boolean;
  seeds?: number;
  out?: string;
  device?: string;
  /** Choose each method's learning rate on the validation split instead of running the comparison. */
  tune?: boolean;
  threads?: number;
  /** Worker processes (default: one per core, at most 2 on CPU). */
  workers?: number;
  baseDir?: string;
  log?: (line: string) => void;
}

export interface Results {
  command: string;
  machine: { cpus: number; cpuModel: string; platform: string; node: string; device: string; threads: number; workers: number; blas: string };
  settings: Settings;
  base: BaseInfo;
  data: { train: number; validation: number; test: number; tasks: string[]; majority: Record<string, { answer: string; rate: number }>; majorityMean: number };
  seeds: number[];
  evaluatedOn: 'test' | 'validation';
  runs: MethodResult[];
  summary: Summary[];
  rloraMinusHydralora: PairedDifference;
  conclusion: string;
  totalSeconds: number;
}

export interface TuneResults {
  settings: Settings;
  grid: number[];
  /** Every candidate task (ALL_TASKS) is trained and evaluated on validation while tuning. */
  tasks: string[];
  majority: Record<string, { answer: string; rate: number }>;
  rows: { method: string; lr: number; accuracy: number; loss: number; tasks: Record<string, TaskEval> }[];
  best: Record<TunedMethod, number>;
  /** Per candidate task: plain LoRA's validation accuracy at its best rate minus the majority rate. */
  loraMargin: Record<string, number>;
  machine: Results['machine'];
  totalSeconds: number;
}

export async function runDemo(o: DemoOptions = {}): Promise<Results | TuneResults> {
  const log = o.log ?? ((line: string) => console.log(line));
  const T0 = performance.now();
  const device = o.device ?? 'cpu';
  const s = { ...SETTINGS[o.quick ? 'quick' : device.startsWith('cuda') ? 'cuda' : 'default'] };
  if (o.seeds !== undefined) s.seeds = o.seeds;
  const out = path.resolve(o.out ?? 'demo-out');
  const threads = o.threads ?? 1;
  const workers = o.workers ?? (device.startsWith('cuda') ? 1 : Math.max(1, Math.min(2, os.cpus().length)));
  const base = baseInfo(o.baseDir);
  const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', platform: `${os.platform()} ${os.release()}`, node: process.version, device, threads, workers, blas: '' };
  const tasks = o.tune ? ALL_TASKS : TASKS;
  const split = buildTasks(s.sizes, 0, tasks);
  const majority = majorityRates(o.tune ? split.validation : split.test);
  const majorityMean = tasks.reduce((a, t) => a + majority[t].rate, 0) / tasks.length;
  const specs = methods(s, base.config);
  log(`rlora demo (${s.name}${o.tune ? ', tuning on validation' : ''}): ${specs.map((m) => m.name).join(', ')} on ${tasks.length} tasks; ${device}, ${workers} worker process(es) x ${threads} thread(s)`);
  log(`base model: ${base.parameters.toLocaleString('en-US')} parameters from ${path.relative(process.cwd(), base.dir) || base.dir} (held-out loss ${base.heldOutMean.toFixed(3)} nats/byte)`);
  log(`data: ${split.train.length} train, ${split.validation.length} validation, ${split.test.length} test examples; tasks ${tasks.join(', ')}; majority answer rates ${tasks.map((t) => `${t} ${(100 * majority[t].rate).toFixed(0)}%`).join(', ')}`);
  const job = (spec: MethodSpec, seed: number, learningRate: number, which: 'test' | 'validation'): Job => ({ settings: s, spec, seed, learningRate, split: which, tasks, device, threads, baseDir: base.dir });

  if (o.tune) {
    const tuned = specs.filter((m) => m.name === m.lrOf);
    const jobs = TUNE_GRID.flatMap((lr) => tuned.map((spec) => job(spec, 0, lr, 'validation')));
    const results = await runJobs(jobs, workers, (r) => log(`  lr ${String(r.learningRate).padEnd(6)} ${r.method.padEnd(10)} validation accuracy ${(100 * r.meanAccuracy).toFixed(1)}%, loss ${r.meanLoss.toFixed(3)} (${r.totalSeconds.toFixed(0)} s)`));
    machine.blas = results[0].blas;
    const rows = results.map((r) => ({ method: r.method, lr: r.learningRate, accuracy: r.meanAccuracy, loss: r.meanLoss, tasks: r.tasks }));
    const best = Object.fromEntries(
      tuned.map((m) => {
        const mine = rows.filter((r) => r.method === m.name);
        return [m.name, mine.reduce((a, b) => (b.accuracy > a.accuracy || (b.accuracy === a.accuracy && b.loss < a.loss) ? b : a)).lr];
      }),
    ) as Record<TunedMethod, number>;
    log(`best learning rate on validation: ${Object.entries(best).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const loraBest = rows.find((r) => r.method === 'lora' && r.lr === best.lora)!;
    const loraMargin = Object.fromEntries(tasks.map((t) => [t, loraBest.tasks[t].accuracy - majority[t].rate]));
    log(`plain LoRA at lr ${best.lora} against each task's majority rate (validation): ${tasks.map((t) => `${t} ${loraMargin[t] >= 0 ? '+' : ''}${(100 * loraMargin[t]).toFixed(1)}`).join(', ')} points`);
    const tr: TuneResults = { settings: s, grid: TUNE_GRID, tasks, majority, rows, best, loraMargin, machine, totalSeconds: (performance.now() - T0) / 1000 };
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'tune.json'), JSON.stringify(tr, null, 2) + '\n');
    log(`wrote ${path.join(out, 'tune.json')}`);
    return tr;
  }

  const seeds = Array.from({ length: Math.max(1, s.seeds) }, (_, i) => i);
  const jobs = seeds.flatMap((seed) => specs.map((spec) => job(spec, seed, s.learningRates[spec.lrOf], 'test')));
  const runs = await runJobs(jobs, workers, (r) =>
    log(`  seed ${r.seed} ${r.method.padEnd(21)} ${r.totalSeconds.toFixed(0).padStart(3)} s  mean ${(100 * r.meanAccuracy).toFixed(1)}%  (${TASKS.map((t) => `${t} ${(100 * r.tasks[t].accuracy).toFixed(0)}%`).join(', ')})`),
  );
  machine.blas = runs[0].blas;
  const summary = summarize(runs);
  const diff = pairedDifference(runs, 'rlora', 'hydralora');
  const results: Results = {
    command: `npm run demo --${process.argv.slice(2).length ? ' ' + process.argv.slice(2).join(' ') : ''}`,
    machine,
    settings: s,
    base,
    data: { train: split.train.length, validation: split.validation.length, test: split.test.length, tasks: [...TASKS], majority, majorityMean },
    seeds,
    evaluatedOn: 'test',
    runs,
    summary,
    rloraMinusHydralora: diff,
    conclusion: conclusion(summary, diff, majorityMean),
    totalSeconds: 0,
  };
  fs.mkdirSync(out, { recursive: true });
  const figures = await writeFigure(results, out);
  results.totalSeconds = (performance.now() - T0) / 1000;
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n');

  log(`\nExact-match accuracy (%) on ${s.sizes.test} held-out test words per task${seeds.length > 1 ? `, mean±std over ${seeds.length} seeds` : ''}; ${s.steps} steps of ${s.batchSize}:`);
  log(table(summary, [...TASKS], majority, seeds.length > 1));
  log('head cos: mean cosine similarity between different heads B_i, over every adapted module (HydraLoRA heads start identical).');
  log(`\n${results.conclusion}`);
  log(`BLAS: ${machine.blas}${runs.some((r) => r.blas !== machine.blas) ? ' (not in every job!)' : ''}. Runs on the same kernels give the same numbers.`);
  log(`wrote ${path.join(out, 'results.json')}, ${figures.map((f) => path.join(out, f)).join(', ')}; ${results.totalSeconds.toFixed(0)} s in all`);
  return results;
}
