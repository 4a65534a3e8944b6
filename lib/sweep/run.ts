// sweep(options): the job grid (variants x learning rates x seeds), run in worker processes with a
// result file per job (a sweep run again skips its finished jobs), the learning rate of each
// variant picked on validation by the mean over seeds, the picks trained again and evaluated on
// test, and the results: sweep.json, table.md and the figure.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import type { Example } from '../data';
import { MultiHeadLoraLinear } from '../layer';
import { Tensor } from '../tensor';
import type { TaskEval } from '../trainer';
import { openRegularFile, writeFileAtomically } from '../util/files';
import { readJsonFile } from '../util/json';
import { ResolvedData, ResolvedSweep, ResolvedVariant, resolveSweep, SweepConfigError, SweepOptions } from './config';
import type { FileRef, Job, JobResult, TrainingNumbers } from './types';
import { ADAPTER_CONFIG_FILE } from '../adapter/files';
import { replaceFolder } from '../replace-folder';
import { PoolTask, runPool, TaskQueue } from './pool';
import { markdownTable, summarize, VariantSummary, writeFigure } from './report';
import { PairedDifference, pairedDifference, Stat, stats } from './stats';

/** One learning rate of one variant on validation: its seeds' runs and their means. */
export interface ValidationRow {
  variant: string;
  learningRate: number;
  /** Mean accuracy over the tasks, and mean loss, each over the seeds. */
  accuracy: Stat;
  loss: Stat;
  trainLoss: Stat;
  /** Whether this is the variant's pick. */
  picked: boolean;
  /** Each seed's run: means over the tasks and per task. */
  runs: { seed: number; meanAccuracy: number; meanLoss: number; trainLoss: number; tasks: Record<string, TaskEval> }[];
}

export interface SweepPick {
  learningRate: number;
  /** Picked on validation (false: the variant had one rate). */
  tuned: boolean;
}

export interface SweepResult {
  /** The sweep.json definition it was read from (absent for options given in code). */
  config?: string;
  outputDir: string;
  /** The definition as run (paths absolute; records given in code were written to outputDir/data/). */
  definition: Record<string, unknown>;
  machine: { cpus: number; cpuModel: string; platform: string; node: string; device: string; threads: number; workers: number; blas: string };
  /** Jobs of the sweep, those run now and those whose results were already there. */
  jobs: { total: number; run: number; reused: number };
  /** Every learning rate of every tuned variant on validation. */
  validation: ValidationRow[];
  picks: Record<string, SweepPick>;
  /**
   * Each variant's adapter to use: the seed that scored best (pickBy) at the picked rate, on
   * validation where the variant was tuned, else on the split its runs were evaluated on; copied
   * to outputDir/adapters/<variant>/ (`dir`).
   */
  adapters: Record<string, { dir: string; learningRate: number; seed: number; chosenOn: 'validation' | 'test' }>;
  /** Where `runs` were evaluated: test when the sweep has test data, else validation. */
  evaluatedOn: 'test' | 'validation';
  /** Each variant at its pick, every seed: seed by seed, variants in the sweep's order. */
  runs: JobResult[];
  summary: VariantSummary[];
  /** The `compare` pairs on `evaluatedOn`: a - b of mean accuracy per seed, with the 95% interval. */
  comparisons: PairedDifference[];
  /** table.md's text. */
  table: string;
  /** Files written into outputDir. */
  files: string[];
  totalSeconds: number;
}

/** The file name of a job's result under outputDir. */
export function jobFile(outputDir: string, variant: string, split: string, learningRate: number, seed: number): string {
  return path.join(outputDir, 'jobs', variant, `${split}-lr${learningRate}-seed${seed}.json`);
}

/** Where the adapter a job trained is saved: one folder per training (variant, rate, seed), whichever split evaluated it. */
export function adapterFolder(outputDir: string, variant: string, learningRate: number, seed: number): string {
  return path.join(outputDir, 'jobs', variant, 'adapters', `lr${learningRate}-seed${seed}`);
}

