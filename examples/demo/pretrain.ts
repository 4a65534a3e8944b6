// The demo's base model: a small byte-level LLaMA pretrained on the public-domain English text that
// the demo's npm data packages hold (Moby-Dick, the State of the Union addresses, the SpamAssassin
// mail bodies). It is pretrained once (`npm run demo:pretrain`), and the weights are committed in
// examples/demo/base/ with the recipe, the data hash and the measured losses, so `npm run demo`
// never pretrains on a newcomer's machine.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { AdamW, ByteTokenizer, evalLoss, HFConfig, Model, setNumThreads, trainStep } from '../../lib';
import { blasInfo, corpus, Corpus } from './corpus';
import { rng } from './data';

const tok = new ByteTokenizer();

/** Where the shipped base lives. */
export const BASE_DIR = path.join(__dirname, 'base');

export interface PretrainRecipe {
  config: HFConfig;
  /** Optimizer steps, rows per step, bytes per row. */
  steps: number;
  batchSize: number;
  sequenceLength: number;
  learningRate: number;
  minLearningRate: number;
  warmupSteps: number;
  weightDecay: number;
  seed: number;
}

export const byteLlama = (hidden: number, intermediate: number, layers: number, heads: number): HFConfig => ({
  architectures: ['LlamaForCausalLM'],
  vocab_size: tok.vocabSize,
  hidden_size: hidden,
  intermediate_size: intermediate,
  num_hidden_layers: layers,
  num_attention_heads: heads,
  num_key_value_heads: heads,
  max_position_embeddings: 512,
  rope_theta: 10000,
  tie_word_embeddings: true,
  bos_token_id: tok.bosTokenId,
  eos_token_id: tok.eosTokenId,
  pad_token_id: tok.padTokenId,
});

/** The recipe of the shipped base (examples/demo/base/README.md reports what it reached). */
export const RECIPE: PretrainRecipe = {
  config: byteLlama(192, 512, 6, 6),
  steps: 3600,
  batchSize: 16,
  sequenceLength: 256,
  learningRate: 2e-3,
  minLearningRate: 2e-4,
  warmupSteps: 100,
  weightDecay: 0.01,
  seed: 0,
};

/** Mean cross-entropy per byte (nats) of fixed windows of a held-out text; documents keep their bos/eos. */
export async function heldOutLoss(model: Model, ids: Uint16Array, seq: number, rows = 24): Promise<number> {
  const windows: number[][] = [];
  const stride = Math.max(seq, Math.floor((ids.length - seq) / rows));
  for (let at = 0; at + seq <= ids.length && windows.length < rows; at += stride) windows.push(Array.from(ids.subarray(at, at + seq)));
  if (!windows.length) throw new Error(`held-out text of ${ids.length} tokens is shorter than one window of ${seq}`);
  let sum = 0, n = 0;
  for (let b0 = 0; b0 < windows.length; b0 += 8) {
    const batch = windows.slice(b0, b0 + 8);
    const l = await evalLoss(model, { inputIds: batch, attentionMask: batch.map((r) => r.map(() => 1)), labels: batch });
    l.lossSum.forEach((v, i) => ((sum += v), (n += l.tokens[i])));
  }
  return sum / n;
}

export interface PretrainReport {
  recipe: PretrainRecipe;
  parameters: number;
  data: Corpus['stats'] & { sha256: string };
  /** Held-out loss per source (nats per byte), before and after. */
  heldOutBefore: Record<string, number>;
  heldOut: Record<string, number>;
  heldOutMean: number;
  /** Mean training loss of the last 100 steps. */
  finalTrainLoss: number;
  steps: number;
  bytesSeen: number;
  seconds: number;
  machine: { cpuModel: string; cpus: number; threads: number; blas: string; node: string };
  rlora: string;
  date: string;
  /** Training loss every 100 steps. */
  curve: { step: number; loss: number; seconds: number }[];
}

export interface PretrainOptions {
  out?: string;
  /** Stop after this many steps (default: the recipe's). */
  steps?: number;
  threads?: number;
  log?: (line: string) => void;
}

