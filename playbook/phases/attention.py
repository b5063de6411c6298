"""Phase 2 `attention`: every attention through F.scaled_dot_product_attention, on the backend that measures fastest.

Hugging Face models are switched with their own attention-implementation setting; eager
matmul-softmax-matmul attention (the `tiny` workload's, or a user's module) is rewritten by FX with the
model's real mask and scale (playbook/rewrites/attention.py). The SDPA calls of one step are recorded
and timed on every backend the device has (flash, memory-efficient, cuDNN, math); the fastest is tried
as a forced backend beside torch's own pick. A Hugging Face decode step over a static cache is also
offered our split-KV kernel that reads only the filled slots (playbook/rewrites/decode_kernel.py); where
its attention modules are of the Llama form, their rotary embedding and cache write go into the same launch.
A Hugging Face model on eager attention with fewer K/V heads than query heads (GQA, MQA) is offered
grouped attention first: eager's math with each group's query heads folded into the rows, so no K/V
head is copied per query head (playbook/rewrites/grouped_attention.py); it takes any explicit mask,
which SDPA's own GQA path does not. The model's other attention (pi0's vision tower) goes to SDPA in the
same candidate, offered first, and grouped attention alone after it. Grouped attention's calls of a few
queries over a longer K/V (pi0's denoise steps) can go to a Triton kernel (kernels.few_query_attention);
phase 5 times it against the compiled grouped math at the step's own shapes and offers it where it wins
(the phase JSON here names the calls it would take).
Correctness is gated against the baseline as always.
"""
from ..rewrites import attention, count_ops, decode_kernel, grouped_attention
from . import Skip
from .kernels import triton_here

NUMBER = 2
NAME = "attention"
WHAT = "attention through SDPA (HF switch or FX rewrite of eager attention), backend picked by measuring"
KEEP_IF = "not_slower"
FORCE_IF_FASTER = 0.05        # force the measured-best backend only when it beats torch's pick by 5%
# NOTE: grouped attention with its few-query calls through kernels.few_query_attention is not a candidate here:
# whether the kernel beats the compiled math depends on the shape (at pi0 full's denoise shape its first design
# lost, 12.6 against 11.0 us a call, and its second won, 7.9 against 11.1: H200, 2026-12-01 and 2026-12-03,
# benchmarks/results/few-query-attention/), so phase 5 times both at the step's own calls before it builds
# (rewrites.few_query), after the kernels that phase folds around them. A recipe may still ask for it here
# (attention {"few_query": true}).


CHOICES = {"sdpa": "attention through SDPA, torch picks the backend",
           "sdpa + measured backend": "attention through SDPA, forced to the backend measured fastest here",
           "decode kernel": "a Hugging Face decode step's attention reads only the filled cache slots "
                            "(playbook/kernels/decode_attention.py, split-KV, the count as a tensor)",
           "decode kernel, one launch a layer": "the decode kernel, and each Llama-form attention's rotary embedding "
                                                "and cache write in the same launch "
                                                "(kernels.decode_attention_rope_append)",
           "grouped attention": "a Hugging Face GQA model's eager attention with each group's query heads "
                                "folded into the rows: one product per K/V head, no K/V copies, any mask",
           "grouped attention, few-query kernel": "grouped attention, and each call of 1 to 16 queries over a longer "
                                                  "K/V in one launch (kernels.few_query_attention: the scores, "
                                                  "mask, softmax and values' product)",
           "grouped attention + sdpa": "grouped attention for the GQA models it takes, and the model's other "
                                       "attention through SDPA (torch picks the backend)"}
CHOICES["grouped attention + sdpa, few-query kernel"] = (CHOICES["grouped attention + sdpa"] + "; the few-query calls "
                                                         "through kernels.few_query_attention")


def label(knobs):
    if knobs.get("grouped"):
        route = knobs.get("route") or {}
        name = "grouped attention + sdpa" if route.get("hf") or route.get("rewrite") else "grouped attention"
        return f"{name}, few-query kernel" if knobs.get("few_query") else name
    if knobs.get("decode_kernel"):
        return "decode kernel, one launch a layer" if knobs.get("rope_append") else "decode kernel"
    return "sdpa + measured backend" if knobs.get("sdpa_backend") else "sdpa"


