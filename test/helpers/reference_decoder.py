"""An independent decoder forward in Python torch, written from the Hugging Face modeling code
(modeling_llama / modeling_qwen2 / modeling_mistral, eager attention), and a safetensors reader.
Tests compare rlora against it; benchmarks/train_baseline.py trains with it."""
import json, struct, torch
def load_safetensors(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    dt = {'F32': torch.float32, 'F64': torch.float64, 'BF16': torch.bfloat16, 'F16': torch.float16, 'I64': torch.int64, 'I32': torch.int32}
    out = {}
    for k, v in header.items():
        if k == '__metadata__':
            continue
        s, e = v['data_offsets']
        out[k] = torch.frombuffer(bytearray(data[s:e]), dtype=dt[v['dtype']]).reshape(v['shape']).clone()
    return out
import math, torch
def llama3_inv_freq(inv, rs):
    factor, low, high, old = rs['factor'], rs['low_freq_factor'], rs['high_freq_factor'], rs['original_max_position_embeddings']
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, inv_l)

def decoder_forward(W, cfg, ids, mask, lora=None, attention='eager'):
    arch = cfg['architectures'][0]
    B, S = ids.shape
    H, nH, L = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_hidden_layers']
    nKV = cfg.get('num_key_value_heads') or nH
    D = cfg.get('head_dim') or H // nH
    eps = cfg.get('rms_norm_eps', 1e-6)
    def rms(x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        if arch == 'Gemma2ForCausalLM':  # Gemma2RMSNorm: times (1 + weight) in float32, then cast
            return (xf * (1.0 + w.float())).to(x.dtype)
        return w * xf.to(x.dtype)
    def lin(x, name):
        y = x @ W[name + '.weight'].T
        if name + '.bias' in W:
            y = y + W[name + '.bias']
        if lora and name in lora:
            y = y + lora[name](x)
        return y
    inv = 1.0 / (cfg.get('rope_theta', 10000.0) ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    rs = cfg.get('rope_scaling')
    if rs and rs.get('rope_type', rs.get('type')) == 'llama3':
        inv = llama3_inv_freq(inv, rs)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    freqs = pos[..., None].float() * inv
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    rot = lambda x: torch.cat((-x[..., D // 2:], x[..., :D // 2]), -1)
    i = torch.arange(S)
    gemma2 = arch == 'Gemma2ForCausalLM'
    win = cfg.get('sliding_window') if (arch in ('MistralForCausalLM', 'Phi3ForCausalLM', 'Gemma2ForCausalLM') or cfg.get('use_sliding_window')) else None
    def allowed_with(window):
        a = i[None, :] <= i[:, None]
        if window:
            a = a & (i[None, :] > i[:, None] - window)
        a = a[None] & mask[:, None, :].bool()
        return a | (torch.eye(S, dtype=torch.bool)[None] & ~a.any(-1, keepdim=True))
    # attention='sdpa': torch 2.x's fused scaled_dot_product_attention, causal, as transformers runs
    # it without padding (benchmarks); only where it computes the same (no padding, window, soft-cap)
    sdpa = attention == 'sdpa'
    if sdpa and (gemma2 or win or not bool(mask.bool().all())):
        raise ValueError('attention="sdpa" takes unpadded batches without a sliding window or soft-capping')
    # Gemma2: the sliding window on even layers only (is_sliding = not layer_idx % 2)
    allowed_global = None if sdpa else allowed_with(None if gemma2 else win)
    allowed_local = None if sdpa else allowed_with(win)
    h = W['model.embed_tokens.weight'][ids]
    if gemma2:  # embeddings times sqrt(hidden_size), the factor rounded to the dtype
        h = h * torch.tensor(cfg['hidden_size'] ** 0.5, dtype=h.dtype)
    scaling = cfg.get('query_pre_attn_scalar', 256) ** -0.5 if gemma2 else 1 / math.sqrt(D)
    act = (lambda x: torch.nn.functional.gelu(x, approximate='tanh')) if gemma2 else torch.nn.functional.silu
    def softcap(x, cap):
        return torch.tanh(x / cap) * cap if cap else x
    for l in range(L):
        p = 'model.layers.%d.' % l
        x = rms(h, W[p + 'input_layernorm.weight'])
        if arch == 'Phi3ForCausalLM':  # one qkv_proj: q, k, v rows in that order
            qkv = lin(x, p + 'self_attn.qkv_proj')
            q = qkv[..., :nH * D].reshape(B, S, nH, D)
            k = qkv[..., nH * D:(nH + nKV) * D].reshape(B, S, nKV, D)
            v_fused = qkv[..., (nH + nKV) * D:].reshape(B, S, nKV, D).transpose(1, 2)
        else:
            q = lin(x, p + 'self_attn.q_proj').view(B, S, nH, D)
            k = lin(x, p + 'self_attn.k_proj').view(B, S, nKV, D)
        if arch == 'Qwen3ForCausalLM':  # q_norm / k_norm over head_dim, before rotary
            q = rms(q, W[p + 'self_attn.q_norm.weight'])
            k = rms(k, W[p + 'self_attn.k_norm.weight'])
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v_fused if arch == 'Phi3ForCausalLM' else lin(x, p + 'self_attn.v_proj').view(B, S, nKV, D).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k = k.repeat_interleave(nH // nKV, dim=1)
        v = v.repeat_interleave(nH // nKV, dim=1)
        if sdpa:
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling).transpose(1, 2).reshape(B, S, nH * D)
        else:
            s = (q @ k.transpose(2, 3)) * scaling
            if gemma2:
                s = softcap(s, cfg.get('attn_logit_softcapping', 50.0))
            allowed = allowed_local if (gemma2 and l % 2 == 0) or (not gemma2) else allowed_global
            s = s.masked_fill(~allowed[:, None], float('-inf'))
            a = torch.softmax(s.float(), -1).to(q.dtype)
            o = (a @ v).transpose(1, 2).reshape(B, S, nH * D)
        if gemma2:  # Gemma2DecoderLayer: a norm after attention, and before and after the MLP
            h = h + rms(lin(o, p + 'self_attn.o_proj'), W[p + 'post_attention_layernorm.weight'])
            x = rms(h, W[p + 'pre_feedforward_layernorm.weight'])
            m = lin(act(lin(x, p + 'mlp.gate_proj')) * lin(x, p + 'mlp.up_proj'), p + 'mlp.down_proj')
            h = h + rms(m, W[p + 'post_feedforward_layernorm.weight'])
            continue
        h = h + lin(o, p + 'self_attn.o_proj')
        x = rms(h, W[p + 'post_attention_layernorm.weight'])
        if arch == 'Phi3ForCausalLM':  # one gate_up_proj: gate, then up
            gate, up = lin(x, p + 'mlp.gate_up_proj').chunk(2, dim=-1)
        else:
            gate, up = lin(x, p + 'mlp.gate_proj'), lin(x, p + 'mlp.up_proj')
        h = h + lin(act(gate) * up, p + 'mlp.down_proj')
    h = rms(h, W['model.norm.weight'])
    tied = cfg.get('tie_word_embeddings', gemma2)
    head = W['model.embed_tokens.weight'] if tied else W['lm_head.weight']
    logits = h @ head.T
    return softcap(logits, cfg.get('final_logit_softcapping', 30.0)) if gemma2 else logits
