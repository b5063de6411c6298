"""The built-in workloads and the user's own model, behind one call.

    wl = build_workload("llama", preset="1b", device=torch.device("cuda"), dtype=torch.bfloat16)
    wl = build_workload("custom", model="mypkg.models:make", device=..., dtype=...)

`tiny` (CPU-sized teaching model), `llama` (Hugging Face LlamaForCausalLM, random weights, one decode
token against a static KV cache) and `custom` (package.module:function returning (model, example_inputs)).
"""
from ..errors import PlaybookError, choose
from . import custom, llama, tiny
from .base import Workload

WORKLOADS = {"tiny": tiny, "llama": llama, "custom": custom}


def presets(name):
    return list(WORKLOADS[name].PRESETS) if hasattr(WORKLOADS[name], "PRESETS") else []


def default_preset(name, device_type):
    """The preset a run picks when none is named: the largest one on a GPU, the smallest on a CPU."""
    names = presets(name)
    if not names:
        return ""
    return names[-1] if device_type == "cuda" else names[0]


def check(name, preset, model):
    """Refuse a bad workload/preset/model combination before anything is built."""
    choose("workload", name, list(WORKLOADS))
    if name == "custom":
        if not model:
            raise PlaybookError("workload 'custom' needs --model package.module:function "
                                "(a function returning (model, example_inputs))")
        custom.load(model)        # import now: a typo fails before anything runs
    elif preset and preset not in presets(name):
        choose(f"preset for workload {name!r}:", preset, presets(name))


def build_workload(name, preset="", model="", device=None, dtype=None, seed=0, weights_via=None) -> Workload:
    """weights_via: round the weights (and floating inputs) through this dtype first; the fp32
    reference of a bf16 run is built with dtype=float32, weights_via=bfloat16."""
    check(name, preset, model)
    if name == "custom":
        return custom.build(model, device, dtype, seed=seed, weights_via=weights_via)
    return WORKLOADS[name].build(preset or default_preset(name, device.type), device, dtype, seed=seed,
                                 weights_via=weights_via)
