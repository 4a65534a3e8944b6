// PEFT interoperability: adapter_config.json holds PEFT's LoraConfig keys only (rlora's own settings
// go to rlora_config.json); PEFT adapters with rank_pattern / alpha_pattern / layers_to_transform
// load with per-module rank and alpha; options rlora cannot reproduce are refused by name.
import * as fs from 'fs';
import * as path from 'path';

import { Adapter, loadSafetensors, Model, saveSafetensors, Tensor } from '../lib';
import { tinyLogits, tinyModelFolder, TINY_CONFIG } from './helpers/tiny-model';
import { maxAbsDiff, mmT, randn } from './helpers/math';

const { tmp, baseDir } = tinyModelFolder('rlora-peft-', 5);
const CONFIG = TINY_CONFIG;
const baseWeights = loadSafetensors(path.join(baseDir, 'model.safetensors'));

const logits = tinyLogits;

/** The keys PEFT's LoraConfig serialises (and every PEFT since 0.9 accepts). */
const PEFT_KEYS = [
  'alpha_pattern', 'base_model_name_or_path', 'bias', 'fan_in_fan_out', 'inference_mode', 'init_lora_weights',
  'layers_pattern', 'layers_to_transform', 'lora_alpha', 'lora_dropout', 'modules_to_save', 'peft_type', 'r',
  'rank_pattern', 'revision', 'target_modules', 'task_type', 'use_dora', 'use_rslora',
];

/** adapter_config.json as a recent PEFT (0.13) writes it, with the given fields on top. */
function peftConfig(extra: Record<string, unknown>): Record<string, unknown> {
  return {
    alpha_pattern: {}, auto_mapping: null, base_model_name_or_path: baseDir, bias: 'none', eva_config: null,
    exclude_modules: null, fan_in_fan_out: false, inference_mode: true, init_lora_weights: true, layer_replication: null,
    layers_pattern: null, layers_to_transform: null, loftq_config: {}, lora_alpha: 8, lora_bias: false, lora_dropout: 0.05,
    megatron_config: null, megatron_core: 'megatron.core', modules_to_save: null, peft_type: 'LORA', r: 4, rank_pattern: {},
    revision: null, target_modules: ['q_proj', 'v_proj'], task_type: 'CAUSAL_LM', use_dora: false, use_rslora: false,
    ...extra,
  };
}

const dims = (module: string): [number, number] => {
  const [out, inn] = baseWeights[`${module}.weight`].shape;
  return [out, inn];
};

interface ModuleSpec { module: string; rank: number; alpha: number }

/**
 * Writes a PEFT adapter folder by hand: `config` as adapter_config.json and, for each module, random
 * lora_A [rank, in] and lora_B [out, rank]. Returns the float64 A and B of each module.
 */
function writePeftAdapter(dir: string, config: Record<string, unknown>, specs: ModuleSpec[], seed: number): Map<string, { a: Float64Array; b: Float64Array }> {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  const tensors: Record<string, Tensor> = {};
  const out = new Map<string, { a: Float64Array; b: Float64Array }>();
  let s = seed;
  for (const { module, rank } of specs) {
    const [o, i] = dims(module);
    const a = Float64Array.from(Float32Array.from(randn(rank * i, s++, 0.3)));
    const b = Float64Array.from(Float32Array.from(randn(o * rank, s++, 0.3)));
    tensors[`base_model.model.${module}.lora_A.weight`] = Tensor.from(Float32Array.from(a), [rank, i]);
    tensors[`base_model.model.${module}.lora_B.weight`] = Tensor.from(Float32Array.from(b), [o, rank]);
    out.set(module, { a, b });
  }
  saveSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  return out;
}

/**
 * The independent check: a plain model folder whose weights are W0 + (alpha_m / r_m) B_m A_m for
 * each module, computed here in float64; its logits are what the adapted model must give.
 */
async function mergedReference(name: string, specs: ModuleSpec[], ab: Map<string, { a: Float64Array; b: Float64Array }>): Promise<Float32Array> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(baseDir)) if (f !== 'model.safetensors') fs.copyFileSync(path.join(baseDir, f), path.join(dir, f));
  const weights: Record<string, Tensor> = { ...baseWeights };
  for (const { module, rank, alpha } of specs) {
    const [o, i] = dims(module);
    const { a, b } = ab.get(module)!;
    // B A = B [o, r] * (A^T [i, r])^T
    const at = new Float64Array(i * rank);
    for (let q = 0; q < rank; q++) for (let c = 0; c < i; c++) at[c * rank + q] = a[q * i + c];
    const ba = mmT(b, at, o, rank, i);
    const w0 = baseWeights[`${module}.weight`].data() as Float32Array;
    const w = new Float32Array(o * i);
    for (let k = 0; k < w.length; k++) w[k] = w0[k] + (alpha / rank) * ba[k];
    weights[`${module}.weight`] = Tensor.from(w, [o, i]);
  }
  saveSafetensors(path.join(dir, 'model.safetensors'), weights, { format: 'pt' });
  return logits(await Model.fromPretrained(dir));
}

