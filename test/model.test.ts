// Model: logits of tiny LLaMA, Qwen2, Qwen3, Mistral, Phi3 and Gemma2 models against an independent forward written in
// Python torch from the same safetensors files; save/load, dtypes, shards, the cache, bad input.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { loadSafetensors, Model, saveSafetensors, Tensor } from '../lib';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { ARCHITECTURES as CONFIGS } from './helpers/architectures';
import { PY_REFERENCE } from './helpers/pymodel';
import { requireTorchPython, runPython } from './helpers/python';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rlora-model-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// prompts: two rows, the second left-padded by 2, a third right-padded by 1
const IDS = [
  [5, 17, 3, 44, 9, 60, 2],
  [0, 0, 11, 12, 13, 14, 15],
  [7, 8, 9, 10, 11, 12, 0],
];
const MASK = [
  [1, 1, 1, 1, 1, 1, 1],
  [0, 0, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 1, 0],
];

const logitsRows = (t: Tensor): Float32Array => t.data() as Float32Array;

describe.each(Object.keys(CONFIGS))('%s', (name) => {
  const dir = path.join(tmp, name);
  let model: Model;
  beforeAll(() => {
    model = Model.fromConfig(CONFIGS[name], { seed: 3 });
    // norms start at one: give them values, so that a weight read from the wrong place shows
    let k = 0;
    for (const { name: param, shape } of model.native.parameterSpecs()) {
      if (param.endsWith('norm.weight')) model.native.setParameter(param, Tensor.from(Float32Array.from({ length: shape[0] }, () => 1 + 0.3 * Math.sin(++k)), shape).native);
    }
    model.save(dir);
  });

  it('logits agree with the Python torch forward, with padding and a mask (1e-4)', async () => {
    requireTorchPython();
    const logits = await model.forward(IDS, { attentionMask: MASK });
    expect(logits.shape).toEqual([3, 7, 61]);
    const py = runPython<number[]>(
      `${PY_REFERENCE}
W = load_safetensors(INP['weights'])
cfg = json.load(open(INP['config']))
out = decoder_forward(W, cfg, torch.tensor(INP['ids']), torch.tensor(INP['mask']))
print(json.dumps(out.flatten().tolist()))`,
      { weights: path.join(dir, 'model.safetensors'), config: path.join(dir, 'config.json'), ids: IDS, mask: MASK },
    );
    const ours = logitsRows(logits);
    // compare where the query is a real token (padding positions are unspecified)
    let err = 0, scale = 0;
    MASK.forEach((row, b) => row.forEach((m, s) => {
      if (!m) return;
      for (let v = 0; v < 61; v++) {
        const k = (b * 7 + s) * 61 + v;
        err = Math.max(err, Math.abs(ours[k] - py[k]));
        scale = Math.max(scale, Math.abs(py[k]));
      }
    }));
    expect(scale).toBeGreaterThan(0.05);
    expect(err).toBeLessThan(1e-4);
  });

  it.each([
    ['left padding: by blocks', (i: number) => (i < 20 ? 0 : 1)],
    // padding only after the tokens: libtorch 2.x's fused attention where the architecture allows it
    ['right padding: fused on libtorch 2.x', (i: number) => (i >= 280 ? 0 : 1)],
  ])('a long sequence (300 tokens, %s) agrees with the Python torch forward (1e-4)', async (_how, padded) => {
    requireTorchPython();
    const S = 300;
    const ids = [0, 1].map((b) => Array.from({ length: S }, (_, i) => (i * 7 + b * 13 + 3) % 61));
    const mask = [Array<number>(S).fill(1), Array.from({ length: S }, (_, i) => padded(i))];
    const ours = logitsRows(await model.forward(ids, { attentionMask: mask }));
    const py = runPython<number[]>(
      `${PY_REFERENCE}
W = load_safetensors(INP['weights'])
cfg = json.load(open(INP['config']))
out = decoder_forward(W, cfg, torch.tensor(INP['ids']), torch.tensor(INP['mask']))
print(json.dumps(out.flatten().tolist()))`,
      { weights: path.join(dir, 'model.safetensors'), config: path.join(dir, 'config.json'), ids, mask },
    );
    let err = 0;
    mask.forEach((row, b) => row.forEach((m, i) => {
      if (!m) return;
      for (let v = 0; v < 61; v++) err = Math.max(err, Math.abs(ours[(b * S + i) * 61 + v] - py[(b * S + i) * 61 + v]));
    }));
    expect(err).toBeLessThan(1e-4);
  });

  it('padding does not change the logits of real tokens', async () => {
    const padded = logitsRows(await model.forward(IDS, { attentionMask: MASK }));
    const alone = logitsRows(await model.forward([[11, 12, 13, 14, 15]]));
    const right = logitsRows(await model.forward([[7, 8, 9, 10, 11, 12]]));
    expect(maxAbsDiff(padded.subarray((7 + 2) * 61, 14 * 61), alone)).toBeLessThan(1e-5);
    expect(maxAbsDiff(padded.subarray(14 * 61, (14 + 6) * 61), right)).toBeLessThan(1e-5);
  });

  it('loads back identically from its folder', async () => {
    const again = await Model.fromPretrained(dir);
    expect(again.resolvedConfig).toEqual(model.resolvedConfig);
    expect(logitsRows(await again.forward(IDS, { attentionMask: MASK }))).toEqual(logitsRows(await model.forward(IDS, { attentionMask: MASK })));
  });

  it('generate with the key/value cache gives the tokens of greedy decoding without it', async () => {
    const prompt = [IDS[0], IDS[1]];
    const mask = [MASK[0], MASK[1]];
    const got = await model.generate(prompt, { attentionMask: mask, maxNewTokens: 6, eosTokenId: [] });
    // greedy without a cache: the whole sequence again for every token
    const seqs = prompt.map((r) => [...r]);
    const masks = mask.map((r) => [...r]);
    for (let t = 0; t < 6; t++) {
      const logits = await model.forward(seqs, { attentionMask: masks });
      const [, S, V] = logits.shape;
      const flat = logits.data() as Float32Array;
      seqs.forEach((row, b) => {
        const last = flat.subarray((b * S + S - 1) * V, (b * S + S) * V);
        row.push(last.indexOf(Math.max(...last)));
        masks[b].push(1);
      });
    }
    expect(got).toEqual(seqs);
  });
});

