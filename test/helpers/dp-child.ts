// One process of the data-parallel tests (test/distributed.test.ts): trains the tiny byte-level
// model with an R-LoRA adapter for a few steps, data-parallel when the environment says so
// (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT), and rank 0 writes the adapter, the losses and the
// evaluations to `out` as JSON. Errors go to stderr as one line, exit code 1.
import * as fs from 'fs';

import { Adapter, ByteTokenizer, distributed, Model, MultiTaskDataset, Trainer } from '../../lib';
import { native } from '../../lib/native';
import { TINY_BYTE_CONFIG } from './tiny-model';

interface Args {
  batchSize: number;
  steps: number;
  out: string;
  lr?: number;
  dropout?: number;
  gradientAccumulation?: number;
  /** Rank `dieRank` (default 1) exits (code 3) after this step, or with `dieBy: 'SIGKILL'` kills itself. */
  dieAfter?: number;
  dieRank?: number;
  dieBy?: 'exit' | 'SIGKILL';
  /** Rank 1 blocks for 60 s after this step (a hung process). */
  hangAfter?: number;
  timeoutMs?: number;
  evaluate?: boolean;
  outputDir?: string;
  saveEvery?: number;
  /** Resume from this checkpoint (to `steps` in all) instead of starting. */
  resumeFrom?: string;
  /** distributed.bucketCapMb: gradients exchanged in buckets while backward runs. */
  bucketCapMb?: number;
  /** Other responses of the same lengths (the same sizes, other contents). */
  otherData?: boolean;
  /** The base model's seed (default 1). */
  modelSeed?: number;
  /** The adapted modules (default q_proj, v_proj, up_proj). */
  targets?: string[];
  /** Trainer option packing. */
  packing?: boolean;
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2]) as Args;
  const tok = new ByteTokenizer();
  const rows = Array.from({ length: 24 }, (_, i) => ({ task: i % 3 ? 'add' : 'mul', prompt: `n${i}:`, response: String(i % 3 ? i + 5 : i * 3) }))
    .map((r) => (a.otherData ? { ...r, response: r.response.replace(/\d/g, (d) => String((Number(d) + 1) % 10)) } : r));
  const data = MultiTaskDataset.fromArray(rows, { tokenizer: tok, maxLength: 16 });
  const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: a.modelSeed ?? 1 });
  const resumed = a.resumeFrom ? await Trainer.resume(a.resumeFrom, model, { outputDir: a.outputDir, maxSteps: a.steps, progress: false }) : undefined;
  const adapter = resumed?.adapter ?? Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, dropout: a.dropout ?? 0, targetModules: a.targets ?? ['q_proj', 'v_proj', 'up_proj'], seed: 2 });
  const trainer = resumed ?? new Trainer(model, adapter, {
    batchSize: a.batchSize,
    ...(a.gradientAccumulation !== undefined ? { gradientAccumulation: a.gradientAccumulation } : {}),
    maxSteps: a.steps,
    learningRate: a.lr ?? 1e-2,
    seed: 3,
    progress: false,
    evalBatchSize: 5,
    packing: a.packing ?? false,
    outputDir: a.outputDir,
    saveEvery: a.saveEvery,
    distributed: a.timeoutMs || a.bucketCapMb !== undefined ? { ...(a.timeoutMs ? { timeoutMs: a.timeoutMs } : {}), ...(a.bucketCapMb !== undefined ? { bucketCapMb: a.bucketCapMb } : {}) } : 'auto',
  });
  const history = await trainer.fit(data, {
    evalDataset: a.evaluate ? data : undefined,
    onStep: (r) => {
      if (a.dieAfter !== undefined && r.step === a.dieAfter && distributed.rank() === (a.dieRank ?? 1)) {
        if (a.dieBy === 'SIGKILL') process.kill(process.pid, 'SIGKILL');
        else process.exit(3);
      }
      if (a.hangAfter !== undefined && r.step === a.hangAfter && distributed.rank() === 1) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
    },
  });
  // typed arrays over the ranks: rank r adds [r + 1, 0.25, 2^-20] (float32) and [r + 0.5] (float64)
  const f32 = await distributed.allreduceSum(new Float32Array([distributed.rank() + 1, 0.25, 2 ** -20]));
  const f64 = await distributed.allreduceSum(new Float64Array([distributed.rank() + 0.5]));
  if (distributed.rank() === 0) {
    const typedSums = { f32: [f32.constructor.name, ...Array.from(f32)], f64: [f64.constructor.name, ...Array.from(f64)] };
    const state = Object.fromEntries(Object.entries(adapter.stateDict()).map(([k, t]) => [k, Array.from(t.data() as Float32Array)]));
    fs.writeFileSync(a.out, JSON.stringify({ state, losses: history.steps.map((s) => s.loss), stepNumbers: history.steps.map((s) => s.step), tokens: history.steps.map((s) => s.tokens), evals: history.evals, worldSize: distributed.worldSize(), typedSums, reduce: native.distLastReduce() }));
  }
  distributed.destroy();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
