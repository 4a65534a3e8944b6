// A frozen base in bfloat16 with the adapter and its optimizer in float32 (as PEFT casts adapters
// by default): the adapter's values and gradients stay float32, the logits are the float32 model's
// within bfloat16's precision, training lowers the loss, and the base takes half the memory.
import { Adapter, AdamW, AdapterOptions, Model, trainStep } from '../lib';
import { maxAbs, maxAbsDiff } from './helpers/math';
import { IDS, MASK, TINY_CONFIG } from './helpers/tiny-model';

const options: AdapterOptions = { method: 'rlora', rank: 2, heads: 3, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'], init: { offset: false }, seed: 2 };

describe('bfloat16 base, float32 adapter', () => {
  it('adapter values and gradients in float32; logits within bfloat16 precision of the float32 model', async () => {
    const f32 = Model.fromConfig(TINY_CONFIG, { seed: 1 });
    const bf16 = Model.fromConfig(TINY_CONFIG, { seed: 1, dtype: 'bfloat16' });
    const a32 = Adapter.attach(f32, options), a16 = Adapter.attach(bf16, options);
    for (const [name, t] of Object.entries(a16.stateDict())) expect([name, t.dtype]).toEqual([name, 'float32']);
    // the same adapter values in both (drawn from the seed in float64, then converted)
    const s32 = a32.stateDict(), s16 = a16.stateDict();
    for (const k of Object.keys(s32)) expect(maxAbsDiff(s16[k].data() as Float32Array, s32[k].data() as Float32Array)).toBe(0);
    const y32 = (await f32.forward(IDS, { attentionMask: MASK })).to('float32').data();
    const y16 = (await bf16.forward(IDS, { attentionMask: MASK })).to('float32').data();
    expect(maxAbsDiff(y16, y32)).toBeLessThan(0.05 * maxAbs(y32));
    // the base stays bfloat16 (2 bytes a value)
    for (const { name } of bf16.native.parameterSpecs()) expect([name, bf16.native.parameter(name).dtype]).toEqual([name, 'bfloat16']);
  });

  it('training follows the float32 model\'s losses closely and lowers the loss; the optimizer state is float32', async () => {
    const train = async (dtype: 'float32' | 'bfloat16') => {
      const model = Model.fromConfig(TINY_CONFIG, { seed: 3, dtype });
      const adapter = Adapter.attach(model, { ...options, dropout: 0.1 });
      adapter.train();
      const opt = new AdamW([...adapter.layers.values()], { lr: 3e-2 });
      const batch = { inputIds: IDS, attentionMask: MASK, labels: IDS.map((r, i) => r.map((id, t) => (MASK[i][t] ? id : -100))) };
      const losses: number[] = [];
      for (let s = 0; s < 40; s++) losses.push((await trainStep(model, [batch], opt)).loss);
      return { losses, opt };
    };
    const [a, b] = [await train('float32'), await train('bfloat16')];
    // Dropout makes single steps noisy, and their noise depends on the BLAS kernels: the last step
    // alone was 3.488 on OpenBLAS's Haswell kernels and 3.557 on its Cooperlake ones (from 3.933).
    // The mean of the last 10 steps was 0.91 to 0.92 of the first loss on both.
    const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean(b.losses.slice(30))).toBeLessThan(0.95 * b.losses[0]);
    const worst = Math.max(...b.losses.map((l, i) => Math.abs(l - a.losses[i]) / a.losses[i]));
    // measured here: at most 5.4% apart over the 40 steps (bfloat16 keeps 8 bits of mantissa)
    expect(worst).toBeLessThan(0.1);
    expect(b.opt.native.state().params.every((p) => p.expAvg.dtype === 'float32')).toBe(true);
  });
});
