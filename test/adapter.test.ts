// Adapter: attach, forward, save, load into a fresh model, detach, merge, PEFT conventions, errors.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, loadSafetensors, Model, moduleSeed, Tensor } from '../lib';
import { tinyLogits, tinyModelFolder, TINY_CONFIG } from './helpers/tiny-model';
import { maxAbsDiff, randn } from './helpers/math';

const { tmp, baseDir } = tinyModelFolder('rlora-adapter-', 11);
const CONFIG = TINY_CONFIG;

const logits = tinyLogits;

/** Gives every adapter tensor random values so the adapter changes the output visibly. */
function randomize(a: Adapter, seed: number): void {
  let s = seed;
  for (const layer of a.layers.values()) {
    const st = layer.stateDict();
    const next: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(st)) next[k] = k.includes('offset') ? v : Tensor.from(Float32Array.from(randn(v.numel, s++, 0.2)), v.shape);
    layer.loadStateDict(next);
  }
}

describe.each(['rlora', 'hydralora', 'lora'] as const)('%s adapter', (method) => {
  it('changes the output, saves, loads into a fresh model with the same logits, and detaches bit for bit', async () => {
    const model = await Model.fromPretrained(baseDir);
    const before = await logits(model);
    const adapter = Adapter.attach(model, { method, targetModules: ['gate_proj', 'up_proj', 'down_proj'], rank: 4, seed: 2 });
    expect([...adapter.layers.keys()]).toEqual([
      'model.layers.0.mlp.gate_proj', 'model.layers.0.mlp.up_proj', 'model.layers.0.mlp.down_proj',
      'model.layers.1.mlp.gate_proj', 'model.layers.1.mlp.up_proj', 'model.layers.1.mlp.down_proj',
    ]);
    randomize(adapter, 100);
    // attached adapters start in evaluation mode: the same logits twice, no dropout
    expect([...adapter.layers.values()].every((l) => !l.training)).toBe(true);
    const adapted = await logits(model);
    expect(await logits(model)).toEqual(adapted);
    expect(maxAbsDiff(adapted, before)).toBeGreaterThan(1e-2);

    const dir = path.join(tmp, `adapter-${method}`);
    adapter.save(dir);
    const fresh = await Model.fromPretrained(baseDir);
    const loaded = await Adapter.load(fresh, dir);
    loaded.eval();
    expect(await logits(fresh)).toEqual(adapted);
    expect(loaded.options).toEqual(adapter.options);

    adapter.detach();
    expect(await logits(model)).toEqual(before);
    const w = model.linearParameters('model.layers.1.mlp.up_proj').weight.data() as Float32Array;
    const orig = loadSafetensors(path.join(baseDir, 'model.safetensors'))['model.layers.1.mlp.up_proj.weight'].data() as Float32Array;
    expect(Buffer.from(w.buffer).equals(Buffer.from(orig.buffer))).toBe(true);
  });
});

