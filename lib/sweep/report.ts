// What a sweep reports: each variant summarized over seeds (mean ± std per task, trainable
// parameters, tokens/s, peak memory, head similarity), table.md, and the figure: training loss of
// each variant over the steps and the head-similarity heatmap of each multi-head variant per
// module kind, drawn with Vega-Lite, rendered headless to SVG by Vega and to PNG by
// @resvg/resvg-js (the libraries `rlora plot` uses).
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';

import type { JobResult } from './types';
import { PairedDifference, Stat, stats } from './stats';

export interface VariantSummary {
  variant: string;
  what: string;
  learningRate: number;
  /** Whether the rate was picked on validation. */
  tuned: boolean;
  trainable: number;
  /** Per task, over seeds. */
  accuracy: Record<string, Stat>;
  loss: Record<string, Stat>;
  /** Means over the tasks, over seeds. */
  meanAccuracy: Stat;
  meanLoss: Stat;
  /** Mean training loss of the last 10 steps, over seeds. */
  trainLoss: Stat;
  /** Mean seconds of training per job. */
  seconds: number;
  tokensPerSecond: number;
  /** The largest peak of the allocator over the seeds. */
  peakAllocatedBytes: number;
  /** Per module kind (null for one head). */
  headCosine: Record<string, Stat | null>;
  /** Mean off-diagonal head cosine over every kind of module, over seeds (null for one head). */
  meanHeadCosine: Stat | null;
}

/** Each variant (in `order`) over its runs. */
export function summarize(runs: JobResult[], order: string[], picks: Record<string, { learningRate: number; tuned: boolean }>): VariantSummary[] {
  return order.map((variant) => {
    const rs = runs.filter((r) => r.variant === variant);
    const tasks = Object.keys(rs[0].tasks);
    const kinds = Object.keys(rs[0].headCosine);
    const allCos = (r: JobResult): number | null => {
      const v = kinds.map((k) => r.headCosine[k]);
      return v.every((x) => x !== null) ? (v as number[]).reduce((a, b) => a + b, 0) / v.length : null;
    };
    return {
      variant,
      what: rs[0].what,
      learningRate: rs[0].learningRate,
      tuned: picks[variant]?.tuned ?? false,
      trainable: rs[0].trainable,
      accuracy: Object.fromEntries(tasks.map((t) => [t, stats(rs.map((r) => r.tasks[t].accuracy))])),
      loss: Object.fromEntries(tasks.map((t) => [t, stats(rs.map((r) => r.tasks[t].loss))])),
      meanAccuracy: stats(rs.map((r) => r.meanAccuracy)),
      meanLoss: stats(rs.map((r) => r.meanLoss)),
      trainLoss: stats(rs.map((r) => r.trainLoss)),
      seconds: stats(rs.map((r) => r.seconds)).mean,
      tokensPerSecond: stats(rs.map((r) => r.tokensPerSecond)).mean,
      peakAllocatedBytes: Math.max(...rs.map((r) => r.peakAllocatedBytes)),
      headCosine: Object.fromEntries(kinds.map((k) => [k, rs[0].headCosine[k] === null ? null : stats(rs.map((r) => r.headCosine[k] as number))])),
      meanHeadCosine: allCos(rs[0]) === null ? null : stats(rs.map((r) => allCos(r) as number)),
    };
  });
}

/** "63.2 ± 1.5" (percent) or "63.2" for one seed. */
const pct = (v: Stat): string => `${(100 * v.mean).toFixed(1)}${v.n > 1 ? ` ± ${(100 * v.std).toFixed(1)}` : ''}`;
const num = (v: Stat, digits: number): string => `${v.mean.toFixed(digits)}${v.n > 1 ? ` ± ${v.std.toFixed(digits)}` : ''}`;
const points = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;

