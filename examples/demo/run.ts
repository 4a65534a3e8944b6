// The demo's experiment, a sweep definition run by rlora's sweep (lib/sweep/): load the shipped
// base model (examples/demo/base), fine-tune LoRA, HydraLoRA, R-LoRA and the paper's two R-LoRA
// ablations on a multi-task mixture over shared word inputs, several seeds each, evaluate on the
// held-out test split, compare with statistics, measure head similarity, write results and
// figures. `--tune` picks the learning rates on validation with the same sweep; the R-LoRA ladder
// (`--ladder`) is in ladder.ts.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { AdapterOptions, HFConfig, PairedDifference, Stat, sweep, SweepJobResult, SweepOptions, SweepResult, TaskEval, VariantSummary } from '../../lib';
import { ALL_TASKS, buildTasks, DemoData, majorityRates, SplitSizes, TASKS } from './data';
import { BASE_DIR, PretrainReport } from './pretrain';

/** Adapters on every linear module of the decoder (on the MLP alone they learnt far less here). */
export const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

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

/** The learning-rate grid `--tune` tries for each method (5e-3 was worst for every method in an earlier one-seed run). */
export const TUNE_GRID = [1e-3, 1.5e-3, 2e-3, 3e-3];

/** Where `--tune` recorded each method's learning rate, picked on validation by the mean over 3 seeds. */
export const TUNE_FILE = path.join(__dirname, 'tune.json');
const TUNED = (JSON.parse(fs.readFileSync(TUNE_FILE, 'utf8')) as Pick<TuneResults, 'best'>).best;

/**
 * The published run (Qwen2.5-0.5B, r = 4, alpha = 32, N = 5, dropout 0.1, cosine with 3% warm-up)
 * scaled down to a 2.7M-parameter base and a short run. Learning rates: tuned per method (the
 * default run: those of tune.json).
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
    learningRates: { ...TUNED },
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
// The demo as a sweep definition

/** One job's result (lib/sweep/types.ts). */
export type MethodResult = SweepJobResult;
export type Summary = VariantSummary;

export interface DemoSweepOptions {
  settings: Settings;
  split: DemoData;
  /** Evaluate the picks on the test split (else on validation). */
  withTest: boolean;
  seeds: number[];
  device: string;
  threads: number;
  workers: number;
  baseDir: string;
  outputDir: string;
}

/**
 * What every demo sweep shares: the base, the byte tokenizer, the data (64 tokens at most), every
 * linear module adapted, and the trainer's settings (cosine schedule, no weight decay, gradient
 * norm clipped to 1, tasks sampled in proportion, batches grouped by length).
 */
export function demoSweep(o: DemoSweepOptions): Omit<SweepOptions, 'variants'> {
  const s = o.settings;
  return {
    model: o.baseDir,
    tokenizer: 'byte',
    device: o.device,
    data: { train: o.split.train, validation: o.split.validation, ...(o.withTest ? { test: o.split.test } : {}), maxLength: 64 },
    adapter: { targetModules: TARGETS },
    seeds: o.seeds,
    steps: s.steps,
    batchSize: s.batchSize,
    trainer: {
      schedule: 'cosine',
      warmupRatio: s.warmupRatio,
      weightDecay: 0,
      maxGradNorm: 1,
      sampling: 'proportional',
      groupByLength: true,
      // greedy generation stops one token past the answer: an answer that does not end there is
      // wrong anyway, so accuracy is what any longer limit gives, for less generation
      evalBatchSize: 200,
      evalExtraTokens: 1,
    },
    workers: o.workers,
    threads: o.threads,
    outputDir: o.outputDir,
  };
}

// ---------------------------------------------------------------------------------------------
// The table and the closing sentences

const pct = (v: Stat, spread: boolean): string => `${(100 * v.mean).toFixed(1)}${spread ? `±${(100 * v.std).toFixed(1)}` : ''}`;