describe('PEFT conventions and merge', () => {
  it('a lora adapter uses PEFT names, shapes and config keys', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { method: 'lora', targetModules: ['q_proj', 'v_proj'], rank: 8, alpha: 16, dropout: 0.05 });
    const dir = path.join(tmp, 'peft');
    a.save(dir);
    const st = loadSafetensors(path.join(dir, 'adapter_model.safetensors'));
    expect(Object.keys(st).sort()).toEqual(
      [0, 1].flatMap((l) => ['q_proj', 'v_proj'].flatMap((m) => ['lora_A', 'lora_B'].map((p) => `base_model.model.model.layers.${l}.self_attn.${m}.${p}.weight`))).sort(),
    );
    expect(st['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'].shape).toEqual([8, 32]);
    expect(st['base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight'].shape).toEqual([16, 8]); // 2 kv heads x 8
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj'], use_rslora: false, bias: 'none', base_model_name_or_path: baseDir });
    a.detach();
  });

  it('loads a LoRA adapter written with PEFT keys only (no rlora_config.json)', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { method: 'lora', targetModules: ['o_proj'], rank: 2 });
    randomize(a, 7);
    a.eval();
    const want = await logits(model);
    const dir = path.join(tmp, 'peft-only');
    a.save(dir);
    a.detach();
    fs.rmSync(path.join(dir, 'rlora_config.json'));
    const b = await Adapter.load(model, dir);
    b.eval();
    expect(await logits(model)).toEqual(want);
  });

  it('Adapter.load resolves the target modules once (rlora folder; PEFT folder with layers_to_transform and rank_pattern)', async () => {
    const model = await Model.fromPretrained(baseDir);
    const dir = path.join(tmp, 'resolved-once');
    Adapter.attach(model, { method: 'rlora', targetModules: ['q_proj', 'v_proj'], rank: 2, heads: 2 }).save(dir);
    Adapter.of(model)!.detach();
    const spy = jest.spyOn(Model.prototype, 'linearModuleNames');
    try {
      const a = await Adapter.load(model, dir);
      expect(spy).toHaveBeenCalledTimes(1); // was 3: the patterns' pass, the size check and build each resolved them
      expect(a.layers.size).toBe(4);
      a.detach();
      spy.mockClear();
      const peft = path.join(tmp, 'resolved-once-peft');
      Adapter.attach(model, { method: 'lora', targetModules: ['q_proj', 'v_proj'], rank: 2 }).save(peft);
      Adapter.of(model)!.detach();
      const config = path.join(peft, 'adapter_config.json');
      fs.rmSync(path.join(peft, 'rlora_config.json'));
      fs.writeFileSync(config, JSON.stringify({ ...JSON.parse(fs.readFileSync(config, 'utf8')), layers_to_transform: [0, 1], rank_pattern: { v_proj: 2 } }));
      spy.mockClear();
      const b = await Adapter.load(model, peft);
      expect(spy).toHaveBeenCalledTimes(1); // was 4: those three and PEFT's choice of layers
      expect(b.layers.size).toBe(4);
    } finally {
      spy.mockRestore();
    }
  });

  it('merge folds a lora adapter into the weights with the same logits (1e-5)', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { method: 'lora', targetModules: /self_attn\.(q|k|v|o)_proj$/, rank: 4 });
    randomize(a, 9);
    a.eval();
    const want = await logits(model);
    a.merge();
    expect(Adapter.of(model)).toBeUndefined();
    expect(maxAbsDiff(await logits(model), want)).toBeLessThan(1e-5);
  });

  it('reports head similarity per module and trainable counts', async () => {
    const model = await Model.fromPretrained(baseDir);
    const h = Adapter.attach(model, { method: 'hydralora', heads: 3, targetModules: ['up_proj'], rank: 4 });
    const sims = h.headSimilarity();
    expect(Object.keys(sims)).toEqual(['model.layers.0.mlp.up_proj', 'model.layers.1.mlp.up_proj']);
    expect(Array.from(sims['model.layers.0.mlp.up_proj'].data() as Float64Array)).toEqual(new Array(9).fill(1));
    // per module: A 4x32, 3 heads of 40x4, router 3x32
    expect(h.trainableParameterCount()).toBe(2 * (4 * 32 + 3 * 40 * 4 + 3 * 32));
    expect(require('util').inspect(h)).toMatch(/Adapter\(method=hydralora, rank=4, heads=3, modules=2, trainable=1,[0-9]{3}\)/);
    h.detach();
  });
});

describe('bad input', () => {
  it('names what matched nothing, what is not linear, and refuses double attach and multi-head merge', async () => {
    const model = await Model.fromPretrained(baseDir);
    expect(() => Adapter.attach(model, { targetModules: ['qkv'] })).toThrow(/target module "qkv" matches no module of this model; the linear modules are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head/);
    expect(() => Adapter.attach(model, { targetModules: ['input_layernorm'] })).toThrow(/target module "input_layernorm" is not a linear layer \(model.layers.0.input_layernorm\)/);
    expect(() => Adapter.attach(model, { targetModules: ['embed_tokens'] })).toThrow(/is not a linear layer/);
    expect(() => Adapter.attach(model, { targetModules: /nothing/ })).toThrow(/matches no module; the linear modules are/);
    expect(() => Adapter.attach(model, { targetModules: [] })).toThrow(/non-empty array/);
    const a = Adapter.attach(model, { targetModules: ['up_proj'], heads: 2 });
    expect(() => Adapter.attach(model, { targetModules: ['down_proj'] })).toThrow(/already has an adapter attached/);
    expect(() => a.merge()).toThrow(/only a single-head \(lora\) adapter can be merged: this one has 2 heads/);
    a.detach();
    expect(() => a.save(tmp)).toThrow(/detached/);
  });

  it('refuses an adapter saved for a different model shape, and leaves nothing attached', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { targetModules: ['up_proj'], rank: 4 });
    const dir = path.join(tmp, 'other-shape');
    a.save(dir);
    a.detach();
    const bigger = Model.fromConfig({ ...CONFIG, intermediate_size: 48 }, { seed: 1 });
    await expect(Adapter.load(bigger, dir)).rejects.toThrow(/saved for a different model: intermediate_size 40 there, 48 here/);
    // a PEFT-only config gives the shape error from the tensors themselves
    fs.rmSync(path.join(dir, 'rlora_config.json'));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    cfg.peft_type = 'LORA';
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    await expect(Adapter.load(bigger, dir)).rejects.toThrow(/module model.layers.0.mlp.up_proj: .*has shape \[40, 4\], expected \[48, 4\]/);
    expect(Adapter.of(bigger)).toBeUndefined();
    await expect(Adapter.load(bigger, path.join(tmp, 'nowhere'))).rejects.toThrow(/no adapter_config.json in/);
  });
});

