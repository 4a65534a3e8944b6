// The names of the files a training run writes, in one place (docs/ARCHITECTURE.md section 4). It
// loads nothing native, so the CLI can use it before the addon loads.
//
//   <outputDir>/log.jsonl              one JSON record a step (and evaluations)
//   <outputDir>/eval-<step>.jsonl      evaluation predictions
//   <outputDir>/metrics.csv            with reportTo 'csv': step,name,value
//   <outputDir>/tensorboard/           with reportTo 'tensorboard': event files
//   <outputDir>/checkpoint-<step>/     the adapter's files, plus:
//       trainer_state.json             step, data position, options, metrics
//       optimizer.safetensors          AdamW's moments
//       rng.safetensors                the dropout generators
import * as fs from 'fs';
import * as path from 'path';

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
