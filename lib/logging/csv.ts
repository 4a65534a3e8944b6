// A CSV of a run's numbers in long form, one row per number: `step,name,value`. Long form keeps
// one header whatever the tasks and metrics are (a wide table's columns would change mid-run).
import * as fs from 'fs';

import type { MetricSink, Scalars } from './sink';

const HEADER = 'step,name,value\n';

/** A CSV field: quoted (quotes doubled) where it holds a comma, a quote or a line break. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export class CsvSink implements MetricSink {
  /** A new file; or, continuing a run from step `continueFrom`, the existing one without its rows after that step. */
  constructor(
    readonly file: string,
    continueFrom?: number,
  ) {
    if (continueFrom !== undefined && fs.existsSync(file)) {
      const rows = fs.readFileSync(file, 'utf8').split('\n').slice(1).filter((r) => r !== '' && Number(r.slice(0, r.indexOf(','))) <= continueFrom);
      fs.writeFileSync(file, HEADER + rows.map((r) => r + '\n').join(''));
    } else fs.writeFileSync(file, HEADER);
  }
  log(step: number, scalars: Scalars): void {
    const rows = Object.entries(scalars).map(([name, v]) => `${step},${csvField(name)},${v}\n`);
    if (rows.length) fs.appendFileSync(this.file, rows.join(''));
  }
}
