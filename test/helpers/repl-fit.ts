// Preloaded into a Node REPL by test/interrupt.test.ts: a model, an adapter, data and a Trainer
// with a long run, as globals (`tr`, `ds`) the REPL session uses.
import * as r from '../../lib';
import { TINY_BYTE_CONFIG } from './tiny-model';

const out = process.env.RLORA_REPL_OUT!;
const model = r.Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
const adapter = r.Adapter.attach(model, { targetModules: ['q_proj'] });
const g = globalThis as Record<string, unknown>;
g.ds = r.MultiTaskDataset.fromArray(['cat', 'dog', 'cow'].map((w) => ({ task: 'a', prompt: w, response: w })), { tokenizer: new r.ByteTokenizer(), maxLength: 16 });
g.tr = new r.Trainer(model, adapter, { maxSteps: 1_000_000, batchSize: 2, progress: true, outputDir: out });
