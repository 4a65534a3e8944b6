// The multi-head LoRA layer against independent computations: a per-head loop written here in
// plain JS, the same layer written in Python torch, and finite differences (docs/ARCHITECTURE.md section 2).
import { LoraOptions, Method, MultiHeadLoraLinear, Tensor } from '../lib';
import { maxAbs, maxAbsDiff, mmT, randn } from './helpers/math';
import { requireTorchPython, runPython } from './helpers/python';

type F64 = Float64Array;

interface Params {
  inF: number;
  outF: number;
  r: number;
  N: number;
  s: number;
  W0: F64;
  b: F64 | null;
  A: F64;
  B: F64[];
  G: F64 | null;
  offA: F64 | null;
  offB: F64 | null;
}

/** The layer as the paper writes it, head by head, in float64 (no dropout). */
function refForward(p: Params, x: F64, T: number): F64 {
  const y = mmT(x, p.W0, T, p.inF, p.outF);
  if (p.b) for (let t = 0; t < T; t++) for (let o = 0; o < p.outF; o++) y[t * p.outF + o] += p.b[o];
  const u = mmT(x, p.A, T, p.inF, p.r);
  let w: F64;
  if (p.G) {
    const g = mmT(x, p.G, T, p.inF, p.N);
    w = new Float64Array(T * p.N);
    for (let t = 0; t < T; t++) {
      const row = g.subarray(t * p.N, (t + 1) * p.N);
      const m = Math.max(...row);
      let z = 0;
      for (let i = 0; i < p.N; i++) z += Math.exp(row[i] - m);
      for (let i = 0; i < p.N; i++) w[t * p.N + i] = Math.exp(row[i] - m) / z;
    }
  } else {
    w = new Float64Array(T).fill(1);
  }
  for (let i = 0; i < p.N; i++) {
    const h = mmT(u, p.B[i], T, p.r, p.outF); // B_i A x
    for (let t = 0; t < T; t++) for (let o = 0; o < p.outF; o++) y[t * p.outF + o] += p.s * w[t * p.N + i] * h[t * p.outF + o];
  }
  if (p.offA && p.offB) {
    const h = mmT(mmT(x, p.offA, T, p.inF, p.r), p.offB, T, p.r, p.outF);
    for (let k = 0; k < y.length; k++) y[k] -= p.s * h[k];
  }
  return y;
}

const f64 = (t: Tensor): F64 => t.data() as F64;
const dot = (a: F64, b: F64): number => a.reduce((acc, v, i) => acc + v * b[i], 0);
const bName = (N: number, i: number): string => (N === 1 ? 'lora_B.weight' : `lora_B${i}.weight`);

interface Case {
  name: string;
  method: Method;
  dropoutOn: 'input' | 'rank';
  lead: number[];
  p: Params;
  x: F64;
  g: F64;
  layer: MultiHeadLoraLinear;
}