const layerOpts = (a: Adapter): Record<string, { rank: number; alpha: number; scaling: number }> =>
  Object.fromEntries([...a.layers].map(([n, l]) => [n, { rank: l.options.rank, alpha: l.options.alpha, scaling: l.options.scaling }]));

describe('PEFT adapters with rank_pattern and alpha_pattern', () => {
  // r 4 / alpha 8 by default; rank_pattern and alpha_pattern keys are PEFT patterns: a short name, a
  // name with its parents, and the first matching key in file order wins
  const config = peftConfig({
    target_modules: ['q_proj', 'v_proj', 'up_proj', 'down_proj'],
    rank_pattern: { v_proj: 2, 'model.layers.1.mlp.up_proj': 6, 'layers.0.mlp.down_proj': 3 },
    alpha_pattern: { 'layers.1.self_attn.q_proj': 16, q_proj: 2 },
  });
  const specs: ModuleSpec[] = [];
  for (const l of [0, 1]) {
    specs.push({ module: `model.layers.${l}.self_attn.q_proj`, rank: 4, alpha: l === 1 ? 16 : 2 });
    specs.push({ module: `model.layers.${l}.self_attn.v_proj`, rank: 2, alpha: 8 });
    specs.push({ module: `model.layers.${l}.mlp.up_proj`, rank: l === 1 ? 6 : 4, alpha: 8 });
    specs.push({ module: `model.layers.${l}.mlp.down_proj`, rank: l === 0 ? 3 : 4, alpha: 8 });
  }
  const dir = path.join(tmp, 'peft-patterns');
  const ab = writePeftAdapter(dir, config, specs, 40);

  it('loads per-module rank and alpha and gives the logits of W0 + (alpha_m/r_m) B_m A_m, computed independently (1e-4)', async () => {
    const want = await mergedReference('merged-patterns', specs, ab);
    const model = await Model.fromPretrained(baseDir);
    const before = await logits(model);
    const a = await Adapter.load(model, dir);
    expect(layerOpts(a)).toEqual(Object.fromEntries(specs.map((s) => [s.module, { rank: s.rank, alpha: s.alpha, scaling: s.alpha / s.rank }])));
    // the adapter's own options are the shared defaults of the file
    expect(a.options).toMatchObject({ method: 'lora', heads: 1, rank: 4, alpha: 8, scaling: 2, dropout: 0.05 });
    const got = await logits(model);
    expect(maxAbsDiff(got, before)).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4);
    a.detach();
  });

  it('saving it writes the per-module ranks as PEFT patterns; reloading (with or without rlora_config.json) gives identical logits and options', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = await Adapter.load(model, dir);
    const want = await logits(model);
    const saved = path.join(tmp, 'patterns-resaved');
    a.save(saved);
    a.detach();
    const cfg = JSON.parse(fs.readFileSync(path.join(saved, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(cfg).sort()).toEqual(PEFT_KEYS);
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['down_proj', 'q_proj', 'up_proj', 'v_proj'] });
    expect(cfg.rank_pattern).toEqual({
      'model.layers.0.self_attn.v_proj': 2, 'model.layers.0.mlp.down_proj': 3, 'model.layers.1.self_attn.v_proj': 2, 'model.layers.1.mlp.up_proj': 6,
    });
    expect(cfg.alpha_pattern).toEqual({ 'model.layers.0.self_attn.q_proj': 2, 'model.layers.1.self_attn.q_proj': 16 });
    for (const withRlora of [true, false]) {
      if (!withRlora) fs.rmSync(path.join(saved, 'rlora_config.json'));
      const fresh = await Model.fromPretrained(baseDir);
      const b = await Adapter.load(fresh, saved);
      expect(await logits(fresh)).toEqual(want);
      expect(layerOpts(b)).toEqual(Object.fromEntries(specs.map((s) => [s.module, { rank: s.rank, alpha: s.alpha, scaling: s.alpha / s.rank }])));
      b.detach();
    }
  });
});

