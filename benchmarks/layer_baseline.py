"""Python torch baselines of benchmarks/layer.ts, one variant a process.

The multi-head variants loop over heads the way the published code does:
  R-LoRA:    y += w_i * B_i(dropout_i(A(x))) * s   (A x recomputed in each head, a dropout per head)
  HydraLoRA: xd = dropout(x) once, a = A(xd), then y += w_i * B_i(a) * s for each head
Usage: python3 layer_baseline.py <variant> <iterations> <json shape>
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import peak_bytes, reset_peak, status_kb  # noqa: E402




def main():
    variant, iters, shape = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    i, o, t, r, n, p, alpha = (shape[k] for k in ('inF', 'outF', 'tokens', 'rank', 'heads', 'dropout', 'alpha'))
    torch.manual_seed(0)
    w0 = torch.randn(o, i) * 0.02
    x = torch.randn(t, i, requires_grad=True)
    g = torch.randn(t, o)
    A = nn.Linear(i, r, bias=False)
    Bs = nn.ModuleList([nn.Linear(r, o, bias=False) for _ in range(n)])
    for b in Bs:
        nn.init.normal_(b.weight, std=0.02)
    router = nn.Linear(i, n, bias=False)
    drops = nn.ModuleList([nn.Dropout(p) for _ in range(n)])

    def base():
        return F.linear(x, w0)

    def rlora_loop():
        s = alpha / r ** 0.5
        y = F.linear(x, w0)
        w = torch.softmax(router(x), dim=-1, dtype=torch.float32).to(x.dtype)
        for h in range(n):
            y = y + w[:, h:h + 1] * Bs[h](drops[h](A(x))) * s
        return y

    def hydra_loop():
        s = alpha / r
        y = F.linear(x, w0)
        w = torch.softmax(router(x), dim=-1, dtype=torch.float32).to(x.dtype)
        a = A(drops[0](x))
        for h in range(n):
            y = y + w[:, h:h + 1] * Bs[h](a) * s
        return y

    fn = {'torch base linear (frozen)': base, 'torch R-LoRA published loop': rlora_loop,
          'torch HydraLoRA loop': hydra_loop}[variant]

    def step():
        y = fn()
        y.backward(g)
        return y

    step()
    times, peak, activation = [], 0, 0
    for _ in range(iters):
        for prm in [x, A.weight, router.weight, *[b.weight for b in Bs]]:
            prm.grad = None
        base_rss = reset_peak()
        t0 = time.perf_counter()
        y = fn()
        activation = max(activation, status_kb('VmRSS') * 1024 - base_rss)
        y.backward(g)
        times.append(time.perf_counter() - t0)
        peak = max(peak, peak_bytes() - base_rss)
        del y
    print(json.dumps({'variant': variant, 'times': times, 'peakBytes': peak, 'activationBytes': activation,
                      'threads': torch.get_num_threads()}))


main()
