// Trainer.resume on a damaged checkpoint: each file missing or corrupt in turn gives an error naming
// that file and leaves nothing attached to the model, so the same model resumes afterwards.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Adapter, ByteTokenizer, loadSafetensors, loadSafetensorsMetadata, Model, MultiTaskDataset, saveSafetensors, Tensor, Trainer } from '../lib';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-resume-errors-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const tok = new ByteTokenizer();
const CFG = { architectures: ['LlamaForCausalLM'], vocab_size: tok.vocabSize, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2 };
const EXAMPLES = ['cat', 'dog', 'fish', 'cow'].map((w) => ({ task: 'upper', prompt: `up ${w}:`, response: w.toUpperCase() }));
const dataset = (): MultiTaskDataset => MultiTaskDataset.fromArray(EXAMPLES, { tokenizer: tok, maxLength: 16 });

const baseDir = path.join(tmp, 'base');
const runDir = path.join(tmp, 'run');
const checkpoint = path.join(runDir, 'checkpoint-1');

beforeAll(async () => {
  const m = Model.fromConfig(CFG, { seed: 3 });
  m.save(baseDir);
  const a = Adapter.attach(m, { method: 'rlora', heads: 2, rank: 2, targetModules: ['up_proj', 'down_proj'], seed: 1 });
  await new Trainer(m, a, { maxSteps: 2, batchSize: 2, learningRate: 1e-3, saveEvery: 1, outputDir: runDir, progress: false }).fit(dataset());
});

/** Rewrites a safetensors file of the checkpoint copy through `edit` (metadata kept unless replaced). */
function rewrite(file: string, edit: (t: Record<string, Tensor>, meta: Record<string, string>) => void): void {
  const tensors = loadSafetensors(file);
  const meta = { ...loadSafetensorsMetadata(file) };
  edit(tensors, meta);
  saveSafetensors(file, tensors, meta);
}
const truncate = (file: string): void => fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
const editState = (file: string, edit: (s: Record<string, any>) => void): void => { // eslint-disable-line @typescript-eslint/no-explicit-any
  const s = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(s);
  fs.writeFileSync(file, JSON.stringify(s));
};

