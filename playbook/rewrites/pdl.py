"""Programmatic Dependent Launch for our kernels in a routed model: phase 6's "pdl" knob, beside Inductor's own.

    counts = mark(model)     # {"gemv": n, "rope_append_rows": n, "few_query": n}: the modules now launching with PDL

Inductor's `triton.enable_pdl` gives its Triton kernels PDL: each launches while the kernel before it runs
and waits (`gdc_wait`) before its first read of that kernel's output. Our kernels take part only when asked
(`pdl=True`): the modules phase 5 routed to kernels.gemv (a projection, a gated MLP's down projection),
kernels.rope_append_rows and kernels.few_query_attention read `_playbook_pdl` when they call them, and mark()
sets it on each. Each of our kernels waits for the kernel before it before it reads what that wrote and lets
the next launch after, so every PDL kernel has waited for its predecessor before its successor starts, and a
kernel that reads an output from two kernels back reads it complete. cuBLAS's kernels launch without PDL:
they wait for the whole kernel before, as every plain launch does.

On pi0's denoise loop (a layer: norm, q/k/v, rotary, the two few-query launches, o, norm, gate+up, the
activation, down; 180 a step) eight of ten kernels are Inductor's or ours, 1-7 us each with a gap before each.
"""
ATTR = "_playbook_pdl"


def mark(model):
    """Set PDL on every module a rewrite routed to our kernels; returns how many of each."""
    from . import grouped_attention, rope_append_rows
    counts = {"gemv": 0, "rope_append_rows": 0, "few_query": 0}
    for mod in model.modules():
        own = mod.__dict__
        if "_playbook_norm" in own:                                  # a projection routed to kernels.gemv
            counts["gemv"] += _set(mod)
        if "_playbook_act" in own and hasattr(mod, "down_proj"):     # a gated MLP's down projection through it
            counts["gemv"] += "_playbook_norm" not in mod.down_proj.__dict__ and _set(mod.down_proj)
        if getattr(own.get("forward"), "__func__", None) is rope_append_rows._rows_forward:
            counts["rope_append_rows"] += _set(mod)
        config = getattr(mod, "config", None)
        if hasattr(mod, "layer_idx") and getattr(config, "_attn_implementation", None) == grouped_attention.FEW_QUERY:
            counts["few_query"] += _set(mod)       # the module few_query_forward is handed
    return counts


def _set(mod):
    mod.__dict__[ATTR] = True
    return 1
