// Block-wise attention (native/model/attention.cpp: an online softmax over key blocks, a backward
// that recomputes each block) against the eager softmax(QK^T)V of the same masks and against Python
// torch's autograd, forward and gradients: causal, with left padding (a padding query attends to
// itself), a cache offset, a sliding window, soft-capping, uneven blocks; then a model's logits on
// a sequence long enough for the block path against the Python reference decoder.
import { native } from '../lib/native';
import { Tensor } from '../lib';
import { requireTorchPython, runPython } from './helpers/python';

jest.setTimeout(120_000);

interface Case {
  B: number; H: number; S: number; T: number; D: number;
  past: number; window: number; softcap: number; block: number; pad: number[];
  /** Packing: the examples' offsets in the one row (B 1, no padding). */
  cu?: number[];
}

function rand(n: number, seed: number): Float64Array {
  let x = seed >>> 0;
  return Float64Array.from({ length: n }, () => {
    x = (x * 1664525 + 1013904223) >>> 0;
    return x / 2 ** 32 - 0.5;
  });
}

async function run(c: Case, eager: boolean) {
  const q = Tensor.from(rand(c.B * c.H * c.S * c.D, 1), [c.B, c.H, c.S, c.D]);
  const k = Tensor.from(rand(c.B * c.H * c.T * c.D, 2), [c.B, c.H, c.T, c.D]);
  const v = Tensor.from(rand(c.B * c.H * c.T * c.D, 3), [c.B, c.H, c.T, c.D]);
  const dOut = Tensor.from(rand(c.B * c.H * c.S * c.D, 4), [c.B, c.H, c.S, c.D]);
  // left padding: row b's first pad[b] keys are padding
  const mask = Tensor.from(BigInt64Array.from({ length: c.B * c.T }, (_, i) => (i % c.T < c.pad[Math.floor(i / c.T)] ? 0n : 1n)), [c.B, c.T]);
  const r = await native.attentionVjp(q.native, k.native, v.native, dOut.native, {
    past: c.past, window: c.window, keyMask: c.cu ? null : mask.native, scale: 1 / Math.sqrt(c.D), softcap: c.softcap, block: c.block, eager,
    cuSeqlens: c.cu ? Tensor.from(Int32Array.from(c.cu), [c.cu.length]).native : null,
  });
  const arr = (t: unknown) => Array.from(new Tensor(t as never).data() as Float64Array);
  return { inputs: { q: Array.from(q.data() as Float64Array), k: Array.from(k.data() as Float64Array), v: Array.from(v.data() as Float64Array), dOut: Array.from(dOut.data() as Float64Array) }, out: arr(r.out), dq: arr(r.dq), dk: arr(r.dk), dv: arr(r.dv) };
}

/** The same attention in Python torch, float64, with autograd. */
function python(c: Case, inputs: { q: number[]; k: number[]; v: number[]; dOut: number[] }) {
  return runPython<{ out: number[]; dq: number[]; dk: number[]; dv: number[] }>(
    `
import torch, math
c = INP['case']; B, H, S, T, D = c['B'], c['H'], c['S'], c['T'], c['D']
q = torch.tensor(INP['q'], dtype=torch.float64).reshape(B, H, S, D).requires_grad_()
k = torch.tensor(INP['k'], dtype=torch.float64).reshape(B, H, T, D).requires_grad_()
v = torch.tensor(INP['v'], dtype=torch.float64).reshape(B, H, T, D).requires_grad_()
dout = torch.tensor(INP['dOut'], dtype=torch.float64).reshape(B, H, S, D)
qi = torch.arange(S).unsqueeze(1) + c['past']; kj = torch.arange(T).unsqueeze(0)
ok = kj <= qi
if c['window'] > 0: ok = ok & (kj > qi - c['window'])
real = torch.tensor([[t >= c['pad'][b] for t in range(T)] for b in range(B)])
allowed = ok.unsqueeze(0) & real.unsqueeze(1)                      # [B, S, T]
if c.get('cu'):                                                    # packed: a query sees its own example only
    ex = torch.zeros(T, dtype=torch.long)
    for e in range(len(c['cu']) - 1): ex[c['cu'][e]:c['cu'][e + 1]] = e
    allowed = allowed & (ex[c['past']:c['past'] + S].unsqueeze(1) == ex.unsqueeze(0)).unsqueeze(0)
empty = ~allowed.any(-1, keepdim=True)
allowed = allowed | ((kj == qi).unsqueeze(0) & empty)             # a padding query sees itself
s = q @ k.transpose(-1, -2) / math.sqrt(D)
if c['softcap'] > 0: s = torch.tanh(s / c['softcap']) * c['softcap']
s = s.masked_fill(~allowed.unsqueeze(1), float('-inf'))
out = torch.softmax(s, -1) @ v
out.backward(dout)
print(json.dumps({'out': out.detach().flatten().tolist(), 'dq': q.grad.flatten().tolist(), 'dk': k.grad.flatten().tolist(), 'dv': v.grad.flatten().tolist()}))
`,
    { case: c, ...inputs },
  );
}

function maxDiff(a: number[], b: number[]): number {
  expect(a).toHaveLength(b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

const CASES: [string, Case][] = [
  ['causal, left padding, uneven blocks', { B: 2, H: 3, S: 37, T: 37, D: 8, past: 0, window: 0, softcap: 0, block: 8, pad: [0, 5] }],
  ['a cache offset (queries after 20 cached keys)', { B: 2, H: 2, S: 9, T: 29, D: 4, past: 20, window: 0, softcap: 0, block: 4, pad: [3, 0] }],
  ['a sliding window of 6', { B: 1, H: 2, S: 30, T: 30, D: 4, past: 0, window: 6, softcap: 0, block: 7, pad: [0] }],
  ['soft-capping (Gemma2) with padding', { B: 2, H: 2, S: 21, T: 21, D: 4, past: 0, window: 0, softcap: 0.5, block: 5, pad: [4, 0] }],
  // packing: examples of 5, 1, 13, 2 and 19 tokens in one row; blocks of 4 straddle examples, and a
  // block wholly before a query's example is skipped
  ['packed examples (cu_seqlens), uneven blocks', { B: 1, H: 2, S: 40, T: 40, D: 4, past: 0, window: 0, softcap: 0, block: 4, pad: [0], cu: [0, 5, 6, 19, 21, 40] }],
  ['packed examples with a sliding window of 5 and soft-capping', { B: 1, H: 2, S: 40, T: 40, D: 4, past: 0, window: 5, softcap: 0.7, block: 6, pad: [0], cu: [0, 5, 6, 19, 21, 40] }],
];

describe('block-wise attention', () => {
  beforeAll(() => requireTorchPython());

  it.each(CASES)('%s: equals eager attention and Python torch, forward and gradients', async (_name, c) => {
    const block = await run(c, false);
    const eager = await run(c, true);
    const py = python(c, block.inputs);
    for (const key of ['out', 'dq', 'dk', 'dv'] as const) {
      // float32 inside both native paths; the reference in float64
      expect(maxDiff(block[key], py[key])).toBeLessThan(2e-6);
      expect(maxDiff(eager[key], py[key])).toBeLessThan(2e-6);
    }
  });
});