// [file of the checkpoint, what is done to it, the error expected besides the file's path]
const CASES: [string, (file: string) => void, RegExp][] = [
  ['trainer_state.json', fs.rmSync, /no trainer_state.json/],
  ['trainer_state.json', truncate, /is not valid JSON/],
  ['trainer_state.json', (f) => editState(f, (s) => (s.step = -1)), /step must be a non-negative integer, got -1/],
  ['trainer_state.json', (f) => editState(f, (s) => delete s.dataset), /dataset must be \{size, tasks\}/],
  ['trainer_state.json', (f) => editState(f, (s) => (s.options.batchSize = 0)), /batchSize must be an integer >= 1, got 0/],
  // it used to resume silently from the start of the data
  ['trainer_state.json', (f) => editState(f, (s) => (s.sampler = null)), /sampler must be the data position \(an object\), got null/],
  ['trainer_state.json', (f) => editState(f, (s) => (s.options.learningRate = -1)), /learningRate must be a finite number > 0 and <= 3\.4028234663852886e\+38, got -1/],
  ['optimizer.safetensors', fs.rmSync, /no optimizer.safetensors/],
  ['optimizer.safetensors', truncate, /safetensors file/],
  ['optimizer.safetensors', (f) => rewrite(f, (t) => (t['0.exp_avg'] = Tensor.from([1, 2, 3]))), /optimizer state of parameter 0 does not match its shape/],
  ['optimizer.safetensors', (f) => rewrite(f, (t) => delete t['1.exp_avg_sq']), /parameter 1 lacks exp_avg or exp_avg_sq/],
  ['optimizer.safetensors', (f) => rewrite(f, (_, m) => (m.param_steps = '[1, 2')), /metadata "param_steps" must be a JSON array/],
  ['optimizer.safetensors', (f) => rewrite(f, (t, m) => {
    const last = Math.max(...Object.keys(t).map((k) => Number(k.split('.')[0])));
    delete t[`${last}.exp_avg`];
    delete t[`${last}.exp_avg_sq`];
    m.param_steps = JSON.stringify(JSON.parse(m.param_steps).slice(0, -1));
  }), /optimizer state has \d+ parameters, this optimizer \d+/],
  ['rng.safetensors', fs.rmSync, /no rng.safetensors/],
  ['rng.safetensors', truncate, /safetensors file/],
  ['rng.safetensors', (f) => rewrite(f, (t) => delete t['model.layers.0.mlp.up_proj']), /has no generator state for model.layers.0.mlp.up_proj/],
  ['rng.safetensors', (f) => rewrite(f, (t) => (t['model.layers.0.mlp.up_proj'] = Tensor.from([1, 2], undefined, { dtype: 'uint8' }))), /generator state must be a uint8 tensor of shape/],
  ['rng.safetensors', (f) => rewrite(f, (t) => (t['model.layers.0.mlp.q_proj'] = t['model.layers.0.mlp.up_proj'])), /names model.layers.0.mlp.q_proj, which the adapter does not wrap/],
  ['adapter_model.safetensors', fs.rmSync, /no adapter_model.safetensors/],
  ['adapter_model.safetensors', truncate, /safetensors file/],
  ['adapter_model.safetensors', (f) => rewrite(f, (t) => {
    const k = Object.keys(t).find((n) => n.endsWith('up_proj.lora_B1.weight'))!;
    t[k] = Tensor.from(new Float32Array(t[k].numel).fill(NaN), t[k].shape);
  }), /adapter_model\.safetensors: base_model\.model\..*lora_B1\.weight holds NaN or infinite values/],
  ['adapter_config.json', fs.rmSync, /no adapter_config.json/],
  ['adapter_config.json', truncate, /is not valid JSON/],
];

describe('Trainer.resume of a damaged checkpoint', () => {
  it('names the damaged file and leaves no adapter attached; the same model then resumes from a sound copy', async () => {
    const model = await Model.fromPretrained(baseDir);
    let n = 0;
    for (const [name, damage, error] of CASES) {
      const dir = path.join(tmp, 'damaged', `${n++}-${name}`, 'checkpoint-1');
      fs.cpSync(checkpoint, dir, { recursive: true });
      const file = path.join(dir, name);
      damage(file);
      let message = '(resolved)';
      await Trainer.resume(dir, model).catch((e: Error) => (message = e.message));
      // the file (or, when it is missing, the folder and the file's name) and what is wrong with it
      expect({ name, message }).toEqual({ name, message: expect.stringMatching(error) });
      expect({ name, named: message.includes(file) || (message.includes(dir) && message.includes(name)) }).toEqual({ name, named: true });
      expect({ name, attached: Adapter.of(model) }).toEqual({ name, attached: undefined });
    }
    const trainer = await Trainer.resume(checkpoint, model, { outputDir: path.join(tmp, 'after') });
    expect(Adapter.of(model)).toBe(trainer.adapter);
    const h = await trainer.fit(dataset());
    expect(h.steps.map((s) => s.step)).toEqual([2]);
    expect(h.lastCheckpoint).toBe(path.join(tmp, 'after', 'checkpoint-2'));
  });

  it('a checkpoint written by a run on another device resumes on the model\'s device', async () => {
    const dir = path.join(tmp, 'from-cuda', 'checkpoint-1');
    fs.cpSync(checkpoint, dir, { recursive: true });
    editState(path.join(dir, 'trainer_state.json'), (s) => (s.options.device = 'cuda')); // as a CUDA run saves it
    const model = await Model.fromPretrained(baseDir);
    const trainer = await Trainer.resume(dir, model);
    expect(trainer.options.device).toBe('cpu');
    const h = await trainer.fit(dataset());
    expect(h.steps.map((s) => s.step)).toEqual([2]);
    expect(Number.isFinite(h.steps[0].loss)).toBe(true);
  });
});
