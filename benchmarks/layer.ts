// benchmarks/layer: forward + backward time and peak memory of one multi-head LoRA layer
// (in = out = 2048, 4096 tokens, r = 8, N = 5, dropout 0.1, float32, CPU), rlora against Python
// torch baselines run in the same benchmark. Each variant runs in its own process, so peak memory
// is measured by the kernel (VmHWM, reset before each step) without the other variants' leftovers.
// Usage: npm run bench [-- --iters 5]
import * as os from 'os';
import * as path from 'path';

import { SHAPE } from './layer-shape';
import { DEFAULT_ENV, KEPT_ENV, MATCHED_ENV, MEMORY_ENV, PYTHON, runVariant, TSX } from './processes';

interface Result {
  variant: string;
  times: number[];
  peakBytes: number;
  activationBytes?: number;
  allocatorPeakBytes?: number;
  /** Python only: times with glibc keeping freed memory (no page faults for reused blocks). */
  retainedTimes?: number[];
  /** Times with matched thread settings (MATCHED_ENV). */
  matchedTimes: number[];
  /** What the process reported of its threads: Python's torch.get_num_threads(), rlora's pools. */
  threads?: unknown;
}

const iters = Number(process.argv[process.argv.indexOf('--iters') + 1] || 5) || 5;
// Times with the settings users get (each library's own thread defaults; Python: glibc's allocator;
// rlora: its caching allocator), again with matched threads (every core for both pools, in both),
// Python once more with glibc keeping freed memory, memory from separate runs (benchmarks/README.md).
function run(cmd: string, args: string[], python: boolean): Result {
  const timed = runVariant<Result>(cmd, args, DEFAULT_ENV);
  const matchedTimes = runVariant<Result>(cmd, args, MATCHED_ENV).times;
  const measured = runVariant<Result>(cmd, args, MEMORY_ENV);
  const retainedTimes = python ? runVariant<Result>(cmd, args, KEPT_ENV).times : undefined;
  return { ...timed, matchedTimes, peakBytes: measured.peakBytes, activationBytes: measured.activationBytes, retainedTimes };
}

const threadsOf = (r: Result): string => (typeof r.threads === 'number' ? `Python: ${r.threads} intra-op` : r.threads ? `rlora: ${JSON.stringify(r.threads)}` : '?');
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const mb = (b: number): string => (b / 2 ** 20).toFixed(0);

function main(): void {
  const results: Result[] = [];
  for (const v of ['torch base linear (frozen)', 'torch R-LoRA published loop', 'torch HydraLoRA loop']) {
    results.push(run(PYTHON, [path.join(__dirname, 'layer_baseline.py'), v, String(iters), JSON.stringify(SHAPE)], true));
  }
  for (const v of ['rlora lora', 'rlora hydralora', 'rlora rlora (dropout on rank)', 'rlora rlora (dropout on input)']) {
    results.push(run(TSX, ['--expose-gc', path.join(__dirname, 'layer-child.ts'), v, String(iters)], false));
  }
  const by = (name: string): Result => results.find((r) => r.variant === name)!;
  const baseR = by('torch base linear (frozen)');
  const loop = by('torch R-LoRA published loop');
  const base = median(baseR.times), baseKept = median(baseR.retainedTimes!);
  const loopT = median(loop.times), loopKept = median(loop.retainedTimes!);
  console.log(`layer forward+backward, in=out=${SHAPE.inF}, ${SHAPE.tokens} tokens, r=${SHAPE.rank}, N=${SHAPE.heads}, p=${SHAPE.dropout}, float32 CPU, median of ${iters}`);
  console.log(`time: each library's default threads (${threadsOf(baseR)} / ${threadsOf(by('rlora rlora (dropout on rank)'))}); "matched": OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = ${os.availableParallelism()} for both; "kept": Python with glibc keeping freed memory. Ratios of rlora rows use both baselines (default / kept).`);
  console.log('variant                           time s  matched s  kept s   x base (dflt/kept)   x R-LoRA loop (dflt/kept)  peak MB  x loop peak');
  for (const r of results) {
    const t = median(r.times);
    const kept = r.retainedTimes ? median(r.retainedTimes).toFixed(3) : '-';
    const ratio = (x: number, a: number, b: number): string => `${(x / a).toFixed(2)} / ${(x / b).toFixed(2)}`;
    console.log(
      `${r.variant.padEnd(33)} ${t.toFixed(3).padStart(6)}  ${median(r.matchedTimes).toFixed(3).padStart(9)}  ${kept.padStart(6)}  ${ratio(t, base, baseKept).padStart(19)}  ${ratio(t, loopT, loopKept).padStart(26)}  ${mb(r.peakBytes).padStart(7)}  ${(r.peakBytes / loop.peakBytes).toFixed(2).padStart(11)}`,
    );
  }
  const ours = by('rlora rlora (dropout on rank)');
  const t = median(ours.times);
  console.log(
    `\nR-LoRA (rank dropout): ${(t / loopT).toFixed(2)} (default) / ${(t / loopKept).toFixed(2)} (kept) of the published loop's time (target <= 0.5), ` +
      `${(ours.peakBytes / loop.peakBytes).toFixed(2)} of its peak memory (target <= 0.5), ` +
      `${(t / base).toFixed(2)} / ${(t / baseKept).toFixed(2)} x the frozen base layer (target <= 1.6)`,
  );
  const m = median(ours.matchedTimes);
  console.log(
    `with matched threads: ${(m / median(loop.matchedTimes)).toFixed(2)} of the published loop's time, ${(m / median(baseR.matchedTimes)).toFixed(2)} x the frozen base layer`,
  );
  if (process.argv.includes('--json')) console.log(JSON.stringify(results));
}

main();