def candidates(ctx):
    pipe = ctx.fresh_pipeline()
    wl, model = pipe.workload, pipe.workload.model
    before = count_ops(model, wl.args, wl.kwargs)
    grouped = grouped_attention.find_sites(model)         # before the switch to SDPA below
    hf = attention.route_hf(model)
    rewritten = attention.rewrite_eager(model)
    after = count_ops(model, wl.args, wl.kwargs)
    calls = attention.record_sdpa_calls(model, wl.args, wl.kwargs)
    shapes = {}
    for c in calls:
        d = attention.describe_call(c)
        shapes.setdefault(str(d), dict(d, count=0))["count"] += 1
    ctx.info.update(attention_sites={"hf": hf, "rewritten": rewritten}, sdpa_calls=list(shapes.values()),
                    gemm_launches={"before": before, "after": after})
    if ctx.vendor == "rocm":
        from ..rewrites.aiter_ops import flash_available
        ctx.info["notes_rocm"] = (("aiter flash attention measured as backend 'aiter' (it takes the calls with no "
                                   "explicit mask; a KV-cache decode passes one) " if flash_available() else
                                   "aiter not installed: its flash attention not offered (pip install amd-aiter); ")
                                  + "unverified on hardware here")
    refused = [f"{h['path'] or 'the model'} stays on {h['was']} attention: {h['why']}" for h in hf if h.get("why")]
    if refused:
        ctx.info["sdpa_refused"] = refused
    if not calls and refused and not grouped:
        raise Skip("; ".join(refused) + "; no other attention to route")
    if not calls and not grouped:
        raise Skip("no attention found: no Hugging Face attention switch, no eager matmul -> softmax -> matmul "
                   "that FX can trace, and no scaled_dot_product_attention call in the step")
    table = attention.measure_backends(calls, pipe.device) if calls else []
    if table:
        ctx.info["sdpa_backends"] = table
    # A model grouped attention takes is not also routed to SDPA: with an explicit mask HF copies its K/V per
    # query head for SDPA, which grouped attention exists to avoid (pi0 full, H200, 2026-11-23: SDPA for all
    # three models 37.0 ms, grouped 24.1, the recipe before them 26.1; the SDPA build cost 73 s).
    taken = [g["path"] for g in grouped]
    route = {"hf": [h["path"] for h in hf if h["was"] != "sdpa" and h["now"] == "sdpa" and h["path"] not in taken],
             "rewrite": rewritten}
    default = next((r for r in table if r["backend"] == "default"), None)
    best = next((r for r in table if r["ok"] and r["backend"] != "default"), None)
    force = (best is not None and default is not None and default["ok"]
             and best["us"] < default["us"] * (1 - FORCE_IF_FASTER))
    if default is not None:
        ctx.info["sdpa_backend_choice"] = (
            f"{best['backend']}: {best['us']} us against torch's pick {default['us']} us" if force else
            f"torch's own pick ({default['us']} us); the best forced backend "
            f"({best['backend'] if best else 'none'}) was not {FORCE_IF_FASTER:.0%} faster")
    if force and attention.torch_picks(calls) == {best["backend"]}:
        # NOTE: on the 2-core CPU the tiny model's table put forced flash 15-45% ahead of torch's pick, which is
        # flash itself: timing noise, and the build it bought cost 5-6 s of a cold ladder (2026-11-23).
        force = False
        ctx.info["sdpa_backend_choice"] = (f"torch's own pick, {best['backend']} for every call already: forcing it "
                                           f"changes nothing (its {best['us']} us against {default['us']} us "
                                           "is timing noise); not built")
    out = []
    if grouped:
        # NOTE: first, because on pi0 full (H200, 2026-11-23) eager attention's per-head products of the action
        # expert (8 query heads over one K/V head, 11 queries against 827 slots) took 4.5 ms of the eager step
        # and 3.0 ms of the compiled one, while routing every model to SDPA was 1.5x slower than the eager
        # recipe (2026-11-22: 35.97 ms against 24.22): with pi0's explicit masks HF copies K/V per head for SDPA.
        # NOTE: the models grouped attention does not take (no GQA: pi0's vision tower) go to SDPA in the same build,
        # first: their calls carry no K/V to copy. On pi0 full (H200, 2026-12-03, benchmarks/results/pi0-vision/)
        # the recipe with its vision tower on SDPA measured 15.86 ms beside the same recipe on eager's math for it,
        # 16.35 ms (27 layers of two products, a softmax and three layout copies became one SDPA kernel each:
        # 2698 -> 2536 kernels a step); that ladder's budget had built grouped attention alone only.
        if route["hf"] or route["rewrite"]:
            out.append({"route": route, "sdpa_backend": None, "grouped": taken})
        out.append({"route": {"hf": [], "rewrite": []}, "sdpa_backend": None, "grouped": taken})
        ctx.info["grouped_attention"] = grouped
        few = grouped_attention.few_query_calls(calls)
        if few:
            q, k = few[0][0][0].shape, few[0][0][1].shape
            ctx.info["few_query"] = (
                f"{len(few)} of {len(calls)} attention calls a step are {q[2]} queries over {k[2]} slots, "
                f"kernels.few_query_attention's case: phase 5 times it against the compiled grouped math there "
                f"and offers it where it wins")
    if route["hf"] or route["rewrite"]:
        out.append({"route": route, "sdpa_backend": None})
    if force:
        out.append({"route": route, "sdpa_backend": best["backend"]})
    sites = decode_kernel.decode_sites(model, calls)
    why = triton_here(pipe.device)
    if sites and not why:
        # NOTE: one candidate, not two: where the attention modules are of the Llama form, their rotary embedding
        # and cache write go into the decode kernel's launch (five launches fewer a layer), which is the decode
        # kernel with less around it; a second build would cost llama 1b's ladder about 15 s.
        fused = decode_kernel.rope_append_sites(model)
        out.append({"route": route, "sdpa_backend": None, "decode_kernel": True,
                    **({"rope_append": fused} if fused else {})})
        ctx.info["decode_kernel"] = (f"offered for {len(sites)} Hugging Face model(s): every attention call is one "
                                     f"query over a {calls[0][0][1].shape[2]}-slot cache"
                                     + (f"; {len(fused)} attention module(s) of the Llama form also rotate and "
                                        "write the cache in its launch" if fused else ""))
    elif sites:
        ctx.info["decode_kernel"] = f"not offered: {why}"
    if not out:
        raise Skip("attention already runs through SDPA and torch's own backend pick measured as fast as any "
                   "forced backend: nothing to change")
    return out


