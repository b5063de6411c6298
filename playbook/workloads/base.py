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
    weight_bytes: int | None = None  # bytes of weights one step must read at least (the bandwidth floor)
    flops: int | None = None         # floating-point operations of one step (the compute floor)
    kv_bytes: int = 0                # bytes of KV cache a decode step must read (added to the bandwidth floor)
    flops_by: str = ""               # how flops was counted ("FlopCounterMode on the step", or a hand count's why)
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


def count_flops(model, args=(), kwargs=None):
    """FLOPs of one call, counted by torch.utils.flop_counter.FlopCounterMode on the real step (matmuls,
    convolutions and attention; element-wise work is not counted). Returns (flops, flops_by): a step
    the counter cannot run through gets no compute floor, and flops_by says why."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)
    # torch counts the CUDA attention kernels; the CPU's fused SDPA kernel gets the same formula here
    extra = {op: sdpa for name in ("_scaled_dot_product_flash_attention_for_cpu",
                                        "_scaled_dot_product_fused_attention_overrideable")
             if (op := getattr(torch.ops.aten, name, None)) is not None}
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
            model(*args, **(kwargs or {}))
    except Exception as e:       # no compute floor for this model, not a failed workload
        return None, f"not counted: FlopCounterMode failed ({type(e).__name__}: {str(e)[:200]})"
    flops = int(counter.get_total_flops())
    return (flops, "FlopCounterMode on the step") if flops else (None, "not counted: no matmul found")


def counted_flops(wl):
    """(flops, flops_by) of a workload's step: its own count where it has one, else FlopCounterMode's."""
    if wl.flops:
        return wl.flops, wl.flops_by or "hand count"
    return count_flops(wl.model, wl.args, wl.kwargs)
