// Overlapping calls on a model that is training (README "Calls during training"): a second fit,
// trainStep, detach, merge or saveCheckpoint, and inference (forward, generate, evaluate), are
// refused at once with an error naming what is running; nothing that runs changes.
import * as fs from 'fs';
import * as path from 'path';

import { AdamW, Adapter, ByteTokenizer, HFConfig, Model, MultiTaskDataset, Trainer, trainStep } from '../lib';
import { tempFolder, TINY_BYTE_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-overlap-');

const tok = new ByteTokenizer();
const CFG: HFConfig = TINY_BYTE_CONFIG;
const EXAMPLES = ['cat', 'dog', 'fish', 'bird', 'cow', 'ant', 'bee', 'elk'].map((w, i) => ({ task: i % 2 ? 'a' : 'b', prompt: `up ${w}:`, response: w.toUpperCase() }));
const data = (): MultiTaskDataset => MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 24 });

function setup(outputDir?: string): { model: Model; adapter: Adapter; trainer: Trainer } {
  const model = Model.fromConfig(CFG, { seed: 1 });
  const adapter = Adapter.attach(model, { method: 'rlora', heads: 2, rank: 2, targetModules: ['up_proj'], seed: 2 });
  const trainer = new Trainer(model, adapter, { learningRate: 1e-2, maxSteps: 20, batchSize: 4, progress: false, outputDir });
  return { model, adapter, trainer };
}

const RUNNING = /the model is training \(Trainer\.fit is running\)/;

describe('while Trainer.fit runs', () => {
  it('a second fit on the same Trainer is refused and the first runs exactly maxSteps', async () => {
    const { trainer } = setup();
    const first = trainer.fit(data());
    await expect(trainer.fit(data())).rejects.toThrow(RUNNING);
    const h = await first;
    expect(h.steps).toHaveLength(20);
    expect(trainer.step).toBe(20);
  });

  it('another Trainer on the same adapter is refused, and the adapter ends in evaluation mode once', async () => {
    const { model, adapter, trainer } = setup();
    const other = new Trainer(model, adapter, { learningRate: 1e-2, maxSteps: 5, batchSize: 4, progress: false });
    const first = trainer.fit(data());
    await expect(other.fit(data())).rejects.toThrow(RUNNING);
    // still training after the refusal (the refused call did not switch modes)
    expect([...adapter.layers.values()].every((l) => l.training)).toBe(true);
    await first;
    expect([...adapter.layers.values()].every((l) => !l.training)).toBe(true);
  });

  it('trainStep, detach, merge, forward, generate and evaluate are refused; after fit they work', async () => {
    const { model, adapter, trainer } = setup();
    const first = trainer.fit(data());
    const ids = [[1, 2, 3]];
    const batch = { inputIds: ids, attentionMask: [[1, 1, 1]], labels: ids };
    await expect(trainStep(model, [batch], new AdamW([...adapter.layers.values()]))).rejects.toThrow(RUNNING);
    expect(() => adapter.detach()).toThrow(/Adapter\.detach refused: the model is training \(Trainer\.fit is running\)/);
    expect(() => adapter.merge()).toThrow(RUNNING);
    await expect(model.forward(ids)).rejects.toThrow(/Model\.forward refused: the model is training/);
    await expect(model.generate(ids, { maxNewTokens: 2 })).rejects.toThrow(/Model\.generate refused: the model is training/);
    await expect(trainer.evaluate(data())).rejects.toThrow(/Trainer\.evaluate refused: the model is training/);
    const h = await first;
    expect(h.steps).toHaveLength(20);
    expect(Adapter.of(model)).toBe(adapter);
    expect((await model.forward(ids)).shape).toEqual([1, 3, tok.vocabSize]);
    expect(Object.keys(await trainer.evaluate(data())).sort()).toEqual(['a', 'b']);
    adapter.detach();
  });

  it('saveCheckpoint during fit is refused (fit writes its own with saveEvery or the abort signal)', async () => {
    const dir = path.join(tmp, 'ckpt');
    const { trainer } = setup(dir);
    const first = trainer.fit(data());
    await new Promise((r) => setImmediate(r));
    expect(() => trainer.saveCheckpoint()).toThrow(/saveCheckpoint refused: the model is training \(Trainer\.fit is running\)/);
    await first;
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-20']);
  });
});

describe('while trainStep runs', () => {
  it('fit and a second trainStep are refused, naming trainStep', async () => {
    const { model, adapter, trainer } = setup();
    const ids = [[1, 2, 3, 4]];
    const batch = { inputIds: ids, attentionMask: [[1, 1, 1, 1]], labels: ids };
    const opt = new AdamW([...adapter.layers.values()]);
    const step = trainStep(model, [batch], opt);
    await expect(trainStep(model, [batch], opt)).rejects.toThrow(/the model is training \(trainStep is running\)/);
    await expect(trainer.fit(data())).rejects.toThrow(/the model is training \(trainStep is running\)/);
    expect((await step).finite).toBe(true);
    expect((await trainStep(model, [batch], opt)).finite).toBe(true);
  });
});
