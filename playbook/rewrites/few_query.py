"""Phase 5's few-query attention: where the kept recipe runs grouped attention, its calls of a few queries over a
longer K/V (a denoise step's suffix, a verify window) timed through kernels.few_query_attention against the
compiled grouped math they run now, before anything is built.

    calls = record_calls(model, args, kwargs, paths)   # [{path, q, k, v, mask, scaling, softcap}], one a shape
    table = time_calls(calls, device)                  # [{path, queries, slots, heads, kv_heads, head_dim, mask,
                                                       #   kernel_us, math_us}]
    paths = winners(table)                             # the models whose every few-query shape the kernel won
    grouped_attention.route(model, paths, few_query=True)

A model's calls are recorded by running one step with transformers' attention function for grouped attention
swapped for a recorder that passes each call on; a call is a few-query one by grouped_attention.few_query_calls'
rule (1 to MAX_QUERIES queries over more slots) and the kernel's own `takes`. Each distinct shape is timed as
CALLS calls in one CUDA graph, each over its own copy of the K/V (one a layer, as in the step), kernel and
math replayed side by side; the math is grouped_attention_forward under torch.compile, as the kept recipe
compiles it. GPU only: on a CPU the kernel runs in Triton's interpreter, whose time is not a speed.
"""
import torch

from . import grouped_attention

CALLS = 18              # calls of one shape in a timed graph, each over its own K/V (one a layer)
MARGIN = 0.05           # the kernel must beat the math by this much at every shape of a model
# NOTE: at pi0 full's denoise shape (11 queries, 8 heads of 256 over one K/V head, 827 slots, the boolean
# suffix mask) the kernel in 16-row tiles took 7.9 us against 11.1 for the compiled math alone (H200,
# 2026-12-03, benchmarks/results/few-query-attention/); inside the step 4.86 + 3.05 us for its two launches
# against 3.64 + 2.98 + 1.80 for the math's three, and pi0 full's recipe with the rotary fold went 16.587 ->
# 16.481 ms with it (benchmarks/results/pi0-attention/): the margin keeps a shape that only ties.


def record_calls(model, args, kwargs, paths):
    """One step of model with the grouped attention of the HF models at paths recording its calls: the first
    call of each distinct few-query shape, with its tensors (detached) and the site's path."""
    from transformers import AttentionInterface

    from playbook.kernels.few_query_attention import takes
    grouped_attention.register()
    owner = {}
    for name, mod in model.named_modules():
        site = max((p for p in paths if p == "" or name == p or name.startswith(p + ".")), key=len, default=None)
        if site is not None:
            owner[id(mod)] = site
    seen, out = set(), []

    def recorder(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kw):
        mask = None if attention_mask is None else attention_mask[..., :key.shape[2]]
        few = grouped_attention.few_query_calls([((query, key), {})])
        if few and id(module) in owner and takes(query, key, mask) is None:
            shape = (owner[id(module)], tuple(query.shape), tuple(key.shape),
                     None if mask is None else (tuple(mask.shape), str(mask.dtype)), scaling, softcap)
            if shape not in seen:
                seen.add(shape)
                out.append({"path": owner[id(module)], "q": query.detach().clone(), "k": key.detach().clone(),
                            "v": value.detach().clone(), "mask": None if mask is None else mask.detach().clone(),
                            "scaling": scaling, "softcap": softcap})
        return grouped_attention.grouped_attention_forward(module, query, key, value, attention_mask,
                                                           scaling=scaling, dropout=dropout, softcap=softcap, **kw)
    AttentionInterface.register(grouped_attention.NAME, recorder)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        AttentionInterface.register(grouped_attention.NAME, grouped_attention.grouped_attention_forward)
    return out


def describe(call):
    q, k, mask = call["q"], call["k"], call["mask"]
    return {"path": call["path"], "queries": q.shape[2], "slots": k.shape[2], "heads": q.shape[1],
            "kv_heads": k.shape[1], "head_dim": q.shape[3],
            "mask": None if mask is None else ("boolean" if mask.dtype == torch.bool else "additive")}


def time_calls(calls, device, iters=15):
    """[describe(call) + {kernel_us, math_us}] for each recorded call (GPU)."""
    from playbook.kernels.few_query_attention import few_query_attention

    from .. import bench
    from ..quiet import quiet
    rows = []
    with quiet():
        for c in calls:
            q, mask, scaling, softcap = c["q"], c["mask"], c["scaling"], c["softcap"]
            kvs = [(c["k"].clone(), c["v"].clone()) for _ in range(CALLS)]
            math = torch.compile(lambda q, k, v, m: grouped_attention.grouped_attention_forward(
                None, q, k, v, m, scaling=scaling, softcap=softcap)[0], dynamic=False)
            sides = {"kernel": lambda k, v: few_query_attention(q, k, v, mask, scale=scaling, softcap=softcap),
                     "math": lambda k, v: math(q, k, v, mask)}
            us = bench.graphs_side_by_side({name: lambda f=f: [f(k, v) for k, v in kvs] for name, f in sides.items()},
                                           CALLS, device, iters=iters)
            rows.append({**describe(c), "kernel_us": us["kernel"], "math_us": us["math"]})
    return rows


def winners(table, margin=MARGIN):
    """The paths whose every timed shape the kernel won by more than margin, sorted."""
    paths = {r["path"] for r in table}
    return sorted(p for p in paths
                  if all(r["kernel_us"] < r["math_us"] * (1 - margin) for r in table if r["path"] == p))
