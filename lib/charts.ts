// The SVG charts of rlora's figures, written once: `rlora plot` (lib/cli/plot.ts: a training log's
// losses) and a sweep's figure (lib/sweep/report.ts: loss curves, head-similarity heatmaps) build
// their Vega-Lite specifications from the pieces here (the figure around the charts, colours,
// trailing means, line marks, heatmaps with their values written in the cells) and render them
// here: headless to SVG by Vega, to PNG by @resvg/resvg-js. Every SVG passes printable(): a control
// character (in a task or variant name) is not allowed in XML; Vega escapes <, & and quotes
// itself. Loads no addon (docs/ARCHITECTURE.md section 11).
import { pathToFileURL } from 'url';

import { printable } from './util/printable';

/** Series colours (Vega's tableau10, its yellow last: a thin yellow line hardly shows on white). */
export const PALETTE = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac', '#eeca3b'];

/** A package the charts need (vega, vega-lite, @resvg/resvg-js) is not installed or does not load. */
export class ChartPackageError extends Error {
  constructor(
    readonly packageName: string,
    /** Why, in a few words ("not installed", or the first line of the loader's error). */
    readonly reason: string,
  ) {
    super(`${packageName} ${reason === 'not installed' ? 'is not installed' : `does not load here (${reason})`}`);
  }
}

/** The Vega-Lite specification of a figure: a white page holding `charts` one above the other. */
export function figure(o: { title?: string; charts: unknown[]; config?: Record<string, unknown>; resolve?: Record<string, unknown> }): Record<string, unknown> {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    ...(o.title ? { title: { text: o.title, fontSize: 15 } } : {}),
    background: 'white',
    padding: 12,
    config: { font: 'sans-serif', ...o.config },
    ...(o.resolve ? { resolve: o.resolve } : {}),
    vconcat: o.charts,
  };
}

/** A chart's own title, left-aligned above it. */
export const chartTitle = (text: string): Record<string, unknown> => ({ text, anchor: 'start', fontSize: 13 });

/** A colour encoding of `field` giving each of `domain` its colour (PALETTE in order unless `range`). */
export function colorEncoding(field: string, domain: string[], range: string[] = domain.map((_, i) => PALETTE[i % PALETTE.length])): Record<string, unknown> {
  return { field, type: 'nominal', title: null, scale: { domain, range } };
}

/** A line mark: `dash` draws it dashed, `points` marks each value, `clip` cuts it at the plot's edges. */
export function lineMark(o: { strokeWidth: number; dash?: number[]; points?: boolean; clip?: boolean }): Record<string, unknown> {
  return { type: 'line', ...(o.points ? { point: true } : {}), strokeWidth: o.strokeWidth, ...(o.dash ? { strokeDash: o.dash } : {}), ...(o.clip ? { clip: true } : {}) };
}

/** Each value replaced by the mean of the last `n` values up to it (fewer at the start); n <= 1: the values. */
export function trailingMean(values: number[], n: number): number[] {
  const w = Math.max(1, n);
  return values.map((_, i) => {
    const window = values.slice(Math.max(0, i - w + 1), i + 1);
    return window.reduce((a, b) => a + b, 0) / window.length;
  });
}

// ---------------------------------------------------------------------------------------------
// Heatmaps

/**
 * The advance width of `text` in a sans-serif font, in em: DejaVu Sans's widths (the font PNGs are
 * rendered with), which are the widest of the usual sans-serif fonts for digits (Arial's and
 * Helvetica's are 0.556 em); other characters as wide as an M.
 */
export function textWidthEm(text: string): number {
  let em = 0;
  for (const c of text) em += /[0-9]/.test(c) ? 0.637 : c === '.' || c === ',' ? 0.318 : c === '-' ? 0.361 : c === '\u2212' || c === '+' ? 0.838 : c === ' ' ? 0.318 : 0.863;
  return em;
}

/** Sizes of a heatmap of `n` x `n` cells: its side stays between these, its labels between these font sizes. */
export const HEATMAP = {
  /** The side of a heatmap of few cells, in pixels. */
  side: 80,
  /** Cells grow to this side (the heatmap with them) so that their labels fit... */
  minCell: 24,
  /** ...up to a heatmap of this side; beyond it cells shrink, and their labels go when they no longer fit. */
  maxSide: 200,
  /** Label font sizes, in pixels: below minFont a label is not drawn. */
  maxFont: 9,
  minFont: 6,
  /** Free pixels left and right of a label in its cell. */
  padding: 1.5,
} as const;

