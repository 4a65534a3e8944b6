// rlora plot <log.jsonl>: training loss per task over steps (and the overall loss), plus per-task
// evaluation loss and accuracy when the log has them, drawn with Vega-Lite (the charts and their
// rendering, to SVG and PNG, are lib/charts.ts's). Needs no native addon.
import * as fs from 'fs';
import * as path from 'path';

import * as charts from '../charts';
import { readTextFile } from '../util/json';
import { InputError, intOption, parseArgs, stringOption, Subcommand, UsageError } from './args';

export const plot: Subcommand = {
  summary: 'draw the loss per task over steps from a training log (SVG, or PNG)',
  help: `rlora plot <log.jsonl> [--out loss.svg] [--png loss.png] [options]

Reads the log.jsonl that rlora train (or Trainer with outputDir) writes and draws the training loss
of each task and the overall loss over the steps; when the log holds evaluations, a second row
shows each task's evaluation loss and exact-match accuracy. Drawn with Vega-Lite. Steps logged
twice (a run resumed from an earlier checkpoint) count once, the later line winning.

  --out FILE      the SVG to write (default: loss.svg next to the log)
  --png FILE      also a PNG (rendered by resvg; text needs a system font, e.g. DejaVu Sans)
  --scale S       PNG pixels per SVG unit (default 2)
  --smooth N      plot the mean of the last N steps of each line (default 1: raw values)
  --log-y         logarithmic loss axis
  --title T       the chart's title (default: the log's folder)
  --width W       plot width in pixels (default 640)
  --height H      plot height in pixels (default 320)

Examples:
  rlora plot runs/a/log.jsonl --out loss.svg
  rlora plot runs/a/log.jsonl --out loss.svg --png loss.png --smooth 20 --log-y`,
  run: (args) => runPlot(args),
};

interface StepLine {
  step: number;
  loss: number;
  taskLoss: Record<string, number>;
}
interface EvalLine {
  step: number;
  tasks: Record<string, { loss: number | null; accuracy: number; count: number }>;
}

/** The step and eval lines of a log, one per step (the last line of a step wins). */
export function readLog(file: string): { steps: StepLine[]; evals: EvalLine[] } {
  let text: string;
  try {
    text = readTextFile(file, { kind: 'log' }); // a regular file of bounded size: not /dev/zero
  } catch (e) {
    throw new InputError((e as Error).message);
  }
  const steps = new Map<number, StepLine>();
  const evals = new Map<number, EvalLine>();
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const at = `${file}:${i + 1}`;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      // a line cut short by a crash can only be the last one
      if (lines.slice(i + 1).every((l) => l.trim() === '')) {
        process.stderr.write(`rlora plot: ${at}: skipping an incomplete last line\n`);
        return;
      }
      throw new InputError(`${at}: invalid JSON (${(e as Error).message})`);
    }
    if (typeof rec !== 'object' || rec === null || typeof rec.step !== 'number') throw new InputError(`${at}: not a log line of rlora (no "step" number)`);
    if (rec.type === 'eval') {
      if (typeof rec.tasks !== 'object' || rec.tasks === null) throw new InputError(`${at}: an eval line without "tasks"`);
      evals.set(rec.step, rec as unknown as EvalLine);
    } else if (rec.type === undefined) {
      if (typeof rec.taskLoss !== 'object' || rec.taskLoss === null) throw new InputError(`${at}: a step line without "taskLoss"`);
      steps.set(rec.step, { step: rec.step, loss: rec.loss as number, taskLoss: rec.taskLoss as Record<string, number> });
    }
  });
  const byStep = <T extends { step: number }>(m: Map<number, T>): T[] => [...m.values()].sort((a, b) => a.step - b.step);
  return { steps: byStep(steps), evals: byStep(evals) };
}

const OVERALL = 'all tasks';
const OVERALL_COLOR = '#7f7f7f';

export interface PlotOptions {
  title?: string;
  smooth?: number;
  logY?: boolean;
  width?: number;
  height?: number;
}

