// A quantized frozen base (QLoRA): int8 with one absmax scale per output row, NF4 in blocks of 64
// with one absmax per block. The dequantized weights are recomputed here from the float weights
// (round to the nearest step, nearest NF4 level), the logits stay close to the float model's,
// training an adapter on the quantized base lowers the loss, and that adapter loads on the float base.
import * as path from 'path';

import { Adapter, AdamW, HFConfig, Model, trainStep } from '../lib';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { tempFolder } from './helpers/tiny-model';

const tmp = tempFolder('rlora-quant-');
// input sizes multiples of 64 (NF4 blocks); a separate lm_head stays float
const CFG: HFConfig = { architectures: ['LlamaForCausalLM'], vocab_size: 97, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
const NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0];
const IDS = [[5, 17, 3, 44, 9, 60, 2, 11], [8, 1, 90, 12, 13, 14, 15, 33]];

/** The dequantized weight a format gives, computed here from the float weight [out, in]. */
function expected(kind: 'int8' | 'nf4', w: Float32Array, out: number, inF: number): Float32Array {
  const res = new Float32Array(w.length);
  if (kind === 'int8') {
    for (let r = 0; r < out; r++) {
      const row = w.subarray(r * inF, (r + 1) * inF);
      const s = Math.fround(Math.max(...row.map(Math.abs)) / 127);
      row.forEach((x, c) => (res[r * inF + c] = Math.fround(Math.max(-127, Math.min(127, Math.round(Math.fround(x / s)))) * s)));
    }
  } else {
    for (let b = 0; b < w.length; b += 64) {
      const block = w.subarray(b, b + 64);
      const absmax = Math.max(...block.map(Math.abs));
      block.forEach((x, k) => {
        const v = Math.fround(x / absmax);
        let best = 0;
        for (let j = 1; j < 16; j++) if (Math.abs(NF4[j] - v) < Math.abs(NF4[best] - v)) best = j;
        res[b + k] = Math.fround(Math.fround(NF4[best]) * absmax);
      });
    }
  }
  return res;
}

