// What a sweep reports: each variant summarized over seeds (mean ± std per task, trainable
// parameters, tokens/s, peak memory, head similarity), table.md, and the figure: training loss of
// each variant over the steps and the head-similarity heatmap of each multi-head variant per
// module kind, drawn with Vega-Lite from lib/charts.ts's pieces and rendered by it (to SVG and PNG,
// as `rlora plot`'s charts).
import * as fs from 'fs';
import * as path from 'path';

import * as charts from '../charts';
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
  const runs = input.runs.filter((x) => x.seed === seed);
  const curves: { method: string; step: number; loss: number }[] = [];
  for (const r of runs) charts.trailingMean(r.losses, smooth).forEach((loss, i) => curves.push({ method: r.variant, step: i + 1, loss }));
  const cells: { method: string; kind: string; i: number; j: number; cos: number; label: string }[] = [];
  let heads = 0;
  for (const r of runs) {
    for (const [kind, m] of Object.entries(r.headSimilarity)) {
      if (m.length < 2) continue;
      heads = Math.max(heads, m.length);
      m.forEach((row, i) => row.forEach((cos, j) => cells.push({ method: r.variant, kind, i, j, cos, label: charts.cellLabel(cos) })));
    }
  }
  const kinds = [...new Set(cells.map((c) => c.kind))];
  // every facet is as large as the one with the most heads; its labels as small as they must be there
  const layout = charts.heatmapLayout(Math.max(1, heads), cells.map((c) => c.label));
  return charts.figure({
    title: `${input.title}, seed ${seed}`,
    charts: [
      {
        title: charts.chartTitle(`training loss per step (mean of the last ${smooth} steps)`),
        width: 560,
        height: 260,
        data: { values: curves },
        mark: charts.lineMark({ strokeWidth: 1.6 }),
        encoding: {
          x: { field: 'step', type: 'quantitative', title: 'step' },
          y: { field: 'loss', type: 'quantitative', title: 'loss (nats per response token)', scale: { zero: false } },
          color: charts.colorEncoding('method', methods),
        },
      },
      ...(cells.length
        ? [
            {
              title: charts.chartTitle('head similarity after training: cosine of heads B_i and B_j, mean over the layers, per module'),
              data: { values: cells },
              facet: {
                row: { field: 'method', type: 'nominal', title: null, sort: methods },
                column: { field: 'kind', type: 'nominal', title: null, sort: kinds },
              },
              spec: charts.heatmap({
                x: { field: 'j', title: 'head j' },
                y: { field: 'i', title: 'head i' },
                value: { field: 'cos', title: 'cosine', domain: [-1, 1], scheme: 'redblue', reverse: true },
                label: 'label',
                layout,
                darkAbove: 0.6,
              }),
            },
          ]
        : []),
    ],
  });
}

/** Writes figure.svg and figure.png into `dir`; returns the file names. */
export async function writeFigure(input: FigureInput, dir: string): Promise<string[]> {
  const svg = await charts.renderSvg(figureSpec(input));
  fs.writeFileSync(path.join(dir, 'figure.svg'), svg);
  fs.writeFileSync(path.join(dir, 'figure.png'), charts.renderPng(svg, 2));
  return ['figure.svg', 'figure.png'];
}
