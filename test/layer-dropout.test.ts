// Dropout masks made visible: with A = I, B_i embedding head i into its own output block, a zero
// router (w_i = 1/N), W0 = 0 and x = 1, output block i of token t is s/N * m_i[t] / (1 - p).
import { LoraOptions, MultiHeadLoraLinear, Tensor } from '../lib';

const r = 4, N = 3, T = 2000;

async function masks(opts: LoraOptions, p: number, forwards = 1, train = true): Promise<number[][][][]> {
  const layer = new MultiHeadLoraLinear(
    { weight: Tensor.from(new Float64Array(N * r * r), [N * r, r]) },
    { rank: r, heads: N, dropout: p, seed: 5, ...opts, init: { offset: false, ...opts.init } },
  );
  const eye = new Float64Array(r * r).map((_, k) => (k % (r + 1) === 0 ? 1 : 0));
  const state: Record<string, Tensor> = {
    'lora_A.weight': Tensor.from(eye, [r, r]),
    'lora_route.weight': Tensor.from(new Float64Array(N * r), [N, r]),
  };
  for (let i = 0; i < N; i++) {
    const b = new Float64Array(N * r * r);
    for (let j = 0; j < r; j++) b[(i * r + j) * r + j] = 1;
    state[`lora_B${i}.weight`] = Tensor.from(b, [N * r, r]);
  }
  layer.loadStateDict(state);
  layer.train(train);
  const s = layer.options.scaling;
  const x = Tensor.from(new Float64Array(T * r).fill(1), [T, r]);
  const out: number[][][][] = [];
  for (let f = 0; f < forwards; f++) {
    const y = (await layer.forward(x)).data() as Float64Array;
    // mask[t][i][j] in {0, 1}
    const m: number[][][] = [];
    for (let t = 0; t < T; t++) {
      m.push([]);
      for (let i = 0; i < N; i++) m[t].push(Array.from({ length: r }, (_, j) => (y[t * N * r + i * r + j] * N * (1 - p)) / s));
    }
    out.push(m);
  }
  return out;
}

const flat = (m: number[][][]): number[] => m.flat(2);

describe.each([
  ['rank', 0.3],
  ['input', 0.25],
] as const)('dropout on %s, p = %p', (dropoutOn, p) => {
  it('keeps entries at exactly 1/(1-p) and drops a fraction p of them, one mask per head (rlora)', async () => {
    const [m] = await masks({ method: 'rlora', dropoutOn }, p);
    const v = flat(m);
    for (const e of v) expect(Math.min(Math.abs(e), Math.abs(e - 1))).toBeLessThan(1e-9);
    const dropped = v.filter((e) => Math.abs(e) < 0.5).length / v.length;
    // n = 24000 entries: standard error sqrt(p(1-p)/n) < 0.003
    expect(Math.abs(dropped - p)).toBeLessThan(0.015);
    // Heads draw independent masks: two heads differ where exactly one dropped, 2p(1-p) of the time.
    let differ = 0;
    for (let t = 0; t < T; t++) for (let j = 0; j < r; j++) differ += Math.round(m[t][0][j]) !== Math.round(m[t][1][j]) ? 1 : 0;
    expect(Math.abs(differ / (T * r) - 2 * p * (1 - p))).toBeLessThan(0.03);
  });

  it('shares one mask between heads (hydralora)', async () => {
    const [m] = await masks({ method: 'hydralora', dropoutOn }, p);
    for (let t = 0; t < T; t++) for (let i = 1; i < N; i++) expect(m[t][i]).toEqual(m[t][0]);
    const dropped = flat(m).filter((e) => Math.abs(e) < 0.5).length / (T * N * r);
    expect(Math.abs(dropped - p)).toBeLessThan(0.02);
  });

  it('draws new masks each forward, the same ones for the same seed, none in eval mode', async () => {
    const [a1, a2] = await masks({ method: 'rlora', dropoutOn }, p, 2);
    const [b1] = await masks({ method: 'rlora', dropoutOn }, p, 1);
    const [c1] = await masks({ method: 'rlora', dropoutOn, seed: 6 }, p, 1);
    expect(flat(b1)).toEqual(flat(a1));
    expect(flat(a2)).not.toEqual(flat(a1));
    expect(flat(c1)).not.toEqual(flat(a1));
    const [e] = await masks({ method: 'rlora', dropoutOn }, p, 1, false);
    for (const v of flat(e)) expect(v).toBeCloseTo(1 - p, 12); // no mask, no 1/(1-p)
  });
});
