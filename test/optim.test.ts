// AdamW, clipping and the schedule against PyTorch, step by step (float64, dropout 0).
import { AdamW, fitStep, MultiHeadLoraLinear, Tensor } from '../lib';
import { maxAbs, maxAbsDiff, randn } from './helpers/math';
import { requireTorchPython, runPython } from './helpers/python';

const inF = 6, outF = 5, r = 3, N = 3, T = 7, steps = 10;

describe('AdamW with clipping and a cosine schedule', () => {
  it('matches torch.optim.AdamW + clip_grad_norm_ + the warm-up cosine schedule for 10 steps', async () => {
    requireTorchPython();
    const W0 = randn(outF * inF, 1);
    const layer = new MultiHeadLoraLinear({ weight: Tensor.from(W0, [outF, inF]) }, { method: 'rlora', rank: r, heads: N, dropout: 0, seed: 4 });
    const init = Object.fromEntries(Object.entries(layer.stateDict()).map(([k, v]) => [k, Array.from(v.data() as Float64Array)]));
    const opts = { lr: 0.05, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0.1, maxGradNorm: 0.5, schedule: 'cosine' as const, warmupSteps: 3, totalSteps: steps };
    const opt = new AdamW([layer], opts);
    const xs = Array.from({ length: steps }, (_, k) => randn(T * inF, 100 + k));
    const ys = Array.from({ length: steps }, (_, k) => randn(T * outF, 200 + k));
    const ours: { loss: number; lr: number; gradNorm: number }[] = [];
    for (let k = 0; k < steps; k++) {
      const res = await fitStep(layer, Tensor.from(xs[k], [T, inF]), Tensor.from(ys[k], [T, outF]), opt);
      ours.push({ loss: res.loss, lr: res.lr, gradNorm: res.gradNorm });
      const rows = res.rowLoss.data() as Float64Array;
      expect(rows.length).toBe(T);
      expect(Math.abs(rows.reduce((a, b) => a + b, 0) / T - res.loss)).toBeLessThan(1e-12);
      // the trainable parameters' norm after the update, recomputed here (offsets are not trained)
      const trained = Object.entries(layer.stateDict()).filter(([name]) => !name.startsWith('lora_offset'));
      const norm = Math.sqrt(trained.reduce((a, [, v]) => a + Array.from(v.data() as Float64Array).reduce((b, x) => b + x * x, 0), 0));
      expect(res.paramsFinite).toBe(true);
      expect(Math.abs(res.paramNorm - norm)).toBeLessThan(1e-10 * norm);
    }
    expect(opt.stepsTaken).toBe(steps);
    const final = Object.fromEntries(Object.entries(layer.stateDict()).map(([k, v]) => [k, Array.from(v.data() as Float64Array)]));

    const script = `
import math, torch
torch.set_default_dtype(torch.float64)
c = INP
i, o, r, N, T = c['inF'], c['outF'], c['r'], c['N'], c['T']
t = lambda v, *s: torch.tensor(v, dtype=torch.float64).reshape(*s)
A = t(c['init']['lora_A.weight'], r, i).requires_grad_(True)
B = [t(c['init']['lora_B%d.weight' % h], o, r).requires_grad_(True) for h in range(N)]
G = t(c['init']['lora_route.weight'], N, i).requires_grad_(True)
offA, offB = t(c['init']['lora_offset_A.weight'], r, i), t(c['init']['lora_offset_B.weight'], o, r)
W0, s = t(c['W0'], o, i), c['s']
params = [A, *B, G]
p = c['opts']
opt = torch.optim.AdamW(params, lr=p['lr'], betas=tuple(p['betas']), eps=p['eps'], weight_decay=p['weightDecay'])
def lam(step):  # transformers.get_cosine_schedule_with_warmup
    if step < p['warmupSteps']:
        return step / max(1, p['warmupSteps'])
    prog = (step - p['warmupSteps']) / max(1, p['totalSteps'] - p['warmupSteps'])
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
out = []
for k in range(c['steps']):
    x, y_t = t(c['xs'][k], T, i), t(c['ys'][k], T, o)
    w = torch.softmax(x @ G.T, -1)
    y = x @ W0.T - s * (x @ offA.T) @ offB.T
    for h in range(N):
        y = y + s * w[:, h:h+1] * ((x @ A.T) @ B[h].T)
    loss = ((y - y_t) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    lr = opt.param_groups[0]['lr']
    norm = torch.nn.utils.clip_grad_norm_(params, p['maxGradNorm'])
    opt.step()
    sched.step()
    out.append({'loss': loss.item(), 'lr': lr, 'gradNorm': norm.item()})
final = {'lora_A.weight': A.detach().flatten().tolist(), 'lora_route.weight': G.detach().flatten().tolist()}
for h in range(N):
    final['lora_B%d.weight' % h] = B[h].detach().flatten().tolist()
print(json.dumps({'steps': out, 'final': final}))
`;
    const py = runPython<{ steps: { loss: number; lr: number; gradNorm: number }[]; final: Record<string, number[]> }>(script, {
      inF, outF, r, N, T, steps, init, W0: Array.from(W0), s: layer.options.scaling, opts, xs: xs.map((v) => Array.from(v)), ys: ys.map((v) => Array.from(v)),
    });
    for (let k = 0; k < steps; k++) {
      expect(Math.abs(ours[k].loss - py.steps[k].loss)).toBeLessThan(1e-10 * Math.max(1, py.steps[k].loss));
      expect(Math.abs(ours[k].lr - py.steps[k].lr)).toBeLessThan(1e-15);
      expect(Math.abs(ours[k].gradNorm - py.steps[k].gradNorm)).toBeLessThan(1e-10 * Math.max(1, py.steps[k].gradNorm));
    }
    // clipping was active in some steps and the loss moved
    expect(ours.some((s) => s.gradNorm > opts.maxGradNorm)).toBe(true);
    for (const [k, v] of Object.entries(py.final)) {
      expect({ k, ok: maxAbsDiff(final[k], v) < 1e-10 * Math.max(1, maxAbs(v)) }).toEqual({ k, ok: true });
      expect(maxAbsDiff(final[k], init[k])).toBeGreaterThan(1e-3);
    }
  });
});

