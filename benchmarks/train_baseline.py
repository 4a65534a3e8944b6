"""Python torch baseline of benchmarks/train.ts: the same model (the reference decoder of the
tests, eager attention or torch 2.x's SDPA), the same batches, R-LoRA written the way the published
code does it: for each head, B_i(dropout_i(A(x))) with A x recomputed, mixed by the softmax router;
the initial product subtracted from the frozen weight; AdamW; clipping at 1. With shape.compile
(torch 2.x) the forward and the loss run under torch.compile (inductor), as a user would wrap the
model; the first warm-up step compiles.
Usage: python3 train_baseline.py <model dir> <batches.json> <timed steps> <json shape>
"""
import json
import math
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'helpers'))
from reference_decoder import decoder_forward, load_safetensors  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import peak_bytes, reset_peak  # noqa: E402




class PublishedRLoRA(nn.Module):
    def __init__(self, weight, r, n, alpha, p):
        super().__init__()
        out, inp = weight.shape
        self.s = alpha / math.sqrt(r)
        self.lora_A = nn.Linear(inp, r, bias=False)
        self.lora_B = nn.ModuleList([nn.Linear(r, out, bias=False) for _ in range(n)])
        self.lora_route = nn.Linear(inp, n, bias=False)
        self.drop = nn.ModuleList([nn.Dropout(p) for _ in range(n)])
        with torch.no_grad():
            scale = r ** 0.25 / 8.0
            nn.init.normal_(self.lora_A.weight, std=1 / math.sqrt(inp)).mul_(scale)
            for b in self.lora_B:
                nn.init.normal_(b.weight, std=1 / math.sqrt(out)).mul_(scale)
            mean_b = torch.stack([b.weight for b in self.lora_B]).mean(0)
            weight.sub_(self.s * mean_b @ self.lora_A.weight)   # the published code edits the base weight

    def forward(self, x):
        w = torch.softmax(self.lora_route(x), dim=-1, dtype=torch.float32).to(x.dtype)
        y = 0
        for i, b in enumerate(self.lora_B):
            y = y + w[..., i:i + 1] * b(self.drop[i](self.lora_A(x))) * self.s
        return y


def lm_loss(W, cfg, ids, mask, labels, mods, attention='eager'):
    """The reference forward with the adapters (attention 'eager', or 'sdpa' on torch 2.x), and the
    mean cross-entropy of the next token."""
    logits = decoder_forward(W, cfg, ids, mask, mods, attention)
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100)


def published_step(W, cfg, ids, mask, labels, mods, opt, params, attention='eager', loss_fn=lm_loss):
    """One training step: loss_fn (lm_loss, or it compiled), AdamW after clipping at 1. Returns the loss."""
    loss = loss_fn(W, cfg, ids, mask, labels, mods, attention)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def main():
    model_dir, batches_path, timed, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    torch.manual_seed(0)
    W = load_safetensors(os.path.join(model_dir, 'model.safetensors'))
    cfg = json.load(open(os.path.join(model_dir, 'config.json')))
    a = shape['adapter']
    mods = {}
    for name in W:
        m = name[:-len('.weight')]
        if name.endswith('.weight') and m.split('.')[-1] in a['targetModules']:
            mods[m] = PublishedRLoRA(W[name], a['rank'], a['heads'], a['alpha'], a['dropout'])
    params = [p for m in mods.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=shape['learningRate'], weight_decay=0.0)
    batches = json.load(open(batches_path))['batches']
    loss_fn = torch.compile(lm_loss) if shape.get('compile') else lm_loss
    times, tokens, peak, base = [], [], 0, 0
    for step, b in enumerate(batches[:shape['warmup'] + timed]):
        if step == shape['warmup']:
            base = reset_peak()
        t0 = time.perf_counter()
        ids, mask, labels = torch.tensor(b['inputIds']), torch.tensor(b['attentionMask']), torch.tensor(b['labels'])
        published_step(W, cfg, ids, mask, labels, mods, opt, params, shape.get('attention', 'eager'), loss_fn)
        if step >= shape['warmup']:
            times.append(time.perf_counter() - t0)
            tokens.append(int(mask.sum()))
            peak = max(peak, peak_bytes() - base)
    variant = 'torch published loop' + (', compiled' if shape.get('compile') else '') + (', sdpa' if shape.get('attention') == 'sdpa' else '')
    print(json.dumps({'variant': variant, 'times': times, 'tokens': tokens, 'peakBytes': peak, 'peakRssBytes': peak_bytes(),
                      'trainable': sum(p.numel() for p in params)}))


if __name__ == '__main__':
    main()
