// benchmarks/scale: a training step on random-weight models of real shapes (Qwen2.5-0.5B and -1.5B),
// CPU, for each way of keeping the frozen base (float32, bfloat16, int8, nf4), each with and
// without gradient checkpointing: tokens per second and the process's peak resident set (loading
// included), against Python torch on the same libtorch (float32, the published per-head loop) for
// the 0.5B shape in the same run. Each variant runs in its own process.
// The published loop keeps an activation per head and module: at batch 4 x 256 on the 0.5B shape it
// needs more memory than a 24 GB machine has (killed), so `--batch 1` runs both sides at 1 x 256.
// Usage: npm run bench:scale [-- --shapes qwen2.5-0.5b,qwen2.5-1.5b --variants 'nf4 + ckpt,...' --steps 2 --batch 4 --no-baseline]
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { PYTHON, runVariant, TSX } from './processes';
import { SCALE_RUN, SCALE_SHAPES, SCALE_VARIANTS, scaleBatch } from './scale-shape';

interface Result {
  variant: string;
  shape: string;
  parameters: number;
  initSeconds: number;
  times: number[];
  tokens: number;
  rows: number;
  losses: number[];
  peakBytes: number;
  loadPeakBytes: number;
  stepPeakBytes: number;
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

function main(): void {
  const shapes = (flag('--shapes') ?? Object.keys(SCALE_SHAPES).join(',')).split(',');
  const variants = flag('--variants')?.split(',') ?? SCALE_VARIANTS.map((v) => v.name);
  const timed = Number(flag('--steps') ?? 2);
  const rows = Number(flag('--batch') ?? SCALE_RUN.batchSize);
  if (!Number.isInteger(rows) || rows < 1) throw new Error(`--batch must be a positive integer, got ${flag('--batch')}`);
  const baseline = !process.argv.includes('--no-baseline');
  for (const s of shapes) if (!SCALE_SHAPES[s]) throw new Error(`--shapes: unknown shape ${s} (${Object.keys(SCALE_SHAPES).join(', ')})`);
  for (const v of variants) if (!SCALE_VARIANTS.some((x) => x.name === v)) throw new Error(`--variants: unknown variant ${v} (${SCALE_VARIANTS.map((x) => x.name).join(', ')})`);
  const results: Result[] = [];
  const tps = (r: Result): number => (r.tokens * r.times.length) / r.times.reduce((a, b) => a + b, 0);
  const gb = (b: number): string => (b / 2 ** 30).toFixed(2);
  const show = (r: Result): void => {
    results.push(r);
    console.error(`${r.shape.padEnd(13)} batch ${r.rows} ${r.variant.padEnd(22)} ${tps(r).toFixed(1).padStart(7)} tokens/s  step ${(r.times.reduce((a, b) => a + b, 0) / r.times.length).toFixed(1).padStart(6)} s  peak ${gb(r.peakBytes)} GB (loading ${gb(r.loadPeakBytes)}, step ${gb(r.stepPeakBytes)})  init ${r.initSeconds.toFixed(0)} s  loss ${r.losses.map((l) => l.toFixed(3)).join(' ')}`);
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-bench-scale-'));
  try {
    for (const shape of shapes) {
      if (baseline && shape === 'qwen2.5-0.5b') {
        const args = path.join(dir, 'baseline.json');
        fs.writeFileSync(args, JSON.stringify({ shape, config: SCALE_SHAPES[shape], run: SCALE_RUN, batch: scaleBatch(SCALE_SHAPES[shape].vocab_size as number, rows), timed }));
        show(runVariant<Result>(PYTHON, [path.join(__dirname, 'scale_baseline.py'), args]));
      }
      for (const v of variants) show(runVariant<Result>(TSX, [path.join(__dirname, 'scale-child.ts'), shape, v, String(timed), String(rows)]));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ run: { ...SCALE_RUN, batchSize: rows }, timed, results }));
}

main();
