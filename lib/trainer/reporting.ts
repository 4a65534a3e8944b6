// Where a run's numbers go, as rlora's own callbacks of Trainer.fit (callbacks.ts CallbackHandler
// calls them before the user's): log.jsonl (LogFileCallback), TrainerOptions.reportTo's sinks
// (SinkCallback), the progress line on a terminal (ProgressCallback) and the lines on stderr
// (PrinterCallback), as transformers' ProgressCallback and PrinterCallback; a step's and an
// evaluation's numbers under TensorBoard-style names (also what TrainerCallback.onLog receives).
import * as fs from 'fs';
import * as path from 'path';

import { CsvSink } from '../logging/csv';
import type { MetricSink, Scalars } from '../logging/sink';
import { TensorBoardSink } from '../logging/tensorboard';
import { evalText, stepLine } from '../logging/text';
import { CLEAR_LINE, EvalProgressLine, ProgressLine } from '../progress';
import { rawTerminal } from '../util/interrupt';
import type { CallbackState, FitReporter } from './callbacks';
import { METRICS_CSV_FILE, TENSORBOARD_DIR } from './checkpoint';
import type { ReportTo } from './options';
import type { EvalRecord, History, StepRecord, TaskEval } from './records';

/** Where lines go: stderr, or a stand-in in tests. */
export interface Output {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** log.jsonl: one JSON record a step, one an evaluation (`type: 'eval'`), appended as they come. */
export class LogFileCallback implements FitReporter {
  constructor(readonly file: string) {}
  onStepEnd(rec: StepRecord): void {
    fs.appendFileSync(this.file, JSON.stringify(rec) + '\n');
  }
  onEvaluate(rec: EvalRecord): void {
    fs.appendFileSync(this.file, JSON.stringify({ type: 'eval', ...rec }) + '\n');
  }
}

/** TrainerOptions.reportTo: each sink receives what onLog does (a step's numbers, an evaluation's). */
export class SinkCallback implements FitReporter {
  constructor(readonly sinks: MetricSink[]) {}
  onLog(step: number, scalars: Scalars): void {
    for (const sink of this.sinks) sink.log(step, scalars);
  }
}

/**
 * The progress line (lib/progress.ts), drawn from the fit's first step to its end; during an
 * evaluation the evaluation's line takes its place. After the Ctrl-C notice (PrinterCallback, called
 * before it) it is drawn again, but in the REPL, whose prompt comes next: there it is erased for good.
 */
export class ProgressCallback implements FitReporter {
  #bar?: ProgressLine;
  #eval?: EvalProgressLine;
  constructor(readonly out: Output) {}
  onTrainBegin(state: CallbackState): void {
    this.#bar = new ProgressLine(this.out, state.totalSteps, state.step);
  }
  onStepEnd(rec: StepRecord): void {
    this.#bar?.update(rec.step, rec.loss.toFixed(4), String(Math.round(rec.tokensPerSecond)));
  }
  onEvaluateProgress(done: number, total: number): void {
    (this.#eval ??= new EvalProgressLine(this.out)).update(done, total);
  }
  onEvaluate(): void {
    this.#eval?.clear();
    this.#eval = undefined;
    this.#bar?.redraw();
  }
  onInterrupt(): void {
    this.#eval?.clear();
    // in the REPL its prompt comes next: erased, no more redraws; elsewhere drawn again below the notice
    if (rawTerminal()) this.#bar?.close();
    else this.#bar?.redraw();
  }
  close(): void {
    this.#eval?.clear();
    this.#bar?.stop();
  }
}

/**
 * Lines on stderr (as transformers' PrinterCallback). Where no bar is drawn (`lines`): a step line
 * at the fit's first step, every `loggingSteps` steps, at the last and where the fit stopped.
 * Each evaluation's table: with `lines`, and above the bar where one is drawn (`bar`). The Ctrl-C
 * notices.
 */
export class PrinterCallback implements FitReporter {
  #first = 0;
  #last?: StepRecord;
  #printed = -1;
  constructor(
    readonly out: Output,
    readonly how: { lines: boolean; bar: boolean; loggingSteps: number; checkpoints: boolean },
  ) {}
  #say(s: string): void {
    this.out.write((this.how.bar ? CLEAR_LINE : '') + s + '\n');
  }
  onTrainBegin(state: CallbackState): void {
    this.#first = state.step;
  }
  onStepEnd(rec: StepRecord, state: CallbackState): void {
    this.#last = rec;
    if (this.how.lines && (rec.step === this.#first + 1 || rec.step % this.how.loggingSteps === 0 || rec.step === state.totalSteps)) {
      this.#say(stepLine(rec, state.totalSteps));
      this.#printed = rec.step;
    }
  }
  onEvaluate(rec: EvalRecord): void {
    if (this.how.lines || this.how.bar) this.#say(`eval at step ${rec.step}:\n${evalText(rec.tasks).replace(/^/gm, '  ')}`);
  }
  onTrainEnd(_history: History, state: CallbackState): void {
    // where the fit stopped early (Ctrl-C, a callback): its last step
    if (this.how.lines && this.#last && this.#printed !== this.#last.step) this.#say(stepLine(this.#last, state.totalSteps));
  }
  onInterrupt(count: number, state: CallbackState): void {
    this.out.write(this.how.bar ? CLEAR_LINE : '\n');
    if (count > 1) this.out.write('rlora: Ctrl-C again: quitting now, without a checkpoint\n');
    else this.out.write(`rlora: Ctrl-C: stopping after step ${state.step + 1}${this.how.checkpoints ? ' and writing a checkpoint' : ''} (Ctrl-C again to quit at once)\n`);
  }
}

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

