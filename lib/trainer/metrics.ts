// Evaluation metrics: the built-in ones, the mean of a metric over tasks, and the tracker of the
// best value that earlyStopping and saveBest follow (its state is saved in trainer_state.json).
import type { TaskEval } from './records';

export type MetricFn = (prediction: string, reference: string, task: string) => number;

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

/** Names evaluation always reports, which a metric function may not take. */
export const RESERVED_METRICS = ['loss', 'accuracy', 'count'];

/** The mean over tasks of an evaluation's metric (loss, accuracy or a custom one). */
export function metricOf(tasks: Record<string, TaskEval>, metric: string): number {
  const vals = Object.values(tasks).map((t) => (metric === 'loss' ? t.loss : metric === 'accuracy' ? t.accuracy : t.metrics?.[metric] ?? NaN));
  return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : NaN;
}

/** Whether `value` improves on `best` by more than `minDelta`. */
export function improves(value: number, best: number | undefined, mode: 'min' | 'max', minDelta: number): boolean {
  if (!Number.isFinite(value)) return false;
  if (best === undefined || Number.isNaN(best)) return true;
  return mode === 'min' ? value < best - minDelta : value > best + minDelta;
}

/** earlyStopping's and saveBest's progress, as trainer_state.json keeps it. */
export interface BestState {
  stop?: { best: number; bad: number };
  save?: { value: number; checkpoint: string };
}

/** earlyStopping's rule with its defaults. */
export interface StopRule {
  metric: string;
  patience: number;
  minDelta: number;
  mode: 'min' | 'max';
}

/** saveBest's rule with its default mode. */
export interface BestRule {
  metric: string;
  mode: 'min' | 'max';
}

/**
 * Follows an evaluation metric for earlyStopping (evaluations without improvement) and saveBest
 * (the best value and its checkpoint). `state` is what a checkpoint saves and a resume restores.
 */
export class BestTracker {
  constructor(
    readonly stopRule: StopRule | undefined,
    readonly bestRule: BestRule | undefined,
    /** Changed in place: the Trainer's TrainerState holds it (its `best`). */
    readonly state: BestState = {},
  ) {}

  /** The checkpoint an evaluation's `tasks` makes the best one (to be written at `checkpoint`), or undefined when it is not better. */
  newBest(tasks: Record<string, TaskEval>, checkpoint: string): { value: number; checkpoint: string } | undefined {
    if (!this.bestRule) return undefined;
    const value = metricOf(tasks, this.bestRule.metric);
    if (!improves(value, this.state.save?.value, this.bestRule.mode, 0)) return undefined;
    this.state.save = { value, checkpoint }; // set before the checkpoint is written: it records that it is the best, and pruning spares it
    return this.state.save;
  }

  /** Counts an evaluation for earlyStopping; true when it says stop. */
  shouldStop(tasks: Record<string, TaskEval>): boolean {
    const rule = this.stopRule;
    if (!rule) return false;
    const value = metricOf(tasks, rule.metric);
    const was = this.state.stop;
    if (improves(value, was?.best, rule.mode, rule.minDelta)) this.state.stop = { best: value, bad: 0 };
    else this.state.stop = { best: was?.best ?? NaN, bad: (was?.bad ?? 0) + 1 };
    return this.state.stop.bad >= rule.patience;
  }
}