describe.each(['int8', 'nf4'] as const)('%s', (kind) => {
  const float = Model.fromConfig(CFG, { seed: 1 });
  const quant = Model.fromConfig(CFG, { seed: 1, quantize: kind });

  it('dequantizes to the nearest step of its format (recomputed here), within the format\'s bound', () => {
    expect(quant.quantization).toBe(kind);
    // lm_head (not tied here) stays float
    expect(quant.native.parameter('lm_head.weight').data()).toEqual(float.native.parameter('lm_head.weight').data());
    for (const name of quant.linearModuleNames().filter((n) => n !== 'lm_head')) {
      const wName = `${name}.weight`;
      const w = float.native.parameter(wName).data() as Float32Array;
      const [out, inF] = float.native.parameter(wName).shape;
      const got = quant.native.parameter(wName).data() as Float32Array;
      const want = expected(kind, w, out, inF);
      // the same nearest step, up to a tie broken the other way (float rounding)
      let mismatches = 0;
      for (let i = 0; i < w.length; i++) if (Math.abs(got[i] - want[i]) > 1e-6 * Math.abs(want[i]) + 1e-9) mismatches++;
      expect(mismatches).toBeLessThanOrEqual(Math.ceil(w.length * 1e-3));
      // the bound: half a step (int8: absmax/254 per row; nf4: half the widest gap between levels,
      // (1 - 0.696) / 2 = 0.152 of the block's absmax)
      const bound = kind === 'int8' ? (r: number) => Math.max(...w.subarray(r * inF, (r + 1) * inF).map(Math.abs)) / 254 : (r: number, c: number) => Math.max(...w.subarray(r * inF + c - (c % 64), r * inF + c - (c % 64) + 64).map(Math.abs)) * 0.1519;
      for (let r = 0; r < out; r += 7) for (let c = 0; c < inF; c += 5) expect(Math.abs(got[r * inF + c] - w[r * inF + c])).toBeLessThanOrEqual(bound(r, c) * (1 + 1e-5));
    }
  });

  it('logits stay close to the float model\'s; an adapter trained on it lowers the loss and loads on the float base', async () => {
    const yf = (await float.forward(IDS)).data() as Float32Array;
    const yq = (await quant.forward(IDS)).data() as Float32Array;
    const rel = maxAbsDiff(yq, yf) / maxAbs(yf);
    // measured here: int8 0.7%, nf4 11% of the largest logit (tiny random weights)
    expect(rel).toBeLessThan(kind === 'int8' ? 0.02 : 0.2);
    expect(rel).toBeGreaterThan(0); // it is quantized

    const adapter = Adapter.attach(quant, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'], seed: 3 });
    adapter.train();
    const opt = new AdamW([...adapter.layers.values()], { lr: 5e-3 });
    const batch = { inputIds: IDS, attentionMask: IDS.map((r) => r.map(() => 1)), labels: IDS };
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) losses.push((await trainStep(quant, [batch], opt)).loss);
    // the same adapter trained on the float base, for comparison
    const ref = Model.fromConfig(CFG, { seed: 1 });
    const refAdapter = Adapter.attach(ref, { method: 'rlora', rank: 2, heads: 2, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'], seed: 3 });
    refAdapter.train();
    const refOpt = new AdamW([...refAdapter.layers.values()], { lr: 5e-3 });
    const refLosses: number[] = [];
    for (let s = 0; s < 40; s++) refLosses.push((await trainStep(ref, [batch], refOpt)).loss);
    // measured here: 4.53 -> 3.64 (int8), 4.53 -> 3.63 (nf4), float base 4.53 -> 3.64
    expect(losses[39]).toBeLessThan(0.85 * losses[0]);
    expect(Math.abs(losses[39] - refLosses[39])).toBeLessThan(0.05 * refLosses[39]);
    adapter.eval();
    const withAdapter = (await quant.forward(IDS)).data() as Float32Array;
    const dir = path.join(tmp, `adapter-${kind}`);
    adapter.save(dir);
    adapter.detach();
    // the float base: the same adapter, logits as close as the bases are
    const onFloat = await Adapter.load(float, dir);
    const yfa = (await float.forward(IDS)).data() as Float32Array;
    expect(maxAbsDiff(yfa, withAdapter) / maxAbs(yfa)).toBeLessThan(kind === 'int8' ? 0.02 : 0.15);
    onFloat.detach();
  });
});

describe('quantize: errors and files', () => {
  it('refuses what it cannot do, naming why', async () => {
    expect(() => Model.fromConfig({ ...CFG, hidden_size: 32, num_attention_heads: 2, num_key_value_heads: 1 }, { quantize: 'nf4' })).toThrow(
      /^model\.layers\.0\.(mlp|self_attn)\.\w+_proj: nf4 needs the input size to be a multiple of 64 \(blocks of 64 values\), got 32$/,
    );
    const m = Model.fromConfig(CFG, { seed: 2 });
    const a = Adapter.attach(m, { method: 'lora', rank: 2, targetModules: ['q_proj'] });
    expect(() => m.quantize('int8')).toThrow('quantize before attaching adapters (model.layers.0.self_attn.q_proj has one)');
    a.detach();
    const q = Model.fromConfig(CFG, { seed: 2, quantize: 'int8' });
    expect(() => Adapter.attach(q, { method: 'lora', rank: 2, targetModules: ['q_proj'] }).merge()).toThrow('the base model is quantized: merge into the float model');
    expect(() => m.quantize('int4' as never)).toThrow("quantize must be 'int8' or 'nf4', got 'int4'");
    m.quantize('int8');
    expect(() => m.quantize('nf4')).toThrow('the model is already quantized (int8)');
    expect(() => m.native.initRandom({ seed: 1 })).toThrow('the model is quantized (int8): its weights are fixed');
    expect(() => new AdamW(m, { lr: 1e-3 })).toThrow('a quantized model (int8) cannot be trained in full: attach an adapter');
  });

  it('fromPretrained quantizes each weight as it reads it: the same model as quantizing after', async () => {
    const dir = path.join(tmp, 'float-folder');
    Model.fromConfig(CFG, { seed: 6 }).save(dir);
    for (const kind of ['int8', 'nf4'] as const) {
      const loaded = await Model.fromPretrained(dir, { quantize: kind });
      expect(loaded.quantization).toBe(kind);
      const after = Model.fromConfig(CFG, { seed: 6, quantize: kind });
      expect(maxAbsDiff((await loaded.forward(IDS)).data() as Float32Array, (await after.forward(IDS)).data() as Float32Array)).toBe(0);
    }
    await expect(Model.fromPretrained(dir, { quantize: 'int3' as never })).rejects.toThrow("quantize must be 'int8' or 'nf4', got 'int3'");
  });

  it('save writes the dequantized weights: the folder loads as a float model with the same logits', async () => {
    const q = Model.fromConfig(CFG, { seed: 4, quantize: 'int8' });
    const dir = path.join(tmp, 'saved');
    q.save(dir);
    const back = await Model.fromPretrained(dir);
    expect(back.quantization).toBeNull();
    expect(maxAbsDiff((await back.forward(IDS)).data() as Float32Array, (await q.forward(IDS)).data() as Float32Array)).toBeLessThan(1e-5);
  });
});

