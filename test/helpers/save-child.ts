// Run by test/atomic-save.test.ts in a process of its own, to be killed with SIGKILL at a random
// moment. Prints "ready" once the first save is complete, then saves forever:
// - model: two different models into the same folder, one after the other;
// - merged: the same, each with its own tokenizer file copied in (what `rlora merge --overwrite` writes);
// - adapter: two different adapters into the same folder;
// - checkpoint: a training run that writes a checkpoint every step, keeping the newest two.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, ByteTokenizer, Model, MultiTaskDataset, Trainer } from '../../lib';
import { SAVE_CONFIG, TINY_BYTE_CONFIG } from './tiny-model';

const [dir, kind] = process.argv.slice(2);

async function main(): Promise<void> {
  if (kind === 'model' || kind === 'merged') {
    const models = [Model.fromConfig(SAVE_CONFIG, { seed: 1 }), Model.fromConfig(SAVE_CONFIG, { seed: 2 })];
    // tokenizer-<seed>/tokenizer.json says which model it was saved with
    const tokenizers = [1, 2].map((seed) => {
      const d = path.join(path.dirname(dir), `tokenizer-${seed}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify({ seed, padding: 'x'.repeat(50_000) }));
      return path.join(d, 'tokenizer.json');
    });
    const save = (i: number): void => models[i % 2].save(dir, { maxShardSize: 20_000, ...(kind === 'merged' ? { copyFiles: [tokenizers[i % 2]] } : {}) });
    save(0);
    console.log('ready');
    for (let i = 1; ; i++) save(i);
  } else if (kind === 'adapter') {
    const adapters = [
      Adapter.attach(Model.fromConfig(SAVE_CONFIG, { seed: 1 }), { method: 'rlora', rank: 4, heads: 3, targetModules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'], seed: 1 }),
      Adapter.attach(Model.fromConfig(SAVE_CONFIG, { seed: 1 }), { method: 'lora', rank: 8, targetModules: ['gate_proj'], seed: 2 }),
    ];
    adapters[0].save(dir);
    console.log('ready');
    for (let i = 1; ; i++) adapters[i % 2].save(dir);
  } else if (kind === 'checkpoint') {
    const model = Model.fromConfig(TINY_BYTE_CONFIG, { seed: 1 });
    const adapter = Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj', 'v_proj'], seed: 1 });
    const data = MultiTaskDataset.fromArray([{ task: 'a', prompt: 'ab', response: 'cd' }, { task: 'b', prompt: 'ef', response: 'gh' }], { tokenizer: new ByteTokenizer(), maxLength: 16 });
    const trainer = new Trainer(model, adapter, { maxSteps: 1_000_000, batchSize: 2, saveEvery: 1, keepCheckpoints: 2, outputDir: dir, progress: false, overwriteOutputDir: true });
    let ready = false;
    await trainer.fit(data, { callbacks: [{ onSave: () => void (ready || ((ready = true), console.log('ready'))) }] });
  } else throw new Error(`unknown kind ${kind}`);
}
void main();
