// rlora side of benchmarks/scale.ts, one variant in its own process: a random-weight model of the
// shape, an R-LoRA adapter, and trainStep on the shared batch.
// Usage: tsx benchmarks/scale-child.ts <shape name> <variant name> <timed steps> [batch rows]
import { Adapter, AdamW, Model, setNumThreads, trainStep } from '../lib';
import { peakBytes, resetPeak } from './memory';
import { SCALE_RUN, SCALE_SHAPES, SCALE_VARIANTS, scaleBatch } from './scale-shape';

async function main(): Promise<void> {
  const [shapeName, variantName, timedArg, rowsArg] = process.argv.slice(2);
  const rows = rowsArg === undefined ? SCALE_RUN.batchSize : Number(rowsArg);
  const cfg = SCALE_SHAPES[shapeName];
  const v = SCALE_VARIANTS.find((x) => x.name === variantName);
  if (!cfg || !v) throw new Error(`unknown shape ${shapeName} or variant ${variantName}`);
  setNumThreads(SCALE_RUN.threads);
  const t0 = performance.now();
  const model = Model.fromConfig(cfg, { seed: 1, dtype: v.dtype, quantize: v.quantize });
  const adapter = Adapter.attach(model, { method: 'rlora', ...SCALE_RUN.adapter, seed: 1 });
  adapter.train();
  const opt = new AdamW([...adapter.layers.values()], { lr: SCALE_RUN.learningRate, maxGradNorm: 1 });
  const initSeconds = (performance.now() - t0) / 1000;
  const batch = scaleBatch(cfg.vocab_size as number, rows);
  const loadPeak = peakBytes();
  const before = resetPeak();
  const times: number[] = [];
  const losses: number[] = [];
  for (let s = 0; s < 1 + Number(timedArg); s++) {
    const t = performance.now();
    losses.push((await trainStep(model, [batch], opt, { gradientCheckpointing: v.checkpointing })).loss);
    if (s > 0) times.push((performance.now() - t) / 1000); // the first step warms up
  }
  const stepPeak = peakBytes();
  console.log(JSON.stringify({
    variant: v.name, shape: shapeName, parameters: model.parameterCount(), trainable: adapter.trainableParameterCount(),
    initSeconds, times, tokens: rows * SCALE_RUN.sequence, rows, losses,
    residentBeforeStep: before, loadPeakBytes: loadPeak, stepPeakBytes: stepPeak, peakBytes: Math.max(loadPeak, stepPeak),
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