async function makeCase(method: Method, dropoutOn: 'input' | 'rank', shape: { inF: number; outF: number; r: number; N: number; lead: number[]; bias: boolean }, seed: number): Promise<Case> {
  const { inF, outF, r, lead } = shape;
  const N = method === 'lora' ? 1 : shape.N;
  const W0 = randn(outF * inF, seed);
  const b = shape.bias ? randn(outF, seed + 1) : null;
  const opts: LoraOptions = { method, rank: r, dropout: 0, dropoutOn, seed, ...(method === 'lora' ? {} : { heads: N }) };
  const layer = new MultiHeadLoraLinear(
    { weight: Tensor.from(W0, [outF, inF]), bias: b ? Tensor.from(b, [outF]) : null },
    opts,
  );
  // Random values everywhere (B = 0 at init would hide most of the math).
  const A = randn(r * inF, seed + 2, 0.5);
  const B = Array.from({ length: N }, (_, i) => randn(outF * r, seed + 10 + i, 0.5));
  const G = N > 1 ? randn(N * inF, seed + 3) : null;
  const hasOffset = layer.options.init.offset;
  const offA = hasOffset ? randn(r * inF, seed + 4, 0.5) : null;
  const offB = hasOffset ? randn(outF * r, seed + 5, 0.5) : null;
  const state: Record<string, Tensor> = { 'lora_A.weight': Tensor.from(A, [r, inF]) };
  B.forEach((Bi, i) => (state[bName(N, i)] = Tensor.from(Bi, [outF, r])));
  if (G) state['lora_route.weight'] = Tensor.from(G, [N, inF]);
  if (offA && offB) {
    state['lora_offset_A.weight'] = Tensor.from(offA, [r, inF]);
    state['lora_offset_B.weight'] = Tensor.from(offB, [outF, r]);
  }
  layer.loadStateDict(state);
  const T = lead.reduce((a, c) => a * c, 1);
  const p: Params = { inF, outF, r, N, s: layer.options.scaling, W0, b, A, B, G, offA, offB };
  return { name: `${method}/${dropoutOn}/in${inF}-out${outF}-r${r}-N${N}-[${lead}]`, method, dropoutOn, lead, p, x: randn(T * inF, seed + 6), g: randn(T * outF, seed + 7), layer };
}

const SHAPES = [
  { inF: 5, outF: 3, r: 2, N: 3, lead: [2, 4], bias: true },
  { inF: 7, outF: 6, r: 4, N: 2, lead: [5], bias: false },
  { inF: 16, outF: 9, r: 3, N: 5, lead: [3, 2], bias: true },
];