describe('dtypes, shards and sampling', () => {
  const cfg = CONFIGS.llama;

  it('loads bfloat16 and float16 checkpoints, converting to the requested dtype', async () => {
    const m = Model.fromConfig(cfg, { seed: 5, dtype: 'bfloat16' });
    const dir = path.join(tmp, 'bf16');
    m.save(dir);
    const st = loadSafetensors(path.join(dir, 'model.safetensors'));
    expect(st['model.embed_tokens.weight'].dtype).toBe('bfloat16');
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
    const f32 = await Model.fromPretrained(dir, { dtype: 'float32' });
    expect(f32.dtype).toBe('float32');
    const asF32 = (await Model.fromPretrained(dir, { dtype: 'bfloat16' })).dtype;
    expect(asF32).toBe('bfloat16');
    // the float32 model holds exactly the bfloat16 values
    const ref = m.linearParameters('model.layers.0.mlp.up_proj').weight.data();
    expect(f32.linearParameters('model.layers.0.mlp.up_proj').weight.data()).toEqual(ref);
    // float16 file
    const half: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(loadSafetensors(path.join(dir, 'model.safetensors')))) half[k] = v.to('float16');
    const dir16 = path.join(tmp, 'f16');
    fs.mkdirSync(dir16);
    fs.copyFileSync(path.join(dir, 'config.json'), path.join(dir16, 'config.json'));
    saveSafetensors(path.join(dir16, 'model.safetensors'), half);
    const m16 = await Model.fromPretrained(dir16);
    const logits = await m16.forward([[1, 2, 3]]);
    expect(maxAbs(logits.data() as Float32Array)).toBeGreaterThan(0);
  });

  it('loads a sharded checkpoint (model.safetensors.index.json)', async () => {
    const m = Model.fromConfig(cfg, { seed: 6 });
    const dir = path.join(tmp, 'one');
    m.save(dir);
    const all = loadSafetensors(path.join(dir, 'model.safetensors'));
    const names = Object.keys(all);
    const shardDir = path.join(tmp, 'sharded');
    fs.mkdirSync(shardDir);
    fs.copyFileSync(path.join(dir, 'config.json'), path.join(shardDir, 'config.json'));
    const map: Record<string, string> = {};
    const halves = [names.slice(0, 10), names.slice(10)];
    halves.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      saveSafetensors(path.join(shardDir, file), Object.fromEntries(part.map((n) => [n, all[n]])));
      for (const n of part) map[n] = file;
    });
    fs.writeFileSync(path.join(shardDir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
    const loaded = await Model.fromPretrained(shardDir);
    expect((await loaded.forward([[4, 5, 6]])).data()).toEqual((await m.forward([[4, 5, 6]])).data());
  });

  it('samples reproducibly for a seed and respects eos', async () => {
    const m = Model.fromConfig(cfg, { seed: 7 });
    const a = await m.generate([[1, 2, 3]], { maxNewTokens: 8, temperature: 1.5, topK: 20, topP: 0.9, seed: 1, eosTokenId: [] });
    const b = await m.generate([[1, 2, 3]], { maxNewTokens: 8, temperature: 1.5, topK: 20, topP: 0.9, seed: 1, eosTokenId: [] });
    const c = await m.generate([[1, 2, 3]], { maxNewTokens: 8, temperature: 1.5, topK: 20, topP: 0.9, seed: 2, eosTokenId: [] });
    expect(a).toEqual(b);
    expect(a[0]).toHaveLength(11);
    expect(a).not.toEqual(c);
    const greedy = await m.generate([[1, 2, 3]], { maxNewTokens: 8, eosTokenId: [] });
    const stopAt = greedy[0][4]; // the second generated token
    const stopped = await m.generate([[1, 2, 3], [1, 2, 3]], { maxNewTokens: 8, eosTokenId: stopAt, padTokenId: 0 });
    const firstStop = greedy[0].slice(3).indexOf(stopAt) + 3;
    expect(stopped[0].slice(0, firstStop + 1)).toEqual(greedy[0].slice(0, firstStop + 1));
  });

  it('takes ids as nested arrays, a typed array with a shape, or an integer Tensor', async () => {
    const m = Model.fromConfig(cfg, { seed: 8 });
    const want = (await m.forward([[1, 2, 3], [4, 5, 6]])).data();
    expect((await m.forward(Int32Array.from([1, 2, 3, 4, 5, 6]), { shape: [2, 3] })).data()).toEqual(want);
    expect((await m.forward(Tensor.from([[1, 2, 3], [4, 5, 6]], undefined, { dtype: 'int32' }))).data()).toEqual(want);
    expect((await m.forward(Tensor.from([[1, 2, 3], [4, 5, 6]], undefined, { dtype: 'int64' }))).data()).toEqual(want);
    await expect(m.forward(Int32Array.from([1, 2]))).rejects.toThrow(/a typed array needs options.shape/);
  });

  it('describes itself', () => {
    const m = Model.fromConfig(CONFIGS.qwen2, { seed: 1 });
    expect(require('util').inspect(m)).toMatch(/Model\(Qwen2ForCausalLM, layers=2, hidden=32, intermediate=48, heads=4\/2 kv, vocab=61, parameters=[\d,]+, dtype=float32, device=cpu\)/);
    expect(m.moduleNames()).toContain('model.layers.1.mlp.down_proj');
    expect(m.moduleNames()).toContain('model.layers.0.input_layernorm');
    expect(m.linearModuleNames()).not.toContain('lm_head'); // tied
    // 61*32 embed + per layer: norms 2*32, q 32*32+32, k 32*16+16, v 32*16+16, o 32*32, mlp 3*32*48; final norm 32
    const perLayer = 64 + (1024 + 32) + (512 + 16) * 2 + 1024 + 3 * 32 * 48;
    expect(m.parameterCount()).toBe(61 * 32 + 2 * perLayer + 32);
  });
});

