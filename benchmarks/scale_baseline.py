"""Python torch baseline of benchmarks/scale.ts: a random-weight model of the shape (float32), the
tests' reference decoder (eager attention), R-LoRA written the way the published code does (the
per-head loop of benchmarks/train_baseline.py), AdamW and clipping at 1, on the same batch.
Usage: python3 scale_baseline.py <json: {config, run, batch, timed}>
"""
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

sys.path.insert(0, HERE)
from memory import peak_bytes, reset_peak  # noqa: E402
from train_baseline import PublishedRLoRA, published_step  # noqa: E402


def random_weights(cfg):
    """Hugging Face names and shapes of a Qwen2 decoder, N(0, 0.02) weights, unit norms."""
    H, I, L, V = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers'], cfg['vocab_size']
    nH, nKV = cfg['num_attention_heads'], cfg['num_key_value_heads']
    D = H // nH
    g = torch.Generator().manual_seed(1)
    rnd = lambda *shape: torch.empty(*shape).normal_(0, 0.02, generator=g)
    W = {'model.embed_tokens.weight': rnd(V, H), 'model.norm.weight': torch.ones(H)}
    for l in range(L):
        p = 'model.layers.%d.' % l
        W[p + 'input_layernorm.weight'] = torch.ones(H)
        W[p + 'post_attention_layernorm.weight'] = torch.ones(H)
        for name, out in (('q', nH * D), ('k', nKV * D), ('v', nKV * D)):
            W[p + 'self_attn.%s_proj.weight' % name] = rnd(out, H)
            W[p + 'self_attn.%s_proj.bias' % name] = torch.zeros(out)
        W[p + 'self_attn.o_proj.weight'] = rnd(H, nH * D)
        W[p + 'mlp.gate_proj.weight'] = rnd(I, H)
        W[p + 'mlp.up_proj.weight'] = rnd(I, H)
        W[p + 'mlp.down_proj.weight'] = rnd(H, I)
    return W


def main():
    args = json.loads(open(sys.argv[1]).read())
    cfg, run, batch, timed = args['config'], args['run'], args['batch'], args['timed']
    torch.set_num_threads(run['threads'])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    W = random_weights(cfg)
    a = run['adapter']
    mods = {}
    for name in list(W):
        m = name[:-len('.weight')]
        if name.endswith('.weight') and m.split('.')[-1] in a['targetModules']:
            mods[m] = PublishedRLoRA(W[name], a['rank'], a['heads'], a['alpha'], a['dropout'])
    params = [p for m in mods.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=run['learningRate'], weight_decay=0.0)
    init_seconds = time.perf_counter() - t0
    ids, mask, labels = torch.tensor(batch['inputIds']), torch.tensor(batch['attentionMask']), torch.tensor(batch['labels'])
    load_peak = peak_bytes()
    before = reset_peak()
    times, losses = [], []
    for step in range(1 + timed):
        t = time.perf_counter()
        losses.append(published_step(W, cfg, ids, mask, labels, mods, opt, params))
        if step > 0:
            times.append(time.perf_counter() - t)
    step_peak = peak_bytes()
    print(json.dumps({'variant': 'torch published loop', 'shape': args['shape'], 'parameters': sum(w.numel() for w in W.values()),
                      'trainable': sum(p.numel() for p in params), 'initSeconds': init_seconds, 'times': times,
                      'tokens': len(batch['inputIds']) * run['sequence'], 'rows': len(batch['inputIds']), 'losses': losses, 'residentBeforeStep': before,
                      'loadPeakBytes': load_peak, 'stepPeakBytes': step_peak, 'peakBytes': max(load_peak, step_peak)}))


if __name__ == '__main__':
    main()