describe('PEFT adapters with layers_to_transform', () => {
  it.each([
    ['a list, layers_pattern "layers"', { layers_to_transform: [1], layers_pattern: 'layers' }, 1],
    ['a list, layers_pattern as a list', { layers_to_transform: [1], layers_pattern: ['layers'] }, 1],
    ['an index, no layers_pattern (PEFT default null)', { layers_to_transform: 0, layers_pattern: null }, 0],
  ] as const)('%s: wraps only those layers, others stay unwrapped, logits as computed independently', async (_name, extra, layer) => {
    const other = 1 - layer;
    const config = peftConfig({ target_modules: ['gate_proj', 'down_proj', 'o_proj'], r: 2, lora_alpha: 6, ...extra });
    const specs = ['self_attn.o_proj', 'mlp.gate_proj', 'mlp.down_proj'].map((m) => ({ module: `model.layers.${layer}.${m}`, rank: 2, alpha: 6 }));
    const dir = path.join(tmp, `peft-layers-${layer}-${JSON.stringify(extra.layers_pattern)}`);
    const ab = writePeftAdapter(dir, config, specs, 70);
    const want = await mergedReference(`merged-layers-${layer}`, specs, ab);
    const model = await Model.fromPretrained(baseDir);
    const a = await Adapter.load(model, dir);
    expect([...a.layers.keys()]).toEqual(specs.map((s) => s.module));
    for (const m of ['self_attn.o_proj', 'mlp.gate_proj', 'mlp.down_proj']) expect(a.layers.has(`model.layers.${other}.${m}`)).toBe(false);
    expect(maxAbsDiff(await logits(model), want)).toBeLessThan(1e-4);
    // saved by rlora, target_modules names exactly the wrapped modules (PEFT's exact-name match)
    const saved = path.join(dir, 'resaved');
    a.save(saved);
    a.detach();
    const cfg = JSON.parse(fs.readFileSync(path.join(saved, 'adapter_config.json'), 'utf8'));
    expect(cfg.target_modules).toEqual(specs.map((s) => s.module));
    fs.rmSync(path.join(saved, 'rlora_config.json'));
    const b = await Adapter.load(model, saved);
    expect([...b.layers.keys()]).toEqual(specs.map((s) => s.module));
    b.detach();
  });

  it('a tensor of a layer outside layers_to_transform is refused as belonging to no adapted module', async () => {
    const config = peftConfig({ target_modules: ['o_proj'], layers_to_transform: [0] });
    const dir = path.join(tmp, 'peft-layers-extra');
    writePeftAdapter(dir, config, [0, 1].map((l) => ({ module: `model.layers.${l}.self_attn.o_proj`, rank: 4, alpha: 8 })), 90);
    const model = await Model.fromPretrained(baseDir);
    await expect(Adapter.load(model, dir)).rejects.toThrow(/holds base_model\.model\.model\.layers\.1\.self_attn\.o_proj\.lora_A\.weight, which belongs to no adapted module/);
    expect(Adapter.of(model)).toBeUndefined();
  });
});

