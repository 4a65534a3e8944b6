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

  it('values so large that the outputs overflow (1e38 loaded, and every logit was infinite)', async () => {
    const dir = savedAdapter('huge');
    const file = path.join(dir, 'adapter_model.safetensors');
    const tensors = loadSafetensors(file);
    const name = Object.keys(tensors).find((k) => k.endsWith('lora_A.weight'))!;
    const v = Float32Array.from(tensors[name].data() as Float32Array);
    v[0] = -1e38;
    saveSafetensors(file, { ...tensors, [name]: Tensor.from(v, tensors[name].shape) });
    const model = Model.fromConfig(TINY_CONFIG, { seed: 1 });
    await expect(Adapter.load(model, dir)).rejects.toThrow(`${file}: ${name} holds a value of magnitude 1.000e+38, above 1e+18`);
    expect(Adapter.of(model)).toBeUndefined();
    // 1e17 is a value like any other (far above what training gives, but finite products)
    v[0] = -1e17;
    saveSafetensors(file, { ...tensors, [name]: Tensor.from(v, tensors[name].shape) });
    await expect(Adapter.load(Model.fromConfig(TINY_CONFIG, { seed: 1 }), dir)).resolves.toBeInstanceOf(Adapter);
  });

  it('a target_modules regex that backtracks, stopped by a time budget naming the file', async () => {
    const dir = savedAdapter('backtracks');
    fs.rmSync(path.join(dir, 'rlora_config.json')); // a PEFT folder: its target_modules is matched as a regex
    const config = path.join(dir, 'adapter_config.json');
    editJson(config, (j) => Object.assign(j, { peft_type: 'LORA', target_modules: '(.|.)*z' }));
    const t0 = Date.now();
    await expect(Adapter.load(Model.fromConfig(TINY_CONFIG, { seed: 1 }), dir)).rejects.toThrow(`${config}: target_modules, exclude_modules or a rank_pattern/alpha_pattern key is a regular expression that ran too long`);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('init.gamma outside 1e-6 to 1e12 (1e-308 made the weights NaN)', () => {
    const model = Model.fromConfig(TINY_CONFIG, { seed: 1 });
    for (const [gamma, shown] of [[1e-308, '1e-308'], [1e-7, '1e-07'], [1e13, '1e+13']] as const) {
      expect(() => Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], init: { gamma } })).toThrow(`init.gamma must be a number from 1e-06 to 1e+12, got ${shown}`);
    }
    expect(() => Adapter.attach(model, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj'], init: { gamma: 1e-6 } }).detach()).not.toThrow();
  });

  it('sizes within their bounds that the weights file does not hold, before allocating (1024 heads of rank 65536 took 10 GB)', async () => {
    const dir = savedAdapter('oversized');
    editJson(path.join(dir, 'adapter_config.json'), (j) => (j.r = 65536));
    editJson(path.join(dir, 'rlora_config.json'), (j) => (j.heads = 1024));
    const t0 = Date.now();
    await expect(Adapter.load(Model.fromConfig(TINY_CONFIG, { seed: 1 }), dir)).rejects.toThrow(
      /adapter_config\.json: r 65536 and 1024 heads on \d+ modules make \d+ adapter values, but .*adapter_model\.safetensors holds \d+: the config does not describe these weights/,
    );
    expect(Date.now() - t0).toBeLessThan(5000);
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
      // exclude_modules taking out every target (a string: was a TypeError naming no file, "got []")
      [(j) => Object.assign(j, { target_modules: '.*(q_proj|v_proj)', exclude_modules: '.*' }), 'target_modules ".*(q_proj|v_proj)" selects no module of this model once exclude_modules ".*" is taken out'],
      [(j) => Object.assign(j, { target_modules: ['q_proj'], exclude_modules: ['q_proj'] }), 'target_modules ["q_proj"] selects no module of this model once exclude_modules ["q_proj"] is taken out'],
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
