// The download progress on stderr: on a terminal one line redrawn in place at most ten times a
// second ("model.safetensors |=====-----| 5.2 MB / 10.8 MB | 3.1 MB/s"); elsewhere (a log, CI) one
// line per file when it is done. HF_HUB_DISABLE_PROGRESS_BARS=1 silences both, as in Python.
import { CLEAR_LINE, progressBarSize } from '../progress';
import { envFlag } from './cache';
import { formatBytes } from '../util/units';

/** "812 B", "5.20 MB", "1.07 GB" (decimal units, as download sizes are given). */
export function formatSize(n: number): string {
  return formatBytes(n, 1000);
}

/** "3.1 MB/s" from bytes over seconds ("-" before any byte came or any time has passed). */
export function formatRate(bytes: number, seconds: number): string {
  return seconds > 0 && bytes > 0 ? `${formatSize(Math.round(bytes / seconds))}/s` : '-';
}

interface Stream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** One file's progress line. */
export class DownloadProgress {
  readonly #stream: Stream | null;
  readonly #tty: boolean;
  #file = '';
  #size = 0;
  #done = 0;
  #resumedFrom = 0;
  #t0 = 0;
  #last = 0;

  constructor(stream: Stream = process.stderr) {
    this.#stream = envFlag('HF_HUB_DISABLE_PROGRESS_BARS') ? null : stream;
    this.#tty = Boolean(stream.isTTY);
  }

  /** A line of its own (erasing the bar first on a terminal). */
  say(text: string): void {
    this.#stream?.write((this.#tty ? CLEAR_LINE : '') + text + '\n');
  }

  /** A file starts, `have` bytes of it already on disk (a resumed download). */
  start(file: string, size: number, have: number): void {
    this.#file = file;
    this.#size = size;
    this.#done = have;
    this.#resumedFrom = have;
    this.#t0 = Date.now();
    this.#last = 0;
    this.#draw();
  }

  add(bytes: number): void {
    this.#done += bytes;
    if (Date.now() - this.#last >= 100) this.#draw();
  }

  /** The file is complete: its final line. */
  end(): void {
    const seconds = (Date.now() - this.#t0) / 1000;
    const fetched = this.#done - this.#resumedFrom;
    const resumed = this.#resumedFrom > 0 ? `, resumed at ${formatSize(this.#resumedFrom)}` : '';
    this.say(`${this.#file}: ${formatSize(this.#size)} in ${seconds.toFixed(1)} s (${formatRate(fetched, seconds)}${resumed})`);
  }

  /** Ends the bar's line after a failure, so that the error starts on a line of its own. */
  abort(): void {
    if (this.#tty && this.#stream && this.#last > 0) this.#stream.write('\n');
  }

  #draw(): void {
    this.#last = Date.now();
    if (!this.#tty || !this.#stream) return;
    const bar = progressBarSize(this.#stream.columns);
    const filled = this.#size > 0 ? Math.min(bar, Math.round((bar * this.#done) / this.#size)) : bar;
    const seconds = (Date.now() - this.#t0) / 1000;
    this.#stream.write(
      `${CLEAR_LINE}${this.#file} |${'='.repeat(filled)}${'-'.repeat(bar - filled)}| ${formatSize(this.#done)} / ${formatSize(this.#size)} | ${formatRate(this.#done - this.#resumedFrom, seconds)}`,
    );
  }
}
