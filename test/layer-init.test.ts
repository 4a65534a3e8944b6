// Initialisation: measured statistics of each scheme, the stable and reference scales, the R-LoRA
// offset, presets, and head similarity (docs/ARCHITECTURE.md section 2).
import { InitOptions, Method, MultiHeadLoraLinear, Tensor } from '../lib';
import { maxAbs, maxAbsDiff, mean, mmT, randn, std } from './helpers/math';

const inF = 512, outF = 384, r = 16, N = 4;
const W = Tensor.from(randn(outF * inF, 1, 0.05), [outF, inF], { dtype: 'float64' });

function state(init: InitOptions, extra: object = {}): Record<string, Float64Array> {
  const l = new MultiHeadLoraLinear({ weight: W }, { method: 'rlora', rank: r, heads: N, seed: 11, init, ...extra });
  return Object.fromEntries(Object.entries(l.stateDict()).map(([k, v]) => [k, v.data() as Float64Array]));
}

const heads = (st: Record<string, Float64Array>): Float64Array[] => Array.from({ length: N }, (_, i) => st[`lora_B${i}.weight`]);

function expectStats(v: Float64Array, wantStd: number, what: string): void {
  // mean within 5 standard errors of 0, std within 4%
  expect({ what, meanOk: Math.abs(mean(v)) < (5 * wantStd) / Math.sqrt(v.length) }).toEqual({ what, meanOk: true });
  expect({ what, ratio: Math.round((std(v) / wantStd) * 25) / 25 }).toEqual({ what, ratio: 1 });
}

