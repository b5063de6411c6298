"""Phase 5's few-token attention step: rotary, both cache writes and the query's layout in one launch.

    sites = find_sites(model, args, kwargs)   # Llama-form attention modules whose calls write a few tokens in place
    route(model, sites)                       # their step goes through kernels.rope_append_rows, then attention

A step that appends a few tokens to a preallocated cache (pi0's denoise steps: 11 suffix tokens written after
the prefix, the kv_in_place knob) ran, compiled, the rotary of q, the rotary of k with its write, the write of
v and a copy: four pointwise kernels a layer on 25 KB (H200, pi0 full, 2026-12-02: 1.0-1.2 us each and the gap
before each, 180 layer calls a step). kernels.rope_append_rows does them in one launch and hands back the
rotated queries in the query-major layout the attention function then reads as it is.

Found by what the module is and what its cache does, on one real call: the module is of the Llama form
(decode_kernel.llama_form_why_not: q/k/v/o projections, rotate-half rotary, a cache update), and its cache
says where the tokens go (`append_slots(layer_idx, tokens)` -> (keys, values, start): the buffers the
attention reads and the first slot of the new tokens, or None where it does not write in place). pi0's
KVCache says so in its denoise steps; a call whose cache does not (a prompt filling the cache, transformers'
own caches, batch > 1, more than MAX_TOKENS tokens) runs the module's own forward. The attention function is
the model's own setting (eager, SDPA, phase 2's grouped attention), called as the module calls it.

With the few-query kernel on the same layers (phase 5 routes both), route(..., attention=True) puts the rotary
and the cache writes into that kernel's first launch instead (kernels.rope_few_query_attention): one launch a
layer fewer, 9.10 against 9.73 us a call at pi0's shape (H200, 2026-12-04, benchmarks/few_query_attention.py).
"""
import inspect
import types

from . import grouped_attention

MAX_TOKENS = 16
ATTENTION = "_playbook_rope_attention"     # set by route(attention=True): the rotary goes into the attention's launch


def _store(kwargs):
    return kwargs.get("cache", kwargs.get("past_key_values"))


def find_sites(model, args=(), kwargs=None):
    """{"paths": [path], "left": [{"path", "why"}]}: from one call of model, the Llama-form attention modules
    whose every call appended at most MAX_TOKENS tokens to a cache that writes them in place."""
    import torch

    from .decode_kernel import llama_form_why_not
    calls, handles, left = {}, [], []

    def pre(path):
        def hook(mod, a, kw):
            h = kw.get("hidden_states", a[0] if a else None)
            store = _store(kw)
            slots = getattr(store, "append_slots", None)
            fits = (h is not None and h.shape[0] == 1 and h.shape[1] <= MAX_TOKENS and slots is not None
                    and slots(mod.layer_idx, h.shape[1]) is not None and kw.get("position_embeddings") is not None)
            calls.setdefault(path, []).append(bool(fits))
        return hook

    for path, m in model.named_modules():
        if llama_form_why_not(m) is None:
            handles.append(m.register_forward_pre_hook(pre(path), with_kwargs=True))
    try:
        with torch.no_grad():
            model(*args, **(kwargs or {}))
    finally:
        for h in handles:
            h.remove()
    paths = []
    for path, fits in calls.items():
        if fits and all(fits):
            paths.append(path)
        elif any(fits):
            left.append({"path": path, "why": "some of its calls do not append a few tokens in place (a prompt)"})
    return {"paths": sorted(paths), "left": left}


def _attention_function(module):
    """The attention function the module's config names, as its own forward looks it up."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    impl = module.config._attn_implementation
    if impl != "eager":
        try:
            return ALL_ATTENTION_FUNCTIONS[impl]
        except KeyError:
            pass
    return inspect.getmodule(type(module)).eager_attention_forward


def _rows_forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
    store = _store(kwargs)
    slots = getattr(store, "append_slots", None)
    b, tokens = hidden_states.shape[:2]
    got = (slots(self.layer_idx, tokens) if slots is not None and b == 1 and tokens <= MAX_TOKENS
           and position_embeddings is not None and position_embeddings[0].numel() == tokens * self.head_dim
           else None)
    if got is None:
        return type(self).forward(self, hidden_states, position_embeddings=position_embeddings,
                                  attention_mask=attention_mask, **kwargs)
    from playbook.kernels.rope_append_rows import rope_append_rows
    keys, values, start = got
    cfg, d = self.config, self.head_dim
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    cos, sin = (t.reshape(tokens, d) for t in position_embeddings)
    q = self.q_proj(hidden_states).view(tokens, heads, d)
    k = self.k_proj(hidden_states).view(tokens, kv_heads, d)
    v = self.v_proj(hidden_states).view(tokens, kv_heads, d)
    attend = {k_: v_ for k_, v_ in kwargs.items() if k_ not in ("cache", "past_key_values")}
    if self.__dict__.get(ATTENTION) and cfg._attn_implementation == grouped_attention.FEW_QUERY:
        out = grouped_attention.few_query_rope_forward(self, q, k, v, cos, sin, keys, values, start, attention_mask,
                                                       scaling=self.scaling, **attend)
        if out is not None:
            return self.o_proj(out.reshape(1, tokens, -1)), None
    q = rope_append_rows(q, k, v, cos, sin, keys, values, start, pdl=getattr(self, "_playbook_pdl", False))
    out, weights = _attention_function(self)(self, q.unsqueeze(0).transpose(1, 2), keys, values, attention_mask,
                                             dropout=0.0, scaling=self.scaling, **attend)
    return self.o_proj(out.reshape(1, tokens, -1)), weights


def route(model, paths, attention=False):
    """The modules at paths take their few-token steps through kernels.rope_append_rows; returns their paths.
    attention=True: where a module's attention is the few-query kernel (phase 5's few_query), its rotary and
    cache writes go into that kernel's launches instead (kernels.rope_few_query_attention)."""
    mods = dict(model.named_modules())
    for path in paths:
        mods[path].forward = types.MethodType(_rows_forward, mods[path])
        if attention:
            mods[path].__dict__[ATTENTION] = True
    return list(paths)


def unroute(model):
    """Every routed module back to its class's forward; returns how many."""
    given = 0
    for m in model.modules():
        f = m.__dict__.get("forward")
        if getattr(f, "__func__", None) is _rows_forward:
            del m.__dict__["forward"]
            m.__dict__.pop(ATTENTION, None)
            given += 1
    return given
