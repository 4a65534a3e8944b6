// The charts (lib/charts.ts) that `rlora plot` and a sweep's figure share: the heatmap's cell labels
// never run into each other ("1.000.830.78" when cells were narrow): in the rendered SVG, each
// label's box (its width measured with DejaVu Sans, the PNG's font, through Python's PIL, at the
// SVG's font size) overlaps no other, or there are no labels; every text of a figure stays
// well-formed XML whatever the variant names hold; the trailing mean. Loads no addon. Rendering runs
// in a child node (vega is an ES module, which jest's CommonJS sandbox cannot import).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { cellLabel, heatmap, heatmapLayout, textWidthEm, trailingMean } from '../lib/charts';
import type { JobResult } from '../lib/sweep/types';
import { figureSpec } from '../lib/sweep/report';

jest.setTimeout(60_000);

const FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf';
const CHARTS = path.join(__dirname, '..', 'lib', 'charts.ts');

/** lib/charts.ts's renderSvg of `spec`, run in a child node. */
function renderSvg(spec: Record<string, unknown>): string {
  const code = `require(${JSON.stringify(CHARTS)}).renderSvg(JSON.parse(require('fs').readFileSync(0, 'utf8'))).then((s) => process.stdout.write(s))`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { input: JSON.stringify(spec), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`rendering failed: ${r.stderr}`);
  return r.stdout;
}

