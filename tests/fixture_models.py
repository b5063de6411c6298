"""Custom-model functions the tests load through --model tests' fixture_models:NAME."""
import torch
import torch.nn as nn


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 4)

    def forward(self, x, scale=1.0):
        return {"a": self.a(x) * scale, "nested": (self.b(x), torch.argmax(self.b(x), -1))}


def make(device=None, dtype=None):
    return TwoHeads(), {"x": torch.randn(2, 16), "scale": 2.0}


def zeros():
    return TwoHeads(), (torch.zeros(2, 16),)


def not_a_pair():
    return TwoHeads()


class Chain(nn.Module):
    """Nothing to fuse, no attention: Linear -> GELU -> Linear."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        return self.down(nn.functional.gelu(self.up(x)))


def chain():
    torch.manual_seed(0)
    return Chain(), (torch.randn(2, 16),)


class GemmaNorm(nn.Module):
    """Gemma's RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), weight initialised around zero."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim) * 0.1)
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).to(x.dtype)


class CrossAttention(nn.Module):
    """Diffusers-style names (to_q/to_k/to_v, biases on q and v only), an additive mask, a multiplied
    scale and torch.softmax: the data-flow and FX paths, not the Hugging Face fast paths."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.norm = GemmaNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, bias):
        b, s, d = x.shape
        h = self.norm(x)
        q = self.to_q(h).view(b, s, self.heads, d // self.heads).transpose(1, 2)
        k = self.to_k(h).view(b, s, self.heads, d // self.heads).transpose(1, 2)
        v = self.to_v(h).view(b, s, self.heads, d // self.heads).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (d // self.heads) ** -0.5 + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return x + self.to_out(out.transpose(1, 2).reshape(b, s, d))


def cross_attention():
    torch.manual_seed(0)
    bias = torch.zeros(1, 1, 6, 6)
    bias[..., 4:] = float("-inf")           # the last two keys are padding
    return CrossAttention(), (torch.randn(1, 6, 32), bias)
