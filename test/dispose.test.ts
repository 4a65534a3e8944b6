// Native memory: every object that owns native memory tells V8 its size (so dropped ones are
// collected in time) and can be freed at once with dispose() / Symbol.dispose; a disposed object
// refuses to be used, naming itself.
import { spawnSync } from 'child_process';
import * as path from 'path';

import { AdamW, Adapter, ByteTokenizer, Model, MultiHeadLoraLinear, MultiTaskDataset, Tensor, Trainer } from '../lib';

function growth(mode: 'collect' | 'dispose'): { modelMB: number; growthMB: number } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers', 'memory-child.ts'), mode], { encoding: 'utf8', timeout: 120000 });
  if (r.status !== 0) throw new Error(`memory child (${mode}) exited with ${r.status}:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

describe('native memory', () => {
  it('30 dropped models of 84 MB do not pile up: the collector frees them (today: +2.3 GB)', () => {
    const { modelMB, growthMB } = growth('collect');
    expect(modelMB).toBeGreaterThan(80);
    expect(growthMB).toBeLessThan(10 * modelMB); // 30 models would be 2.5 GB
  }, 130000);

  it('disposed at once, they hold at most a couple of models at any time', () => {
    const { modelMB, growthMB } = growth('dispose');
    expect(growthMB).toBeLessThan(3 * modelMB);
  }, 130000);
});

describe('dispose()', () => {
  const tok = new ByteTokenizer();
  const cfg = { architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2 };

  it('Tensor, MultiHeadLoraLinear and AdamW refuse use afterwards; Symbol.dispose is dispose', async () => {
    const t = Tensor.from([1, 2, 3]);
    t[Symbol.dispose]();
    expect(() => t.data()).toThrow('this Tensor was disposed');
    expect(() => t.shape).toThrow('this Tensor was disposed');
    const W = Tensor.from(new Float32Array(8 * 4).fill(0.1), [8, 4]);
    const layer = new MultiHeadLoraLinear({ weight: W }, { rank: 2, heads: 2 });
    const opt = new AdamW([layer]);
    opt.dispose();
    layer.dispose();
    await expect(layer.forward(Tensor.from(new Float32Array(4), [1, 4]))).rejects.toThrow('this MultiHeadLoraLinear was disposed');
    expect(() => layer.options).toThrow('this MultiHeadLoraLinear was disposed');
    expect(() => new AdamW([layer])).toThrow('this MultiHeadLoraLinear was disposed');
    expect(W.numel).toBe(32); // the frozen weight is the caller's and stays
  });

  it('Model disposes its adapter; Adapter detaches first; Trainer frees its optimizer and refuses afterwards', async () => {
    const model = Model.fromConfig(cfg, { seed: 1 });
    const before = (await model.forward([[1, 2, 3]])).data() as Float32Array;
    const adapter = Adapter.attach(model, { targetModules: ['up_proj'], rank: 2, heads: 2 });
    const data = MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: 'b' }], { tokenizer: tok });
    const trainer = new Trainer(model, adapter, { maxSteps: 2, batchSize: 1, progress: false });
    await trainer.fit(data);
    trainer.dispose();
    await expect(trainer.fit(data)).rejects.toThrow('this Trainer was disposed');
    adapter.dispose();
    expect(Adapter.of(model)).toBeUndefined();
    expect(() => adapter.stateDict()).toThrow('this Adapter was disposed');
    expect((await model.forward([[1, 2, 3]])).data()).toEqual(before); // detached: the base model as it was
    const again = Adapter.attach(model, { targetModules: ['up_proj'] });
    model[Symbol.dispose]();
    expect(Adapter.of(model)).toBeUndefined();
    expect(() => again.stateDict()).toThrow('this Adapter was disposed');
    await expect(model.forward([[1, 2, 3]])).rejects.toThrow('this Model was disposed');
    expect(() => model.parameterCount()).toThrow('this Model was disposed');
  });

  it('is refused while the model trains', async () => {
    const model = Model.fromConfig(cfg, { seed: 1 });
    const adapter = Adapter.attach(model, { targetModules: ['up_proj'], rank: 2, heads: 2 });
    const data = MultiTaskDataset.fromArray([{ task: 't', prompt: 'a', response: 'b' }], { tokenizer: tok });
    const trainer = new Trainer(model, adapter, { maxSteps: 5, batchSize: 1, progress: false });
    const fit = trainer.fit(data);
    expect(() => model.dispose()).toThrow(/Model\.dispose refused: the model is training/);
    expect(() => adapter.dispose()).toThrow(/Adapter\.dispose refused/);
    expect(() => trainer.dispose()).toThrow(/Trainer\.dispose refused/);
    await fit;
    model.dispose();
  });
});