/** What a job file holds. */
interface JobFile {
  job: Job;
  result: JobResult;
}

/** `v` with object keys sorted at every level, as JSON (two jobs are the same job when these are equal). */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_, x) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]])) : x));
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/**
 * The SHA-256 of a regular file, read in pieces up to the size it had when opened: /dev/zero or a
 * FIFO (not regular) are refused unread; they were read without end (7.5 GB in 60 s).
 */
function hashFile(file: string): string {
  const { fd, size } = openRegularFile(file, (what) => {
    throw new Error(`${file} is ${what}; a JSON lines file was expected`);
  });
  try {
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let done = 0; done < size; ) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - done), done);
      if (n === 0) break; // shorter than it was: hashed as it is
      hash.update(buf.subarray(0, n));
      done += n;
    }
    return hash.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/** The examples of a split as a file: given one, its hash; given records, written to outputDir/data/<split>.jsonl (unless the same is there). */
function dataFile(d: ResolvedData, split: string, r: ResolvedSweep): FileRef {
  if ('file' in d) {
    try {
      return { file: d.file, sha256: hashFile(d.file) };
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new SweepConfigError(r.where, [`data.${split}: ${err.code === 'ENOENT' ? `file not found: ${d.file}` : err.code === 'EISDIR' ? `${d.file} is a folder, not a JSON lines file` : err.code === undefined ? err.message : `cannot read ${d.file}: ${err.message}`}`]);
    }
  }
  const text = d.examples.map((e: Example) => JSON.stringify(e)).join('\n') + '\n';
  const file = path.join(r.outputDir, 'data', `${split}.jsonl`);
  const there = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
  if (there !== text) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeFileAtomically(file, text);
  }
  return { file, sha256: sha256(text) };
}

/**
 * The tokenizer's files as their contents (tokenizer.json, and tokenizer_config.json and
 * chat_template.jinja beside it): part of a job's identity, so a changed tokenizer or chat
 * template runs the jobs again (a rerun reused results of the old tokenizer). None for "byte".
 */
function tokenizerFiles(r: ResolvedSweep): FileRef[] {
  if (r.tokenizer === 'byte') return [];
  const given = r.tokenizer ?? r.model;
  const folder = fs.statSync(given, { throwIfNoEntry: false })?.isDirectory() ?? false;
  const dir = folder ? given : path.dirname(given);
  const files = [folder ? path.join(given, 'tokenizer.json') : given, path.join(dir, 'tokenizer_config.json'), path.join(dir, 'chat_template.jinja')];
  try {
    return files.filter((f) => fs.existsSync(f)).map((file) => ({ file, sha256: hashFile(file) }));
  } catch (e) {
    throw new SweepConfigError(r.where, [`tokenizer: ${(e as Error).message}`]);
  }
}

/** The base model's files that make its weights (name, size, modification time). */
function modelFiles(dir: string, where: string): Job['model']['files'] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new SweepConfigError(where, [`model: ${err.code === 'ENOENT' ? `folder not found: ${dir}` : err.code === 'ENOTDIR' ? `${dir} is a file, not a model folder` : `cannot read ${dir}: ${err.message}`}`]);
  }
  const files = names.filter((n) => n === 'config.json' || /\.(safetensors|bin)$/.test(n) || n.endsWith('.index.json')).sort();
  if (!files.includes('config.json')) throw new SweepConfigError(where, [`model: ${dir} has no config.json (a Hugging Face model folder was expected)`]);
  return files.map((name) => {
    const st = fs.statSync(path.join(dir, name));
    return { name, size: st.size, mtimeMs: Math.round(st.mtimeMs) };
  });
}

/** Checks each variant's adapter options by building a 1 x 1 layer with them (errors name the variant). */
function probeAdapters(r: ResolvedSweep): void {
  const weight = Tensor.from(new Float32Array(1), [1, 1]);
  const problems: string[] = [];
  r.variants.forEach((v, i) => {
    try {
      new MultiHeadLoraLinear({ weight }, v.adapter).dispose();
    } catch (e) {
      problems.push(`variants[${i}] (${v.name}): adapter ${(e as Error).message}`);
    }
  });
  if (problems.length) throw new SweepConfigError(r.where, problems);
}