/** rows of m [rows, cols] are orthonormal: m m^T = I */
function expectOrthonormalRows(m: Float64Array, rows: number, cols: number): void {
  const g = mmT(m, m, rows, cols, rows);
  const eye = g.map((_, k) => (Math.floor(k / rows) === k % rows ? 1 : 0));
  expect(maxAbsDiff(g, eye)).toBeLessThan(1e-10);
}
function transpose(m: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(m.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = m[i * cols + j];
  return t;
}

describe('initialisation schemes (measured)', () => {
  const none = { scale: 'none', offset: false } as const;

  it('kaiming: uniform with bound 1/sqrt(fan_in)', () => {
    const st = state({ a: 'kaiming', b: 'kaiming', router: 'kaiming', ...none });
    expectStats(st['lora_A.weight'], 1 / Math.sqrt(3 * inF), 'A');
    expect(maxAbs(st['lora_A.weight'])).toBeLessThanOrEqual(1 / Math.sqrt(inF));
    for (const b of heads(st)) {
      expectStats(b, 1 / Math.sqrt(3 * r), 'B');
      expect(maxAbs(b)).toBeLessThanOrEqual(1 / Math.sqrt(r));
    }
    expectStats(st['lora_route.weight'], 1 / Math.sqrt(3 * inF), 'router');
  });

  it('gaussian: N(0, 1/r^2)', () => {
    const st = state({ a: 'gaussian', b: 'gaussian', router: 'gaussian', ...none });
    expectStats(st['lora_A.weight'], 1 / r, 'A');
    for (const b of heads(st)) expectStats(b, 1 / r, 'B');
  });

  it('unit: A ~ N(0, 1/in), B_i ~ N(0, 1/out), router ~ N(0, 1/in)', () => {
    const st = state({ a: 'unit', b: 'unit', router: 'unit', ...none });
    expectStats(st['lora_A.weight'], 1 / Math.sqrt(inF), 'A');
    for (const b of heads(st)) expectStats(b, 1 / Math.sqrt(outF), 'B');
    expectStats(st['lora_route.weight'], 1 / Math.sqrt(inF), 'router');
  });

  it('zeros', () => {
    const st = state({ a: 'zeros', b: 'zeros', router: 'zeros', ...none });
    for (const v of Object.values(st)) expect(maxAbs(v)).toBe(0);
  });

  it('orthogonal: orthonormal rows of A and the router, orthonormal columns of each B_i', () => {
    const st = state({ a: 'orthogonal', b: 'orthogonal', router: 'orthogonal', ...none });
    expectOrthonormalRows(st['lora_A.weight'], r, inF);
    expectOrthonormalRows(st['lora_route.weight'], N, inF);
    for (const b of heads(st)) expectOrthonormalRows(transpose(b, outF, r), r, outF);
  });

  it('heads start different from each other, and a seed gives the same values every time', () => {
    const st = state({ a: 'unit', b: 'unit', ...none });
    expect(maxAbsDiff(heads(st)[0], heads(st)[1])).toBeGreaterThan(0.01);
    expect(state({ a: 'unit', b: 'unit', ...none })).toEqual(st);
    expect(state({ a: 'unit', b: 'unit', ...none }, { seed: 12 })['lora_A.weight']).not.toEqual(st['lora_A.weight']);
  });
});

describe('init scales', () => {
  const unscaled = state({ a: 'unit', b: 'unit', scale: 'none', offset: false });
  const ratio = (a: Float64Array, b: Float64Array): number => a[0] / b[0];
  const expectScaled = (scaled: Float64Array, base: Float64Array, f: number): void => {
    expect(maxAbsDiff(scaled, base.map((v) => v * f))).toBeLessThan(1e-14);
    expect(ratio(scaled, base)).toBeCloseTo(f, 12);
  };

  it('stable: A and each B_i multiplied once by r^(1/4) / sqrt(gamma)', () => {
    const st = state({ a: 'unit', b: 'unit', scale: 'stable', offset: false });
    const f = r ** 0.25 / 8;
    expectScaled(st['lora_A.weight'], unscaled['lora_A.weight'], f);
    heads(st).forEach((b, i) => expectScaled(b, heads(unscaled)[i], f));
  });

  it('stable with stableBase out and gamma 16: out^(1/4) / 4', () => {
    const st = state({ a: 'unit', b: 'unit', scale: 'stable', stableBase: 'out', gamma: 16, offset: false });
    expectScaled(st['lora_A.weight'], unscaled['lora_A.weight'], outF ** 0.25 / 4);
  });

  it('reference (published code): A multiplied N times, B_i (0-based) N - i times', () => {
    const st = state({ a: 'unit', b: 'unit', scale: 'reference', offset: false });
    const f = r ** 0.25 / 8;
    expectScaled(st['lora_A.weight'], unscaled['lora_A.weight'], f ** N);
    heads(st).forEach((b, i) => expectScaled(b, heads(unscaled)[i], f ** (N - i)));
  });

  it('the rlora preset: unit draws times the stable scale, measured', () => {
    const st = state({});
    const f = r ** 0.25 / 8;
    expectStats(st['lora_A.weight'], f / Math.sqrt(inF), 'A');
    for (const b of heads(st)) expectStats(b, f / Math.sqrt(outF), 'B');
  });
});

describe('the R-LoRA offset', () => {
  it('stores A(0) and mean_i B_i(0); baseWeight is W0 - s offB offA', () => {
    const l = new MultiHeadLoraLinear({ weight: W }, { method: 'rlora', rank: r, heads: N, seed: 3 });
    const st = Object.fromEntries(Object.entries(l.stateDict()).map(([k, v]) => [k, v.data() as Float64Array]));
    expect(st['lora_offset_A.weight']).toEqual(st['lora_A.weight']);
    const meanB = heads(st)[0].map((_, k) => heads(st).reduce((acc, b) => acc + b[k], 0) / N);
    expect(maxAbsDiff(st['lora_offset_B.weight'], meanB)).toBeLessThan(1e-15);
    const s = l.options.scaling;
    expect(s).toBeCloseTo(16 / Math.sqrt(r), 14);
    // offB offA as [out, in]: (offB [out, r]) x (offA^T [in, r])^T
    const prod = mmT(st['lora_offset_B.weight'], transpose(st['lora_offset_A.weight'], r, inF), outF, r, inF);
    const want = (W.data() as Float64Array).map((w, k) => w - s * prod[k]);
    expect(maxAbsDiff(l.baseWeight().data() as Float64Array, want)).toBeLessThan(1e-14);
  });

  it('the preset starts its router at zero, and the layer at init gives the base layer output (float32, 1e-6)', async () => {
    const w32 = W.to('float32');
    const bias = Tensor.from(randn(outF, 4, 0.1), [outF], { dtype: 'float32' });
    const x = Tensor.from(randn(8 * inF, 5), [8, inF], { dtype: 'float32' });
    const rl = new MultiHeadLoraLinear({ weight: w32, bias }, { method: 'rlora', rank: r, heads: N, seed: 9 });
    expect(rl.options.init.router).toBe('zeros');
    expect(maxAbs(rl.stateDict()['lora_route.weight'].data() as Float32Array)).toBe(0);
    const base = new MultiHeadLoraLinear({ weight: w32, bias }, { method: 'lora', rank: r }); // B = 0: the base layer
    const got = (await rl.eval().forward(x)).data() as Float32Array;
    const want = (await base.eval().forward(x)).data() as Float32Array;
    expect(maxAbs(want)).toBeGreaterThan(0.1);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-6);
    // without the offset it would not
    const noOff = new MultiHeadLoraLinear({ weight: w32, bias }, { method: 'rlora', rank: r, heads: N, seed: 9, init: { offset: false } });
    expect(maxAbsDiff((await noOff.eval().forward(x)).data() as Float32Array, want)).toBeGreaterThan(1e-3);
  });
});

