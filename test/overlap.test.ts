// Overlapping calls on a model that is training (README "Calls during training"): a second fit,
// trainStep, detach, merge or saveCheckpoint, and inference (forward, generate, evaluate), are
// refused at once with an error naming what is running; nothing that runs changes.
import * as fs from 'fs';
import * as path from 'path';

import { AdamW, Adapter, ByteTokenizer, fitStep, HFConfig, loadSafetensors, Model, MultiHeadLoraLinear, MultiTaskDataset, Tensor, Trainer, trainStep } from '../lib';
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

describe('a second fit after the first finished', () => {
  it('is refused with the reason (it returned {steps: []} as if it had trained)', async () => {
    const { trainer } = setup();
    expect((await trainer.fit(data())).steps).toHaveLength(20);
    await expect(trainer.fit(data())).rejects.toThrow('Trainer.fit refused: this Trainer has run all its 20 steps (step 20 of 20), so a second fit would train nothing');
  });
});

describe('an outputDir that holds an earlier run', () => {
  it('is refused (it appended to the old log and mixed checkpoints); overwriteOutputDir starts over and keeps other files', async () => {
    const dir = path.join(tmp, 'reused');
    await setup(dir).trainer.fit(data());
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    const second = setup(dir).trainer;
    await expect(second.fit(data())).rejects.toThrow(`Trainer.fit refused: outputDir ${dir} holds an earlier run (checkpoint-20, log.jsonl); logging into it would mix two runs`);
    const model = Model.fromConfig(CFG, { seed: 1 });
    const adapter = Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['up_proj'], seed: 2 });
    const fresh = new Trainer(model, adapter, { learningRate: 1e-2, maxSteps: 3, batchSize: 4, progress: false, outputDir: dir, overwriteOutputDir: true });
    await fresh.fit(data());
    expect(fs.readdirSync(dir).sort()).toEqual(['checkpoint-3', 'log.jsonl', 'notes.txt']);
    const steps = fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.step !== undefined && r.loss !== undefined);
    expect(steps.map((r) => r.step)).toEqual([1, 2, 3]); // the new run's alone
    // resuming the run there continues it (no refusal)
    const resumed = await Trainer.resume(path.join(dir, 'checkpoint-3'), Model.fromConfig(CFG, { seed: 1 }), { maxSteps: 4, progress: false });
    expect((await resumed.fit(data())).steps.map((r) => r.step)).toEqual([4]);
  });
});

