// The format of a training run's folder, owned here (docs/ARCHITECTURE.md section 4): the names of
// its files, trainer_state.json's reader and writer, pruning old checkpoints, and trimming the log
// on resume. The two tensor files are read and written by checkpoint-tensors.ts under these names.
// It loads nothing native, so the CLI can use it before the addon loads.
//
//   <outputDir>/log.jsonl              one JSON record a step (and evaluations)
//   <outputDir>/eval-<step>.jsonl      evaluation predictions
//   <outputDir>/metrics.csv            with reportTo 'csv': step,name,value
//   <outputDir>/tensorboard/           with reportTo 'tensorboard': event files
//   <outputDir>/rlora.lock             while a run writes there: {pid, hostname, started}
//   <outputDir>/checkpoint-<step>/     the adapter's files, plus:
//       trainer_state.json             step, data position, options, metrics
//       optimizer.safetensors          AdamW's moments
//       rng.safetensors                the dropout generators
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as util from 'util';

import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../adapter/files';
import type { SamplerState } from '../data';
import { removeAtomically, sideName, writeFileAtomically, writeFileFully } from '../util/files';
import { readJsonFile, readTextFile } from '../util/json';
import type { BestState } from './metrics';
import type { TrainerOptions } from './options';
import { processAlive as alive } from '../util/process';

export const LOG_FILE = 'log.jsonl';
/** TrainerOptions.reportTo: 'csv' writes this, 'tensorboard' event files into TENSORBOARD_DIR. */
export const METRICS_CSV_FILE = 'metrics.csv';
export const TENSORBOARD_DIR = 'tensorboard';
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const RNG_FILE = 'rng.safetensors';
/** The files a checkpoint holds beside the adapter's. */
export const CHECKPOINT_FILES = [TRAINER_STATE_FILE, OPTIMIZER_FILE, RNG_FILE] as const;

export const checkpointName = (step: number): string => `checkpoint-${step}`;
export const evalPredictionsName = (step: number): string => `eval-${step}.jsonl`;
export const CHECKPOINT_NAME = /^checkpoint-(\d+)$/;
const EVAL_NAME = /^eval-\d+\.jsonl$/;
/** Leftovers of writes a killed process did not finish (util/files.ts sideName). */
export const LEFTOVER_NAME = /^\.(checkpoint-\d+|log\.jsonl|eval-\d+\.jsonl)\.(tmp|old|deleting)-/;

/** The entries of `dir` that a training run wrote there: its log, checkpoints, predictions and leftovers. */
export function runFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => f === LOG_FILE || f === METRICS_CSV_FILE || f === TENSORBOARD_DIR || CHECKPOINT_NAME.test(f) || EVAL_NAME.test(f) || LEFTOVER_NAME.test(f));
}

/** The files of an earlier run in `dir` that a new run there would mix with (leftovers of killed writes are not). */
export function earlierRunFiles(dir: string): string[] {
  return runFiles(dir).filter((f) => !LEFTOVER_NAME.test(f));
}

/**
 * outputDir holds files of an earlier run (`files`, checkpoints among them or not): Trainer.fit
 * refuses to log into it. The CLI words the same facts with its flags (earlierRunText).
 * @internal
 */
export class EarlierRunError extends Error {
  constructor(
    readonly dir: string,
    readonly files: string[],
  ) {
    super(earlierRunText(dir, files, { overwrite: 'set overwriteOutputDir: true', resume: (c) => `continue that run with Trainer.resume(${JSON.stringify(c)}, model)`, prefix: 'Trainer.fit refused: ' }));
    this.name = 'Error';
  }
}

/**
 * What `dir` holds of an earlier run and what can be done: resume its newest checkpoint, start over
 * (`overwrite`), or another outputDir. A run that wrote no checkpoint (it stopped before its first,
 * or failed) has nothing to resume: only starting fresh is offered.
 */