describe('presets and overrides', () => {
  it.each([
    ['lora', 1, 'zeros', 'kaiming', 'kaiming', 'input', false, false, 'none', false],
    ['hydralora', 5, 'zeros', 'kaiming', 'kaiming', 'input', false, false, 'none', false],
    ['rlora', 5, 'unit', 'unit', 'zeros', 'rank', true, true, 'stable', true],
  ] as const)('%s', (method, heads, b, a, router, dropoutOn, multi, rs, scale, offset) => {
    const o = new MultiHeadLoraLinear({ weight: W }, { method: method as Method }).options;
    expect(o).toMatchObject({ method, heads, dropoutOn, multiHeadDropout: multi, rankStabilization: rs, rank: 8, alpha: 16, dropout: 0.1 });
    expect(o.init).toMatchObject({ a, b, router, scale, offset, gamma: 64, stableBase: 'rank' });
    expect(o.scaling).toBeCloseTo(rs ? 16 / Math.sqrt(8) : 2, 14);
  });

  it('an explicit field overrides its preset and leaves the rest', () => {
    const o = new MultiHeadLoraLinear({ weight: W }, { method: 'rlora', heads: 3, init: { b: 'zeros' }, rankStabilization: false }).options;
    expect(o).toMatchObject({ heads: 3, rankStabilization: false, dropoutOn: 'rank' });
    expect(o.init).toMatchObject({ a: 'unit', b: 'zeros', scale: 'stable', offset: true });
  });

  it('counts trainable values: A, every B_i, the router', () => {
    expect(new MultiHeadLoraLinear({ weight: W }, { method: 'lora', rank: r }).parameterCount()).toBe(r * inF + outF * r);
    expect(new MultiHeadLoraLinear({ weight: W }, { rank: r, heads: N }).parameterCount()).toBe(r * inF + N * outF * r + N * inF);
  });
});

describe('headSimilarity', () => {
  it('is all ones for HydraLoRA at init (identical zero heads)', () => {
    const sim = new MultiHeadLoraLinear({ weight: W }, { method: 'hydralora', heads: N }).headSimilarity();
    expect(sim.shape).toEqual([N, N]);
    expect(Array.from(sim.data() as Float64Array)).toEqual(new Array(N * N).fill(1));
  });

  it('is near zero off the diagonal for R-LoRA at init, and equals the cosines of the flattened B_i', () => {
    const l = new MultiHeadLoraLinear({ weight: W }, { method: 'rlora', heads: N, rank: r, seed: 2 });
    const sim = l.headSimilarity().data() as Float64Array;
    const hs = heads(Object.fromEntries(Object.entries(l.stateDict()).map(([k, v]) => [k, v.data() as Float64Array])));
    const cos = (a: Float64Array, b: Float64Array): number => {
      let ab = 0, aa = 0, bb = 0;
      for (let k = 0; k < a.length; k++) (ab += a[k] * b[k]), (aa += a[k] * a[k]), (bb += b[k] * b[k]);
      return ab / Math.sqrt(aa * bb);
    };
    for (let i = 0; i < N; i++)
      for (let j = 0; j < N; j++) {
        expect(sim[i * N + j]).toBeCloseTo(cos(hs[i], hs[j]), 12);
        // random directions in out * r = 6144 dimensions: |cos| ~ 0.013
        if (i !== j) expect(Math.abs(sim[i * N + j])).toBeLessThan(0.08);
      }
  });
});
