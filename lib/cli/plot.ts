// rlora plot <log.jsonl>: training loss per task over steps (and the overall loss), plus per-task
// evaluation loss and accuracy when the log has them, drawn with Vega-Lite (rendered headless to
// SVG by Vega; PNG through resvg). Needs no native addon.
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';

import { readTextFile } from '../util/json';
import { printable } from '../util/printable';
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
const PALETTE = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#eeca3b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac'];

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
    const window: number[] = [];
    for (const s of log.steps) {
      const v = get(s);
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      window.push(v);
      if (window.length > smooth) window.shift();
      rows.push({ step: s.step, series: name, loss: window.reduce((a, b) => a + b, 0) / window.length });
    }
  }
  const domain = [...tasks, OVERALL];
  const color = {
    field: 'series',
    type: 'nominal',
    title: null,
    scale: { domain, range: [...tasks.map((_, i) => PALETTE[i % PALETTE.length]), OVERALL_COLOR] },
  };
  const width = o.width ?? 640;
  const height = o.height ?? 320;
  const x = { field: 'step', type: 'quantitative', title: 'step', axis: { format: 'd', tickMinStep: 1 } };
  const y = (title: string) => ({ field: 'loss', type: 'quantitative', title, scale: o.logY ? { type: 'log' } : { zero: false } });
  const train = {
    title: { text: `training loss${smooth > 1 ? ` (mean of ${smooth} steps)` : ''}`, anchor: 'start', fontSize: 13 },
    width,
    height,
    data: { values: rows },
    // the overall loss first, so beneath, thin, dashed and grey: it lies between the tasks' lines
    // and must not cover them (layers are drawn in order, the last on top)
    layer: [
      { transform: [{ filter: `datum.series === '${OVERALL}'` }], mark: { type: 'line', strokeWidth: 1.25, strokeDash: [5, 3], clip: true }, encoding: { x, y: y('loss'), color } },
      { transform: [{ filter: `datum.series !== '${OVERALL}'` }], mark: { type: 'line', strokeWidth: 2, clip: true }, encoding: { x, y: y('loss'), color } },
    ],
  };
  const charts: unknown[] = [train];
  if (log.evals.length) {
    const evalRows = log.evals.flatMap((e) =>
      Object.entries(e.tasks).map(([task, r]) => ({ step: e.step, series: task, loss: typeof r.loss === 'number' && Number.isFinite(r.loss) ? r.loss : null, accuracy: r.accuracy })),
    );
    const half = Math.max(160, Math.floor((width - 80) / 2));
    const mark = { type: 'line', point: true, strokeWidth: 1.5 };
    charts.push({
      hconcat: [
        { title: { text: 'evaluation loss', anchor: 'start', fontSize: 13 }, width: half, height: Math.round(height * 0.75), data: { values: evalRows }, mark, encoding: { x, y: y('loss'), color } },
        {
          title: { text: 'evaluation accuracy (exact match)', anchor: 'start', fontSize: 13 },
          width: half,
          height: Math.round(height * 0.75),
          data: { values: evalRows },
          mark,
          encoding: { x, y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', scale: { domain: [0, 1] }, axis: { format: '%' } }, color },
        },
      ],
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    ...(o.title ? { title: { text: o.title, fontSize: 15 } } : {}),
    background: 'white',
    padding: 12,
    config: { font: 'sans-serif', legend: { orient: 'right' } },
    resolve: { scale: { color: 'shared' } },
    vconcat: charts,
  };
}

// vega and vega-lite are ES modules only; TypeScript compiled to CommonJS would turn import()
// into require(), so the import is written where the compiler does not see it.
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function load(name: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  let resolved: string;
  try {
    resolved = require.resolve(name);
  } catch {
    throw new InputError(`rlora plot needs the ${name} package, which is not installed (npm install ${name})`);
  }
  return importEsm(pathToFileURL(resolved).href);
}

/** The chart as SVG text. */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const [vega, vegaLite] = await Promise.all([load('vega'), load('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    // control characters (a task name's) are not allowed in XML: the SVG would not be well-formed
    return printable(await view.toSVG());
  } finally {
    view.finalize();
  }
}

/** SVG to PNG through @resvg/resvg-js (prebuilt binaries; no compiler). */
export function renderPng(svg: string, scale: number): Buffer {
  let Resvg: new (svg: string, options: object) => { render(): { asPng(): Buffer } };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    ({ Resvg } = require('@resvg/resvg-js'));
  } catch (e) {
    throw new InputError(`--png needs @resvg/resvg-js, which does not load here (${(e as Error).message.split('\n')[0]}); the SVG was written`);
  }
  const r = new Resvg(svg, { fitTo: { mode: 'zoom', value: scale }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' } });
  return r.render().asPng();
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