export function earlierRunText(dir: string, files: string[], how: { overwrite: string; resume: (checkpoint: string) => string; prefix?: string }): string {
  const latest = latestCheckpoint(dir);
  const listed = [...files].sort().join(', ');
  if (!latest) {
    return `${how.prefix ?? ''}outputDir ${dir} holds ${listed} of an earlier run that wrote no checkpoint (it stopped or failed before its first), so there is nothing to resume: ` +
      `${how.overwrite} to delete ${files.length > 1 ? 'them' : 'it'} and start fresh there, or choose another outputDir`;
  }
  return `${how.prefix ?? ''}outputDir ${dir} holds an earlier run (${listed}); logging into it would mix two runs: ` +
    `choose another outputDir, ${how.overwrite} to start over there, or ${how.resume(latest)}`;
}

export const LOCK_FILE = 'rlora.lock';

/** What a run's lock file holds. */
interface LockHolder {
  pid: number;
  hostname: string;
  started: string;
}

/**
 * Locks the run folder `dir` (which exists) for one run: `dir/rlora.lock` holds this process's
 * pid, host and start time. A lock whose process no longer runs on this host (killed with -9) is
 * taken over; a live one is refused, naming its process (two runs in one outputDir mixed their
 * logs and checkpoints). Returns the release.
 * @internal
 */
