// The layer in float32 and bfloat16 against float64 (same seed: same initial values, same
// masks). Under a bfloat16 or float16 weight the adapter's own values and gradients are float32.
import { Dtype, MultiHeadLoraLinear, Tensor } from '../lib';
import { maxAbs, maxAbsDiff, randn } from './helpers/math';

const inF = 48, outF = 40, T = 24;
const W = randn(outF * inF, 1, 1 / Math.sqrt(inF));
const bias = randn(outF, 2, 0.1);
const x = randn(T * inF, 3);
const g = randn(T * outF, 4);

async function run(dtype: Dtype, train: boolean) {
  const t = (v: Float64Array, shape: number[]): Tensor => Tensor.from(v, shape, { dtype });
  const layer = new MultiHeadLoraLinear({ weight: t(W, [outF, inF]), bias: t(bias, [outF]) }, { method: 'rlora', rank: 4, heads: 3, seed: 5, dropout: 0.2 });
  // a trained-looking state: router and heads far from init
  const st = layer.stateDict();
  layer.loadStateDict({ ...st, 'lora_route.weight': t(randn(3 * inF, 6), [3, inF]), 'lora_B1.weight': t(randn(outF * 4, 7, 0.3), [outF, 4]) });
  layer.train(train);
  const r = await layer.vjp(t(x, [T, inF]), t(g, [T, outF]));
  expect(r.output.dtype).toBe(dtype);
  expect(r.gradInput.dtype).toBe(dtype);
  const adapterDtype = dtype === 'bfloat16' || dtype === 'float16' ? 'float32' : dtype;
  for (const [name, v] of Object.entries(layer.stateDict())) expect([name, v.dtype]).toEqual([name, adapterDtype]);
  for (const [name, v] of Object.entries(r.grads)) expect([name, v.dtype]).toEqual([name, adapterDtype]);
  const f = (v: Tensor): Float64Array => Float64Array.from(v.to('float64').data() as Float64Array);
  return { y: f(r.output), gx: f(r.gradInput), gA: f(r.grads['lora_A.weight']), gB: f(r.grads['lora_B1.weight']), gG: f(r.grads['lora_route.weight']) };
}

describe.each([
  ['float32', 1e-5],
  ['bfloat16', 4e-2],
  // (float16 matrix products are not implemented on CPU in libtorch: float16 bases run on CUDA)
] as const)('%s agrees with float64', (dtype, rel) => {
  it.each([true, false])('training mode %p (same dropout masks from the seed)', async (train) => {
    const ref = await run('float64', train);
    const got = await run(dtype, train);
    for (const k of ['y', 'gx', 'gA', 'gB', 'gG'] as const) {
      const scale = maxAbs(ref[k]);
      expect(scale).toBeGreaterThan(0);
      expect({ k, ok: maxAbsDiff(got[k], ref[k]) <= rel * scale }).toEqual({ k, ok: true });
    }
  });
});
