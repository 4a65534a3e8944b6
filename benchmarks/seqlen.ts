// Training memory and speed against the sequence length: one R-LoRA training step of a 2-layer
// LLaMA shape (hidden 256, 8 heads, batch 2) through Trainer.fit at 512 to 4,096 tokens (8,192 with
// --long), each length in a process of its own, peak resident memory from the kernel. Attention runs
// by blocks above 256 x 256 scores (native/model/attention.cpp), so memory should grow about
// linearly: target, the peak at 4,096 at most 5 times that at 1,024. With --python, the same steps
// in Python torch (benchmarks/train_baseline.py: the published R-LoRA loop on the tests' reference
// decoder) with eager attention, and with scaled_dot_product_attention where torch is 2.1 or later,
// each in a process of its own. `npm run bench:seqlen [-- --python] [--long | --lens 512,1024]`.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, BatchSampler, Model, MultiTaskDataset, Trainer, ByteTokenizer } from '../lib';
import { peakBytes, resetPeak } from './memory';
import { PYTHON, pythonTorchVersion } from './processes';

const CONFIG = { architectures: ['LlamaForCausalLM'], vocab_size: 259, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 2, num_attention_heads: 8, max_position_embeddings: 16384 };
const ADAPTER = { method: 'rlora' as const, rank: 4, heads: 5, alpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
const STEPS = 3;

function dataset(len: number): MultiTaskDataset {
  const text = 'Call me Ishmael. Some years ago, never mind how long precisely, '.repeat(Math.ceil(len / 60)).slice(0, len - 20);
  return MultiTaskDataset.fromArray([0, 1].map((i) => ({ task: 't', prompt: `${i}${text}`, response: 'whale' })), { tokenizer: new ByteTokenizer(), maxLength: len });
}

async function child(len: number): Promise<void> {
  const model = Model.fromConfig(CONFIG, { seed: 1 });
  const adapter = Adapter.attach(model, ADAPTER);
  const data = dataset(len);
  const steps = STEPS;
  const trainer = new Trainer(model, adapter, { maxSteps: steps, batchSize: 2, progress: false, learningRate: 1e-4 });
  await trainer.fit(data); // a first fit: allocations and caches warm, then the measured one
  const base = resetPeak();
  const t0 = process.hrtime.bigint();
  const again = new Trainer(model, adapter, { maxSteps: steps, batchSize: 2, progress: false, learningRate: 1e-4 });
  await again.fit(data);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const tokens = data.get(0).inputIds.length + data.get(1).inputIds.length;
  console.log(JSON.stringify({ len, tokens, stepSeconds: s / steps, tokensPerSecond: (tokens * steps) / s, peakMB: peakBytes() / 2 ** 20, baseMB: base / 2 ** 20 }));
}

/** The same steps in Python torch: eager attention or SDPA; null where torch lacks SDPA (before 2.1). */
function python(len: number, attention: 'eager' | 'sdpa', dir: string): { stepSeconds: number; peakMB: number } | null {
  const [major, minor] = pythonTorchVersion();
  if (attention === 'sdpa' && (major < 2 || (major === 2 && minor < 1))) return null;
  // the batches the Trainer draws: the same two rows every step
  const data = dataset(len);
  const sampler = new BatchSampler(data, { batchSize: 2, seed: 0 }, 0);
  const batches = Array.from({ length: STEPS + 1 }, () => sampler.next());
  const file = path.join(dir, `batches-${len}.json`);
  fs.writeFileSync(file, JSON.stringify({ batches }));
  const shape = { adapter: { ...ADAPTER, dropout: 0.1 }, learningRate: 1e-4, warmup: 1, attention };
  const out = execFileSync(PYTHON, [path.join(__dirname, 'train_baseline.py'), path.join(dir, 'model'), file, String(STEPS), JSON.stringify(shape)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, OMP_NUM_THREADS: String(os.availableParallelism()) },
  });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { times: number[]; peakRssBytes: number };
  return { stepSeconds: r.times.reduce((a, b) => a + b, 0) / r.times.length, peakMB: r.peakRssBytes / 2 ** 20 };
}

async function main(): Promise<void> {
  const arg = process.argv.indexOf('--child');
  if (arg >= 0) return child(Number(process.argv[arg + 1]));
  const lensAt = process.argv.indexOf('--lens');
  const lens = lensAt >= 0 ? process.argv[lensAt + 1].split(',').map(Number) : process.argv.includes('--long') ? [512, 1024, 2048, 4096, 8192] : [512, 1024, 2048, 4096];
  const withPython = process.argv.includes('--python');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-seqlen-'));
  if (withPython) Model.fromConfig(CONFIG, { seed: 1 }).save(path.join(dir, 'model'));
  type Arm = { stepSeconds: number; peakMB: number } | null;
  const rows: { len: number; stepSeconds: number; tokensPerSecond: number; peakMB: number; eager?: Arm; sdpa?: Arm }[] = [];
  try {
    for (const len of lens) {
      const out = execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', String(len)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      const row = JSON.parse(out.trim().split('\n').pop()!);
      if (withPython) {
        // eager attention keeps about 8 score-sized tensors of [2, 8, len, len] float32 a layer pair:
        // past the machine's memory the process would be killed (8,192 tokens: about 34 GB)
        const eagerBytes = 8 * 2 * CONFIG.num_attention_heads * len * len * 4;
        if (eagerBytes > 0.8 * os.totalmem()) console.error(`torch eager at ${len} tokens: skipped (about ${(eagerBytes / 2 ** 30).toFixed(0)} GiB of attention scores; this machine has ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB)`);
        else row.eager = python(len, 'eager', dir);
        row.sdpa = python(len, 'sdpa', dir);
      }
      rows.push(row);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const arm = (a: Arm | undefined): string => (a ? `${a.stepSeconds.toFixed(3)} | ${a.peakMB.toFixed(0)}` : '- | -');
  console.log(`| tokens | rlora step (s) | rlora tokens/s | rlora peak RSS (MB) |${withPython ? ' torch eager step (s) | eager peak (MB) | torch SDPA step (s) | SDPA peak (MB) |' : ''}`);
  console.log(`| ---: | ---: | ---: | ---: |${withPython ? ' ---: | ---: | ---: | ---: |' : ''}`);
  for (const r of rows) console.log(`| ${r.len} | ${r.stepSeconds.toFixed(3)} | ${r.tokensPerSecond.toFixed(0)} | ${r.peakMB.toFixed(0)} |${withPython ? ` ${arm(r.eager)} | ${arm(r.sdpa)} |` : ''}`);
  const at = (n: number) => rows.find((r) => r.len === n);
  const [a4, a1] = [at(4096), at(1024)];
  if (a4 && a1) console.log(`peak at 4,096 / peak at 1,024: ${(a4.peakMB / a1.peakMB).toFixed(2)} (target <= 5)`);
  if (a4?.sdpa) console.log(`rlora step / torch SDPA step at 4,096: ${(a4.stepSeconds / a4.sdpa.stepSeconds).toFixed(2)} (target <= 1)`);
}

void main();