describe('adapter_config.json and rlora_config.json as rlora writes them', () => {
  /** Gives every adapter tensor random values so the adapter changes the output visibly. */
  function randomize(a: Adapter, seed: number): void {
    let s = seed;
    for (const layer of a.layers.values()) {
      const next: Record<string, Tensor> = {};
      for (const [k, v] of Object.entries(layer.stateDict())) next[k] = k.includes('offset') ? v : Tensor.from(Float32Array.from(randn(v.numel, s++, 0.2)), v.shape);
      layer.loadStateDict(next);
    }
  }

  it.each([
    ['lora', { method: 'lora', rank: 4, alpha: 12, dropout: 0.05 }, 'LORA', true],
    ['hydralora', { method: 'hydralora', heads: 3, rank: 4 }, 'RLORA', false],
    ['rlora', { method: 'rlora', heads: 4, rank: 2, alpha: 32, seed: 9 }, 'RLORA', false],
  ] as const)('%s: adapter_config.json has PEFT keys only, rlora_config.json the rest; save -> load gives identical logits and options', async (method, opts, peftType, loadable) => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { ...opts, targetModules: ['q_proj', 'up_proj'] });
    randomize(a, 11);
    const want = await logits(model);
    const dir = path.join(tmp, `written-${method}`);
    a.save(dir);
    expect(fs.readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'rlora_config.json']);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    expect(Object.keys(cfg).filter((k) => !PEFT_KEYS.includes(k))).toEqual([]);
    expect(Object.keys(cfg).sort()).toEqual(PEFT_KEYS);
    expect(cfg).toMatchObject({
      peft_type: peftType, task_type: 'CAUSAL_LM', r: a.options.rank, lora_alpha: a.options.alpha, lora_dropout: a.options.dropout,
      target_modules: ['q_proj', 'up_proj'], use_rslora: a.options.rankStabilization, bias: 'none', use_dora: false, fan_in_fan_out: false,
      modules_to_save: null, rank_pattern: {}, alpha_pattern: {}, layers_to_transform: null, layers_pattern: null,
    });
    const rc = JSON.parse(fs.readFileSync(path.join(dir, 'rlora_config.json'), 'utf8'));
    expect(rc).toMatchObject({
      method, heads: a.options.heads, dropout_on: a.options.dropoutOn, multi_head_dropout: a.options.multiHeadDropout,
      init: a.options.init, seed: a.options.seed, modules: [...a.layers.keys()], peft_loadable: loadable,
      base_model: { architecture: 'LlamaForCausalLM', hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2, vocab_size: 53 },
    });
    expect(typeof rc.version).toBe('string');
    a.detach();
    const fresh = await Model.fromPretrained(baseDir);
    const b = await Adapter.load(fresh, dir);
    expect(await logits(fresh)).toEqual(want);
    expect(b.options).toEqual(a.options);
    expect([...b.layers.keys()]).toEqual([...a.layers.keys()]);
    b.detach();
  });

  it('still loads an adapter of the previous format (an `rlora` section inside adapter_config.json, no rlora_config.json)', async () => {
    const model = await Model.fromPretrained(baseDir);
    const a = Adapter.attach(model, { method: 'rlora', heads: 3, rank: 4, targetModules: ['gate_proj', 'v_proj'], seed: 4 });
    randomize(a, 21);
    const want = await logits(model);
    const dir = path.join(tmp, 'old-format');
    a.save(dir);
    a.detach();
    // rewrite the folder as the previous rlora version wrote it
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    const rc = JSON.parse(fs.readFileSync(path.join(dir, 'rlora_config.json'), 'utf8'));
    delete rc.peft_loadable;
    const old = {
      peft_type: 'RLORA', task_type: 'CAUSAL_LM', base_model_name_or_path: cfg.base_model_name_or_path, r: cfg.r, lora_alpha: cfg.lora_alpha,
      lora_dropout: cfg.lora_dropout, target_modules: cfg.target_modules, use_rslora: cfg.use_rslora, bias: 'none', fan_in_fan_out: false,
      init_lora_weights: true, inference_mode: false, modules_to_save: null, rlora: rc,
    };
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(old, null, 2));
    fs.rmSync(path.join(dir, 'rlora_config.json'));
    const fresh = await Model.fromPretrained(baseDir);
    const b = await Adapter.load(fresh, dir);
    expect(await logits(fresh)).toEqual(want);
    expect(b.options).toEqual(a.options);
    // and the shape check of the old section still applies
    b.detach();
    const bigger = Model.fromConfig({ ...CONFIG, intermediate_size: 48 }, { seed: 1 });
    await expect(Adapter.load(bigger, dir)).rejects.toThrow(/saved for a different model: intermediate_size 40 there, 48 here/);
  });
});

describe('PEFT options rlora cannot reproduce are refused, naming the option and the file', () => {
  it.each([
    ['use_dora', { use_dora: true }, 'use_dora is true (DoRA'],
    ['modules_to_save', { modules_to_save: ['lm_head'] }, 'modules_to_save is ["lm_head"]'],
    ['bias "all"', { bias: 'all' }, 'bias is "all"'],
    ['bias "lora_only"', { bias: 'lora_only' }, 'bias is "lora_only"'],
    ['fan_in_fan_out', { fan_in_fan_out: true }, 'fan_in_fan_out is true'],
    ['task_type', { task_type: 'SEQ_CLS' }, 'task_type is "SEQ_CLS"'],
  ] as const)('%s', async (_name, extra, message) => {
    const dir = path.join(tmp, `refused-${_name.replace(/\W+/g, '-')}`);
    const specs = [0, 1].flatMap((l) => ['q_proj', 'v_proj'].map((m) => ({ module: `model.layers.${l}.self_attn.${m}`, rank: 4, alpha: 8 })));
    writePeftAdapter(dir, peftConfig(extra), specs, 3);
    const model = await Model.fromPretrained(baseDir);
    const file = path.join(dir, 'adapter_config.json');
    await expect(Adapter.load(model, dir)).rejects.toThrow(`${file}: ${message}`);
    await expect(Adapter.load(model, dir)).rejects.toThrow(/which rlora does not support/);
    expect(Adapter.of(model)).toBeUndefined();
  });

  it('accepts what PEFT writes by default: task_type null or absent, modules_to_save empty, bias "none"', async () => {
    const specs = [0, 1].flatMap((l) => ['q_proj', 'v_proj'].map((m) => ({ module: `model.layers.${l}.self_attn.${m}`, rank: 4, alpha: 8 })));
    for (const [i, extra] of [{ task_type: null }, { task_type: undefined, modules_to_save: [] }].entries()) {
      const dir = path.join(tmp, `accepted-${i}`);
      writePeftAdapter(dir, peftConfig(extra), specs, 3);
      const model = await Model.fromPretrained(baseDir);
      const a = await Adapter.load(model, dir);
      expect(a.layers.size).toBe(4);
      a.detach();
    }
  });
});
