"""`tiny`: a small decoder transformer that runs on a CPU in milliseconds, the teaching and CI workload.

    wl = build(preset="tiny", device=torch.device("cpu"), dtype=torch.float32)
    logits = wl.model(*wl.args)            # one decode token against a static KV cache

It holds every pattern the ladder rewrites: Llama-style RMSNorm, separate q/k/v/o projections with
grouped KV heads, eager attention written out as matmul -> masked softmax -> matmul over a KV cache
(query length 1, key length max_seq), and a SiLU-gated MLP with separate gate/up/down projections.
"""
import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Workload, count_weight_bytes


@dataclass(frozen=True)
class TinyConfig:
    vocab: int = 1024
    dim: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    mlp: int = 688          # not a power of two, on purpose
    max_seq: int = 128
    prompt: int = 32        # tokens prefilled before the timed decode step
    eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def head_dim(self):
        return self.dim // self.heads


PRESETS = {
    "tiny": TinyConfig(),
    "small": replace(TinyConfig(), vocab=4096, dim=512, layers=8, mlp=1376, max_seq=256),
}


class RMSNorm(nn.Module):
    """Llama flavour: x * rsqrt(mean(x^2) + eps) * w, computed in fp32."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.float()).to(x.dtype)


def rotate(x, cos, sin):
    # x: [B, H, S, D]; cos, sin: [S, D]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.heads * hd, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.heads * hd, cfg.dim, bias=False)
        self.register_buffer("k_cache", torch.zeros(1, cfg.kv_heads, cfg.max_seq, hd), persistent=False)
        self.register_buffer("v_cache", torch.zeros(1, cfg.kv_heads, cfg.max_seq, hd), persistent=False)

    def forward(self, x, pos, cos, sin, mask):
        # x: [B, S, dim]; pos: [S]; mask: [S, max_seq] (True = may attend)
        cfg, (b, s, _) = self.cfg, x.shape
        q = self.q_proj(x).view(b, s, cfg.heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        self.k_cache.index_copy_(2, pos, k)
        self.v_cache.index_copy_(2, pos, v)
        rep = cfg.heads // cfg.kv_heads
        keys = self.k_cache.repeat_interleave(rep, dim=1)       # [B, H, max_seq, D]
        values = self.v_cache.repeat_interleave(rep, dim=1)
        scores = torch.matmul(q, keys.transpose(-2, -1)) / math.sqrt(cfg.head_dim)
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(probs, values)                      # [B, H, S, D]
        return self.o_proj(out.transpose(1, 2).reshape(b, s, cfg.dim))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.mlp, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.mlp, bias=False)
        self.down_proj = nn.Linear(cfg.mlp, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x, pos, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), pos, cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class TinyDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        freqs = torch.outer(torch.arange(cfg.max_seq).float(), inv)
        angles = torch.cat((freqs, freqs), dim=-1)               # [max_seq, D]
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def forward(self, input_ids, pos):
        # input_ids: [B, S]; pos: [S] positions of these tokens in the cache
        x = self.embed_tokens(input_ids)
        cos, sin = self.rope_cos[pos].to(x.dtype), self.rope_sin[pos].to(x.dtype)
        mask = torch.arange(self.cfg.max_seq, device=pos.device)[None, :] <= pos[:, None]
        for layer in self.layers:
            x = layer(x, pos, cos, sin, mask)
        return self.lm_head(self.norm(x))


def build(preset, device, dtype, seed=0, weights_via=None):
    cfg = PRESETS[preset]
    torch.manual_seed(seed)
    model = TinyDecoder(cfg).to(dtype=weights_via or dtype).to(device=device, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, cfg.vocab, (1, cfg.prompt + 1), generator=gen).to(device)
    with torch.no_grad():
        model(prompt[:, :-1], torch.arange(cfg.prompt, device=device))   # prefill, outside the timed step
    args = (prompt[:, -1:], torch.tensor([cfg.prompt], device=device))
    return Workload(
        name="tiny", preset=preset, model=model, args=args,
        weight_bytes=count_weight_bytes(model, skip=("embed_tokens.weight",)),
        description=f"tiny decoder, {cfg.layers} layers, dim {cfg.dim}, one decode token "
                    f"at position {cfg.prompt} of a {cfg.max_seq}-slot KV cache")