/** Pretrains the base per RECIPE and writes model + report + README to `out` (atomically). */
export async function pretrain(o: PretrainOptions = {}): Promise<PretrainReport> {
  const log = o.log ?? ((l: string) => console.log(l));
  const out = path.resolve(o.out ?? BASE_DIR);
  const threads = o.threads ?? Math.min(2, os.cpus().length);
  setNumThreads(threads);
  const r = { ...RECIPE, steps: o.steps ?? RECIPE.steps };
  const data = corpus();
  const model = Model.fromConfig(r.config, { seed: r.seed });
  log(`pretraining ${model.parameterCount().toLocaleString('en-US')} parameters on ${(data.stats.trainBytes / 1e6).toFixed(1)} MB of text (${Object.entries(data.stats.documents).map(([k, v]) => `${k} ${v}`).join(', ')} documents), ${r.steps} steps of ${r.batchSize} x ${r.sequenceLength} bytes, ${threads} thread(s)`);
  const heldOutBefore: Record<string, number> = {};
  for (const [k, ids] of Object.entries(data.heldOut)) heldOutBefore[k] = await heldOutLoss(model, ids, r.sequenceLength);
  // A cosine from learningRate that reaches minLearningRate at the last step: the schedule's cosine
  // (which reaches 0 at totalSteps) stopped at the fraction x where 0.5 (1 + cos(pi x)) = min / lr.
  const x = Math.acos((2 * r.minLearningRate) / r.learningRate - 1) / Math.PI;
  const totalSteps = r.warmupSteps + Math.round((r.steps - r.warmupSteps) / x);
  const opt = new AdamW(model, { lr: r.learningRate, weightDecay: r.weightDecay, maxGradNorm: 1, schedule: 'cosine', warmupSteps: r.warmupSteps, totalSteps });
  const random = rng(r.seed + 17);
  const ids = data.train;
  const t0 = performance.now();
  let last = t0, recent: number[] = [];
  const curve: PretrainReport['curve'] = [];
  for (let step = 1; step <= r.steps; step++) {
    const inputIds = Array.from({ length: r.batchSize }, () => {
      const at = Math.floor(random() * (ids.length - r.sequenceLength));
      return Array.from(ids.subarray(at, at + r.sequenceLength));
    });
    const res = await trainStep(model, [{ inputIds, attentionMask: inputIds.map((row) => row.map(() => 1)), labels: inputIds }], opt);
    if (!res.finite) throw new Error(`pretraining diverged at step ${step} (loss ${res.loss})`);
    recent.push(res.loss);
    if (recent.length > 100) recent = recent.slice(-100);
    if (step % 100 === 0) curve.push({ step, loss: recent.reduce((a, b) => a + b, 0) / recent.length, seconds: (performance.now() - t0) / 1000 });
    if (performance.now() - last > 30000 || step === r.steps) {
      last = performance.now();
      const s = (last - t0) / 1000;
      log(`  step ${step}/${r.steps}: loss ${(recent.reduce((a, b) => a + b, 0) / recent.length).toFixed(3)} (${s.toFixed(0)} s, ${((step * r.batchSize * r.sequenceLength) / s).toFixed(0)} bytes/s, lr ${res.lr.toExponential(2)})`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const heldOut: Record<string, number> = {};
  for (const [k, h] of Object.entries(data.heldOut)) heldOut[k] = await heldOutLoss(model, h, r.sequenceLength);
  const vals = Object.values(heldOut);
  const report: PretrainReport = {
    recipe: r,
    parameters: model.parameterCount(),
    data: { ...data.stats, sha256: data.sha256 },
    heldOutBefore,
    heldOut,
    heldOutMean: vals.reduce((a, b) => a + b, 0) / vals.length,
    finalTrainLoss: recent.reduce((a, b) => a + b, 0) / recent.length,
    steps: r.steps,
    bytesSeen: r.steps * r.batchSize * r.sequenceLength,
    seconds,
    machine: { cpuModel: os.cpus()[0]?.model ?? 'unknown', cpus: os.cpus().length, threads, blas: blasInfo(), node: process.version },
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    rlora: (require('../../package.json') as { version: string }).version,
    date: new Date().toISOString(),
    curve,
  };
  const tmp = `${out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  model.save(tmp);
  fs.writeFileSync(path.join(tmp, 'pretrain.json'), JSON.stringify(report, null, 2) + '\n');
  fs.writeFileSync(path.join(tmp, 'README.md'), readme(report));
  fs.rmSync(out, { recursive: true, force: true });
  fs.renameSync(tmp, out);
  log(`held-out loss (nats/byte): ${Object.entries(heldOut).map(([k, v]) => `${k} ${heldOutBefore[k].toFixed(3)} -> ${v.toFixed(3)}`).join(', ')}; ${seconds.toFixed(0)} s; wrote ${out}`);
  return report;
}

function readme(p: PretrainReport): string {
  const c = p.recipe.config;
  const r = p.recipe;
  return `# The demo's base model

A byte-level LLaMA (vocabulary: 256 bytes + bos, eos, pad) pretrained by \`npm run demo:pretrain\`
(examples/demo/pretrain.ts) on the public-domain English text of the demo's npm data packages.
\`npm run demo\` loads it from here; nothing is pretrained on a user's machine.

- Shape: hidden ${c.hidden_size}, ${c.num_hidden_layers} layers, ${c.num_attention_heads} attention heads, MLP ${c.intermediate_size}, tied embeddings; ${p.parameters.toLocaleString('en-US')} parameters, float32.
- Data: ${Object.entries(p.data.documents).map(([k, v]) => `${k} (${v} documents, ${(p.data.bytes[k] / 1e6).toFixed(2)} MB)`).join(', ')}; each document wrapped in bos/eos; ${(p.data.trainBytes / 1e6).toFixed(2)} MB for training. SHA-256 of the training token stream: \`${p.data.sha256}\`.
- Held out (never trained on): ${p.data.heldOutNote}.
- Recipe: ${p.steps} steps of ${r.batchSize} random windows of ${r.sequenceLength} bytes (${(p.bytesSeen / 1e6).toFixed(1)} MB seen), AdamW lr ${r.learningRate} with ${r.warmupSteps} warm-up steps and a cosine decay to ${r.minLearningRate}, weight decay ${r.weightDecay}, clipping 1, seed ${r.seed}.
- Measured: ${(p.seconds / 60).toFixed(1)} minutes on ${p.machine.cpuModel} (${p.machine.threads} threads, BLAS ${p.machine.blas}), ${p.date.slice(0, 10)}.

| held-out text | loss before (nats/byte) | loss after (nats/byte) |
| --- | --- | --- |
${Object.keys(p.heldOut).map((k) => `| ${k} | ${p.heldOutBefore[k].toFixed(3)} | ${p.heldOut[k].toFixed(3)} |`).join('\n')}
| mean | | ${p.heldOutMean.toFixed(3)} |

Final training loss (mean of the last 100 steps): ${p.finalTrainLoss.toFixed(3)} nats/byte.
\`pretrain.json\` holds the whole report, with the loss curve. Runs on one machine are
bit-identical; on another CPU OpenBLAS may pick other kernels, and the weights then differ slightly.
`;
}
