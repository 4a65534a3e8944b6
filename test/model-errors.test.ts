// Model: hostile and broken model folders (shard indexes that point outside the folder, tensors in
// two shards, config values that cannot give finite logits, non-finite weights, files that are not
// JSON) and attention masks other than 0 and 1. Each error names the file and the key or tensor.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { HFConfig, loadSafetensors, Model, saveSafetensors, Tensor } from '../lib';
import { native } from '../lib/native';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-model-errors-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const CONFIG: HFConfig = {
  architectures: ['LlamaForCausalLM'], vocab_size: 40, hidden_size: 16, intermediate_size: 24,
  num_hidden_layers: 2, num_attention_heads: 2, rms_norm_eps: 1e-5, max_position_embeddings: 64,
};
const model = Model.fromConfig(CONFIG, { seed: 2 });
const baseDir = path.join(tmp, 'base');
model.save(baseDir);
const weights = loadSafetensors(path.join(baseDir, 'model.safetensors'));
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A model folder: config.json (an object, or raw text) and the tensors as one file or shards. */
function folder(name: string, config: object | string, shards?: Record<string, string[]>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  if (!shards) {
    fs.copyFileSync(path.join(baseDir, 'model.safetensors'), path.join(dir, 'model.safetensors'));
    return dir;
  }
  const map: Record<string, string> = {};
  for (const [file, names] of Object.entries(shards)) {
    saveSafetensors(path.join(dir, file), Object.fromEntries(names.map((n) => [n, weights[n]])));
    for (const n of names) map[n] = file;
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
  return dir;
}

const names = Object.keys(weights);
const half = names.slice(0, 9);
const rest = names.slice(9);

describe('shard indexes', () => {
  it('refuses weight_map entries naming a file outside the model folder, naming the index and the entry', async () => {
    // A real checkpoint outside the folder: loading it would succeed if the path were followed.
    const other = path.join(tmp, 'other');
    fs.mkdirSync(other);
    saveSafetensors(path.join(other, 'model.safetensors'), Object.fromEntries(rest.map((n) => [n, weights[n]])));
    const outside = ['../other/model.safetensors', path.join(other, 'model.safetensors'), 'sub/../../other/model.safetensors', '.'];
    for (const [i, target] of outside.entries()) {
      const dir = folder(`outside-${i}`, CONFIG, { 'a.safetensors': half });
      const index = path.join(dir, 'model.safetensors.index.json');
      const json = JSON.parse(fs.readFileSync(index, 'utf8'));
      for (const n of rest) json.weight_map[n] = target;
      fs.writeFileSync(index, JSON.stringify(json));
      const entry = `weight_map[${JSON.stringify(rest[0])}] = ${JSON.stringify(target)}`;
      await expect(Model.fromPretrained(dir)).rejects.toThrow(new RegExp(`^${escape(index)}: ${escape(entry)} names a file outside the model folder`));
    }
    // Inside the folder, through a subfolder, is fine.
    const dir = folder('inside', CONFIG, { 'a.safetensors': half });
    fs.mkdirSync(path.join(dir, 'sub'));
    saveSafetensors(path.join(dir, 'sub', 'b.safetensors'), Object.fromEntries(rest.map((n) => [n, weights[n]])));
    const index = path.join(dir, 'model.safetensors.index.json');
    const json = JSON.parse(fs.readFileSync(index, 'utf8'));
    for (const n of rest) json.weight_map[n] = './sub/../sub/b.safetensors';
    fs.writeFileSync(index, JSON.stringify(json));
    expect((await (await Model.fromPretrained(dir)).forward([[1, 2]])).data()).toEqual((await model.forward([[1, 2]])).data());
  });

  it('refuses a tensor held by two shards, naming the tensor and both files', async () => {
    const dup = rest[3];
    const dir = folder('duplicate', CONFIG, { 'a.safetensors': [...half, dup], 'b.safetensors': rest });
    await expect(Model.fromPretrained(dir)).rejects.toThrow(
      `tensor ${dup} is in two files: ${path.join(dir, 'a.safetensors')} and ${path.join(dir, 'b.safetensors')}`,
    );
  });

  it('names the index file when it is not JSON or has no weight_map', async () => {
    const dir = folder('bad-index', CONFIG, { 'a.safetensors': names });
    const index = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(index, '{"weight_map": {"a": "a.safetensors",}}');
    await expect(Model.fromPretrained(dir)).rejects.toThrow(new RegExp(`^${escape(index)} is not valid JSON \\(`));
    fs.writeFileSync(index, '{"weight_map": ["a.safetensors"]}');
    await expect(Model.fromPretrained(dir)).rejects.toThrow(`${index} has no weight_map`);
    fs.writeFileSync(index, '{"weight_map": {"model.norm.weight": 7}}');
    await expect(Model.fromPretrained(dir)).rejects.toThrow(`${index}: weight_map["model.norm.weight"] = 7 is not a file name`);
  });
});

describe('config values', () => {
  // [change to the config, the message]: each names the key as config.json spells it.
  const cases: [Record<string, unknown>, string][] = [
    [{ rope_theta: 1e-300 }, 'config.rope_theta must be a finite number > 1, got 1e-300'],
    [{ rope_theta: 1 }, 'config.rope_theta must be a finite number > 1, got 1'],
    [{ rope_theta: '10000' }, 'config.rope_theta must be a finite number > 1, got "10000"'],
    [{ rms_norm_eps: 0 }, 'config.rms_norm_eps must be a finite number > 0, got 0'],
    [{ rms_norm_eps: -1e-6 }, 'config.rms_norm_eps must be a finite number > 0, got -0.000001'],
    [{ hidden_size: 17 }, 'config.hidden_size (17) must be a multiple of num_attention_heads (2) unless head_dim is set'],
    [{ hidden_size: 18 }, 'config.hidden_size / num_attention_heads must be even for rotary embeddings, got 9'],
    [{ head_dim: 7 }, 'config.head_dim must be even for rotary embeddings, got 7'],
    [{ num_key_value_heads: 3, num_attention_heads: 4 }, 'config.num_attention_heads (4) must be a multiple of num_key_value_heads (3)'],
    [{ num_key_value_heads: 0 }, 'config.num_key_value_heads must be a positive integer, got 0'],
    [{ num_attention_heads: 2.5 }, 'config.num_attention_heads must be a positive integer, got 2.5'],
    [{ vocab_size: 0 }, 'config.vocab_size must be a positive integer, got 0'],
    [{ intermediate_size: -4 }, 'config.intermediate_size must be a positive integer, got -4'],
    [{ max_position_embeddings: 0 }, 'config.max_position_embeddings must be a positive integer, got 0'],
    [{ initializer_range: -0.02 }, 'config.initializer_range must be a finite number >= 0, got -0.02'],
    [{ sliding_window: -1 }, 'config.sliding_window must be a non-negative integer, got -1'],
    [{ tie_word_embeddings: 'yes' }, 'config.tie_word_embeddings must be true or false, got "yes"'],
    [{ eos_token_id: [2, '3'] }, 'config.eos_token_id must be a token id, a list of token ids, or null, got [2,"3"]'],
    [{ rope_scaling: 'llama3' }, 'config.rope_scaling must be an object or null, got "llama3"'],
    [{ rope_scaling: { rope_type: 'llama3', factor: 1e-300 } }, 'config.rope_scaling.factor must be a finite number >= 1, got 1e-300'],
    [{ rope_scaling: { rope_type: 'llama3', low_freq_factor: 0 } }, 'config.rope_scaling.low_freq_factor must be a finite number > 0, got 0'],
    [{ rope_scaling: { rope_type: 'llama3', low_freq_factor: 4, high_freq_factor: 4 } }, 'config.rope_scaling.high_freq_factor must be a finite number > low_freq_factor (4), got 4'],
    [{ rope_scaling: { type: 'llama3', original_max_position_embeddings: 0 } }, 'config.rope_scaling.original_max_position_embeddings must be a positive integer, got 0'],
  ];

  it.each(cases)('Model.fromConfig refuses %j', (change, message) => {
    expect(() => Model.fromConfig({ ...CONFIG, ...change } as HFConfig)).toThrow(message);
  });

  it('fromPretrained names config.json and the key', async () => {
    const [change, message] = cases[0];
    const dir = folder('nan-rope', { ...CONFIG, ...change });
    await expect(Model.fromPretrained(dir)).rejects.toThrow(`${path.join(dir, 'config.json')}: ${message}`);
    // JSON's 1e400 is Infinity
    const inf = folder('inf-eps', JSON.stringify(CONFIG).replace('"rms_norm_eps":0.00001', '"rms_norm_eps":1e400'));
    await expect(Model.fromPretrained(inf)).rejects.toThrow('config.rms_norm_eps must be a finite number > 0, got Infinity');
    // valid keys, but a model too big to allocate
    const huge = folder('huge', { ...CONFIG, intermediate_size: 2 ** 50 });
    await expect(Model.fromPretrained(huge)).rejects.toThrow(`${path.join(huge, 'config.json')}: cannot make the model it describes: rlora: out of CPU memory`);
  });

  it('the values the checks allow keep the logits finite', async () => {
    const edge = Model.fromConfig({ ...CONFIG, rope_theta: 1.0001, rms_norm_eps: 1e-30, rope_scaling: { rope_type: 'llama3', factor: 1, low_freq_factor: 1e-300, high_freq_factor: 2e-300 } }, { seed: 1 });
    const logits = (await edge.forward([[1, 2, 3, 4]])).data() as Float32Array;
    expect(logits.every(Number.isFinite)).toBe(true);
  });

  it('refuses num_hidden_layers beyond the layers of the checkpoint before allocating the model', async () => {
    const dir = folder('many-layers', { ...CONFIG, num_hidden_layers: 2 ** 40 });
    const start = Date.now();
    await expect(Model.fromPretrained(dir)).rejects.toThrow(
      `${path.join(dir, 'config.json')}: num_hidden_layers is 1099511627776 but the checkpoint in ${dir} has 2 layer(s)`,
    );
    expect(Date.now() - start).toBeLessThan(2000);
  });

  it('names config.json when it is not JSON or not an object', async () => {
    const dir = folder('bad-json', '{"hidden_size": 16,');
    await expect(Model.fromPretrained(dir)).rejects.toThrow(new RegExp(`^${escape(path.join(dir, 'config.json'))} is not valid JSON \\(`));
    const arr = folder('array-json', '[1, 2]');
    await expect(Model.fromPretrained(arr)).rejects.toThrow(`${path.join(arr, 'config.json')}: config must be an object`);
  });
});

describe('non-finite weights', () => {
  it.each([
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
  ])('a weight holding %s is refused with the tensor name and the file', async (_, bad) => {
    const dir = folder(`weight-${String(bad)}`, CONFIG);
    const file = path.join(dir, 'model.safetensors');
    const name = 'model.layers.1.mlp.down_proj.weight';
    const v = Float32Array.from(weights[name].data() as Float32Array);
    v[5] = bad;
    saveSafetensors(file, { ...weights, [name]: Tensor.from(v, weights[name].shape) });
    await expect(Model.fromPretrained(dir)).rejects.toThrow(`${file}: ${name} holds NaN or infinite values`);
  });

  it('a float32 weight that overflows the model dtype is refused', async () => {
    const dir = folder('weight-overflow', CONFIG);
    const file = path.join(dir, 'model.safetensors');
    const name = 'model.embed_tokens.weight';
    const v = Float32Array.from(weights[name].data() as Float32Array);
    v[0] = 1e5; // float16 tops out at 65504
    saveSafetensors(file, { ...weights, [name]: Tensor.from(v, weights[name].shape) });
    if (native.cpuDtypeProblem('float16')) {
      // libtorch 1.13 cannot compute in float16 on the CPU: refused at load, before reading (model-options.test.ts)
      await expect(Model.fromPretrained(dir, { dtype: 'float16' })).rejects.toThrow(/dtype 'float16' cannot compute on the CPU/);
    } else {
      await expect(Model.fromPretrained(dir, { dtype: 'float16' })).rejects.toThrow(`${file}: ${name} holds values beyond the range of float16`);
    }
    expect((await Model.fromPretrained(dir)).dtype).toBe('float32'); // fine in float32
  });
});

describe('attention masks', () => {
  it('refuses values other than 0 and 1, naming the value and its position', async () => {
    await expect(model.forward([[1, 2, 3]], { attentionMask: [[1, 2, 1]] })).rejects.toThrow('attentionMask[0][1] is 2; a mask holds only 1 (token) and 0 (padding)');
    await expect(model.forward([[1, 2], [3, 4]], { attentionMask: [[1, 1], [0, -1]] })).rejects.toThrow('attentionMask[1][1] is -1');
    const asTensor = Tensor.from([[0, 1, 7]], undefined, { dtype: 'uint8' });
    await expect(model.generate([[1, 2, 3]], { attentionMask: asTensor, maxNewTokens: 1 })).rejects.toThrow('attentionMask[0][2] is 7');
    const flat = Int32Array.from([1, 1, 1, 3]);
    await expect(model.forward(Int32Array.from([1, 2, 3, 4]), { shape: [2, 2], attentionMask: flat })).rejects.toThrow('attentionMask[1][1] is 3');
    // 0 and 1, as numbers, bools or bytes, still work
    const ok = await model.forward([[1, 2, 3]], { attentionMask: Tensor.from([[0, 1, 1]], undefined, { dtype: 'bool' }) });
    expect(ok.shape).toEqual([1, 3, 40]);
  });
});
