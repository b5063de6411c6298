"""What every workload hands the ladder: a module whose forward is the timed step, its inputs, its floors.

    wl = Workload(name="tiny", preset="tiny", model=m, args=(ids, pos), weight_bytes=..., flops=...)
    out = wl.model(*wl.args, **wl.kwargs)
"""
from dataclasses import dataclass, field

import torch


@dataclass
class Workload:
    name: str
    preset: str
    model: torch.nn.Module          # forward(*args, **kwargs) is the timed step
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    weight_bytes: int | None = None  # bytes one step must read at least (the bandwidth floor)
    flops: int | None = None         # floating-point operations of one step (the compute floor)
    description: str = ""
    regions: tuple = ()              # methods ("path.method") compiled one by one with compile scope "regions"
    hot_loop: str = ""               # path of the submodule that runs the hot loop (capture it first), "" if none
    knobs: dict = field(default_factory=dict)   # model knobs the inputs allow: {name: value} (phase 4 offers them)

    def __call__(self, model=None):
        return (model or self.model)(*self.args, **self.kwargs)


def count_weight_bytes(model, skip=()):
    """Bytes of every distinct parameter (tied weights once), less the names in skip (lookup tables)."""
    seen, total = set(), 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in skip or p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def matmul_flops(params, tokens):
    """2 FLOPs per weight per token: the matmul work of a decoder step (attention scores excluded)."""
    return 2 * params * tokens