/** Advance widths in pixels of each [text, font size] in DejaVu Sans (Python's PIL reads the font). */
function measure(items: [string, number][]): number[] {
  const script = `import json, sys
from PIL import ImageFont
font = ImageFont.truetype(sys.argv[1], 1000)
print(json.dumps([font.getlength(text) * size / 1000 for text, size in json.load(sys.stdin)]))`;
  const r = spawnSync('/usr/bin/python3', ['-c', script, FONT], { input: JSON.stringify(items), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`measuring text with PIL and ${FONT} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

interface Label {
  text: string;
  x: number;
  y: number;
  fontSize: number;
}

/** The text marks of each mark group of the SVG (axis labels, titles and legends are not marks), as drawn. */
function markLabels(svg: string): Label[][] {
  const groups = [...svg.matchAll(/<g class="mark-text role-mark[^"]*"[^>]*>(.*?)<\/g>/g)].map((m) => m[1]);
  return groups.map((g) =>
    [...g.matchAll(/<text [^>]*text-anchor="middle" transform="translate\(([-\d.e]+),([-\d.e]+)\)"[^>]*font-size="([\d.]+)px"[^>]*>([^<]*)<\/text>/g)].map((m) => ({
      x: Number(m[1]),
      y: Number(m[2]),
      fontSize: Number(m[3]),
      text: m[4].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&'),
    })),
  );
}

/** Pairs of labels of one group whose boxes (centred on x, measured width; 0.8 em above the baseline y, 0.25 below) meet. */
function overlaps(labels: Label[]): string[] {
  const widths = measure(labels.map((l) => [l.text, l.fontSize]));
  const box = labels.map((l, k) => ({ l, x0: l.x - widths[k] / 2, x1: l.x + widths[k] / 2, y0: l.y - 0.8 * l.fontSize, y1: l.y + 0.25 * l.fontSize }));
  const out: string[] = [];
  for (let a = 0; a < box.length; a++) {
    for (let b = a + 1; b < box.length; b++) {
      const [p, q] = [box[a], box[b]];
      if (p.x0 < q.x1 && q.x0 < p.x1 && p.y0 < q.y1 && q.y0 < p.y1) out.push(`"${p.l.text}" at (${p.l.x}, ${p.l.y}) and "${q.l.text}" at (${q.l.x}, ${q.l.y}), ${p.l.fontSize}px`);
    }
  }
  return out;
}

/** An n x n head-similarity matrix: 1 on the diagonal, values of both signs elsewhere. */
const similarity = (n: number): number[][] => Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : -0.999 + ((i * 7 + j * 13) % 19) / 9.5)));

function run(variant: string, heads: number): JobResult {
  return { variant, seed: 0, losses: [3, 2.5, 2, 1.8, 1.7], headSimilarity: { q_proj: similarity(heads), v_proj: similarity(heads) } } as unknown as JobResult;
}

describe('heatmap cell labels', () => {
  it('the checker sees labels run together: the old layout (8 heads in 80 pixels, labels at 8px) overlaps', () => {
    const cells = similarity(8).flatMap((row, i) => row.map((cos, j) => ({ i, j, cos, label: cellLabel(cos) })));
    const spec = {
      data: { values: cells },
      ...heatmap({ x: { field: 'j', title: 'j' }, y: { field: 'i', title: 'i' }, value: { field: 'cos', title: 'cos', domain: [-1, 1], scheme: 'redblue' }, label: 'label', layout: { side: 80, fontSize: 8 }, darkAbove: 0.6 }),
    };
    const [labels] = markLabels(renderSvg(spec));
    expect(labels).toHaveLength(64);
    expect(overlaps(labels).length).toBeGreaterThan(20);
  });

  it('in the sweep figure they never overlap: sized to fit their cells, or left out', () => {
    for (const heads of [2, 3, 4, 6, 8, 12, 16, 24]) {
      const svg = renderSvg(figureSpec({ title: 'narrow', runs: [run('rlora', heads), run('hydralora', heads)], variants: ['rlora', 'hydralora'] }));
      const groups = markLabels(svg).filter((g) => g.length > 0);
      const layout = heatmapLayout(heads, similarity(heads).flat().map(cellLabel));
      if (layout.fontSize === null) {
        expect(groups).toEqual([]);
        continue;
      }
      expect(groups).toHaveLength(4); // 2 variants x 2 module kinds
      for (const g of groups) {
        expect(g.map((l) => l.text).sort()).toEqual(similarity(heads).flat().map(cellLabel).sort());
        expect(new Set(g.map((l) => l.fontSize))).toEqual(new Set([layout.fontSize]));
        expect(overlaps(g)).toEqual([]);
      }
    }
  });

  it('the layout: cells of 24 pixels or more up to 8 heads (labels at 6 to 9 px), none beyond 200 / 6.6 heads can hold', () => {
    const labels = ['-0.28', '1.00'];
    expect(heatmapLayout(2, labels)).toEqual({ cell: 40, side: 80, fontSize: 9 });
    expect(heatmapLayout(4, labels)).toEqual({ cell: 24, side: 96, fontSize: 8.1 });
    expect(heatmapLayout(8, labels)).toEqual({ cell: 24, side: 192, fontSize: 8.1 });
    expect(heatmapLayout(10, labels)).toEqual({ cell: 20, side: 200, fontSize: 6.5 });
    expect(heatmapLayout(12, labels).fontSize).toBeNull();
    expect(heatmapLayout(12, ['0.50']).fontSize).toBe(6.1); // no minus sign: a little more room
    // DejaVu Sans's advance widths, as PIL measures them
    const texts = ['-0.28', '1.00', '0.83', '+9,5 ', 'Mx'];
    const measured = measure(texts.map((t) => [t, 100]));
    texts.slice(0, 4).forEach((t, k) => expect(100 * textWidthEm(t)).toBeCloseTo(measured[k], 0));
    expect(100 * textWidthEm('Mx')).toBeGreaterThanOrEqual(measured[4]); // other characters: as wide as an M, or less
    expect([cellLabel(-0.001), cellLabel(0.8349), cellLabel(-0.8351)]).toEqual(['0.00', '0.83', '-0.84']);
  });
});

it('a figure stays well-formed XML whatever the variant names hold (control characters, <, &, quotes)', () => {
  const evil = 'r\x1b[31m<b>&"\'\u202e';
  const svg = renderSvg(figureSpec({ title: 'names', runs: [run(evil, 2), run('plain', 2)], variants: [evil, 'plain'] }));
  expect(svg).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]/);
  expect(svg).toContain('r\\x1b[31m&lt;b&gt;&amp;');
  const file = `${fs.mkdtempSync('/tmp/rlora-charts-')}/figure.svg`;
  fs.writeFileSync(file, svg);
  const parsed = spawnSync('/usr/bin/python3', ['-c', 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); print("\\n".join(t.firstChild.data for t in d.getElementsByTagName("text") if t.firstChild))', file], { encoding: 'utf8' });
  expect(parsed.stderr).toBe('');
  expect(parsed.stdout.split('\n')).toContain('r\\x1b[31m<b>&"\'\\u202e');
  fs.rmSync(file, { force: true });
});

it('trailingMean: the mean of the last n values up to each', () => {
  expect(trailingMean([1, 2, 3, 4, 10], 2)).toEqual([1, 1.5, 2.5, 3.5, 7]);
  expect(trailingMean([1, 2, 3, 4, 10], 3)).toEqual([1, 1.5, 2, 3, 17 / 3]);
  expect(trailingMean([4, 2], 1)).toEqual([4, 2]);
  expect(trailingMean([4, 2], 0)).toEqual([4, 2]);
});