/** A cell's label: the value with two decimals ("0.83", "-0.41"; never "-0.00"). */
export const cellLabel = (v: number): string => (Math.abs(v) < 0.005 ? 0 : v).toFixed(2);

/**
 * The layout of a heatmap of `n` x `n` cells whose labels are `labels`: the side of a cell and of
 * the heatmap, in pixels, and the labels' font size, null when they would not fit in their cells
 * at HEATMAP.minFont (then no label is drawn: labels never run into each other).
 */
export function heatmapLayout(n: number, labels: string[]): { cell: number; side: number; fontSize: number | null } {
  const cell = Math.min(Math.max(HEATMAP.side / n, HEATMAP.minCell), HEATMAP.maxSide / n);
  const widest = Math.max(0, ...labels.map(textWidthEm));
  // as wide as the cell less its padding, as tall as 70% of it (an em box with room above and below)
  const fit = Math.min(HEATMAP.maxFont, 0.7 * cell, widest > 0 ? (cell - 2 * HEATMAP.padding) / widest : Infinity);
  return { cell, side: cell * n, fontSize: fit >= HEATMAP.minFont ? Math.floor(fit * 10) / 10 : null };
}

export interface HeatmapOptions {
  /** The fields of a cell's column and row (ordinal) and value (quantitative), with axis titles. */
  x: { field: string; title: string };
  y: { field: string; title: string };
  value: { field: string; title: string; domain: [number, number]; scheme: string; reverse?: boolean };
  /** The field holding each cell's label text (cellLabel of its value). */
  label: string;
  /** The layout (heatmapLayout): the side and the labels' font size, null for no labels. */
  layout: { side: number; fontSize: number | null };
  /** Labels on cells whose |value| is above this are white (on the scheme's dark ends), else black. */
  darkAbove: number;
}

/** A heatmap's Vega-Lite unit (the `spec` of a facet, or a chart): coloured cells, their labels when they fit. */
export function heatmap(o: HeatmapOptions): Record<string, unknown> {
  const x = { field: o.x.field, type: 'ordinal' };
  const y = { field: o.y.field, type: 'ordinal' };
  const cells = {
    mark: 'rect',
    encoding: {
      x: { ...x, title: o.x.title },
      y: { ...y, title: o.y.title },
      color: { field: o.value.field, type: 'quantitative', title: o.value.title, scale: { domain: o.value.domain, scheme: o.value.scheme, ...(o.value.reverse ? { reverse: true } : {}) } },
    },
  };
  const labels =
    o.layout.fontSize === null
      ? []
      : [
          {
            mark: { type: 'text', fontSize: o.layout.fontSize },
            encoding: {
              x,
              y,
              text: { field: o.label, type: 'nominal' },
              color: { condition: { test: `abs(datum[${JSON.stringify(o.value.field)}]) > ${o.darkAbove}`, value: 'white' }, value: 'black' },
            },
          },
        ];
  return { width: o.layout.side, height: o.layout.side, layer: [cells, ...labels] };
}

// ---------------------------------------------------------------------------------------------
// Rendering

// vega and vega-lite are ES modules only; TypeScript compiled to CommonJS would turn import()
// into require(), so the import is written where the compiler does not see it.
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function loadEsm(name: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  let resolved: string;
  try {
    resolved = require.resolve(name);
  } catch {
    throw new ChartPackageError(name, 'not installed');
  }
  return importEsm(pathToFileURL(resolved).href);
}

/** A Vega-Lite specification as SVG text, its control characters escaped (printable()). */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const [vega, vegaLite] = await Promise.all([loadEsm('vega'), loadEsm('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    // control characters (a task name's) are not allowed in XML: the SVG would not be well-formed
    return printable(await view.toSVG());
  } finally {
    view.finalize();
  }
}

/** SVG to PNG at `scale` pixels per SVG unit, through @resvg/resvg-js (prebuilt binaries; no compiler). */
export function renderPng(svg: string, scale: number): Uint8Array {
  let Resvg: new (svg: string, options: object) => { render(): { asPng(): Uint8Array } };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    ({ Resvg } = require('@resvg/resvg-js'));
  } catch (e) {
    throw new ChartPackageError('@resvg/resvg-js', (e as Error).message.split('\n')[0]);
  }
  const r = new Resvg(svg, { fitTo: { mode: 'zoom', value: scale }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' } });
  return r.render().asPng();
}
