"""A ladder run's recipe outside the notebooks: apply it to a model, or re-measure it against its record.

    import playbook
    fast = playbook.apply(model, example_inputs, "reports/<run>/recipe.json")   # a callable
    out = fast(*example_inputs)         # same shapes as example_inputs; clone outputs you keep (graph buffers)

    python -m playbook check --recipe reports/<run>/recipe.json [--tolerance 2]

apply() rewrites the model in place (attention, fused projections, kernels), compiles and captures it
as the recipe says, warms it up and returns the callable. check() rebuilds the recipe's workload, checks
the recipe's outputs against the untouched model's and times the two side by side: it fails (exit 1)
when correctness is lost or p50 is worse than the recorded one by more than the tolerance (2%, the
source's auto-revert threshold). A recipe measured on another device or torch version is re-measured
and reported with a warning, not compared.
"""
import json
from pathlib import Path

import torch

from .errors import PlaybookError

DEFAULT_TOLERANCE_PCT = 2.0


def load_recipe(recipe):
    """A recipe dict from a dict, a recipe.json path or a run directory."""
    if isinstance(recipe, dict):
        data, where = recipe, "the recipe given"
    else:
        path = Path(recipe)
        path = path / "recipe.json" if path.is_dir() else path
        if not path.exists():
            raise PlaybookError(f"no recipe at {path}: pass a run directory's recipe.json "
                                "(written when a ladder phase is kept)")
        try:
            data, where = json.loads(path.read_text()), str(path)
        except json.JSONDecodeError as e:
            raise PlaybookError(f"recipe {path} is corrupt ({e}); re-run the ladder or restore the file") from e
    if not isinstance(data.get("phases"), list) or not isinstance(data.get("workload"), dict):
        raise PlaybookError(f"{where} is not a playbook recipe (no 'phases' list or 'workload')")
    return data


def _inputs(example_inputs):
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    return tuple(example_inputs), {}


def apply(model, example_inputs, recipe, device=None, dtype=None, warmup=3):
    """The model with every kept phase of the recipe applied, built and warmed up: a callable Runner."""
    from .devices import resolve_device, resolve_dtype
    from .phases import get_phase
    from .pipeline import Pipeline
    from .workloads.base import Workload
    data = load_recipe(recipe)
    device = torch.device(device) if device else resolve_device(data["workload"].get("device") or "auto")
    dtype = dtype or resolve_dtype(data["workload"].get("dtype") or "auto", device)
    args, kwargs = _inputs(example_inputs)
    wl = Workload(name="custom", preset="", model=model.eval(), args=args, kwargs=kwargs)
    pipe = Pipeline(workload=wl, device=device, dtype=dtype)
    for step in data["phases"]:
        get_phase(step["name"]).apply(pipe, step["knobs"])
    return pipe.build(warmup=warmup)


def _comparable(data, device):
    """None when the recipe was measured here (same device name and torch), else why it is not."""
    from .devices import describe
    from .runs import versions
    here_device, was_device = describe(device).get("name"), data.get("device")
    was_torch = (data.get("fingerprint") or {}).get("torch")
    if was_device != here_device:
        return f"recorded on {was_device}, measured now on {here_device}"
    if was_torch != versions()["torch"]:
        return f"recorded with torch {was_torch}, measured now with torch {versions()['torch']}"
    return None


def judge(params):
    """What a recipe is judged against, as the ladder judges it: (the untouched workload built, its outputs,
    the fp32 twin's outputs or None, the untouched model's own relative distance to them or None). The
    twin is built only for bf16/fp16 runs."""
    from .compare import compare, snapshot
    from .pipeline import Pipeline
    base_pipe = Pipeline.fresh(params)
    base = base_pipe.build()
    reference = snapshot(base.outputs())
    precise, base_err = None, None
    if base_pipe.dtype != torch.float32:
        precise = snapshot(Pipeline.fresh(params, precise=True).build().outputs())
        base_err = compare(reference, precise, torch.float32)["rel_err"]
    return base, reference, precise, base_err


def check(recipe, tolerance_pct=DEFAULT_TOLERANCE_PCT, iters=100, warmup=10, say=print):
    """Rebuild and re-measure a recipe; returns (exit code, JSON-ready result). 0: as recorded (or not
    comparable, with a warning); 1: correctness lost or p50 worse than recorded beyond the tolerance."""
    from . import bench
    from .compare import compare
    from .pipeline import Pipeline
    if tolerance_pct < 0:
        raise PlaybookError(f"--tolerance {tolerance_pct} must be a percentage of 0 or more")
    data = load_recipe(recipe)
    params = {"seed": 0, **data["workload"]}
    # The recipe's recorded builds: the phase that kept it and verify, each built in its own process.
    # A max-autotune recipe differs build to build (1.154 and 1.259 ms for the same llama 1b recipe on
    # the H200), so the bar is the slowest recorded build: a regression shows in every build.
    builds = [p for p in ((data.get("verified") or {}).get("p50_ms"), data.get("p50_ms")) if p]
    recorded = max(builds) if builds else None
    base, reference, precise, base_err = judge(params)
    final_pipe = Pipeline.from_recipe(params, data["phases"])
    final = final_pipe.build()
    verdict = compare(final.outputs(), reference, final_pipe.dtype, precise=precise, baseline_err=base_err)
    t = bench.time_side_by_side({"baseline": base.step, "recipe": final.step}, final_pipe.device,
                                iters=iters, warmup=warmup)
    p50, base_p50 = t["recipe"].p50_ms, t["baseline"].p50_ms
    why_not = _comparable(data, final_pipe.device)
    out = {"recipe": [s["name"] for s in data["phases"]], "p50_ms": round(p50, 5), "recorded_p50_ms": recorded,
           "recorded_builds_p50_ms": builds,
           "baseline_p50_ms": round(base_p50, 5), "speedup_vs_baseline": round(base_p50 / p50, 3),
           "recorded_speedup": (data.get("verified") or {}).get("speedup_vs_baseline"),
           "tolerance_pct": tolerance_pct, "correct": verdict["correct"], "rel_err": verdict["rel_err"],
           "problems": verdict["problems"], "compared": why_not is None, "warning": why_not}
    say(f"recipe {' + '.join(out['recipe']) or '(empty)'}: p50 {p50:.4f} ms (recorded {recorded} ms), "
        f"baseline beside it {base_p50:.4f} ms ({out['speedup_vs_baseline']}x); correct: {verdict['correct']}")
    code = 0
    if not verdict["correct"]:
        say("FAIL: correctness lost: " + "; ".join(verdict["problems"]))
        code = 1
    if why_not:
        say(f"warning: {why_not}: re-measured, not compared with the record")
    elif recorded:
        worse = 100 * (p50 - recorded) / recorded
        out["worse_pct"] = round(worse, 2)
        if worse > tolerance_pct:
            say(f"FAIL: p50 regressed {worse:.1f}% against the recorded {recorded} ms (tolerance {tolerance_pct}%)")
            code = 1
        else:
            say(f"ok: p50 within {tolerance_pct}% of the record ({worse:+.1f}%)")
    return code, out