export function lockRunFolder(dir: string): () => void {
  const file = path.join(dir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, hostname: os.hostname(), started: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    // written whole beside it, then linked to its name: the name appears with its contents, once
    const tmp = sideName(file, 'tmp');
    try {
      writeFileFully(tmp, JSON.stringify(me) + '\n');
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw new Error(`outputDir ${dir} cannot be written: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); // a read-only mount: EROFS
    }
    try {
      fs.linkSync(tmp, file);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        fs.rmSync(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`outputDir ${dir} cannot be locked for this run: ${(e as Error).message}`);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    let holder: Partial<LockHolder> | undefined;
    try {
      holder = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<LockHolder>;
    } catch {
      holder = undefined;
    }
    const pid = holder?.pid;
    if (typeof pid !== 'number' || typeof holder?.hostname !== 'string') {
      throw new Error(`outputDir ${dir} is locked by ${file}, which names no run: remove that file if no run writes to ${dir}`);
    }
    const who = `process ${pid}${holder.hostname !== me.hostname ? ` on ${holder.hostname}` : ''}${holder.started ? `, started ${holder.started}` : ''}`;
    const live = holder.hostname !== me.hostname || alive(pid);
    if (live || attempt > 0) {
      throw new Error(
        `outputDir ${dir} is in use by another run (${pid === process.pid ? 'a Trainer of this process' : who}; ${file}): two runs in one outputDir mix their logs and checkpoints: ` +
          `wait for it to end or choose another outputDir${holder.hostname !== me.hostname ? ` (if that run has ended, remove ${file})` : ''}`,
      );
    }
    fs.rmSync(file, { force: true }); // a process that died holding it: taken over
  }
}

/** The steps of the checkpoints in `dir`, ascending. */
export function checkpointSteps(dir: string): number[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((f) => CHECKPOINT_NAME.exec(f))
    .filter((m): m is RegExpExecArray => m !== null && fs.statSync(path.join(dir, m[0])).isDirectory())
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/**
 * The run's progress, one plain object the Trainer holds (as torchtune's checkpoint client takes its
 * training progress): what a checkpoint saves of it (writeTrainerState, with the options) and what a
 * resume restores (restoredState). The live objects (optimizer, sampler, generators) are the
 * Trainer's; their states are saved beside this one.
 */
export interface TrainerState {
  /** Optimizer steps taken so far. */
  step: number;
  /** The steps of the run: set by the first fit (or read from the checkpoint). */
  totalSteps?: number;
  /** A checkpoint's data position, applied by the next fit (then cleared); a checkpoint saves the sampler's current one. */
  sampler?: SamplerState;
  /** The training set's size and tasks, from the first fit (or the checkpoint: a resume needs the same data). */
  dataset?: { size: number; tasks: string[] };
  /** earlyStopping's and saveBest's progress. */
  best: BestState;
  /** The checkpoint written (or resumed from) last: always one of finite values. */
  lastCheckpoint?: string;
  /** The checkpoint this run was resumed from: its step, and its trainer_state.json (errors about its data position name it). */
  resumedFrom?: { step: number; file: string };
  /** The step whose update left the parameters non-finite; nothing can continue from there. */
  broken?: { step: number; paramNorm: number };
}

/** trainer_state.json: the saved part of a TrainerState with the run's options. */
export interface SavedTrainerState {
  version: 1;
  step: number;
  totalSteps: number;
  options: TrainerOptions;
  sampler: SamplerState;
  dataset: { size: number; tasks: string[] };
  /** earlyStopping's and saveBest's progress (absent in older checkpoints). */
  best?: BestState;
  /** Names of the metric functions the run evaluated (a checkpoint cannot hold functions): resume asks for them again. */
  customMetrics?: string[];
}

/** Reads and checks trainer_state.json; errors name the file. */
export function readTrainerState(file: string): SavedTrainerState {
  const state = readJsonFile(file) as SavedTrainerState;
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

/**
 * Writes trainer_state.json into the checkpoint folder being written: `state` (which has been
 * through a fit: its totalSteps and dataset are set) with the sampler's position `sampler`, the
 * options as saved and the names of the metric functions.
 */
export function writeTrainerState(dir: string, state: TrainerState, saved: { options: TrainerOptions; sampler: SamplerState; customMetrics: string[] }): void {
  if (state.totalSteps === undefined || state.dataset === undefined) throw new Error('nothing to checkpoint before fit() has started');
  const file: SavedTrainerState = {
    version: 1,
    step: state.step,
    totalSteps: state.totalSteps,
    options: saved.options,
    sampler: saved.sampler,
    dataset: state.dataset,
    best: state.best,
    customMetrics: saved.customMetrics,
  };
  writeFileFully(path.join(dir, TRAINER_STATE_FILE), JSON.stringify(file, null, 2) + '\n');
}

/** The TrainerState a resume from `checkpointDir` (whose trainer_state.json `file` held `saved`) starts with, running to `totalSteps`. */
export function restoredState(checkpointDir: string, file: string, saved: SavedTrainerState, totalSteps: number): TrainerState {
  return {
    step: saved.step,
    totalSteps,
    sampler: saved.sampler,
    dataset: saved.dataset,
    best: saved.best ?? {},
    lastCheckpoint: checkpointDir,
    resumedFrom: { step: saved.step, file },
  };
}

/** The newest complete checkpoint of `dir` (every file a resume reads is there), or undefined. */
export function latestCheckpoint(dir: string): string | undefined {
  for (const step of checkpointSteps(dir).reverse()) {
    const ckpt = path.join(dir, checkpointName(step));
    if ([...CHECKPOINT_FILES, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].every((f) => fs.existsSync(path.join(ckpt, f)))) return ckpt;
  }
  return undefined;
}

/** Deletes all but the newest `keep` checkpoints of `dir` (each atomically), sparing `spare` (saveBest's). */
export function pruneCheckpoints(dir: string, keep: number, spare?: string): void {
  const steps = checkpointSteps(dir).filter((s) => spare === undefined || path.resolve(dir, checkpointName(s)) !== path.resolve(spare));
  for (const s of steps.reverse().slice(keep)) removeAtomically(path.join(dir, checkpointName(s)));
}

/**
 * Keeps the records of a training log up to `step` (those after it are about to be logged again),
 * rewriting the file atomically. A last line cut short (a process killed while appending) is dropped
 * with a warning; any other line that is not a record is an error naming the file and line.
 * Returns how many records it dropped.
 * @internal (the CLI reports the count)
 */
export function trimLog(file: string, step: number): number {
  const lines = readTextFile(file, { kind: 'log' }).split('\n');
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
      throw new Error(`${file}:${i + 1}: invalid JSON (${(e as Error).message}): not a training log line`);
    }
    const at = (record as { step?: unknown } | null)?.step;
    if (typeof at !== 'number') throw new Error(`${file}:${i + 1}: a log record without a step`);
    if (at <= step) keep.push(line + '\n');
    else dropped++;
  });
  writeFileAtomically(file, keep.join(''));
  return dropped;
}

