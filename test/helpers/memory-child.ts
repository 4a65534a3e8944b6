// Run by test/dispose.test.ts in a process of its own (a clean resident set): makes and drops 30
// models of about 84 MB, either leaving them to the collector or disposing them, and prints the
// growth of the peak resident set in MB.
import * as fs from 'fs';

import { Model } from '../../lib';

const peakMB = (): number => Number(/^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;

async function main(): Promise<void> {
  const dispose = process.argv[2] === 'dispose';
  // 2 layers of hidden 1024 and MLP 2048: about 21M float32 parameters, 84 MB
  const cfg = { architectures: ['LlamaForCausalLM'], vocab_size: 256, hidden_size: 1024, intermediate_size: 2048, num_hidden_layers: 2, num_attention_heads: 8 };
  const first = Model.fromConfig(cfg, { seed: 0 });
  const mb = (first.parameterCount() * 4) / 2 ** 20;
  first.dispose();
  const start = peakMB();
  for (let i = 0; i < 30; i++) {
    const m = Model.fromConfig(cfg, { seed: i });
    await m.forward([[1, 2, 3]]);
    if (dispose) m.dispose();
    await new Promise((r) => setImmediate(r));
  }
  console.log(JSON.stringify({ modelMB: mb, growthMB: peakMB() - start }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