describe('bad input', () => {
  const cfg = CONFIGS.llama;
  let m: Model;
  beforeAll(() => (m = Model.fromConfig(cfg, { seed: 1 })));

  it('names missing files, unsupported architectures and bad tensors', async () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    await expect(Model.fromPretrained(empty)).rejects.toThrow(/no config.json in .*empty/);
    fs.writeFileSync(path.join(empty, 'config.json'), JSON.stringify(cfg));
    await expect(Model.fromPretrained(empty)).rejects.toThrow(/no weights in .*: expected model.safetensors or model.safetensors.index.json/);
    expect(() => Model.fromConfig({ ...cfg, architectures: ['GPT2LMHeadModel'] })).toThrow(
      /unsupported architecture "GPT2LMHeadModel"; rlora supports LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM/,
    );
    expect(() => Model.fromConfig({ ...cfg, hidden_size: 0 })).toThrow(/config.hidden_size must be a positive integer, got 0/);
    expect(() => Model.fromConfig({ ...cfg, rope_scaling: { rope_type: 'yarn', factor: 2 } })).toThrow(/rope_scaling of type "yarn" is not supported/);
    // a checkpoint missing a tensor, and one with a wrong shape
    const dir = path.join(tmp, 'broken');
    m.save(dir);
    const st = loadSafetensors(path.join(dir, 'model.safetensors'));
    delete st['model.layers.1.mlp.up_proj.weight'];
    saveSafetensors(path.join(dir, 'model.safetensors'), st);
    await expect(Model.fromPretrained(dir)).rejects.toThrow(/lacks 1 tensor\(s\): model.layers.1.mlp.up_proj.weight/);
    st['model.layers.1.mlp.up_proj.weight'] = Tensor.from(new Float32Array(48 * 31), [48, 31]);
    saveSafetensors(path.join(dir, 'model.safetensors'), st);
    await expect(Model.fromPretrained(dir)).rejects.toThrow(/model.layers.1.mlp.up_proj.weight has shape \[48, 31\] in the checkpoint, the model expects \[48, 32\]/);
  });

  it('refuses token ids outside the vocabulary, empty and ragged batches, right padding in generate', async () => {
    await expect(m.forward([[1, 61]])).rejects.toThrow(/token id 61 is outside the vocabulary \[0, 61\)/);
    await expect(m.forward([[-1, 2]])).rejects.toThrow(/token id -1 is outside the vocabulary/);
    await expect(m.forward([])).rejects.toThrow(/non-empty batch/);
    await expect(m.forward([[1, 2], [3]])).rejects.toThrow(/rows must have equal length/);
    await expect(m.forward([[1, 2]], { attentionMask: [[1, 1, 1]] })).rejects.toThrow(/attention mask has shape \[1, 3\], the input ids \[1, 2\]/);
    await expect(m.forward(Tensor.from([[1.5, 2]]))).rejects.toThrow(/must be an integer Tensor, got dtype float32/);
    await expect(m.generate([[1, 2, 0]], { attentionMask: [[1, 1, 0]] })).rejects.toThrow(/generate needs left padding/);
    // the process is fine afterwards
    expect((await m.forward([[1, 2]])).shape).toEqual([1, 2, 61]);
  });
});

