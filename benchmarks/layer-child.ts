// One rlora layer variant of benchmarks/layer.ts, in its own process (clean memory accounting).
// Usage: tsx benchmarks/layer-child.ts <variant> <iterations>
import { LoraOptions, memoryStats, MultiHeadLoraLinear, resetPeakMemory, Tensor, threadPools } from '../lib';
import { peakBytes, resetPeak } from './memory';
import { SHAPE } from './layer-shape';

const VARIANTS: Record<string, LoraOptions> = {
  'rlora lora': { method: 'lora' },
  'rlora hydralora': { method: 'hydralora' },
  'rlora rlora (dropout on rank)': { method: 'rlora', dropoutOn: 'rank' },
  'rlora rlora (dropout on input)': { method: 'rlora', dropoutOn: 'input' },
};

function seeded(n: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = (a / 4294967296 - 0.5) * scale;
  }
  return out;
}

async function main(): Promise<void> {
  const [variant, itersArg] = process.argv.slice(2);
  const opts = VARIANTS[variant];
  if (!opts) throw new Error(`unknown variant ${variant}; expected one of ${Object.keys(VARIANTS).join(', ')}`);
  const { inF, outF, tokens, rank, heads, dropout } = SHAPE;
  const weight = Tensor.from(seeded(outF * inF, 1, 0.04), [outF, inF]);
  const x = Tensor.from(seeded(tokens * inF, 2, 2), [tokens, inF]);
  const g = Tensor.from(seeded(tokens * outF, 3, 2), [tokens, outF]);
  const layer = new MultiHeadLoraLinear({ weight }, { ...opts, rank, heads: opts.method === 'lora' ? 1 : heads, dropout });
  layer.train();
  await layer.vjp(x, g); // warm-up
  const times: number[] = [];
  let peak = 0;
  let allocatorPeak = 0;
  for (let i = 0; i < Number(itersArg); i++) {
    global.gc?.();
    const base = resetPeak();
    resetPeakMemory();
    const held = memoryStats().allocatedBytes;
    const t0 = process.hrtime.bigint();
    const r = await layer.vjp(x, g);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    peak = Math.max(peak, peakBytes() - base);
    allocatorPeak = Math.max(allocatorPeak, memoryStats().peakAllocatedBytes - held);
    void r;
  }
  console.log(JSON.stringify({ variant, times, peakBytes: peak, allocatorPeakBytes: allocatorPeak, cpuCaching: memoryStats().cpuCaching, trainable: layer.parameterCount(), threads: threadPools() }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
