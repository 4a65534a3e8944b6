// The demo's figure: training loss per method over the steps, and the head-similarity heatmap of
// each multi-head method per module kind. Drawn with Vega-Lite, rendered headless to SVG by Vega and
// to PNG by @resvg/resvg-js (the libraries `rlora plot` uses).
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';

import type { Results } from './run';

// vega and vega-lite are ES modules only; written so that TypeScript compiled to CommonJS keeps import()
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const COLORS = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#b279a2'];

/** The Vega-Lite specification of the figure. */
export function figureSpec(results: Results, smooth = 10): Record<string, unknown> {
  const methods = results.summary.map((s) => s.method);
  const seed = results.seeds[0];
  const curves: { method: string; step: number; loss: number }[] = [];
  for (const r of results.runs.filter((x) => x.seed === seed)) {
    const window: number[] = [];
    r.losses.forEach((l, i) => {
      window.push(l);
      if (window.length > smooth) window.shift();
      curves.push({ method: r.method, step: i + 1, loss: window.reduce((a, b) => a + b, 0) / window.length });
    });
  }
  const cells: { method: string; kind: string; i: number; j: number; cos: number }[] = [];
  for (const r of results.runs.filter((x) => x.seed === seed)) {
    for (const [kind, m] of Object.entries(r.headSimilarity)) {
      if (m.length < 2) continue;
      m.forEach((row, i) => row.forEach((cos, j) => cells.push({ method: r.method, kind, i, j, cos })));
    }
  }
  const kinds = [...new Set(cells.map((c) => c.kind))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `rlora demo (${results.settings.name}): ${results.data.tasks.length} tasks, seed ${seed}`, fontSize: 15 },
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
          color: { field: 'method', type: 'nominal', scale: { domain: methods, range: COLORS.slice(0, methods.length) }, title: null },
        },
      },
      {
        title: { text: 'head similarity after training: cosine of heads B_i and B_j, mean over the layers, per module', anchor: 'start', fontSize: 13 },
        data: { values: cells },
        facet: {
          row: { field: 'method', type: 'nominal', title: null, sort: methods },
          column: { field: 'kind', type: 'nominal', title: null, sort: kinds, header: { labelExpr: "datum.value + '_proj'" } },
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
    ],
  };
}

async function load(name: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return importEsm(pathToFileURL(require.resolve(name)).href);
}

/** Writes figure.svg and figure.png into `dir`; returns the file names. */
export async function writeFigure(results: Results, dir: string): Promise<string[]> {
  const [vega, vegaLite] = await Promise.all([load('vega'), load('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(figureSpec(results)).spec), { renderer: 'none' });
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
