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

    fusable = rope_append_sites(model)     # attention modules of the Llama form (below)
    route_rope_append(model, fusable)      # their decode step: one launch for rotary, cache write, attention

An attention module of the Llama form (q_proj, k_proj, v_proj, o_proj; its forward applies the module's
apply_rotary_pos_emb to q and k, then writes them with the cache's update (past_key_values or cache); no q/k norm, no sliding
window, no soft-capping; the rotary function computes rotate-half, checked on numbers) can hand its whole
decode step to kernels.decode_attention_rope_append: the projections' raw outputs, the step's cos and
sin, and the StaticCache layer's tensors and counter go in, and one launch rotates, writes both caches
and attends. Without it, a layer's decode launched the rotary of q, the rotary of k with its write, the
write of v, the length, the split-KV kernel and its combine. Any other call (a prompt, batch > 1, a
dynamic or sliding cache layer, partial rotary) runs the module's own forward.
"""
import functools
import inspect
import types

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
    from playbook.kernels.decode_attention import decode_attention_filled
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


# what a Llama-form attention forward says: it rotates q and k with its module's function, then writes the cache
_ROPE_CALL = "apply_rotary_pos_emb(query_states, key_states, cos, sin)"
_UPDATE_CALLS = ("past_key_values.update(key_states, value_states, self.layer_idx",     # older transformers (5.17)
                 "cache.update(key_states, value_states, self.layer_idx")                # recent ones (5.24)
_NOT_TAKEN = ("q_norm", "k_norm", "sinks", "softcap")


def llama_form_why_not(module):
    """None when module is a Llama-form attention (q/k/v/o projections, rotate-half rotary applied by its
    module's apply_rotary_pos_emb, then a cache update; no q/k norm, sinks, soft-capping or sliding window; a
    power-of-two head size), else why not. What a rewrite that rotates q and k itself can take."""
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "layer_idx", "scaling", "config")
    if not all(hasattr(module, n) for n in names):
        return "not a Llama-form attention module"
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return "its forward's source cannot be read"
    if (_ROPE_CALL not in source or not any(c in source for c in _UPDATE_CALLS)
            or any(w in source for w in _NOT_TAKEN)):
        return "its forward is not the Llama form"
    cfg, d = module.config, module.head_dim
    sliding = (getattr(module, "sliding_window", None) or "sliding_attention" in (getattr(cfg, "layer_types", None) or ())
               or (getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True)))
    if sliding or getattr(cfg, "attn_logit_softcapping", None):
        return "sliding window (its cache layers are sliding) or soft-capping"
    if d & (d - 1) or cfg.num_attention_heads % cfg.num_key_value_heads:
        return "head size not a power of two, or heads not a multiple of the KV heads"
    rope = getattr(inspect.getmodule(type(module)), "apply_rotary_pos_emb", None)
    return None if rope is not None and _rotates_half(rope, d) else "its rotary function is not rotate-half"


def _why_not_fusable(module):
    """None when module is a Llama-form attention the one-launch decode kernel can take, else why not."""
    why = llama_form_why_not(module)
    if why is None and not _counted_static_layers():
        return "this transformers' static cache layers write at cache_position, not at a counter of their own"
    return why


@functools.cache
def _counted_static_layers():
    """Whether this transformers' StaticLayer writes at a position counter of its own (a tensor), which the
    one-launch forward reads and advances as the layer's update() does."""
    try:
        from transformers.cache_utils import StaticLayer
        return isinstance(getattr(StaticLayer(max_cache_len=1), "cumulative_length", None), torch.Tensor)
    except Exception:  # noqa: BLE001  (an older or newer cache design: the one-launch forward is not offered)
        return False


def _rotates_half(rope, d):
    """Whether rope(q, k, cos, sin) is q*cos + rotate_half(q)*sin (and so for k), on random numbers."""
    from playbook.kernels.reference import rotate_half
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 1, d, generator=g), torch.randn(1, 1, 1, d, generator=g)
    cos, sin = torch.randn(1, 1, d, generator=g), torch.randn(1, 1, d, generator=g)
    try:
        got_q, got_k = rope(q, k, cos, sin)
    except Exception:  # noqa: BLE001  (another signature: not the form the kernel computes)
        return False
    want = [x * cos[:, None] + rotate_half(x) * sin[:, None] for x in (q, k)]
    return all(torch.allclose(a, b, atol=1e-5) for a, b in zip((got_q, got_k), want))


def rope_append_sites(model):
    """Paths of the attention modules in model whose decode step the one-launch kernel can take."""
    return [path for path, m in model.named_modules() if _why_not_fusable(m) is None]


def _static_layer(cache, idx):
    """The cache layer the module writes, when it is a static (not sliding) layer already allocated, with its
    own position counter (recent transformers); else None."""
    layers = getattr(cache, "layers", None)
    layer = layers[idx] if layers is not None and idx < len(layers) else None
    if (layer is None or getattr(layer, "is_sliding", False) or not getattr(layer, "is_initialized", False)
            or not isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)
            or getattr(layer, "keys", None) is None):
        return None
    return layer


def _one_launch_forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None,
                        cache=None, **kwargs):
    """A Llama-form attention's forward whose decode step is kernels.decode_attention_rope_append. Its cache comes
    as `cache` (recent transformers) or `past_key_values` (older ones), and goes on to the module's own forward so."""
    given = {"cache": cache} if cache is not None else {"past_key_values": past_key_values}
    layer = _static_layer(cache if cache is not None else past_key_values, self.layer_idx)
    cos, sin = position_embeddings if position_embeddings is not None else (None, None)
    if (layer is None or cos is None or hidden_states.shape[0] != 1 or hidden_states.shape[1] != 1
            or cos.shape[-1] != self.head_dim or cos.numel() != self.head_dim):
        return type(self).forward(self, hidden_states, position_embeddings=position_embeddings,
                                  attention_mask=attention_mask, **given, **kwargs)
    from playbook.kernels.decode_attention import decode_attention_rope_append
    q, k, v = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
    out = decode_attention_rope_append(q, k, v, cos, sin, layer.keys, layer.values, layer.cumulative_length,
                                       scale=self.scaling)
    layer.cumulative_length.add_(1)          # as the cache layer's own update() counts
    return self.o_proj(out.reshape(1, 1, -1)), None


def route_rope_append(model, only=None):
    """The Llama-form attention modules of model (those at paths in `only`, when given) take their decode step
    in one launch; returns their paths."""
    done = []
    for path, m in model.named_modules():
        if (only is None or path in only) and _why_not_fusable(m) is None:
            m.forward = types.MethodType(_one_launch_forward, m)
            done.append(path)
    return done