/** One line about a paired difference: "a − b: +1.2 points (95% interval -0.3 to +2.7 over 3 paired seeds): within noise". */
export function describeDifference(d: PairedDifference): string {
  if (!d.ci95) return `${d.a} − ${d.b}: ${points(d.mean)} points on ${d.perSeed.length === 1 ? 'one seed' : 'no paired seeds'}: no interval`;
  const verdict = d.verdict === 'wins' ? `${d.a} is better` : d.verdict === 'loses' ? `${d.a} is worse` : 'within noise';
  return `${d.a} − ${d.b}: ${points(d.mean)} points (95% interval ${points(d.ci95[0])} to ${points(d.ci95[1])} over ${d.perSeed.length} paired seeds): ${verdict}`;
}

function mdTable(head: string[], rows: string[][], right: boolean[]): string {
  return [`| ${head.join(' | ')} |`, `| ${right.map((r) => (r ? '---:' : '---')).join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** table.md: the variants at their picks (mean ± std over seeds), the validation grid, and the comparisons. */
export function markdownTable(o: { summary: VariantSummary[]; validation: { variant: string; learningRate: number; accuracy: Stat; loss: Stat; trainLoss: Stat; picked: boolean }[]; comparisons: PairedDifference[]; evaluatedOn: string; seeds: number; steps: number; batchSize: number }): string {
  const tasks = Object.keys(o.summary[0].accuracy);
  const spread = o.seeds > 1 ? `, mean ± std over ${o.seeds} seeds` : ', one seed';
  const out: string[] = [];
  out.push(`Exact-match accuracy (%) on ${o.evaluatedOn} per task${spread}; ${o.steps} steps of ${o.batchSize}. lr: picked on validation (*) or given.`, '');
  out.push(
    mdTable(
      ['variant', 'lr', 'trainable', ...tasks, 'mean', 'loss', 'train loss', 'head cos', 'tok/s', 'peak MiB'],
      o.summary.map((s) => [
        s.variant,
        `${s.learningRate}${s.tuned ? '*' : ''}`,
        String(s.trainable),
        ...tasks.map((t) => pct(s.accuracy[t])),
        pct(s.meanAccuracy),
        num(s.meanLoss, 3),
        num(s.trainLoss, 3),
        s.meanHeadCosine ? num(s.meanHeadCosine, 3) : '-',
        s.tokensPerSecond.toFixed(0),
        (s.peakAllocatedBytes / 2 ** 20).toFixed(1),
      ]),
      [false, true, true, ...tasks.map(() => true), true, true, true, true, true, true],
    ),
  );
  out.push('', 'loss: mean loss per response token over the tasks; train loss: mean training loss of the last 10 steps; head cos: mean cosine similarity between different heads B_i (HydraLoRA\'s start identical); peak MiB: the allocator\'s peak during training.');
  out.push('', 'Variants:', ...o.summary.map((s) => `- ${s.variant}: ${s.what}`));
  if (o.validation.length) {
    const rates = [...new Set(o.validation.map((v) => v.learningRate))].sort((a, b) => a - b);
    const variants = [...new Set(o.validation.map((v) => v.variant))];
    out.push('', `Mean accuracy (%) on validation per learning rate${spread} (the pick in bold; train loss in parentheses):`, '');
    out.push(
      mdTable(
        ['variant', ...rates.map(String)],
        variants.map((name) => [
          name,
          ...rates.map((lr) => {
            const row = o.validation.find((v) => v.variant === name && v.learningRate === lr);
            if (!row) return '';
            const cell = `${pct(row.accuracy)} (${row.trainLoss.mean.toFixed(3)})`;
            return row.picked ? `**${cell}**` : cell;
          }),
        ]),
        [false, ...rates.map(() => true)],
      ),
    );
  }
  if (o.comparisons.length) out.push('', `Paired differences of mean accuracy on ${o.evaluatedOn} (same seed = same data order and start):`, '', ...o.comparisons.map((d) => `- ${describeDifference(d)}`));
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// The figure

// vega and vega-lite are ES modules only; written so that TypeScript compiled to CommonJS keeps import()
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const COLORS = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac', '#eeca3b'];

export interface FigureInput {
  /** The title; ", seed <seed>" follows. */
  title: string;
  /** Runs of the variants (those of the first seed are drawn). */
  runs: JobResult[];
  /** Variants in the order of the legend and rows. */
  variants: string[];
}

/** The Vega-Lite specification of the figure. */
export function figureSpec(input: FigureInput, smooth = 10): Record<string, unknown> {
  const methods = input.variants;
  const seed = input.runs[0].seed;
  const curves: { method: string; step: number; loss: number }[] = [];
  for (const r of input.runs.filter((x) => x.seed === seed)) {
    const window: number[] = [];
    r.losses.forEach((l, i) => {
      window.push(l);
      if (window.length > smooth) window.shift();
      curves.push({ method: r.variant, step: i + 1, loss: window.reduce((a, b) => a + b, 0) / window.length });
    });
  }
  const cells: { method: string; kind: string; i: number; j: number; cos: number }[] = [];
  for (const r of input.runs.filter((x) => x.seed === seed)) {
    for (const [kind, m] of Object.entries(r.headSimilarity)) {
      if (m.length < 2) continue;
      m.forEach((row, i) => row.forEach((cos, j) => cells.push({ method: r.variant, kind, i, j, cos })));
    }
  }
  const kinds = [...new Set(cells.map((c) => c.kind))];
  const colors = methods.map((_, i) => COLORS[i % COLORS.length]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `${input.title}, seed ${seed}`, fontSize: 15 },
    background: 'white',
    padding: 12,
    config: { font: 'sans-serif' },
    vconcat: [
      {
        title: { text: `training loss per step (mean of the last ${smooth} steps)`, anchor: 'start', fontSize: 13 },
        width: 560,
        height: 260,
        data: { values: curves },
        mark: { type: 'line', strokeWidth: 1.6 },
        encoding: {
          x: { field: 'step', type: 'quantitative', title: 'step' },
          y: { field: 'loss', type: 'quantitative', title: 'loss (nats per response token)', scale: { zero: false } },
          color: { field: 'method', type: 'nominal', scale: { domain: methods, range: colors }, title: null },
        },
      },
      ...(cells.length
        ? [
            {
              title: { text: 'head similarity after training: cosine of heads B_i and B_j, mean over the layers, per module', anchor: 'start', fontSize: 13 },
              data: { values: cells },
              facet: {
                row: { field: 'method', type: 'nominal', title: null, sort: methods },
                column: { field: 'kind', type: 'nominal', title: null, sort: kinds },
              },
              spec: {
                width: 80,
                height: 80,
                layer: [
                  {
                    mark: 'rect',
                    encoding: {
                      x: { field: 'j', type: 'ordinal', title: 'head j' },
                      y: { field: 'i', type: 'ordinal', title: 'head i' },
                      color: { field: 'cos', type: 'quantitative', title: 'cosine', scale: { domain: [-1, 1], scheme: 'redblue', reverse: true } },
                    },
                  },
                  {
                    mark: { type: 'text', fontSize: 8 },
                    encoding: {
                      x: { field: 'j', type: 'ordinal' },
                      y: { field: 'i', type: 'ordinal' },
                      text: { field: 'cos', type: 'quantitative', format: '.2f' },
                      color: { condition: { test: 'abs(datum.cos) > 0.6', value: 'white' }, value: 'black' },
                    },
                  },
                ],
              },
            },
          ]
        : []),
    ],
  };
}

async function load(name: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return importEsm(pathToFileURL(require.resolve(name)).href);
}

/** Writes figure.svg and figure.png into `dir`; returns the file names. */
export async function writeFigure(input: FigureInput, dir: string): Promise<string[]> {
  const [vega, vegaLite] = await Promise.all([load('vega'), load('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(figureSpec(input)).spec), { renderer: 'none' });
  let svg: string;
  try {
    svg = await view.toSVG();
  } finally {
    view.finalize();
  }
  fs.writeFileSync(path.join(dir, 'figure.svg'), svg);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Resvg } = require('@resvg/resvg-js') as { Resvg: new (svg: string, o: object) => { render(): { asPng(): Buffer } } };
  const png = new Resvg(svg, { fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' } }).render().asPng();
  fs.writeFileSync(path.join(dir, 'figure.png'), png);
  return ['figure.svg', 'figure.png'];
}