describe('schedules (transformers formulas)', () => {
  const W = Tensor.from([[1, 2], [3, 4]]);
  const l = new MultiHeadLoraLinear({ weight: W }, { rank: 1, heads: 2 });
  it.each([
    ['constant', (s: number) => (s < 4 ? s / 4 : 1)],
    ['linear', (s: number) => (s < 4 ? s / 4 : Math.max(0, 1 - (s - 4) / 16))],
    ['cosine', (s: number) => (s < 4 ? s / 4 : 0.5 * (1 + Math.cos((Math.PI * (s - 4)) / 16)))],
  ] as const)('%s with 4 warm-up steps of 20', (schedule, f) => {
    const opt = new AdamW([l], { lr: 2e-4, schedule, warmupSteps: 4, totalSteps: 20 });
    for (let s = 0; s <= 20; s++) expect(opt.lrAt(s)).toBeCloseTo(2e-4 * f(s), 18);
  });

  it('rejects bad options with the value named', () => {
    expect(() => new AdamW([l], { schedule: 'cosine', totalSteps: 0 })).toThrow(/cosine schedule needs totalSteps > warmupSteps, got totalSteps 0/);
    expect(() => new AdamW([l], { schedule: 'step' as never })).toThrow(/schedule must be one of "constant", "linear", "cosine"; got "step"/);
    expect(() => new AdamW([l], { lr: -1 })).toThrow(/lr must be a finite number >= 0/);
    expect(() => new AdamW([l], { betas: [0.9, 1] })).toThrow(/betas\[1\] must be in \[0, 1\)/);
    expect(() => new AdamW([l], { lrr: 1 } as never)).toThrow('AdamW: unknown option "lrr" (did you mean "lr"?); known: lr, betas, eps, weightDecay, maxGradNorm, schedule, warmupSteps, totalSteps');
    expect(() => new AdamW([], {})).toThrow(/non-empty array/);
  });

  it('fitStep refuses a layer the optimizer does not own and a target of the wrong shape', async () => {
    const other = new MultiHeadLoraLinear({ weight: W }, { rank: 1, heads: 2 });
    const opt = new AdamW([l]);
    const x = Tensor.from([[1, 1]]);
    await expect(fitStep(other, x, Tensor.from([[0, 0]]), opt)).rejects.toThrow(/optimizer was not created with this layer's parameters/);
    await expect(fitStep(l, x, Tensor.from([[0, 0, 0]]), opt)).rejects.toThrow(/target must have the output's shape \[1, 2\], got \[1, 3\]/);
  });
});
