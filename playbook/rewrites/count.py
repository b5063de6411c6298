"""Count what one eager call of a model dispatches: GEMMs (mm/addmm), batched matmuls, attention calls.

    counts = count_ops(model, args, kwargs)    # {"gemm": 113, "bmm": 0, "sdpa": 16, "ops": 1450}

Counted below autograd with a TorchDispatchMode, so an nn.Linear is one GEMM whatever its module, and a
fused Q/K/V projection is one. These are GEMM launches per step as eager torch issues them.
"""
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
GEMM = {aten.mm, aten.addmm, aten._scaled_mm} if hasattr(aten, "_scaled_mm") else {aten.mm, aten.addmm}
BMM = {aten.bmm, aten.baddbmm}


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket] += 1
        return func(*args, **(kwargs or {}))


def count_ops(model, args, kwargs=None):
    counter = _Counter()
    with torch.no_grad(), counter:
        model(*args, **(kwargs or {}))
    ops = counter.ops
    return {"gemm": sum(n for op, n in ops.items() if op in GEMM),
            "bmm": sum(n for op, n in ops.items() if op in BMM),
            "sdpa": sum(n for op, n in ops.items() if "scaled_dot_product" in str(op)),
            "ops": sum(ops.values())}
