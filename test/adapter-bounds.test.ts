// An adapter folder is untrusted input: values that would make every output non-finite, and sizes
// that would allocate without end, are refused at load with the file and key named (NaN weights and
// lora_alpha 1e308 used to load; heads 1e9 allocated until memory ran out).
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, loadSafetensors, Model, MultiHeadLoraLinear, saveSafetensors, Tensor } from '../lib';
import { tempFolder, TINY_CONFIG } from './helpers/tiny-model';

const tmp = tempFolder('rlora-adapter-bounds-');

function savedAdapter(name: string): string {
  const dir = path.join(tmp, name);
  const model = Model.fromConfig(TINY_CONFIG, { seed: 1 });
  Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], seed: 1 }).save(dir);
  return dir;
}
const editJson = (file: string, edit: (j: Record<string, unknown>) => void): void => {
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j));
};

describe('Adapter.load refuses', () => {
  it('NaN, Infinity in the weights, naming the file and the tensor; nothing stays attached', async () => {
    for (const bad of [NaN, Infinity]) {
      const dir = savedAdapter(`nan-${bad}`);
      const file = path.join(dir, 'adapter_model.safetensors');
      const tensors = loadSafetensors(file);
      const name = Object.keys(tensors).find((k) => k.endsWith('lora_A.weight'))!;
      const v = Float32Array.from(tensors[name].data() as Float32Array);
      v[3] = bad;
      saveSafetensors(file, { ...tensors, [name]: Tensor.from(v, tensors[name].shape) });
      const model = Model.fromConfig(TINY_CONFIG, { seed: 1 });
      await expect(Adapter.load(model, dir)).rejects.toThrow(`${file}: ${name} holds NaN or infinite values`);
      expect(Adapter.of(model)).toBeUndefined();
    }
  });

  it('heads, rank and alpha beyond their bounds, before allocating', async () => {
    const cases: [string, (j: Record<string, unknown>) => void, RegExp][] = [
      ['rlora_config.json', (j) => (j.heads = 1e9), /heads must be at most 1024, got 1000000000/],
      ['adapter_config.json', (j) => (j.r = 1e9), /rank must be at most 65536, got 1000000000/],
      ['adapter_config.json', (j) => (j.lora_alpha = 1e308), /alpha must be a finite number from -1e\+06 to 1e\+06, got 1e\+308/],
    ];
    for (const [fileName, edit, error] of cases) {
      const dir = savedAdapter(`bounds-${fileName}-${String(error).length}`);
      editJson(path.join(dir, fileName), edit);
      const t0 = Date.now();
      await expect(Adapter.load(Model.fromConfig(TINY_CONFIG, { seed: 1 }), dir)).rejects.toThrow(error);
      expect(Date.now() - t0).toBeLessThan(5000);
    }
  });

  it('the same bounds hold for a layer made in code', () => {
    const W = Tensor.from(new Float32Array(8 * 4), [8, 4]);
    expect(() => new MultiHeadLoraLinear({ weight: W }, { heads: 5000 })).toThrow('heads must be at most 1024, got 5000');
    expect(() => new MultiHeadLoraLinear({ weight: W }, { alpha: -1e7 })).toThrow(/alpha must be a finite number from -1e\+06 to 1e\+06/);
  });
});

describe('PEFT keys of adapter_config.json', () => {
  it('a bad regular expression or a wrong type names the file and the key', async () => {
    const cases: [(j: Record<string, unknown>) => void, string][] = [
      [(j) => (j.target_modules = 'q_proj('), 'target_modules is not a valid regular expression'],
      [(j) => (j.exclude_modules = '(k_proj'), 'exclude_modules is not a valid regular expression'],
      [(j) => (j.exclude_modules = 5), 'exclude_modules must be a string, a list of strings or null, got 5'],
      [(j) => (j.layers_pattern = 7), 'layers_pattern must be a string, a list of strings or null, got 7'],
    ];
    let k = 0;
    for (const [edit, message] of cases) {
      // a PEFT LoRA folder: a plain lora adapter without rlora's own file
      const dir = path.join(tmp, `peft-keys-${k++}`);
      Adapter.attach(Model.fromConfig(TINY_CONFIG, { seed: 1 }), { method: 'lora', rank: 2, targetModules: ['q_proj', 'v_proj'], seed: 1 }).save(dir);
      fs.rmSync(path.join(dir, 'rlora_config.json'));
      editJson(path.join(dir, 'adapter_config.json'), edit);
      await expect(Adapter.load(Model.fromConfig(TINY_CONFIG, { seed: 1 }), dir)).rejects.toThrow(`${path.join(dir, 'adapter_config.json')}: ${message}`);
    }
  });
});