describe('forward and gradients against independent computations (float64, dropout 0)', () => {
  const cases: Case[] = [];
  const results: { y: F64; gx: F64; grads: Record<string, F64> }[] = [];

  beforeAll(async () => {
    let seed = 100;
    for (const method of ['lora', 'hydralora', 'rlora'] as Method[])
      for (const dropoutOn of ['input', 'rank'] as const)
        for (const shape of SHAPES) cases.push(await makeCase(method, dropoutOn, shape, (seed += 50)));
    for (const c of cases) {
      const T = c.x.length / c.p.inF;
      const r = await c.layer.vjp(Tensor.from(c.x, [...c.lead, c.p.inF], { dtype: 'float64' }), Tensor.from(c.g, [...c.lead, c.p.outF], { dtype: 'float64' }));
      expect(r.output.shape).toEqual([...c.lead, c.p.outF]);
      expect(r.gradInput.shape).toEqual([...c.lead, c.p.inF]);
      expect(T).toBe(c.lead.reduce((a, v) => a * v, 1));
      results.push({ y: f64(r.output), gx: f64(r.gradInput), grads: Object.fromEntries(Object.entries(r.grads).map(([k, v]) => [k, f64(v)])) });
    }
  });

  it('forward equals the per-head loop written in JS', () => {
    cases.forEach((c, k) => {
      const want = refForward(c.p, c.x, c.x.length / c.p.inF);
      expect({ case: c.name, err: maxAbsDiff(results[k].y, want) <= 1e-12 * Math.max(1, maxAbs(want)) }).toEqual({ case: c.name, err: true });
    });
  });

  it('every gradient equals central finite differences of the JS per-head loop', () => {
    const eps = 1e-5;
    cases.forEach((c, k) => {
      const T = c.x.length / c.p.inF;
      const loss = (p: Params, x: F64): number => dot(refForward(p, x, T), c.g);
      const fd = (vec: F64, recompute: () => number): F64 => {
        const out = new Float64Array(vec.length);
        for (let i = 0; i < vec.length; i++) {
          const keep = vec[i];
          vec[i] = keep + eps;
          const up = recompute();
          vec[i] = keep - eps;
          const down = recompute();
          vec[i] = keep;
          out[i] = (up - down) / (2 * eps);
        }
        return out;
      };
      const x = c.x.slice();
      const check = (got: F64, want: F64, what: string): void => {
        const tol = 1e-6 * Math.max(1, maxAbs(want));
        expect({ case: c.name, what, ok: maxAbsDiff(got, want) <= tol }).toEqual({ case: c.name, what, ok: true });
      };
      check(results[k].gx, fd(x, () => loss(c.p, x)), 'gradInput');
      check(results[k].grads['lora_A.weight'], fd(c.p.A, () => loss(c.p, x)), 'lora_A.weight');
      c.p.B.forEach((Bi, i) => check(results[k].grads[bName(c.p.N, i)], fd(Bi, () => loss(c.p, x)), bName(c.p.N, i)));
      if (c.p.G) check(results[k].grads['lora_route.weight'], fd(c.p.G, () => loss(c.p, x)), 'lora_route.weight');
      else expect(results[k].grads['lora_route.weight']).toBeUndefined();
    });
  });

  it('forward and every gradient equal the same layer written in Python torch (1e-10)', () => {
    requireTorchPython();
    const input = cases.map((c) => ({
      inF: c.p.inF, outF: c.p.outF, r: c.p.r, N: c.p.N, s: c.p.s,
      W0: [...c.p.W0], b: c.p.b ? [...c.p.b] : null, A: [...c.p.A], B: c.p.B.map((v) => [...v]),
      G: c.p.G ? [...c.p.G] : null, offA: c.p.offA ? [...c.p.offA] : null, offB: c.p.offB ? [...c.p.offB] : null,
      x: [...c.x], g: [...c.g],
    }));
    const script = `
import torch
torch.set_default_dtype(torch.float64)
out = []
for c in INP:
    i, o, r, N, s = c['inF'], c['outF'], c['r'], c['N'], c['s']
    T = len(c['x']) // i
    t = lambda v, *shape: torch.tensor(v, dtype=torch.float64).reshape(*shape)
    x = t(c['x'], T, i).requires_grad_(True)
    A = t(c['A'], r, i).requires_grad_(True)
    B = [t(v, o, r).requires_grad_(True) for v in c['B']]
    G = t(c['G'], N, i).requires_grad_(True) if c['G'] is not None else None
    y = x @ t(c['W0'], o, i).T
    if c['b'] is not None:
        y = y + t(c['b'], o)
    w = torch.softmax(x @ G.T, dim=-1) if G is not None else torch.ones(T, 1)
    for h in range(N):   # the published code's loop over heads
        y = y + s * w[:, h:h+1] * ((x @ A.T) @ B[h].T)
    if c['offA'] is not None:
        y = y - s * (x @ t(c['offA'], r, i).T) @ t(c['offB'], o, r).T
    (y * t(c['g'], T, o)).sum().backward()
    out.append({'y': y.detach().flatten().tolist(), 'gx': x.grad.flatten().tolist(), 'gA': A.grad.flatten().tolist(),
                'gB': [b.grad.flatten().tolist() for b in B], 'gG': G.grad.flatten().tolist() if G is not None else None})
print(json.dumps(out))
`;
    const py = runPython<{ y: number[]; gx: number[]; gA: number[]; gB: number[][]; gG: number[] | null }[]>(script, input);
    cases.forEach((c, k) => {
      const got = results[k];
      const close = (a: F64, b: number[], what: string): void => {
        const err = maxAbsDiff(a, b);
        expect({ case: c.name, what, ok: err <= 1e-10 * Math.max(1, maxAbs(b)) }).toEqual({ case: c.name, what, ok: true });
      };
      close(got.y, py[k].y, 'output');
      close(got.gx, py[k].gx, 'gradInput');
      close(got.grads['lora_A.weight'], py[k].gA, 'lora_A.weight');
      py[k].gB.forEach((gb, i) => close(got.grads[bName(c.p.N, i)], gb, bName(c.p.N, i)));
      if (py[k].gG) close(got.grads['lora_route.weight'], py[k].gG!, 'lora_route.weight');
    });
  });
});

