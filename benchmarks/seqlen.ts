// Training memory and speed against the sequence length: one R-LoRA training step of a 2-layer
// LLaMA shape (hidden 256, 8 heads, batch 2) through Trainer.fit at 512 to 4,096 tokens (8,192 with
// --long), each length in a process of its own, peak resident memory from the kernel. Attention runs
// by blocks above 256 x 256 scores (native/model/attention.cpp), so memory should grow about
// linearly: target, the peak at 4,096 at most 5 times that at 1,024. `npm run bench:seqlen`.
import { execFileSync } from 'child_process';

import { Adapter, Model, MultiTaskDataset, Trainer, ByteTokenizer } from '../lib';
import { peakBytes, resetPeak } from './memory';

async function child(len: number): Promise<void> {
  const model = Model.fromConfig({ architectures: ['LlamaForCausalLM'], vocab_size: 259, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 2, num_attention_heads: 8, max_position_embeddings: 16384 }, { seed: 1 });
  const adapter = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 5, alpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  const tok = new ByteTokenizer();
  const text = 'Call me Ishmael. Some years ago, never mind how long precisely, '.repeat(Math.ceil(len / 60)).slice(0, len - 20);
  const data = MultiTaskDataset.fromArray([0, 1].map((i) => ({ task: 't', prompt: `${i}${text}`, response: 'whale' })), { tokenizer: tok, maxLength: len });
  const steps = 3;
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

async function main(): Promise<void> {
  const arg = process.argv.indexOf('--child');
  if (arg >= 0) return child(Number(process.argv[arg + 1]));
  const lens = process.argv.includes('--long') ? [512, 1024, 2048, 4096, 8192] : [512, 1024, 2048, 4096];
  const rows: { len: number; stepSeconds: number; tokensPerSecond: number; peakMB: number }[] = [];
  for (const len of lens) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', String(len)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    rows.push(JSON.parse(out.trim().split('\n').pop()!));
  }
  console.log('tokens  step (s)  tokens/s  peak RSS (MB)');
  for (const r of rows) console.log(`${String(r.len).padStart(6)}  ${r.stepSeconds.toFixed(3).padStart(8)}  ${r.tokensPerSecond.toFixed(0).padStart(8)}  ${r.peakMB.toFixed(0).padStart(13)}`);
  const at = (n: number) => rows.find((r) => r.len === n)!;
  console.log(`peak at 4,096 / peak at 1,024: ${(at(4096).peakMB / at(1024).peakMB).toFixed(2)} (target <= 5)`);
}

void main();
