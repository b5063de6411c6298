"""aiter's RMSNorm and gated-activation ops (ROCm), wrapped to kernels/' signatures as torch custom ops.

Unverified on hardware here: no AMD GPU is reachable. Written against the signatures in REFERENCE.md:
`aiter.rms_norm(input, weight, epsilon)`, `aiter.rmsnorm2d_fwd_with_add(out, input, residual_in,
residual_out, weight, epsilon)`, `aiter.silu_and_mul(out, input)` / `aiter.gelu_tanh_and_mul(out, input)`
(they write into `out` and return None). The package is `amd-aiter`; the registry's `aiter` is unrelated.
aiter has no offset argument in the plain RMSNorm, so a Gemma norm passes (1 + w) as the weight.
"""
import importlib

import torch


def available():
    """True when the real aiter (amd-aiter) imports and has the ops used here."""
    try:
        mod = importlib.import_module("aiter")
    except Exception:
        return False
    return all(hasattr(mod, n) for n in ("rms_norm", "rmsnorm2d_fwd_with_add", "silu_and_mul", "gelu_tanh_and_mul"))


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
