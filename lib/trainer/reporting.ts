// Where a run's numbers go besides log.jsonl (TrainerOptions.reportTo): the sinks, and a step's and
// an evaluation's numbers under TensorBoard-style names (also what TrainerCallback.onLog receives).
import * as path from 'path';

import { CsvSink } from '../logging/csv';
import type { MetricSink, Scalars } from '../logging/sink';
import { TensorBoardSink } from '../logging/tensorboard';
import { METRICS_CSV_FILE, TENSORBOARD_DIR } from './checkpoint';
import type { ReportTo } from './options';
import type { StepRecord, TaskEval } from './records';

/** A sink of TrainerOptions.reportTo in outputDir; a continued run (from step `from` > 0) keeps the rows up to it. */
export function openSink(kind: ReportTo, outputDir: string, from: number): MetricSink {
  if (kind === 'csv') return new CsvSink(path.join(outputDir, METRICS_CSV_FILE), from > 0 ? from : undefined);
  return new TensorBoardSink(path.join(outputDir, TENSORBOARD_DIR));
}

/** A step's numbers under TensorBoard-style names (finite ones only). */
export function stepScalars(rec: StepRecord): Scalars {
  const all: Scalars = { 'train/loss': rec.loss, 'train/learning_rate': rec.lr, 'train/grad_norm': rec.gradNorm, 'train/tokens_per_second': rec.tokensPerSecond };
  for (const [t, l] of Object.entries(rec.taskLoss)) all[`train/loss/${t}`] = l;
  return Object.fromEntries(Object.entries(all).filter(([, v]) => Number.isFinite(v)));
}

/** An evaluation's numbers: each task's loss, accuracy and metrics, and their means over the tasks. */
export function evalScalars(tasks: Record<string, TaskEval>): Scalars {
  const all: [string, number][] = [];
  for (const [t, r] of Object.entries(tasks)) {
    all.push([`eval/${t}/loss`, r.loss], [`eval/${t}/accuracy`, r.accuracy]);
    for (const [m, v] of Object.entries(r.metrics ?? {})) all.push([`eval/${t}/${m}`, v]);
  }
  const rs = Object.values(tasks);
  if (rs.length) all.push(['eval/loss', rs.reduce((a, r) => a + r.loss, 0) / rs.length], ['eval/accuracy', rs.reduce((a, r) => a + r.accuracy, 0) / rs.length]);
  return Object.fromEntries(all.filter(([, v]) => Number.isFinite(v)));
}

