// A run's numbers as people read them: the step line and the evaluation table that `rlora train`
// prints and that the Trainer prints where no progress bar is drawn. No native code here. Task
// names are printed through printable(): a name holding an escape sequence cannot drive the terminal.

import { printable } from '../util/printable';

/** What a step line shows (a StepRecord). */
export interface StepLine {
  step: number;
  loss: number;
  taskLoss: Record<string, number>;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  skipped?: boolean;
}

/** What an evaluation table shows of a task (a TaskEval). */
export interface TaskLine {
  loss: number;
  accuracy: number;
  count: number;
  metrics?: Record<string, number>;
}

/** Rows of cells as aligned columns; `right` marks the columns aligned to the right. */
export function table(rows: string[][], right: boolean[] = []): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (right[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd()).join('\n');
}

/** 4 decimals, or 3 significant digits in exponent form for small values. */
export const fmt = (x: number): string => (Number.isFinite(x) ? (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(4) : x.toExponential(2)) : String(x));

/** task, loss, accuracy, count: one row a task. */
export function evalTable(tasks: Record<string, TaskLine>): string {
  const rows = [['task', 'loss', 'accuracy', 'count']];
  for (const [task, r] of Object.entries(tasks)) {
    rows.push([printable(task, true), Number.isFinite(r.loss) ? r.loss.toFixed(4) : String(r.loss), `${(100 * r.accuracy).toFixed(1)}%`, String(r.count)]);
  }
  return table(rows, [false, true, true, true]);
}

/** `task: metric value, ...` for the tasks that have metrics. */
export function metricLines(tasks: Record<string, TaskLine>): string {
  return Object.entries(tasks)
    .filter(([, r]) => r.metrics && Object.keys(r.metrics).length)
    .map(([t, r]) => `${printable(t, true)}: ${Object.entries(r.metrics!).map(([k, v]) => `${printable(k, true)} ${fmt(v)}`).join(', ')}`)
    .join('\n');
}

/** The evaluation table, then the metric lines. */
export function evalText(tasks: Record<string, TaskLine>): string {
  const m = metricLines(tasks);
  return evalTable(tasks) + (m ? `\n${m}` : '');
}

/** `step 5/100  loss 2.3100 (a 2.1000, b 2.5000)  lr 2.00e-4  grad 0.5000  812 tok/s` */
export function stepLine(rec: StepLine, total: number): string {
  const tasks = Object.entries(rec.taskLoss).map(([t, l]) => `${printable(t, true)} ${fmt(l)}`).join(', ');
  return `step ${rec.step}/${total}  loss ${fmt(rec.loss)}${tasks ? ` (${tasks})` : ''}  lr ${rec.lr.toExponential(2)}  grad ${fmt(rec.gradNorm)}  ${Math.round(rec.tokensPerSecond)} tok/s${rec.skipped ? '  skipped (not finite)' : ''}`;
}