describe('R-LoRA starts exactly at the base model', () => {
  // Every preset with an offset (the rlora preset and the demo's ablation that shares one dropout
  // mask), on every linear module, with the variants of init that keep the offset.
  const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
  it.each([
    ['rlora', {}],
    ['rlora, one shared dropout mask', { multiHeadDropout: false }],
    ['rlora, dropout on the input', { dropoutOn: 'input' }],
    ['rlora, stable base out', { init: { stableBase: 'out' } }],
    ['rlora, published per-head scale', { init: { scale: 'reference' } }],
  ] as const)('%s: step-0 logits equal the base model logits (float32, 1e-5)', async (_name, extra) => {
    const model = await Model.fromPretrained(baseDir);
    const before = await logits(model);
    const a = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 5, alpha: 32, targetModules: ALL, seed: 3, ...extra });
    // the heads differ from each other: the offset is what cancels their product
    const st = a.layers.get('model.layers.0.mlp.up_proj')!.stateDict();
    expect(maxAbsDiff(st['lora_B0.weight'].data() as Float32Array, st['lora_B1.weight'].data() as Float32Array)).toBeGreaterThan(0);
    expect(maxAbsDiff(await logits(model), before)).toBeLessThan(1e-5);
    // in training mode with dropout off, too
    a.train();
    for (const l of a.layers.values()) expect(l.options.dropout).toBe(0.1);
    a.detach();
    const b = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 5, alpha: 32, dropout: 0, targetModules: ALL, seed: 3, ...extra });
    b.train();
    expect(maxAbsDiff(await logits(model), before)).toBeLessThan(1e-5);
    b.detach();
  });

  it('without the offset the same heads move the logits (the control)', async () => {
    const model = await Model.fromPretrained(baseDir);
    const before = await logits(model);
    const a = Adapter.attach(model, { method: 'rlora', rank: 4, heads: 5, alpha: 32, targetModules: ALL, seed: 3, init: { offset: false } });
    expect(maxAbsDiff(await logits(model), before)).toBeGreaterThan(1e-3);
    a.detach();
  });
});

describe('module seeds', () => {
  // The documented derivation, computed here independently of lib/adapter/targets.ts.
  const documented = (seed: number, module: string): number =>
    Number(BigInt('0x' + createHash('sha256').update(`rlora/${seed}/${module}`).digest('hex').slice(0, 12)));

  it('each module seed is the first 48 bits of SHA-256("rlora/<seed>/<module>")', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { method: 'rlora', targetModules: ['gate_proj', 'up_proj'], seed: 7 });
    for (const [name, layer] of a.layers) {
      expect(layer.options.seed).toBe(documented(7, name));
      expect(moduleSeed(7, name)).toBe(documented(7, name));
    }
    expect(a.options.seed).toBe(7);
    a.detach();
  });

  it('seeds 0, 1 and 2 draw no module values that another seed or module drew', async () => {
    const model = await Model.fromPretrained(baseDir);
    const draws: { key: string; a: Float32Array }[] = [];
    for (const seed of [0, 1, 2]) {
      const a = Adapter.attach(model, { method: 'rlora', targetModules: ['gate_proj', 'up_proj', 'down_proj'], seed });
      for (const [name, layer] of a.layers) draws.push({ key: `${seed} ${name}`, a: layer.stateDict()['lora_A.weight'].data() as Float32Array });
      a.detach();
    }
    // A of every (seed, module) pair differs from every other (same shapes compared: gate and up)
    const firsts = new Set(draws.map((d) => d.a[0]));
    expect(firsts.size).toBe(draws.length);
    for (let i = 0; i < draws.length; i++)
      for (let j = i + 1; j < draws.length; j++)
        if (draws[i].a.length === draws[j].a.length) expect({ pair: [draws[i].key, draws[j].key], same: maxAbsDiff(draws[i].a, draws[j].a) === 0 }).toEqual({ pair: [draws[i].key, draws[j].key], same: false });
  });

  it('refuses a seed that is not a non-negative integer', async () => {
    const model = await Model.fromPretrained(baseDir);
    expect(() => Adapter.attach(model, { targetModules: ['up_proj'], seed: -1 })).toThrow(/seed must be a non-negative integer, got -1/);
    expect(() => Adapter.attach(model, { targetModules: ['up_proj'], seed: 1.5 })).toThrow(/seed must be a non-negative integer, got 1.5/);
    expect(Adapter.of(model)).toBeUndefined();
  });
});

describe('broken adapter files', () => {
  it('an adapter_config.json that is not JSON is refused, naming the file', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { targetModules: ['up_proj'] });
    const dir = path.join(tmp, 'not-json');
    a.save(dir);
    a.detach();
    const file = path.join(dir, 'adapter_config.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 40));
    await expect(Adapter.load(model, dir)).rejects.toThrow(`${file} is not valid JSON (`);
    expect(Adapter.of(model)).toBeUndefined();
  });
});
