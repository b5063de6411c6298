"""Phase 4 `fusion`: sibling projections (Q/K/V, gate/up) become one GEMM each.

At batch 1 a projection is a matrix-vector product bound by reading its weight; three small GEMMs cost
three launches and three partial waves where one wider GEMM costs one. Siblings are found by Hugging
Face names and, for any other model, by data flow (nn.Linear modules fed the same tensor); the
concatenated weight replaces the originals, so weight memory does not grow (playbook/rewrites/fusion.py).
"""
from ..rewrites import count_ops, fusion
from . import Skip

NUMBER = 4
NAME = "fusion"
WHAT = "fuse sibling projections (Q/K/V, gate/up) into one GEMM each"
KEEP_IF = "not_slower"


def candidates(ctx):
    pipe = ctx.fresh_pipeline()
    wl, model = pipe.workload, pipe.workload.model
    groups = fusion.find_siblings(model, wl.args, wl.kwargs)
    if not groups:
        raise Skip("no sibling projections found: no nn.Linear modules that read the same tensor")
    before, bytes_before = count_ops(model, wl.args, wl.kwargs), fusion.param_bytes(model)
    fusion.fuse(model, groups)
    after, bytes_after = count_ops(model, wl.args, wl.kwargs), fusion.param_bytes(model)
    ctx.info.update(groups=[g.as_dict() for g in groups],
                    gemm_launches={"before": before["gemm"], "after": after["gemm"],
                                   "saved": before["gemm"] - after["gemm"]},
                    weight_bytes={"before": bytes_before, "after": bytes_after})
    return [{"groups": [g.as_dict() for g in groups]}]


def apply(pipe, knobs):
    fusion.fuse(pipe.workload.model, [fusion.Group(**g) for g in knobs["groups"]])
