// Real (non-padding) tokens per second of R-LoRA training on variable-length data, three ways in
// one run: padded batches (each padded to its longest row), groupByLength (batches of similar
// lengths), and packing (a micro-batch's examples end to end in one row, attention per example).
// The data is shaped like instruction data: lengths from a long-tailed (log-normal) distribution
// clipped to 16..1,024 tokens; the model a 2-layer LLaMA shape with hidden 512 (the products
// dominate). Every arm takes the same number of examples per step (batchSize 8), each arm in a
// process of its own after a warm-up step. Targets: packing >= 1.8x padded, >= 1.2x groupByLength.
// `npm run bench:packing` (--steps N, default 12).
import { execFileSync } from 'child_process';

import { Adapter, BatchSampler, ByteTokenizer, Model, MultiTaskDataset, Trainer } from '../lib';

type Arm = 'padded' | 'groupByLength' | 'packing';
const ARMS: Arm[] = ['padded', 'groupByLength', 'packing'];

/** Lengths drawn from a log-normal (median about 150 tokens), clipped to [16, 1024]; seeded. */
function lengths(n: number, seed: number): number[] {
  let x = seed >>> 0;
  const u = (): number => {
    x = (x * 1664525 + 1013904223) >>> 0;
    return (x + 0.5) / 2 ** 32;
  };
  return Array.from({ length: n }, () => {
    const z = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    return Math.min(1024, Math.max(16, Math.round(Math.exp(Math.log(150) + 0.9 * z))));
  });
}

function dataset(): MultiTaskDataset {
  const tok = new ByteTokenizer();
  const text = 'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, '.repeat(12);
  // one byte a token; a prompt of a third of the example, the rest the response (bos and eos included)
  const records = lengths(400, 7).map((n, i) => {
    const body = n - 2;
    const p = Math.max(1, Math.floor(body / 3));
    return { task: i % 2 ? 'a' : 'b', prompt: text.slice(i % 50, (i % 50) + p), response: text.slice(0, body - p) };
  });
  return MultiTaskDataset.fromArray(records, { tokenizer: tok, maxLength: 1024 });
}

async function child(arm: Arm, steps: number): Promise<void> {
  const model = Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: 259, hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 2, num_attention_heads: 8, max_position_embeddings: 2048 }, { seed: 1 });
  const adapter = Adapter.attach(model, { method: 'rlora', rank: 8, heads: 3, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  const data = dataset();
  const options = { batchSize: 8, seed: 3, progress: false, learningRate: 1e-4, groupByLength: arm === 'groupByLength', packing: arm === 'packing' };
  await new Trainer(model, adapter, { ...options, maxSteps: 1 }).fit(data); // warm-up
  const h = await new Trainer(model, adapter, { ...options, maxSteps: steps }).fit(data);
  const tokens = h.steps.reduce((a, s) => a + s.tokens, 0);
  const seconds = h.steps.reduce((a, s) => a + s.tokens / s.tokensPerSecond, 0);
  // the positions computed: the same batches drawn again (a fit starts its sampler from the seed)
  const sampler = new BatchSampler(data, { batchSize: 8, seed: 3, groupByLength: options.groupByLength }, 0);
  let computed = 0;
  for (let i = 0; i < steps; i++) {
    const b = sampler.next();
    computed += options.packing ? b.attentionMask.flat().reduce((x, y) => x + y, 0) : b.inputIds.length * b.inputIds[0].length;
  }
  console.log(JSON.stringify({ arm, tokens, seconds, tokensPerSecond: tokens / seconds, padding: 1 - tokens / computed }));
}

async function main(): Promise<void> {
  const steps = process.argv.includes('--steps') ? Number(process.argv[process.argv.indexOf('--steps') + 1]) : 12;
  const arg = process.argv.indexOf('--child');
  if (arg >= 0) return child(process.argv[arg + 1] as Arm, steps);
  const ls = lengths(400, 7);
  const sorted = [...ls].sort((a, b) => a - b);
  console.log(`400 examples, lengths ${sorted[0]}..${sorted[sorted.length - 1]} tokens (median ${sorted[200]}, mean ${Math.round(ls.reduce((a, b) => a + b, 0) / ls.length)}); batchSize 8; ${steps} steps an arm`);
  const rows: { arm: Arm; tokens: number; seconds: number; tokensPerSecond: number; padding: number }[] = [];
  for (const arm of ARMS) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', arm, '--steps', String(steps)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    rows.push(JSON.parse(out.trim().split('\n').pop()!));
  }
  const padded = rows[0].tokensPerSecond;
  console.log('| arm | real tokens | padding share | seconds | real tokens/s | x padded |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) console.log(`| ${r.arm} | ${r.tokens} | ${(100 * r.padding).toFixed(0)}% | ${r.seconds.toFixed(1)} | ${r.tokensPerSecond.toFixed(0)} | ${(r.tokensPerSecond / padded).toFixed(2)} |`);
  const at = (a: Arm) => rows.find((r) => r.arm === a)!.tokensPerSecond;
  console.log(`packing / padded: ${(at('packing') / padded).toFixed(2)} (target >= 1.8); packing / groupByLength: ${(at('packing') / at('groupByLength')).toFixed(2)} (target >= 1.2)`);
}

void main();