describe('Phi3: adapters on the fused modules', () => {
  it('target qkv_proj and gate_up_proj (the merged weights give the same logits); q_proj explains the fusion', async () => {
    const model = Model.fromConfig(CONFIGS.phi3, { seed: 5 });
    expect(model.linearModuleNames().filter((n) => n.startsWith('model.layers.0.')).sort()).toEqual(
      ['model.layers.0.mlp.down_proj', 'model.layers.0.mlp.gate_up_proj', 'model.layers.0.self_attn.o_proj', 'model.layers.0.self_attn.qkv_proj'],
    );
    const { Adapter } = await import('../lib');
    expect(() => Adapter.attach(model, { method: 'lora', targetModules: ['q_proj'] })).toThrow(
      'target module "q_proj": Phi3ForCausalLM fuses q_proj, k_proj and v_proj into one qkv_proj; target "qkv_proj" (one adapter over the fused projection, as PEFT does)',
    );
    expect(() => Adapter.attach(model, { method: 'lora', targetModules: ['up_proj'] })).toThrow('fuses gate_proj and up_proj into one gate_up_proj; target "gate_up_proj"');
    const adapter = Adapter.attach(model, { method: 'lora', rank: 2, targetModules: ['qkv_proj', 'gate_up_proj'], init: { b: 'unit', offset: false }, seed: 1 });
    const withAdapter = logitsRows(await model.forward(IDS, { attentionMask: MASK }));
    adapter.merge();
    const merged = logitsRows(await model.forward(IDS, { attentionMask: MASK }));
    expect(maxAbsDiff(merged, withAdapter)).toBeLessThan(1e-5);
    expect(maxAbs(withAdapter)).toBeGreaterThan(0.01);
  });
});
