"""Phase 4 `fusion`: sibling projections (Q/K/V, gate/up) become one GEMM each.

At batch 1 a projection is a matrix-vector product bound by reading its weight; three small GEMMs cost
three launches and three partial waves where one wider GEMM costs one. Siblings are found by Hugging
Face names and, for any other model, by data flow (nn.Linear modules fed the same tensor); the
concatenated weight replaces the originals, so weight memory does not grow (playbook/rewrites/fusion.py).

A workload may also offer model knobs its inputs allow (pi0: skip the cameras whose mask is all false,
which drops their vision-tower call and their prefix tokens; run the cameras' vision tower as one batch;
write each denoise step's K/V into room left after the prefix's instead of concatenating them).
They are tried with the fusion, as one more candidate, first; like every candidate, it must give the same
outputs as the untouched model. The fusion alone is built only when that candidate is not correct.
"""
from ..rewrites import count_ops, fusion
from ..workloads import set_knob
from . import Skip

NUMBER = 4
NAME = "fusion"
WHAT = "fuse sibling projections (Q/K/V, gate/up) into one GEMM each"
KEEP_IF = "not_slower"
# NOTE: the candidates are nested: the one with the workload's knobs holds the fusion alone, so the fusion alone
# is built only when that one is not correct. On pi0 full (H200) the one with the knobs won every time (17.87 vs
# 19.69 ms on 2026-11-23, 20.92 vs 22.71 on 2026-12-01), and building the fusion alone cost 35-50 s of compile.
NESTED = True


CHOICES = {"fuse projections": "Q/K/V and gate/up projections fused into one GEMM each",
           "fuse projections + model knobs": "Q/K/V and gate/up fused, plus the workload's own knobs "
                                             "(pi0: skip masked cameras, batch the cameras, write the denoise K/V in place)"}


def label(knobs):
    return "fuse projections + model knobs" if knobs.get("model_knobs") else "fuse projections"


def candidates(ctx):
    pipe = ctx.fresh_pipeline()
    wl, model = pipe.workload, pipe.workload.model
    groups = fusion.find_siblings(model, wl.args, wl.kwargs)
    if wl.knobs:
        ctx.info["model_knobs_offered"] = dict(wl.knobs)
    if not groups and not wl.knobs:
        raise Skip("no sibling projections found: no nn.Linear modules that read the same tensor")
    if groups:
        before, bytes_before = count_ops(model, wl.args, wl.kwargs), fusion.param_bytes(model)
        fusion.fuse(model, groups)
        after, bytes_after = count_ops(model, wl.args, wl.kwargs), fusion.param_bytes(model)
        ctx.info.update(groups=[g.as_dict() for g in groups],
                        gemm_launches={"before": before["gemm"], "after": after["gemm"],
                                       "saved": before["gemm"] - after["gemm"]},
                        weight_bytes={"before": bytes_before, "after": bytes_after})
    fused = {"groups": [g.as_dict() for g in groups]}
    # The workload's knobs drop or batch work its inputs allow, so that candidate goes first: under a time
    # budget (pi0 full: about 75 s a build) it is the one built.
    return ([dict(fused, model_knobs=dict(wl.knobs))] if wl.knobs else []) + ([fused] if groups else [])


def apply(pipe, knobs):
    fusion.fuse(pipe.workload.model, [fusion.Group(**g) for g in knobs["groups"]])
    for name, value in (knobs.get("model_knobs") or {}).items():
        set_knob(pipe.workload, name, value)
        pipe.notes.append(f"model knob {name}={value}: {pipe.workload.name}'s own option, checked like any rewrite")
