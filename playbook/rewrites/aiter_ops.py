"""aiter's RMSNorm, gated-activation and flash-attention ops (ROCm), wrapped as torch custom ops.

Unverified on hardware here: no AMD GPU is reachable. Written against the signatures in REFERENCE.md:
`aiter.rms_norm(input, weight, epsilon)`, `aiter.rmsnorm2d_fwd_with_add(out, input, residual_in,
residual_out, weight, epsilon)`, `aiter.silu_and_mul(out, input)` / `aiter.gelu_tanh_and_mul(out, input)`
(they write into `out` and return None), `aiter.flash_attn_func(q, k, v, dropout_p, softmax_scale, causal)`
(BSHD layout, grouped-query K/V handled). The package is `amd-aiter`; the registry's `aiter` is unrelated.
aiter has no offset argument in the plain RMSNorm, so a Gemma norm passes (1 + w) as the weight.
"""
import importlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def available():
    """True when the real aiter (amd-aiter) imports and has the ops used here."""
    try:
        mod = importlib.import_module("aiter")
    except Exception:
        return False
    return all(hasattr(mod, n) for n in ("rms_norm", "rmsnorm2d_fwd_with_add", "silu_and_mul", "gelu_tanh_and_mul"))


def flash_available():
    try:
        return hasattr(importlib.import_module("aiter"), "flash_attn_func")
    except Exception:
        return False


def _aiter():
    try:
        return importlib.import_module("aiter")
    except ImportError as e:
        raise RuntimeError("aiter is not installed: on ROCm, pip install amd-aiter (or the extra "
                           "inference-playbook[rocm]); never the registry's `aiter`") from e


@torch.library.custom_op("playbook::aiter_rms_norm", mutates_args=())
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float) -> torch.Tensor:
    w = weight if offset == 0.0 else (weight.float() + offset).to(weight.dtype)
    return _aiter().rms_norm(x.contiguous(), w, eps)


@_rms_norm.register_fake
def _(x, weight, eps, offset):
    return x.new_empty(x.shape)


@torch.library.custom_op("playbook::aiter_fused_add_rms_norm", mutates_args=())
def _fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                        offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight if offset == 0.0 else (weight.float() + offset).to(weight.dtype)
    out, res_out = torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(x)
    _aiter().rmsnorm2d_fwd_with_add(out, x.contiguous(), residual.contiguous(), res_out, w, eps)
    return out, res_out


@_fused_add_rms_norm.register_fake
def _(x, residual, weight, eps, offset):
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.custom_op("playbook::aiter_act_and_mul", mutates_args=())
def _act_and_mul(gate: torch.Tensor, up: torch.Tensor, act: str) -> torch.Tensor:
    fn = {"silu": "silu_and_mul", "gelu_tanh": "gelu_tanh_and_mul"}[act]
    out = gate.new_empty(gate.shape)
    getattr(_aiter(), fn)(out, torch.cat([gate, up], dim=-1))
    return out


@_act_and_mul.register_fake
def _(gate, up, act):
    return gate.new_empty(gate.shape)


def rms_norm(x, weight, eps, offset=0.0):
    return torch.ops.playbook.aiter_rms_norm(x, weight, float(eps), float(offset))


def fused_add_rms_norm(x, residual, weight, eps, offset=0.0):
    return torch.ops.playbook.aiter_fused_add_rms_norm(x, residual, weight, float(eps), float(offset))


def act_and_mul(gate, up, act):
    return torch.ops.playbook.aiter_act_and_mul(gate, up, act)


@torch.library.custom_op("playbook::aiter_flash_attn", mutates_args=())
def _flash_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    # q, k, v: [B, H, S, D] as SDPA takes them; aiter wants [B, S, H, D]
    out = _aiter().flash_attn_func(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(),
                                   v.transpose(1, 2).contiguous(), dropout_p=0.0, softmax_scale=scale, causal=causal)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.transpose(1, 2).contiguous()


@_flash_attn.register_fake
def _(q, k, v, scale, causal):
    return q.new_empty(q.shape[:-1] + (v.shape[-1],))


def flash_applies(q, k, attn_mask=None, dropout_p=0.0, is_causal=False):
    """aiter's flash attention takes no explicit mask and no dropout; its causal flag is bottom-right
    aligned like flash-attn's, SDPA's top-left, so a causal call goes to it only when q and k are as long."""
    return attn_mask is None and not dropout_p and (not is_causal or q.shape[-2] == k.shape[-2])


def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention's signature: aiter's flash attention where flash_applies(), SDPA otherwise."""
    if not flash_applies(q, k, attn_mask, dropout_p, is_causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                              scale=scale, enable_gqa=enable_gqa)
    return torch.ops.playbook.aiter_flash_attn(q, k, v, float(scale if scale is not None else q.shape[-1] ** -0.5),
                                               bool(is_causal))


class AiterSDPA(TorchFunctionMode):
    """Inside it, every F.scaled_dot_product_attention call goes through sdpa() above (phase 2's "aiter")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:     # the mode is off while it handles a call: no recursion
            return sdpa(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
