"""Pure-torch references for every kernel in playbook/kernels/: the definition each Triton kernel is tested against.

All of them compute in fp32 and return the input's dtype, as the kernels do.
"""
import math

import torch


def rms_norm(x, weight, eps, offset=0.0):
    """x * rsqrt(mean(x^2) + eps) * (offset + weight); offset=1.0 is Gemma's norm, 0.0 Llama's."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * (offset + weight.float())).to(x.dtype)


def fused_add_rms_norm(x, residual, weight, eps, offset=0.0):
    """(rms_norm(x + residual), x + residual); the sum is rounded to x's dtype before the norm reads it."""
    new_residual = (x.float() + residual.float()).to(x.dtype)
    return rms_norm(new_residual, weight, eps, offset), new_residual


def silu_and_mul(x):
    """x: [..., 2N], gate first -> silu(gate) * up: [..., N]."""
    gate, up = x.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(x.dtype)


def gelu_tanh_and_mul(x):
    """x: [..., 2N], gate first -> gelu(gate, approximate="tanh") * up: [..., N]."""
    gate, up = x.float().chunk(2, dim=-1)
    return (torch.nn.functional.gelu(gate, approximate="tanh") * up).to(x.dtype)


def _act(h, act):
    return torch.nn.functional.silu(h) if act == "silu" else torch.nn.functional.gelu(h, approximate="tanh")


def gemv(x, weight, bias=None, residual=None, norm_weight=None, eps=1e-6, offset=0.0, up=None, act="", glu=""):
    """F.linear(rms_norm(x) if norm_weight is given else x, weight, bias) + residual, all in fp32, one
    rounding at the end (the norm's output is not rounded to x's dtype in between, as an unfused
    model's is: the fused kernel is the more precise of the two). up, act: the input is act(x) * up.
    glu: the output is act(gate) * up of its two halves (weight's first half of rows the gate's), each half
    rounded to x's dtype first, as the unfused model rounds the projection's output."""
    h = x.float()
    if act:
        h = _act(h, act) * up.float()
    if norm_weight is not None:
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * (offset + norm_weight.float())
    y = torch.nn.functional.linear(h, weight.float(), None if bias is None else bias.float())
    if glu:
        gate, up_half = y.to(x.dtype).float().chunk(2, dim=-1)
        y = _act(gate, glu) * up_half
    if residual is not None:
        y = y + residual.float()
    return y.to(x.dtype)


# Tolerances the kernels are held to against these references (fp32 math, one rounding at the end).
TOLERANCES = {torch.float32: dict(atol=1e-5, rtol=1e-5),
              torch.float16: dict(atol=2e-3, rtol=2e-3),
              torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}

GELU_TANH_K = math.sqrt(2.0 / math.pi)


def rotate_half(x):
    """The rotary embedding's partner of each element, as Llama-family models pair them: [-x2, x1]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_append_rows(q, k, v, cos, sin, k_cache, v_cache, start):
    """q [L, H, D], k and v [L, KVH, D], cos and sin [L, D]: the rotated keys and the values written into the
    caches [1, KVH, N, D] at slots start.. (in place); returns the rotated queries [L, H, D]. fp32 math, one
    rounding to each output's dtype."""
    c, s = cos.float()[:, None], sin.float()[:, None]
    q_rot = q.float() * c + rotate_half(q.float()) * s
    k_rot = k.float() * c + rotate_half(k.float()) * s
    end = start + q.shape[0]
    k_cache[0, :, start:end] = k_rot.transpose(0, 1).to(k_cache.dtype)
    v_cache[0, :, start:end] = v.transpose(0, 1).to(v_cache.dtype)
    return q_rot.to(q.dtype)


def decode_attention_rope_append(q, k, v, cos, sin, k_cache, v_cache, position, scale=None):
    """The rotary embedding of q and k (in the inputs' dtype, as the model computes it), k and v written into the
    caches at `position` (in place), then attention of q over slots 0..position. q: H x D values; k, v: KVH x D;
    cos, sin: [D]; caches [1, KVH, N, D] -> [H, D]."""
    d = k_cache.shape[-1]
    q, k, v = q.reshape(-1, d), k.reshape(-1, d), v.reshape(-1, d)
    cos, sin = cos.reshape(d).to(q.dtype), sin.reshape(d).to(q.dtype)
    q = (q * cos) + (rotate_half(q) * sin)
    k = (k * cos) + (rotate_half(k) * sin)
    p = int(position.reshape(-1)[0])
    k_cache[0, :, p], v_cache[0, :, p] = k.to(k_cache.dtype), v.to(v_cache.dtype)
    group = q.shape[0] // k.shape[0]
    keys = k_cache[0, :, : p + 1].repeat_interleave(group, dim=0).float()
    values = v_cache[0, :, : p + 1].repeat_interleave(group, dim=0).float()
    scores = torch.einsum("hd,hnd->hn", q.float(), keys) * (scale or d ** -0.5)
    return torch.einsum("hn,hnd->hd", scores.softmax(-1), values).to(q.dtype)


def decode_attention(q, k, v):
    """One query token against a KV cache. q: [B, H, D]; k, v: [B, KVH, N, D] -> [B, H, D] (fp32 softmax)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1).float(), v.repeat_interleave(group, dim=1).float()
    scores = torch.einsum("bhd,bhnd->bhn", q.float(), k) / q.shape[-1] ** 0.5
    return torch.einsum("bhn,bhnd->bhd", scores.softmax(-1), v).to(q.dtype)


def few_query_attention(q, k, v, mask=None, scale=None, softcap=None):
    """A few queries against K/V with any mask. q: [B, H, Lq, D]; k, v: [B, KVH, Lk, D]; mask: None or
    [B|1, H|1, Lq|1, Lk], boolean "may attend" or additive -> [B, Lq, H, D]. Scores and softmax in fp32, the
    probabilities rounded to v's dtype for their product; a row with every slot masked gives zeros."""
    group = q.shape[1] // k.shape[1]
    keys, values = k.repeat_interleave(group, dim=1).float(), v.repeat_interleave(group, dim=1)
    scores = q.float() @ keys.transpose(-1, -2) * (scale or q.shape[-1] ** -0.5)
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    out = probs.to(v.dtype).float() @ values.float()
    return out.transpose(1, 2).to(q.dtype)


def rope_few_query_attention(q, k, v, cos, sin, k_cache, v_cache, start, mask=None, scale=None, softcap=None):
    """rope_append_rows (the caches written in place from slot start) then few_query_attention of the rotated
    queries over the caches. q [L, H, D], k and v [L, KVH, D], cos and sin [L, D] -> [1, L, H, D]."""
    q_rot = rope_append_rows(q, k, v, cos, sin, k_cache, v_cache, start)
    return few_query_attention(q_rot.unsqueeze(0).transpose(1, 2), k_cache, v_cache, mask, scale, softcap)
