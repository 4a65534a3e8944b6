// rlora side of benchmarks/train.ts, in its own process: Trainer.fit on the shared batches.
// Usage: tsx benchmarks/train-child.ts <model dir> <batches.json> <timed steps>
import * as fs from 'fs';

import { Adapter, ByteTokenizer, memoryStats, Model, MultiTaskDataset, Trainer } from '../lib';
import { peakBytes, resetPeak } from './memory';
import { TRAIN_SHAPE } from './train-shape';

interface Shared {
  examples: { task: string; prompt: string; response: string }[];
  seed: number;
}

async function main(): Promise<void> {
  const [modelDir, batchesPath, timedArg] = process.argv.slice(2);
  const shared = JSON.parse(fs.readFileSync(batchesPath, 'utf8')) as Shared;
  const timed = Number(timedArg);
  const model = await Model.fromPretrained(modelDir);
  const adapter = Adapter.attach(model, { method: 'rlora', ...TRAIN_SHAPE.adapter, seed: 1 });
  const data = MultiTaskDataset.fromArray(shared.examples, { tokenizer: new ByteTokenizer(), maxLength: TRAIN_SHAPE.sequence });
  const trainer = new Trainer(model, adapter, {
    learningRate: TRAIN_SHAPE.learningRate,
    batchSize: TRAIN_SHAPE.batchSize,
    maxSteps: TRAIN_SHAPE.warmup + timed,
    schedule: 'constant',
    warmupSteps: 0,
    seed: shared.seed,
    progress: false,
  });
  const times: number[] = [];
  const tokens: number[] = [];
  let last = 0n;
  let base = 0;
  let peak = 0;
  await trainer.fit(data, {
    onStep: (s) => {
      const now = process.hrtime.bigint();
      if (s.step > TRAIN_SHAPE.warmup) {
        times.push(Number(now - last) / 1e9);
        tokens.push(s.tokens);
        peak = Math.max(peak, peakBytes() - base);
      }
      if (s.step === TRAIN_SHAPE.warmup) base = resetPeak();
      last = process.hrtime.bigint();
    },
  });
  console.log(JSON.stringify({ variant: 'rlora', times, tokens, peakBytes: peak, cpuCaching: memoryStats().cpuCaching, trainable: adapter.trainableParameterCount() }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
