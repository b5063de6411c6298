"""Phase 5's rewrite: the model's RMSNorms, residual-add + norm pairs and gated activations -> playbook/kernels/.

    found = find_sites(model)            # what would be swapped, and what was left and why
    swapped = swap(model, found)         # in place

Sites are recognised by behaviour, not by class name:
- an RMSNorm is a module with one 1-D weight (and a class name with "norm") whose output on a random
  probe matches x * rsqrt(mean(x^2) + eps) * (offset + w) for offset 0 (Llama) or 1 (Gemma); the probe
  tells the flavours apart, so a Gemma norm never gets the Llama kernel;
- a gated MLP has gate_proj / up_proj / down_proj and computes down(act(gate(x)) * up(x)) with act SiLU
  or tanh-GELU, checked on a probe the same way;
- an add + norm pair is a pre-norm decoder layer (input_layernorm, self_attn, post_attention_layernorm,
  mlp and nothing else): x + attn(norm1(x)) then norm2 of that sum. Its forward is replaced by one that
  calls fused_add_rms_norm for the second add and norm. Layers with more norms (Gemma 2/3) are left.
Implementations: "triton" (playbook/kernels/) everywhere Triton runs, "aiter" on ROCm with aiter installed.
"""
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from playbook import kernels
from playbook.kernels import reference

from . import aiter_ops

EPS_ATTRS = ("variance_epsilon", "eps", "epsilon")
LAYER_CHILDREN = {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"}


def _probe(shape, like, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device=like.device, dtype=like.dtype)


def _close(a, b):
    tol = 1e-4 if a.dtype == torch.float32 else 3e-2
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


def norm_flavour(mod):
    """(eps, offset) when mod behaves as an RMSNorm, else None."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 1 or "norm" not in type(mod).__name__.lower():
        return None
    if getattr(mod, "bias", None) is not None or list(mod.children()):
        return None
    eps = next((float(getattr(mod, a)) for a in EPS_ATTRS if isinstance(getattr(mod, a, None), (int, float))), None)
    if eps is None:
        return None
    x = _probe((3, w.shape[0]), w)
    with torch.no_grad():
        got = mod(x)
        for offset in (0.0, 1.0):
            if _close(got, reference.rms_norm(x, w, eps, offset)):
                return eps, offset
    return None


ACTIVATIONS = {"silu": F.silu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}   # what a gated MLP may use


def mlp_activation(mod):
    """"silu" or "gelu_tanh" when mod computes down(act(gate(x)) * up(x)), else None."""
    parts = [getattr(mod, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Module) for p in parts):
        return None
    w = next(mod.parameters(), None)
    in_features = getattr(parts[0], "in_features", None)
    if w is None or in_features is None:
        return None
    x = _probe((2, in_features), w, seed=1)
    with torch.no_grad():
        got = mod(x)
        gate, up = parts[0](x), parts[1](x)
        for act, fn in ACTIVATIONS.items():
            if _close(got, parts[2](fn(gate) * up)):
                return act
    return None


def find_sites(model):
    """{"norms": [{path, eps, offset}], "mlps": [{path, act}], "layers": [path], "left": [{path, why}]}"""
    found = {"norms": [], "mlps": [], "layers": [], "left": []}
    flavours = {}
    for path, mod in model.named_modules():
        if "norm" in type(mod).__name__.lower() and isinstance(getattr(mod, "weight", None), torch.Tensor):
            f = norm_flavour(mod)
            if f:
                flavours[path] = f
                found["norms"].append({"path": path, "eps": f[0], "offset": f[1]})
            else:
                found["left"].append({"path": path, "why": f"{type(mod).__name__} is not an RMSNorm (probe)"})
        elif all(hasattr(mod, n) for n in ("gate_proj", "up_proj", "down_proj")):
            act = mlp_activation(mod)
            if act:
                found["mlps"].append({"path": path, "act": act})
            else:
                found["left"].append({"path": path, "why": "gated MLP with an activation other than SiLU/tanh-GELU"})
    for path, mod in model.named_modules():
        children = {n for n, _ in mod.named_children()}
        if LAYER_CHILDREN <= children:
            pre = f"{path}." if path else ""
            if children == LAYER_CHILDREN and f"{pre}post_attention_layernorm" in flavours:
                found["layers"].append(path)
            else:
                found["left"].append({"path": path, "why": "decoder layer with other children "
                                      f"({sorted(children - LAYER_CHILDREN)}): its add + norm is not fused"})
    return found


class KernelRMSNorm(nn.Module):
    """An RMSNorm computed by kernels.rms_norm (or aiter's); shares the original weight."""

    def __init__(self, weight, eps, offset, impl="triton"):
        super().__init__()
        self.weight, self.eps, self.offset, self.impl = weight, eps, offset, impl

    def forward(self, x):
        if self.impl == "aiter":
            return aiter_ops.rms_norm(x, self.weight, self.eps, self.offset)
        return kernels.rms_norm(x, self.weight, self.eps, self.offset)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.eps}, offset={self.offset}, impl={self.impl}"


def _mlp_forward(self, x):
    act_and_mul = aiter_ops.act_and_mul if self._kernel_impl == "aiter" else kernels.act_and_mul
    return self.down_proj(act_and_mul(self.gate_proj(x), self.up_proj(x), self._kernel_act))


def _layer_forward(self, hidden_states, *args, **kwargs):
    """Pre-norm decoder layer with the second residual add fused into post_attention_layernorm."""
    residual = hidden_states
    attn = self.self_attn(self.input_layernorm(hidden_states), *args, **kwargs)
    attn = attn[0] if isinstance(attn, tuple) else attn
    norm = self.post_attention_layernorm
    add_norm = aiter_ops.fused_add_rms_norm if norm.impl == "aiter" else kernels.fused_add_rms_norm
    normed, hidden_states = add_norm(attn, residual, norm.weight, norm.eps, norm.offset)
    return hidden_states + self.mlp(normed)


def swap(model, found, impl="triton", what=("norms", "mlps", "layers")):
    """Apply find_sites()'s result; returns the counts swapped per kind."""
    counts = {"norms": 0, "mlps": 0, "layers": 0}
    if "norms" in what:
        for site in found["norms"]:
            parent, _, name = site["path"].rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            old = getattr(holder, name)
            setattr(holder, name, KernelRMSNorm(old.weight, site["eps"], site["offset"], impl))
            counts["norms"] += 1
    if "mlps" in what:
        for site in found["mlps"]:
            mod = model.get_submodule(site["path"]) if site["path"] else model
            mod._kernel_act, mod._kernel_impl = site["act"], impl
            mod.forward = types.MethodType(_mlp_forward, mod)
            counts["mlps"] += 1
    if "layers" in what and "norms" in what:
        for path in found["layers"]:
            mod = model.get_submodule(path) if path else model
            if isinstance(mod.post_attention_layernorm, KernelRMSNorm):
                mod.forward = types.MethodType(_layer_forward, mod)
                counts["layers"] += 1
    return counts
