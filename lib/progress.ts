// The training progress line on stderr: "step 120/1000 |=====-----| loss 1.2345 | 3200 tok/s | ETA 4m05s",
// redrawn in place (carriage return, erase line) at most ten times a second; and an evaluation's,
// "eval 24/40 examples |======----| ETA 12s" (EvalProgressLine), drawn on the same line. It saves and restores
// no cursor position, so lines printed between two redraws (evaluations, a Ctrl-C notice: print
// them after CLEAR_LINE) stay where they are, and the line is drawn again below them.

import { printable } from './util/printable';

/** Erases the progress line: print it before a message while the line is shown. */
export const CLEAR_LINE = '\r\x1b[K';

/** Characters of the line besides the bar at its longest ("step 99999/99999 || loss 12.3456 | 999999 tok/s | ETA 99h59m"). */
const REST = 60;

/** Width of the bar for a terminal of `columns` (default 80): what the rest leaves, one column spare, 10 to 40. */
export function progressBarSize(columns: number | undefined): number {
  return Math.max(10, Math.min(40, (columns && columns > 0 ? columns : 80) - REST - 1));
}

/** "45s", "4m05s", "2h07m". */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** One rendering of the line. */
export function progressText(step: number, total: number, loss: string, tps: string, etaSeconds: number, barSize: number): string {
  const filled = total > 0 ? Math.min(barSize, Math.round((barSize * step) / total)) : 0;
  return printable(`step ${step}/${total} |${'='.repeat(filled)}${'-'.repeat(barSize - filled)}| loss ${loss} | ${tps} tok/s | ETA ${formatEta(etaSeconds)}`, true);
}

interface Stream {
  write(s: string): unknown;
  columns?: number;
}

export class ProgressLine {
  readonly #stream: Stream;
  readonly #total: number;
  readonly #first: number;
  readonly #t0 = Date.now();
  #last = 0;
  #shown = false;
  #closed = false;
  #step: number;
  #loss = '-';
  #tps = '-';

  constructor(stream: Stream, total: number, step: number) {
    this.#stream = stream;
    this.#total = total;
    this.#first = step;
    this.#step = step;
    this.#draw();
  }

  update(step: number, loss: string, tps: string): void {
    if (this.#closed) return;
    this.#step = step;
    this.#loss = loss;
    this.#tps = tps;
    if (Date.now() - this.#last >= 100 || step >= this.#total) this.#draw();
  }

  /** Erases the line and draws it no more (Ctrl-C in the REPL: its prompt comes next). */
  close(): void {
    if (this.#shown) this.#stream.write(CLEAR_LINE);
    this.#shown = false;
    this.#closed = true;
  }

  /** Draws the line again (after another line was drawn in its place: an evaluation's). */
  redraw(): void {
    if (!this.#closed) this.#draw();
  }

  /** Draws the last state once more and ends the line. */
  stop(): void {
    if (!this.#shown || this.#closed) return;
    this.#draw();
    this.#stream.write('\n');
    this.#shown = false;
  }

  #draw(): void {
    const done = this.#step - this.#first;
    const elapsed = (Date.now() - this.#t0) / 1000;
    const eta = done > 0 ? (elapsed / done) * (this.#total - this.#step) : NaN;
    this.#stream.write(CLEAR_LINE + progressText(this.#step, this.#total, this.#loss, this.#tps, eta, progressBarSize(this.#stream.columns)));
    this.#last = Date.now();
    this.#shown = true;
  }
}

/** One rendering of an evaluation's line. */
export function evalProgressText(done: number, total: number, etaSeconds: number, barSize: number): string {
  const filled = total > 0 ? Math.min(barSize, Math.round((barSize * done) / total)) : 0;
  return `eval ${done}/${total} examples |${'='.repeat(filled)}${'-'.repeat(barSize - filled)}| ETA ${formatEta(etaSeconds)}`;
}

/** An evaluation's progress line: drawn in place (at most ten times a second), erased by clear(). */
export class EvalProgressLine {
  readonly #stream: Stream;
  readonly #t0 = Date.now();
  #last = 0;
  #shown = false;

  constructor(stream: Stream) {
    this.#stream = stream;
  }

  update(done: number, total: number): void {
    if (Date.now() - this.#last < 100 && done < total) return;
    const elapsed = (Date.now() - this.#t0) / 1000;
    const eta = done > 0 ? (elapsed / done) * (total - done) : NaN;
    this.#stream.write(CLEAR_LINE + evalProgressText(done, total, eta, progressBarSize(this.#stream.columns)));
    this.#last = Date.now();
    this.#shown = true;
  }

  /** Erases the line (nothing is left of it). */
  clear(): void {
    if (this.#shown) this.#stream.write(CLEAR_LINE);
    this.#shown = false;
  }
}
