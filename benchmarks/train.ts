// benchmarks/train: tokens per second and peak memory of a training step, rlora (Trainer.fit)
// against a Python torch baseline (same model shape and batches, R-LoRA written the way the
// published code does), each in its own process, on a LLaMA-shaped model of about 20M parameters.
// On torch 2.x the baseline also runs with SDPA attention, under torch.compile, and both (the
// strongest: what a user writes on 2.x), each with glibc keeping freed memory. --matched: both
// libraries told to use every core (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS), else each its defaults.
// Usage: npm run bench:train [-- --steps 5] [--matched]
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { BatchSampler, ByteTokenizer, Model, MultiTaskDataset } from '../lib';
import { KEPT_ENV, MATCHED_ENV, MEMORY_ENV, PYTHON, pythonTorchVersion, runVariant, TSX } from './processes';
import { TRAIN_SHAPE } from './train-shape';

interface Result {
  variant: string;
  times: number[];
  tokens: number[];
  peakBytes: number;
  trainable: number;
}

const timed = Number(process.argv[process.argv.indexOf('--steps') + 1] || 5) || 5;
const matched = process.argv.includes('--matched');
const threads = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv => (matched ? { ...env, OMP_NUM_THREADS: MATCHED_ENV.OMP_NUM_THREADS, OPENBLAS_NUM_THREADS: MATCHED_ENV.OPENBLAS_NUM_THREADS } : env);
// as benchmarks/layer.ts (benchmarks/README.md): times with default settings, memory from runs
// where freed large blocks go back to the kernel
function run(cmd: string, args: string[]): Result {
  const t = runVariant<Result>(cmd, args, threads(process.env));
  return { ...t, peakBytes: runVariant<Result>(cmd, args, threads(MEMORY_ENV)).peakBytes };
}
/** A Python variant timed with glibc keeping freed memory (no memory run). */
function kept(args: string[], variant: string): Result {
  return { ...runVariant<Result>(PYTHON, args, threads(KEPT_ENV)), variant, peakBytes: NaN };
}

function randomText(rng: () => number, n: number): string {
  return Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(rng() * 26))).join('');
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-bench-train-'));
  try {
    const model = Model.fromConfig(TRAIN_SHAPE.config, { seed: 1 });
    model.save(dir);
    let a = 12345;
    const rng = (): number => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 4294967296);
    // two tasks; 64 prompt bytes and 62 response bytes: bos + 126 + eos = 128 tokens
    const examples = Array.from({ length: 64 }, (_, i) => ({ task: i % 2 ? 'odd' : 'even', prompt: randomText(rng, 64), response: randomText(rng, 62) }));
    const tok = new ByteTokenizer();
    const data = MultiTaskDataset.fromArray(examples, { tokenizer: tok, maxLength: TRAIN_SHAPE.sequence });
    const sampler = new BatchSampler(data, { batchSize: TRAIN_SHAPE.batchSize, seed: 3 }, tok.padTokenId!);
    const batches = Array.from({ length: TRAIN_SHAPE.warmup + timed }, () => sampler.next());
    const shared = path.join(dir, 'batches.json');
    fs.writeFileSync(shared, JSON.stringify({ examples, seed: 3, batches }));
    const pyArgs = (o: { attention?: 'sdpa'; compile?: boolean } = {}): string[] => [path.join(__dirname, 'train_baseline.py'), dir, shared, String(timed), JSON.stringify({ ...TRAIN_SHAPE, ...o })];
    const py = run(PYTHON, pyArgs());
    const pyKept = kept(pyArgs(), 'torch published loop, kept');
    // torch 2.x: SDPA (2.1 and later), torch.compile (2.0 and later), and both: the strongest baseline
    const [major, minor] = pythonTorchVersion();
    const sdpa = major > 2 || (major === 2 && minor >= 1);
    const two: Result[] = [
      ...(sdpa ? [kept(pyArgs({ attention: 'sdpa' }), 'torch SDPA, kept')] : []),
      ...(major >= 2 ? [kept(pyArgs({ compile: true }), 'torch compiled, kept')] : []),
      ...(sdpa ? [{ ...run(PYTHON, pyArgs({ attention: 'sdpa', compile: true })), variant: 'torch compiled + SDPA' }] : []),
    ];
    const strongest = sdpa ? kept(pyArgs({ attention: 'sdpa', compile: true }), 'torch compiled + SDPA, kept') : undefined;
    if (strongest) two.push(strongest);
    const ours = run(TSX, [path.join(__dirname, 'train-child.ts'), dir, shared, String(timed)]);
    const tps = (r: Result): number => r.tokens.reduce((x, y) => x + y, 0) / r.times.reduce((x, y) => x + y, 0);
    const mb = (b: number): string => (b / 2 ** 20).toFixed(0);
    console.log(
      `training step, ${TRAIN_SHAPE.config.num_hidden_layers}-layer LLaMA shape (${model.parameterCount().toLocaleString('en-US')} parameters), ` +
        `R-LoRA r=${TRAIN_SHAPE.adapter.rank} N=${TRAIN_SHAPE.adapter.heads} on ${TRAIN_SHAPE.adapter.targetModules.join('/')}, ` +
        `batch ${TRAIN_SHAPE.batchSize} x ${TRAIN_SHAPE.sequence}, float32 CPU, ${timed} timed steps after ${TRAIN_SHAPE.warmup}, ` +
        `Python torch ${major}.${minor}, ${matched ? 'matched threads' : "each library's thread defaults"}`,
    );
    console.log('variant                          trainable   tokens/s   peak MB');
    for (const r of [py, pyKept, ...two, ours]) console.log(`${r.variant.padEnd(31)} ${String(r.trainable).padStart(10)} ${tps(r).toFixed(0).padStart(10)} ${mb(r.peakBytes).padStart(9)}`);
    console.log(
      `\nrlora: ${(tps(ours) / tps(py)).toFixed(2)} x the baseline's tokens/s (${(tps(ours) / tps(pyKept)).toFixed(2)} x with glibc keeping freed memory; target >= 1.3), ` +
        `${(ours.peakBytes / py.peakBytes).toFixed(2)} x its peak memory (target <= 1)`,
    );
    for (const r of two) console.log(`rlora: ${(tps(ours) / tps(r)).toFixed(2)} x the tokens/s of ${r.variant}${r === strongest ? ' (target >= 1.5)' : ''}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
