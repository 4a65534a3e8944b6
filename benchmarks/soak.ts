// benchmarks/soak: does memory stay flat over a long run? Trains a small model's R-LoRA adapter for
// 5,000 steps with Trainer.fit (evaluating every 1,000) and reports the resident set every 100
// steps (each after a full collection) and its least-squares slope per 1,000 steps after the first
// 500, and over the second half (the steady state). Target: under 0.5 MB per 1,000 steps.
//
//   npm run bench:soak -- [--steps 5000]       (node --expose-gc: each sample follows a full collection)
import { Adapter, ByteTokenizer, Model, MultiTaskDataset, Trainer } from '../lib';

const gc = (globalThis as { gc?: () => void }).gc;
const rssMB = (): number => process.memoryUsage.rss() / 2 ** 20;
const heapMB = (): number => process.memoryUsage().heapUsed / 2 ** 20;

/** Least-squares slope of y over x. */
export function slope(x: number[], y: number[]): number {
  const n = x.length;
  const mx = x.reduce((a, b) => a + b, 0) / n, my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < n; i++) (sxy += (x[i] - mx) * (y[i] - my)), (sxx += (x[i] - mx) ** 2);
  return sxy / sxx;
}

async function main(): Promise<void> {
  if (!gc) console.error('soak: run with node --expose-gc (npm run bench:soak does) for stable samples');
  const i = process.argv.indexOf('--steps');
  const steps = i > 0 ? Number(process.argv[i + 1]) : 5000;
  if (!Number.isInteger(steps) || steps < 1000) throw new Error(`--steps needs an integer >= 1000, got ${process.argv[i + 1]}`);
  const tok = new ByteTokenizer();
  const model = Model.fromConfig(
    { architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 4 },
    { seed: 0 },
  );
  const adapter = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 5, alpha: 32, dropout: 0.1, targetModules: ['gate_proj', 'up_proj', 'down_proj'] });
  const examples = Array.from({ length: 512 }, (_, k) => ({ task: `t${k % 4}`, prompt: `word ${k * 7919 % 1000}: `, response: String((k * 31) % 97) }));
  const data = MultiTaskDataset.fromArray(examples, { tokenizer: tok, maxLength: 32 });
  const evalData = MultiTaskDataset.fromArray(examples.slice(0, 64), { tokenizer: tok, maxLength: 32 });
  const trainer = new Trainer(model, adapter, { learningRate: 1e-3, batchSize: 8, maxSteps: steps, progress: false, evalEvery: 1000 });
  const at: number[] = [], rss: number[] = [], heap: number[] = [];
  const t0 = performance.now();
  await trainer.fit(data, {
    evalDataset: evalData,
    onStep: (s) => {
      if (s.step % 100 === 0) {
        gc?.(); // a full collection first, so the sample is live memory, not garbage waiting
        at.push(s.step);
        rss.push(rssMB());
        heap.push(heapMB());
      }
    },
  });
  // slopes from step `from` on: after 500 steps, and over the second half (steady state: glibc's
  // per-thread arenas grow to their working set over the first couple of thousand steps, as jobs
  // land on each libuv pool thread, and the first evaluations run)
  const slopeFrom = (from: number, y: number[]): number => {
    const pts = at.map((s, k) => [s, y[k]]).filter(([s]) => s > from);
    return 1000 * slope(pts.map((p) => p[0]), pts.map((p) => p[1]));
  };
  const perThousand = slopeFrom(500, rss);
  const steady = slopeFrom(steps / 2, rss);
  const heapPerThousand = slopeFrom(steps / 2, heap);
  const result = { steps, seconds: (performance.now() - t0) / 1000, rssStartMB: rss[0], rssEndMB: rss[rss.length - 1], slopeMBPer1000Steps: perThousand, steadySlopeMBPer1000Steps: steady, heapSlopeMBPer1000Steps: heapPerThousand, samples: at.map((s, k) => ({ step: s, rssMB: rss[k], heapMB: heap[k] })) };
  console.log(JSON.stringify(result));
  console.error(`soak: ${steps} steps in ${result.seconds.toFixed(0)} s; RSS ${result.rssStartMB.toFixed(1)} -> ${result.rssEndMB.toFixed(1)} MB; slope after step 500: ${perThousand.toFixed(3)} MB per 1,000 steps; over the second half: ${steady.toFixed(3)} (target < 0.5), of which the V8 heap ${heapPerThousand.toFixed(3)}`);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