def apply(pipe, knobs):
    model, route = pipe.workload.model, knobs.get("route", {})
    if route.get("hf"):
        attention.route_hf(model, only=set(route["hf"]))
    if route.get("rewrite"):
        done = attention.rewrite_eager(model, only=set(route["rewrite"]))
        if sorted(done) != sorted(route["rewrite"]):
            raise RuntimeError(f"attention rewrite found {done}; the recipe recorded {route['rewrite']}")
    if knobs.get("grouped"):
        done = grouped_attention.route(model, set(knobs["grouped"]), few_query=bool(knobs.get("few_query")))
        if sorted(d["path"] for d in done) != sorted(knobs["grouped"]):
            raise RuntimeError(f"grouped attention found {[d['path'] for d in done]}; the recipe recorded "
                               f"{knobs['grouped']}")
    if knobs.get("decode_kernel"):
        pipe.info["decode_kernel"] = decode_kernel.route(model)
    if knobs.get("rope_append"):
        done = decode_kernel.route_rope_append(model, set(knobs["rope_append"]))
        if sorted(done) != sorted(knobs["rope_append"]):
            raise RuntimeError(f"the one-launch decode found {done}; the recipe recorded {knobs['rope_append']}")
        pipe.info["rope_append"] = done
    pipe.sdpa_backend = knobs.get("sdpa_backend")
    if pipe.sdpa_backend:
        pipe.notes.append(f"SDPA backend forced: {pipe.sdpa_backend} (calls it cannot take fall back to "
                          "torch's other backends)")
        # the FX-graph cache's key must tell graphs traced under different backends apart
        pipe.inductor["post_grad_custom_post_pass"] = attention.backend_cache_key(pipe.sdpa_backend)