describe('finite differences through dropout masks (float64)', () => {
  // Two layers built with one seed draw the same masks on their first forward, so the loss of a
  // fresh layer with a perturbed state is a finite difference of the same masked function.
  const inF = 4, outF = 3, r = 2, lead = [3];
  const variants: { name: string; N: number; opts: LoraOptions }[] = [
    { name: 'rank, one mask per head', N: 3, opts: { method: 'rlora', dropoutOn: 'rank', multiHeadDropout: true } },
    { name: 'rank, one shared mask', N: 3, opts: { method: 'rlora', dropoutOn: 'rank', multiHeadDropout: false } },
    { name: 'input, one mask per head', N: 3, opts: { method: 'hydralora', dropoutOn: 'input', multiHeadDropout: true } },
    { name: 'input, one shared mask', N: 3, opts: { method: 'hydralora', dropoutOn: 'input', multiHeadDropout: false } },
    { name: 'input, plain LoRA (one head, no router)', N: 1, opts: { method: 'lora', dropoutOn: 'input' } },
    { name: 'rank, plain LoRA (one head, no router)', N: 1, opts: { method: 'lora', dropoutOn: 'rank' } },
  ];
  it.each(variants)('$name', async ({ N, opts }) => {
    const W0 = Tensor.from(randn(outF * inF, 1), [outF, inF], { dtype: 'float64' });
    const full: LoraOptions = { ...opts, rank: r, heads: N, dropout: 0.5, seed: 77 };
    const state: Record<string, F64> = {
      'lora_A.weight': randn(r * inF, 2),
      ...(N > 1 ? { 'lora_route.weight': randn(N * inF, 3) } : {}),
      ...Object.fromEntries(Array.from({ length: N }, (_, i) => [bName(N, i), randn(outF * r, 10 + i)])),
    };
    const shapes: Record<string, number[]> = { 'lora_A.weight': [r, inF], 'lora_route.weight': [N, inF] };
    for (let i = 0; i < N; i++) shapes[bName(N, i)] = [outF, r];
    const make = (st: Record<string, F64>): MultiHeadLoraLinear => {
      const l = new MultiHeadLoraLinear({ weight: W0 }, full);
      const init = l.stateDict();
      const extra: Record<string, Tensor> = l.options.init.offset
        ? { 'lora_offset_A.weight': init['lora_offset_A.weight'], 'lora_offset_B.weight': init['lora_offset_B.weight'] }
        : {};
      l.loadStateDict({ ...Object.fromEntries(Object.entries(st).map(([k, v]) => [k, Tensor.from(v, shapes[k], { dtype: 'float64' })])), ...extra });
      return l;
    };
    const x = randn(3 * inF, 4);
    const g = randn(3 * outF, 5);
    const xt = (v: F64): Tensor => Tensor.from(v, [...lead, inF], { dtype: 'float64' });
    const res = await make(state).vjp(xt(x), Tensor.from(g, [...lead, outF], { dtype: 'float64' }));
    // The masks really drop something: the output differs from eval mode.
    const evalOut = f64(await make(state).eval().forward(xt(x)));
    expect(maxAbsDiff(f64(res.output), evalOut)).toBeGreaterThan(1e-3);
    const loss = async (st: Record<string, F64>, xv: F64): Promise<number> => dot(f64(await make(st).forward(xt(xv))), g);
    const eps = 1e-6;
    const fd = async (vec: F64, st: Record<string, F64>, xv: F64): Promise<F64> => {
      const out = new Float64Array(vec.length);
      for (let i = 0; i < vec.length; i++) {
        const keep = vec[i];
        vec[i] = keep + eps;
        const up = await loss(st, xv);
        vec[i] = keep - eps;
        const down = await loss(st, xv);
        vec[i] = keep;
        out[i] = (up - down) / (2 * eps);
      }
      return out;
    };
    expect(maxAbsDiff(f64(res.gradInput), await fd(x, state, x))).toBeLessThan(1e-6);
    for (const name of Object.keys(state)) {
      const err = maxAbsDiff(f64(res.grads[name]), await fd(state[name], state, x));
      expect({ name, err: err < 1e-6 }).toEqual({ name, err: true });
    }
  });
});