/** A JSON-able copy of the definition, as run. */
function definitionOf(r: ResolvedSweep, data: Record<string, FileRef>): Record<string, unknown> {
  return {
    model: r.model,
    ...(r.dtype ? { dtype: r.dtype } : {}),
    device: r.device,
    ...(r.tokenizer ? { tokenizer: r.tokenizer } : {}),
    data: { ...Object.fromEntries(Object.entries(data).map(([k, v]) => [k, v.file])), ...Object.fromEntries(Object.entries(r.data.options).filter(([, v]) => v !== undefined)) },
    variants: r.variants.map((v) => ({ name: v.name, what: v.what, adapter: { ...v.adapter, targetModules: v.targetModules }, learningRates: v.learningRates })),
    seeds: r.seeds,
    steps: r.steps,
    batchSize: r.batchSize,
    trainer: r.trainer,
    pickBy: r.pickBy,
    compare: r.compare,
    workers: r.workers,
    threads: r.threads,
    outputDir: r.outputDir,
  };
}

/**
 * Copies each variant's best adapter (the best seed at the picked rate, by pickBy) to
 * outputDir/adapters/<variant>/, replacing an earlier sweep's.
 */
function bestAdapters(r: ResolvedSweep, picks: Record<string, SweepPick>, results: Map<string, JobResult>, finalSplit: 'test' | 'validation'): SweepResult['adapters'] {
  const out: SweepResult['adapters'] = {};
  for (const v of r.variants) {
    const lr = picks[v.name].learningRate;
    const chosenOn = picks[v.name].tuned ? 'validation' : finalSplit;
    const scored = r.seeds.map((seed) => ({ seed, x: results.get(jobFile(r.outputDir, v.name, chosenOn, lr, seed))! }));
    const top = best(scored, (s) => s.x.meanAccuracy, (s) => s.x.meanLoss, r.pickBy);
    const from = adapterFolder(r.outputDir, v.name, lr, top.seed);
    if (!fs.existsSync(path.join(from, ADAPTER_CONFIG_FILE))) continue; // a job of an earlier version, which saved none
    const dir = path.join(r.outputDir, 'adapters', v.name);
    replaceFolder(dir, (tmp) => fs.cpSync(from, tmp, { recursive: true }));
    out[v.name] = { dir, learningRate: lr, seed: top.seed, chosenOn };
  }
  return out;
}

/** The learning rate a variant's validation runs pick: the best mean over seeds (pickBy), ties to the other metric, then to the earlier rate. */
export function pickRate(rows: { learningRate: number; accuracy: Stat; loss: Stat }[], pickBy: 'accuracy' | 'loss'): number {
  return best(rows, (x) => x.accuracy.mean, (x) => x.loss.mean, pickBy).learningRate;
}

/** The best of `items` by pickBy's metric, ties to the other one, then to the earlier item; NaN scores last. */
function best<T>(items: T[], accuracyOf: (x: T) => number, lossOf: (x: T) => number, pickBy: 'accuracy' | 'loss'): T {
  const acc = (x: T): number => (Number.isNaN(accuracyOf(x)) ? -Infinity : accuracyOf(x));
  const loss = (x: T): number => (Number.isNaN(lossOf(x)) ? Infinity : lossOf(x));
  const better = (a: T, b: T): boolean =>
    pickBy === 'accuracy' ? acc(a) > acc(b) || (acc(a) === acc(b) && loss(a) < loss(b)) : loss(a) < loss(b) || (loss(a) === loss(b) && acc(a) > acc(b));
  return items.reduce((b, x) => (better(x, b) ? x : b));
}