/** The results as one text table. */
export function table(summary: Summary[], tasks: string[], majority: Record<string, { rate: number }>, spread: boolean): string {
  const w = spread ? 10 : 6;
  const head = ['method'.padEnd(21), 'lr'.padStart(6), 'trainable'.padStart(9), ...tasks.map((t) => t.slice(0, w).padStart(w)), 'mean'.padStart(w), 'head cos'.padStart(spread ? 12 : 8), 'train s'.padStart(7), 'tok/s'.padStart(6)].join(' ');
  const majorityMean = tasks.reduce((a, t) => a + majority[t].rate, 0) / tasks.length;
  const lines = summary.map((r) =>
    [
      r.variant.padEnd(21),
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
  const by = (m: string): Summary => summary.find((r) => r.variant === m)!;
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
  /** The R-LoRA ladder (ladder.ts) instead of the comparison. */
  ladder?: boolean;
  /** The ladder: this many times the steps, at the rates picked by the ladder at 1 (default 1). */
  budget?: number;
  /** Other steps, split sizes (examples per task), or the ladder's learning-rate grid, for trying things out. */
  steps?: number;
  sizes?: SplitSizes;
  rates?: number[];
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
  /** The sweep's own results (sweep.json, table.md) in the same folder. */
  sweep: string;
  totalSeconds: number;
}

export interface TuneResults {
  settings: Settings;
  grid: number[];
  /** Every candidate task (ALL_TASKS) is trained and evaluated on validation while tuning. */
  tasks: string[];
  majority: Record<string, { answer: string; rate: number }>;
  /** The seeds every (method, rate) was trained with; a rate is picked by the mean over them. */
  seeds: number[];
  /** How `best` was picked. */
  pickedBy: string;
  /** Per method and rate: validation accuracy and loss, mean and std over the seeds, each seed's accuracy, and the first seed's per-task scores. */
  rows: { method: string; lr: number; accuracy: number; accuracyStd: number; perSeed: number[]; loss: number; tasks: Record<string, TaskEval> }[];
  best: Record<TunedMethod, number>;
  /** Per candidate task: plain LoRA's validation accuracy at its best rate minus the majority rate. */
  loraMargin: Record<string, number>;
  machine: Results['machine'];
  totalSeconds: number;
}

/** The settings of a run: quick, default or cuda, with --seeds, --steps and --sizes on top. */
export function settingsOf(o: DemoOptions): Settings {
  const device = o.device ?? 'cpu';
  const s = { ...SETTINGS[o.quick ? 'quick' : device.startsWith('cuda') ? 'cuda' : 'default'] };
  if (o.seeds !== undefined) s.seeds = o.seeds;
  if (o.steps !== undefined) s.steps = o.steps;
  if (o.sizes !== undefined) s.sizes = o.sizes;
  return s;
}

/** Workers and threads of a run: 1 thread each, one worker per core (at most 2) on the CPU, 1 on CUDA. */
export function workersOf(o: DemoOptions): { device: string; threads: number; workers: number } {
  const device = o.device ?? 'cpu';
  return { device, threads: o.threads ?? 1, workers: o.workers ?? (device.startsWith('cuda') ? 1 : Math.max(1, Math.min(2, os.cpus().length))) };
}

export async function runDemo(o: DemoOptions = {}): Promise<Results | TuneResults> {
  const log = o.log ?? ((line: string) => console.log(line));
  const T0 = performance.now();
  const s = settingsOf(o);
  const out = path.resolve(o.out ?? 'demo-out');
  const { device, threads, workers } = workersOf(o);
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
  const common = { settings: s, split, device, threads, workers, baseDir: base.dir };

  if (o.tune) {
    const tuned = specs.filter((m) => m.name === m.lrOf);
    const seeds = Array.from({ length: s.seeds }, (_, i) => i);
    const res = await sweep({
      ...demoSweep({ ...common, withTest: false, seeds, outputDir: path.join(out, 'tune') }),
      variants: tuned.map((m) => ({ name: m.name, what: m.what, adapter: m.options, learningRates: TUNE_GRID })),
      title: `rlora demo (${s.name}, tuning): ${tasks.length} tasks`,
      log: null,
      onProgress: ({ result: r }) => log(`  lr ${String(r.learningRate).padEnd(6)} ${r.variant.padEnd(10)} validation accuracy ${(100 * r.meanAccuracy).toFixed(1)}%, loss ${r.meanLoss.toFixed(3)} (${r.totalSeconds.toFixed(0)} s)`),
    });
    machine.blas = res.machine.blas;
    const rows = res.validation.map((r) => ({ method: r.variant, lr: r.learningRate, accuracy: r.accuracy.mean, accuracyStd: r.accuracy.std, perSeed: r.runs.map((j) => j.meanAccuracy), loss: r.loss.mean, tasks: r.runs[0].tasks }));
    const pickedBy = `each method's rate with the best mean validation accuracy over seeds ${seeds.join(', ')} (ties: lower loss), by rlora's sweep`;
    const best = Object.fromEntries(tuned.map((m) => [m.name, res.picks[m.name].learningRate])) as Record<TunedMethod, number>;
    log(`best learning rate on validation: ${Object.entries(best).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const loraBest = res.runs.find((r) => r.variant === 'lora')!;
    const loraMargin = Object.fromEntries(tasks.map((t) => [t, loraBest.tasks[t].accuracy - majority[t].rate]));
    log(`plain LoRA at lr ${best.lora} against each task's majority rate (validation): ${tasks.map((t) => `${t} ${loraMargin[t] >= 0 ? '+' : ''}${(100 * loraMargin[t]).toFixed(1)}`).join(', ')} points`);
    const tr: TuneResults = { settings: s, grid: TUNE_GRID, tasks, majority, seeds, pickedBy, rows, best, loraMargin, machine, totalSeconds: (performance.now() - T0) / 1000 };
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'tune.json'), JSON.stringify(tr, null, 2) + '\n');
    log(`wrote ${path.join(out, 'tune.json')}`);
    return tr;
  }

  const seeds = Array.from({ length: Math.max(1, s.seeds) }, (_, i) => i);
  const res: SweepResult = await sweep({
    ...demoSweep({ ...common, withTest: true, seeds, outputDir: out }),
    variants: specs.map((m) => ({ name: m.name, what: m.what, adapter: m.options, learningRates: [s.learningRates[m.lrOf]] })),
    compare: [['rlora', 'hydralora']],
    title: `rlora demo (${s.name}): ${tasks.length} tasks`,
    log: null,
    onProgress: ({ result: r }) =>
      log(`  seed ${r.seed} ${r.variant.padEnd(21)} ${r.totalSeconds.toFixed(0).padStart(3)} s  mean ${(100 * r.meanAccuracy).toFixed(1)}%  (${TASKS.map((t) => `${t} ${(100 * r.tasks[t].accuracy).toFixed(0)}%`).join(', ')})`),
  });
  const runs = res.runs;
  if (res.jobs.reused) log(`  (${res.jobs.reused} of ${res.jobs.total} jobs finished in an earlier run: their results are reused from ${path.join(out, 'jobs')})`);
  machine.blas = res.machine.blas;
  const summary = res.summary;
  const diff = res.comparisons[0];
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
    sweep: path.join(out, 'sweep.json'),
    totalSeconds: 0,
  };
  const figures = res.files.filter((f) => f.startsWith('figure.'));
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
