"""The built-in workloads and the user's own model, behind one call.

    wl = build_workload("llama", preset="1b", device=torch.device("cuda"), dtype=torch.bfloat16)
    wl = build_workload("custom", model="mypkg.models:make", device=..., dtype=...)
    wl = build_workload("hf", model="./my-qwen", options={"step": "decode"}, device=..., dtype=...)

    wl = build_workload("pi0", preset="full", options={"cameras": 3, "action_horizon": 10}, device=..., dtype=...)

`tiny` (CPU-sized teaching model), `llama` (Hugging Face LlamaForCausalLM, random weights, one decode
token against a static KV cache), `pi0` (the vision-language-action policy, one whole inference), `hf`
(any Hugging Face model: a checkpoint folder or a model type, decode/prefill/forward) and `custom`
(package.module:function returning (model, example_inputs)). Options are workload-specific.
"""
from ..errors import PlaybookError, choose
from . import custom, hf, llama, pi0, tiny
from .base import Workload

WORKLOADS = {"tiny": tiny, "llama": llama, "pi0": pi0, "hf": hf, "custom": custom}
NEEDS_MODEL = ("custom", "hf")


def presets(name):
    return list(WORKLOADS[name].PRESETS) if hasattr(WORKLOADS[name], "PRESETS") else []


def default_preset(name, device_type, model=""):
    """The preset a run picks when none is named: the largest one on a GPU, the smallest on a CPU (hf:
    "checkpoint" for a checkpoint folder, "small" on a GPU, "tiny" on a CPU)."""
    if name == "hf":
        return hf.default_preset(model, device_type)
    names = presets(name)
    if not names:
        return ""
    return names[-1] if device_type == "cuda" else names[0]


def check(name, preset, model, options=None):
    """Refuse a bad workload/preset/model/options combination before anything is built; returns the
    options with the workload's defaults filled in."""
    choose("workload", name, list(WORKLOADS))
    options = dict(options or {})
    if hasattr(WORKLOADS[name], "check_options"):
        options = WORKLOADS[name].check_options(options)
    elif options:
        raise PlaybookError(f"workload {name!r} takes no options (got {', '.join(options)}); "
                            "options are for: " + ", ".join(n for n, m in WORKLOADS.items() if hasattr(m, "check_options")))
    if name == "custom":
        if not model:
            raise PlaybookError("workload 'custom' needs --model package.module:function "
                                "(a function returning (model, example_inputs))")
        custom.load(model)        # import now: a typo fails before anything runs
    elif name == "hf":
        hf.check_model(model)     # a folder without config.json or an unknown model type fails here
        hf.check_preset(model, preset)
    elif model:
        raise PlaybookError(f"--model is for workloads {' and '.join(NEEDS_MODEL)}; workload {name!r} builds its own")
    elif preset and preset not in presets(name):
        choose(f"preset for workload {name!r}:", preset, presets(name))
    return options


def normalize_model(name, model):
    """The --model a run records: a checkpoint folder as an absolute path (notebooks run elsewhere)."""
    if name == "hf" and hf.is_checkpoint(model):
        from pathlib import Path
        return str(Path(model).expanduser().resolve())
    return model or ""


def build_workload(name, preset="", model="", device=None, dtype=None, seed=0, weights_via=None,
                   options=None) -> Workload:
    """weights_via: round the weights (and floating inputs) through this dtype first; the fp32
    reference of a bf16 run is built with dtype=float32, weights_via=bfloat16."""
    options = check(name, preset, model, options)
    if name == "custom":
        return custom.build(model, device, dtype, seed=seed, weights_via=weights_via)
    extra = {"options": options} if hasattr(WORKLOADS[name], "check_options") else {}
    if name == "hf":
        extra["model"] = model
    return WORKLOADS[name].build(preset or default_preset(name, device.type, model), device, dtype, seed=seed,
                                 weights_via=weights_via, **extra)


def set_knob(wl, name, value):
    """Apply one of the model knobs a workload offered (wl.knobs)."""
    if name not in wl.knobs:
        raise PlaybookError(f"workload {wl.name!r} offers no knob {name!r} for these inputs "
                            f"(it offers: {', '.join(wl.knobs) or 'none'})")
    WORKLOADS[wl.name].set_knob(wl.model, name, value)
