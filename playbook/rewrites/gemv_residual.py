"""Phase 5's epilogue fold: a residual add after a routed projection goes into kernels.gemv's epilogue.

    options["post_grad_custom_post_pass"] = chain(options.get(...), residual_pass())   # an Inductor pass
    # in the compiled graph: add(gemv(x, W), r) -> gemv(x, W, residual=r)

A decoder layer adds each block's output to the residual stream (`hidden_states = residual + hidden_states`
after o_proj and after down_proj). Once those projections go through kernels.gemv (an opaque custom op to
Inductor), the add cannot fuse into them, so Inductor fused it with the norm that follows: one more kernel
a block (pi0's denoise steps, H200: `triton_per_fused_add_mean_mul_pow_rsqrt`, 1.4 us plus the gap before
it, 360 a step). The add is found in the graph Inductor compiles, by data flow, after its own passes: an
aten.add whose one operand is a gemv output read by nothing else, with no residual of its own, and whose
other operand has exactly that shape and dtype (no broadcast, no type promotion). The kernel then adds the
residual in fp32 before its one rounding (the unfused pair rounds the projection first: a difference of at
most one rounding, held to the same tolerance). With the add gone, the norm after it is the norm alone,
which rewrites.gemv folds into the next projection's prologue where that projection is routed too.

The pass's uuid is part of Inductor's FX-graph cache key, so graphs compiled with and without it are cached
apart; `chain` keeps a pass already set (phase 2's SDPA backend key) and runs both.
"""
import functools

import torch

VERSION = "1"         # in the pass's uuid, so in the FX-graph cache key: bump it when fold_residuals changes


def _gemv_op():
    import playbook.kernels.gemv  # noqa: F401  (registers playbook::gemv)
    return torch.ops.playbook.gemv.default


def _arguments(node, op):
    """node's arguments by the op's schema names, defaults filled in."""
    names = [a.name for a in op._schema.arguments]
    args = dict(zip(names, node.args))
    for a in op._schema.arguments[len(node.args):]:
        args[a.name] = node.kwargs.get(a.name, a.default_value if a.has_default_value() else None)
    return args


def _val(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def fold_residuals(graph):
    """Rewrite graph (a torch.fx.Graph, in place): each add(gemv(...), r) that qualifies becomes one gemv with
    r as its residual. Returns how many it folded."""
    op = _gemv_op()
    add = torch.ops.aten.add.Tensor
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not add or len(node.args) != 2:
            continue
        if node.kwargs.get("alpha", 1) != 1:
            continue
        for g, r in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
            if not (isinstance(g, torch.fx.Node) and g.op == "call_function" and g.target is op
                    and isinstance(r, torch.fx.Node) and len(g.users) == 1):
                continue
            args = _arguments(g, op)
            gv, rv, out = _val(g), _val(r), _val(node)
            if args["residual"] is not None or gv is None or rv is None or out is None:
                continue
            if rv.shape != gv.shape or rv.dtype != gv.dtype or out.dtype != gv.dtype:
                continue
            args["residual"] = r
            with graph.inserting_before(node):
                new = graph.call_function(op, tuple(args[a.name] for a in op._schema.arguments))
            new.meta.update(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            graph.erase_node(g)
            folded += 1
            break
    return folded


@functools.cache
def _pass_class():
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class ResidualPass(CustomGraphPass):
        """fold_residuals as an Inductor post-grad pass; `folded` counts what it folded."""

        def __init__(self):
            self.folded = 0

        def __call__(self, graph):
            self.folded += fold_residuals(graph)

        def uuid(self):
            return f"playbook-gemv-residual-{VERSION}"

    class Chain(CustomGraphPass):
        def __init__(self, first, second):
            self.first, self.second = first, second

        def __call__(self, graph):
            self.first(graph)
            self.second(graph)

        def uuid(self):
            return f"{self.first.uuid()}+{self.second.uuid()}"
    return ResidualPass, Chain


def residual_pass():
    """An Inductor post-grad pass running fold_residuals; its `.folded` counts what it folded."""
    return _pass_class()[0]()


def chain(first, second):
    """One post-grad pass running first (if any) then second, with both uuids in its own."""
    return second if first is None else _pass_class()[1](first, second)