describe('reads and changes of the adapter while Trainer.fit runs (a fit not awaited)', () => {
  it('save, stateDict, headSimilarity, train and eval are refused with "did you forget to await"; after fit, save writes the trained values', async () => {
    const { adapter, trainer } = setup();
    const before = adapter.stateDict();
    const first = trainer.fit(data()); // not awaited, as in the report
    const modes = [...adapter.layers.values()].map((l) => l.training);
    const dir = path.join(tmp, 'saved-during-fit');
    expect(() => adapter.save(dir)).toThrow(/^Adapter\.save refused: the model is training \(Trainer\.fit is running\); wait for it to finish \(did you forget to await it\?\)/);
    expect(fs.existsSync(dir)).toBe(false); // nothing was written (it used to write the untrained adapter)
    expect(() => adapter.stateDict()).toThrow(/Adapter\.stateDict refused/);
    expect(() => adapter.headSimilarity()).toThrow(/Adapter\.headSimilarity refused/);
    expect(() => adapter.eval()).toThrow(/Adapter\.eval refused/);
    expect(() => adapter.train()).toThrow(/Adapter\.train refused/);
    expect([...adapter.layers.values()].map((l) => l.training)).toEqual(modes); // the refused eval() and train() changed nothing
    await first;
    adapter.save(dir);
    const after = adapter.stateDict();
    // the saved adapter is the trained one: every tensor of up_proj moved, and the file holds it
    const moved = Object.keys(before).filter((k) => !/offset/.test(k)).map((k) => Math.max(...(after[k].data() as Float32Array).map((v, i) => Math.abs(v - (before[k].data() as Float32Array)[i]))));
    expect(Math.min(...moved)).toBeGreaterThan(0);
    const loaded = loadSafetensors(path.join(dir, 'adapter_model.safetensors'));
    for (const k of Object.keys(after)) expect(Array.from(loaded[k].data() as Float32Array)).toEqual(Array.from(after[k].data() as Float32Array));
  });

  it('the adapter\'s layers: forward, vjp, stateDict, loadStateDict, headSimilarity, train and dispose are refused; the run is unchanged', async () => {
    const alone = setup();
    const reference = await alone.trainer.fit(data());
    const { adapter, trainer } = setup();
    const layer = adapter.layers.get('model.layers.0.mlp.up_proj')!;
    const x = Tensor.from(new Float32Array(CFG.hidden_size as number).fill(0.5), [1, CFG.hidden_size as number]);
    const state = layer.stateDict();
    const first = trainer.fit(data());
    await expect(layer.forward(x)).rejects.toThrow(/^MultiHeadLoraLinear\.forward refused: the model is training \(Trainer\.fit is running\)/);
    await expect(layer.vjp(x, Tensor.from(new Float32Array(CFG.intermediate_size as number), [1, CFG.intermediate_size as number]))).rejects.toThrow(/MultiHeadLoraLinear\.vjp refused/);
    expect(() => layer.stateDict()).toThrow(/MultiHeadLoraLinear\.stateDict refused/);
    expect(() => layer.loadStateDict(state)).toThrow(/MultiHeadLoraLinear\.loadStateDict refused/);
    expect(() => layer.headSimilarity()).toThrow(/MultiHeadLoraLinear\.headSimilarity refused/);
    expect(() => layer.eval()).toThrow(/MultiHeadLoraLinear\.eval refused/);
    expect(() => layer.dispose()).toThrow(/MultiHeadLoraLinear\.dispose refused/);
    const h = await first;
    // the refused calls changed nothing: the same losses as the run nobody disturbed
    expect(h.steps.map((s) => s.loss)).toEqual(reference.steps.map((s) => s.loss));
    expect((await layer.forward(x)).shape).toEqual([1, CFG.intermediate_size]);
  });

  it('a callback (onStep) may read the adapter synchronously between steps; a native job started there is refused', async () => {
    const { adapter, trainer } = setup();
    const layer = adapter.layers.get('model.layers.0.mlp.up_proj')!;
    const seen: number[] = [];
    const refused: string[] = [];
    await trainer.fit(data(), {
      onStep: (rec) => {
        seen.push(Math.max(...(adapter.stateDict()[`base_model.model.model.layers.0.mlp.up_proj.lora_A.weight`].data() as Float32Array).map(Math.abs)));
        if (rec.step === 1) layer.forward(Tensor.from(new Float32Array(CFG.hidden_size as number), [1, CFG.hidden_size as number])).catch((e: Error) => refused.push(e.message));
      },
    });
    expect(seen).toHaveLength(20);
    expect(new Set(seen).size).toBeGreaterThan(1); // it saw the values move
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatch(/^MultiHeadLoraLinear\.forward refused: the model is training \(Trainer\.fit is running\)/);
    // outside the callback the rule is back
    const again = trainer.fit(data());
    expect(() => adapter.stateDict()).toThrow(/Adapter\.stateDict refused/);
    await again.catch(() => undefined);
  });

  it('a detached adapter\'s layers belong to no model any more; fitStep holds a layer trained alone', async () => {
    const { model, adapter, trainer } = setup();
    adapter.detach();
    await expect(trainer.fit(data())).rejects.toThrow("Trainer.fit refused: this Trainer's adapter is no longer attached to its model (it was detached or merged); make a new Trainer with the adapter the model has");
    const other = Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['up_proj'], seed: 3 });
    const run = new Trainer(model, other, { learningRate: 1e-2, maxSteps: 3, batchSize: 4, progress: false }).fit(data());
    const layer = adapter.layers.get('model.layers.0.mlp.up_proj')!;
    expect(layer.stateDict()['lora_A.weight'].shape).toEqual([2, CFG.hidden_size]); // not refused: no longer the model's
    await run;
    await expect(trainer.fit(data())).rejects.toThrow(/no longer attached to its model \(it was detached or merged; another adapter is attached now\)/);
    const W = Tensor.from(new Float32Array(8 * 4).fill(0.1), [8, 4]);
    const alone = new MultiHeadLoraLinear({ weight: W }, { method: 'lora', rank: 2, seed: 1 });
    const step = fitStep(alone, Tensor.from(new Float32Array(3 * 4).fill(1), [3, 4]), Tensor.from(new Float32Array(3 * 8), [3, 8]), new AdamW([alone]));
    await expect(alone.forward(Tensor.from(new Float32Array(4), [1, 4]))).rejects.toThrow(/MultiHeadLoraLinear\.forward refused: the model is training \(fitStep is running\)/);
    expect(Number.isFinite((await step).loss)).toBe(true);
    expect((await alone.forward(Tensor.from(new Float32Array(4), [1, 4]))).shape).toEqual([1, 8]);
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