/**
 * Runs a sweep (SweepOptions): every variant at every learning rate of its grid and every seed,
 * trained on data.train and scored on data.validation, in worker processes; each variant's rate
 * picked by the best mean over seeds; the picks trained again and scored on data.test (when
 * given); mean ± std per task over seeds, and the `compare` pairs' differences with 95% intervals.
 * Each job's result is a file (outputDir/jobs/<variant>/<split>-lr<rate>-seed<seed>.json): run
 * again, a sweep reuses the results of the jobs that finished (a file of a job defined otherwise
 * is run again and replaced). A job that fails stops the sweep (the finished jobs stay). Writes outputDir/sweep.json (SweepResult),
 * table.md, and figure.svg and figure.png (the picks' training loss and head similarity).
 */
export async function sweep(options: SweepOptions): Promise<SweepResult> {
  return runSweep(resolveSweep(options));
}

/** sweep() for a checked definition (resolveSweep, readSweepConfig). */
export async function runSweep(r: ResolvedSweep): Promise<SweepResult> {
  const T0 = performance.now();
  const log = r.log ?? (() => {});
  probeAdapters(r);
  const files = modelFiles(r.model, r.where);
  if (r.tokenizer && r.tokenizer !== 'byte' && !fs.existsSync(r.tokenizer)) throw new SweepConfigError(r.where, [`tokenizer: not found: ${r.tokenizer}`]);
  fs.mkdirSync(r.outputDir, { recursive: true });
  const data: Record<string, FileRef> = { train: dataFile(r.data.train, 'train', r), validation: dataFile(r.data.validation, 'validation', r) };
  if (r.data.test) data.test = dataFile(r.data.test, 'test', r);
  const finalSplit: 'test' | 'validation' = data.test ? 'test' : 'validation';
  const tokenizerRefs = tokenizerFiles(r);

  const jobOf = (v: ResolvedVariant, learningRate: number, seed: number, split: 'validation' | 'test', trainedBy?: TrainingNumbers): PoolTask => ({
    job: {
      variant: v.name,
      adapter: v.adapter,
      targetModules: v.targetModules,
      learningRate,
      seed,
      split,
      steps: r.steps,
      batchSize: r.batchSize,
      trainer: r.trainer,
      model: { path: r.model, ...(r.dtype ? { dtype: r.dtype } : {}), device: r.device, files },
      ...(r.tokenizer ? { tokenizer: r.tokenizer } : {}),
      tokenizerFiles: tokenizerRefs,
      data: { train: data.train, evaluate: data[split], options: r.data.options },
      threads: r.threads,
      adapterDir: adapterFolder(r.outputDir, v.name, learningRate, seed),
      ...(trainedBy ? { trainedBy } : {}),
    },
    what: v.what,
    label: `${v.name}, seed ${seed}, lr ${learningRate}, ${split}`,
  });
  const fileOf = (j: Job): string => jobFile(r.outputDir, j.variant, j.split, j.learningRate, j.seed);
  /** A finished job's result from its file; undefined when there is none, or when it holds a job defined otherwise (which is then run again). */
  const finished = (t: PoolTask): JobResult | undefined => {
    const file = fileOf(t.job);
    if (!fs.existsSync(file)) return undefined;
    const f = readJsonFile(file, { where: 'a sweep job result' }) as JobFile;
    if (canonical(f.job) !== canonical(t.job)) {
      const differ = Object.keys({ ...f.job, ...t.job }).filter((k) => canonical((f.job as unknown as Record<string, unknown>)[k]) !== canonical((t.job as unknown as Record<string, unknown>)[k]));
      log(`${path.relative(r.outputDir, file)} holds a job defined otherwise (${differ.join(', ')}): running it again`);
      return undefined;
    }
    return { ...f.result, what: t.what };
  };

  const tuned = r.variants.filter((v) => v.learningRates.length > 1);
  const validationTasks = tuned.flatMap((v) => v.learningRates.flatMap((lr) => r.seeds.map((seed) => jobOf(v, lr, seed, 'validation'))));
  const results = new Map<string, JobResult>();
  const total = validationTasks.length + (finalSplit === 'test' ? r.variants.length : r.variants.length - tuned.length) * r.seeds.length;
  const picks: Record<string, SweepPick> = {};
  const queue = new TaskQueue();
  let reused = 0;
  let ran = 0;
  const start = (tasks: PoolTask[]): void => {
    for (const t of tasks) {
      const f = fileOf(t.job);
      if (results.has(f)) continue;
      const done = finished(t);
      if (done) {
        results.set(f, done);
        reused++;
      } else queue.push(t);
    }
  };
  const validationRows = (v: ResolvedVariant): ValidationRow[] =>
    v.learningRates.map((lr) => {
      const runs = r.seeds.map((seed) => results.get(jobFile(r.outputDir, v.name, 'validation', lr, seed))!);
      return {
        variant: v.name,
        learningRate: lr,
        accuracy: stats(runs.map((x) => x.meanAccuracy)),
        loss: stats(runs.map((x) => x.meanLoss)),
        trainLoss: stats(runs.map((x) => x.trainLoss)),
        picked: picks[v.name]?.learningRate === lr,
        runs: runs.map((x) => ({ seed: x.seed, meanAccuracy: x.meanAccuracy, meanLoss: x.meanLoss, trainLoss: x.trainLoss, tasks: x.tasks })),
      };
    });
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  /** The training numbers of the validation job of (v, lr, seed), when it saved its adapter (sweeps before 2026-12-07 did not). */
  const trainedAdapter = (v: ResolvedVariant, lr: number, seed: number): TrainingNumbers | undefined => {
    const done = results.get(jobFile(r.outputDir, v.name, 'validation', lr, seed));
    if (!done || !fs.existsSync(path.join(adapterFolder(r.outputDir, v.name, lr, seed), ADAPTER_CONFIG_FILE))) return undefined;
    const { trainLoss, seconds, tokensPerSecond, peakAllocatedBytes, losses, stopped, skippedSteps } = done;
    return { trainLoss, seconds, tokensPerSecond, peakAllocatedBytes, losses, stopped, skippedSteps };
  };
  /** Picks the variant's rate once all its validation jobs are done, and starts its final jobs; returns the line saying so. */
  const maybePick = (v: ResolvedVariant): string | undefined => {
    if (picks[v.name] || !v.learningRates.every((lr) => r.seeds.every((seed) => results.has(jobFile(r.outputDir, v.name, 'validation', lr, seed))))) return undefined;
    const rows = validationRows(v);
    const lr = pickRate(rows, r.pickBy);
    picks[v.name] = { learningRate: lr, tuned: true };
    const row = rows.find((x) => x.learningRate === lr)!;
    const others = rows.filter((x) => x !== row).map((x) => `${x.learningRate} ${pct(x.accuracy.mean)}`).join(', ');
    // the test jobs evaluate the adapters their validation jobs trained (the same training: not run again)
    start(r.seeds.map((seed) => jobOf(v, lr, seed, finalSplit, trainedAdapter(v, lr, seed))));
    return `picked on validation: ${v.name} lr ${lr} (mean accuracy ${pct(row.accuracy.mean)}, loss ${row.loss.mean.toFixed(3)} over ${r.seeds.length} seed${r.seeds.length === 1 ? '' : 's'}; others: ${others})`;
  };

  const tasksWord = (n: number, what: string): string => `${n} ${what} job${n === 1 ? '' : 's'}`;
  log(
    `sweep: ${r.variants.length} variant${r.variants.length === 1 ? '' : 's'} (${r.variants.map((v) => v.name).join(', ')}) x ${r.seeds.length} seed${r.seeds.length === 1 ? '' : 's'}: ` +
      `${[validationTasks.length ? tasksWord(validationTasks.length, 'validation') : '', tasksWord(total - validationTasks.length, finalSplit)].filter(Boolean).join(' + ')}; ` +
      `${r.workers} worker${r.workers === 1 ? '' : 's'} x ${r.threads} thread${r.threads === 1 ? '' : 's'}, ${r.device}; into ${r.outputDir}`,
  );
  start(validationTasks);
  // variants with one rate: their final jobs, seed by seed
  for (const seed of r.seeds) {
    for (const v of r.variants) {
      if (v.learningRates.length > 1) continue;
      picks[v.name] ??= { learningRate: v.learningRates[0], tuned: false };
      start([jobOf(v, v.learningRates[0], seed, finalSplit)]);
    }
  }
  const pickedEarlier = tuned.map(maybePick).filter((l) => l !== undefined);
  if (reused) log(`resuming: ${reused} of ${total} jobs finished earlier (their results are in ${path.join(r.outputDir, 'jobs')})`);
  for (const l of pickedEarlier) log(l);

  const T1 = performance.now();
  await runPool(queue, r.workers, (t, result) => {
    const file = fileOf(t.job);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeFileAtomically(file, JSON.stringify({ job: t.job, result } satisfies JobFile) + '\n');
    results.set(file, result);
    ran++;
    // a variant's last validation job picks its rate (its test jobs may be finished already)
    const picked = result.split === 'validation' ? maybePick(r.variants.find((x) => x.name === result.variant)!) : undefined;
    const done = reused + ran;
    const remaining = total - done;
    const etaSeconds = remaining === 0 ? 0 : (((performance.now() - T1) / 1000) * remaining) / ran;
    const width = String(total).length;
    const line =
      `[${String(done).padStart(width)}/${total}] ${result.variant} lr ${result.learningRate} seed ${result.seed} on ${result.split}: ` +
      `accuracy ${pct(result.meanAccuracy)}, loss ${result.meanLoss.toFixed(3)}, train loss ${result.trainLoss.toFixed(3)} (${result.totalSeconds.toFixed(0)} s)` +
      (remaining ? `; ETA ${fmtSeconds(etaSeconds)}` : '; done');
    if (r.onProgress) r.onProgress({ result, done, total, etaSeconds, line });
    else log(line);
    if (picked) log(picked);
  });

  const runs = r.seeds.flatMap((seed) => r.variants.map((v) => results.get(jobFile(r.outputDir, v.name, finalSplit, picks[v.name].learningRate, seed))!));
  const adapters = bestAdapters(r, picks, results, finalSplit);
  const summary = summarize(runs, r.variants.map((v) => v.name), picks);
  const comparisons = r.compare.map(([a, b]) => pairedDifference(runs, a, b));
  const validation = tuned.flatMap(validationRows);
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    platform: `${os.platform()} ${os.release()}`,
    node: process.version,
    device: r.device,
    threads: r.threads,
    workers: r.workers,
    blas: runs[0].blas,
  };
  const table = markdownTable({ summary, validation, comparisons, evaluatedOn: finalSplit, seeds: r.seeds.length, steps: r.steps, batchSize: r.batchSize });
  const result: SweepResult = {
    ...(r.file ? { config: r.file } : {}),
    outputDir: r.outputDir,
    definition: definitionOf(r, data),
    machine,
    jobs: { total, run: ran, reused },
    validation,
    picks,
    adapters,
    evaluatedOn: finalSplit,
    runs,
    summary,
    comparisons,
    table,
    files: [],
    totalSeconds: 0,
  };
  writeFileAtomically(path.join(r.outputDir, 'table.md'), table);
  const written = ['table.md'];
  if (r.figure) {
    const tasks = Object.keys(runs[0].tasks).length;
    written.push(...(await writeFigure({ title: r.title ?? `rlora sweep: ${tasks} task${tasks === 1 ? '' : 's'}`, runs, variants: r.variants.map((v) => v.name) }, r.outputDir)));
  }
  written.push('sweep.json');
  result.files = written;
  result.totalSeconds = (performance.now() - T0) / 1000;
  writeFileAtomically(path.join(r.outputDir, 'sweep.json'), JSON.stringify(result, null, 2) + '\n');
  log(`wrote ${written.map((f) => path.join(r.outputDir, f)).join(', ')}; ${fmtSeconds(result.totalSeconds)} in all`);
  for (const [v, a] of Object.entries(adapters)) log(`adapter of ${v}: ${a.dir} (lr ${a.learningRate}, seed ${a.seed}, the best seed on ${a.chosenOn})`);
  return result;
}
