"""Phase 2's decode kernel: a Hugging Face model's decode attention reads only the filled part of its cache.

    found = decode_sites(model, calls)     # HF models whose recorded SDPA calls are one query over a cache
    route(model)                           # their attention goes through kernels.decode_attention_filled

A StaticCache hands attention the whole cache: a decode token at position 128 of a 1024-slot cache makes
SDPA read 1024 slots, 896 of them never written, in every layer. The kernel takes the filled count as a
tensor on the device (position + 1, from the position ids HF passes down), so the grid is fixed by the
cache size and a captured CUDA graph replays at every position; each split-KV program loads only filled
slots. Registered with transformers' AttentionInterface as "playbook_decode"; any call it does not take
(a prompt, batch > 1, a sliding-window layer, logit soft-capping, a head size that is not a power of two)
goes to transformers' own SDPA path with its usual mask.
"""
import torch

NAME = "playbook_decode"


def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward


def takes(module, query, key, sliding_window, kwargs):
    """Whether the kernel takes this call: one query token at batch 1 over a cache, position ids known."""
    d = query.shape[-1]
    softcap = getattr(getattr(module, "config", None), "attn_logit_softcapping", None)
    return (query.shape[0] == 1 and query.shape[2] == 1 and key.shape[2] > 1 and not sliding_window
            and not softcap and d & (d - 1) == 0 and kwargs.get("position_ids") is not None
            and query.shape[1] % key.shape[1] == 0)


def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None, **kwargs):
    """transformers' attention-function signature: query [B, H, q, D], key/value [B, KVH, N, D]; returns
    ([B, q, H, D], None)."""
    if not takes(module, query, key, sliding_window, kwargs):
        return _sdpa()(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                       sliding_window=sliding_window, **kwargs)
    from kernels.decode_attention import decode_attention_filled
    length = (kwargs["position_ids"].reshape(-1)[-1:] + 1).to(torch.int32)   # slots 0..position are filled
    out = decode_attention_filled(query[:, :, 0], key, value, length, scale=scaling)
    return out.unsqueeze(1), None


def register():
    """Make "playbook_decode" an attention implementation transformers accepts, with SDPA's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    AttentionInterface.register(NAME, forward)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def decode_sites(model, calls):
    """Paths of the HF models inside model whose step is a decode over a cache (every recorded SDPA call is
    at batch 1 with more keys than queries: transformers folds a GQA group into the query length, so one
    token can show as several); [] when there is none."""
    from .attention import hf_models
    if not calls or not all(c[0][0].shape[0] == 1 and c[0][1].shape[2] > c[0][0].shape[2] for c in calls):
        return []
    return [path for path, _ in hf_models(model)]


def route(model):
    """Every HF model inside model to the decode kernel; returns their paths."""
    from .attention import hf_models, set_attn_implementation
    register()
    done = []
    for path, m in hf_models(model):
        set_attn_implementation(m, NAME)
        if m.config._attn_implementation != NAME:
            raise RuntimeError(f"{type(m).__name__} did not take attention implementation {NAME!r}")
        done.append(path)
    return done