/** The Vega-Lite specification of the chart (exported for tests and for users who restyle it). */
export function lossSpec(log: { steps: StepLine[]; evals: EvalLine[] }, o: PlotOptions = {}): Record<string, unknown> {
  const tasks = [...new Set([...log.steps.flatMap((s) => Object.keys(s.taskLoss)), ...log.evals.flatMap((e) => Object.keys(e.tasks))])].sort();
  const smooth = Math.max(1, o.smooth ?? 1);
  const rows: { step: number; series: string; loss: number }[] = [];
  const series: [string, (s: StepLine) => number | undefined][] = [[OVERALL, (s) => s.loss], ...tasks.map((t): [string, (s: StepLine) => number | undefined] => [t, (s) => s.taskLoss[t]])];
  for (const [name, get] of series) {
    const points = log.steps.flatMap((s) => {
      const v = get(s);
      return typeof v === 'number' && Number.isFinite(v) ? [{ step: s.step, v }] : [];
    });
    const means = charts.trailingMean(points.map((p) => p.v), smooth);
    points.forEach((p, i) => rows.push({ step: p.step, series: name, loss: means[i] }));
  }
  const color = charts.colorEncoding('series', [...tasks, OVERALL], [...tasks.map((_, i) => charts.PALETTE[i % charts.PALETTE.length]), OVERALL_COLOR]);
  const width = o.width ?? 640;
  const height = o.height ?? 320;
  const x = { field: 'step', type: 'quantitative', title: 'step', axis: { format: 'd', tickMinStep: 1 } };
  const y = (title: string) => ({ field: 'loss', type: 'quantitative', title, scale: o.logY ? { type: 'log' } : { zero: false } });
  const train = {
    title: charts.chartTitle(`training loss${smooth > 1 ? ` (mean of ${smooth} steps)` : ''}`),
    width,
    height,
    data: { values: rows },
    // the overall loss first, so beneath, thin, dashed and grey: it lies between the tasks' lines
    // and must not cover them (layers are drawn in order, the last on top)
    layer: [
      { transform: [{ filter: `datum.series === '${OVERALL}'` }], mark: charts.lineMark({ strokeWidth: 1.25, dash: [5, 3], clip: true }), encoding: { x, y: y('loss'), color } },
      { transform: [{ filter: `datum.series !== '${OVERALL}'` }], mark: charts.lineMark({ strokeWidth: 2, clip: true }), encoding: { x, y: y('loss'), color } },
    ],
  };
  const panels: unknown[] = [train];
  if (log.evals.length) {
    const evalRows = log.evals.flatMap((e) =>
      Object.entries(e.tasks).map(([task, r]) => ({ step: e.step, series: task, loss: typeof r.loss === 'number' && Number.isFinite(r.loss) ? r.loss : null, accuracy: r.accuracy })),
    );
    const half = Math.max(160, Math.floor((width - 80) / 2));
    const mark = charts.lineMark({ strokeWidth: 1.5, points: true });
    panels.push({
      hconcat: [
        { title: charts.chartTitle('evaluation loss'), width: half, height: Math.round(height * 0.75), data: { values: evalRows }, mark, encoding: { x, y: y('loss'), color } },
        {
          title: charts.chartTitle('evaluation accuracy (exact match)'),
          width: half,
          height: Math.round(height * 0.75),
          data: { values: evalRows },
          mark,
          encoding: { x, y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', scale: { domain: [0, 1] }, axis: { format: '%' } }, color },
        },
      ],
    });
  }
  return charts.figure({ title: o.title, charts: panels, config: { legend: { orient: 'right' } }, resolve: { scale: { color: 'shared' } } });
}

/** The chart as SVG text (lib/charts.ts renderSvg; a missing vega or vega-lite is an InputError). */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  try {
    return await charts.renderSvg(spec);
  } catch (e) {
    if (e instanceof charts.ChartPackageError) throw new InputError(`rlora plot needs the ${e.packageName} package, which is not installed (npm install ${e.packageName})`);
    throw e;
  }
}

/** SVG to PNG (lib/charts.ts renderPng; @resvg/resvg-js not loading is an InputError). */
export function renderPng(svg: string, scale: number): Uint8Array {
  try {
    return charts.renderPng(svg, scale);
  } catch (e) {
    if (e instanceof charts.ChartPackageError) throw new InputError(`--png needs @resvg/resvg-js, which does not load here (${e.reason}); the SVG was written`);
    throw e;
  }
}

async function runPlot(args: string[]): Promise<number> {
  const { opts, rest } = parseArgs(args, { out: 'value', png: 'value', scale: 'value', smooth: 'value', 'log-y': 'flag', title: 'value', width: 'value', height: 'value' });
  if (rest.length !== 1) throw new UsageError(rest.length ? `one log file, got ${rest.length} arguments` : 'the log.jsonl file is required');
  const file = rest[0];
  const out = stringOption(opts, 'out') ?? path.join(path.dirname(file), 'loss.svg');
  const png = stringOption(opts, 'png');
  const scaleText = stringOption(opts, 'scale');
  const scale = scaleText === undefined ? 2 : Number(scaleText);
  if (!(scale > 0 && scale <= 16)) throw new UsageError(`--scale must be a number in (0, 16], got ${JSON.stringify(scaleText)}`);
  const log = readLog(file);
  if (log.steps.length === 0) throw new InputError(`${file} has no step lines: nothing to plot`);
  const spec = lossSpec(log, {
    title: stringOption(opts, 'title') ?? path.basename(path.dirname(path.resolve(file))),
    smooth: intOption(opts, 'smooth', 1),
    logY: Boolean(opts['log-y']),
    width: intOption(opts, 'width', 100),
    height: intOption(opts, 'height', 80),
  });
  const svg = await renderSvg(spec);
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  fs.writeFileSync(out, svg);
  const tasks = new Set(log.steps.flatMap((s) => Object.keys(s.taskLoss)));
  console.log(`${out}: ${log.steps.length} steps (${log.steps[0].step}..${log.steps[log.steps.length - 1].step}), ${tasks.size} tasks, ${log.evals.length} evaluations`);
  if (png) {
    fs.mkdirSync(path.dirname(path.resolve(png)), { recursive: true });
    fs.writeFileSync(png, renderPng(svg, scale));
    console.log(`${png}: PNG at ${scale}x`);
  }
  return 0;
}
