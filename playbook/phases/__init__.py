"""The ladder: one module per phase, and the one routine that tries a phase against the kept recipe.

    from playbook.phases import run_phase
    result = run_phase("cudagraph", run, iters=200, warmup=20)    # writes phases/01-cudagraph.json

A ladder phase module (cudagraph ... tuning) defines NUMBER, NAME, WHAT (one line), KEEP_IF
("not_slower" or "faster"), candidates(ctx) -> [knobs, ...] (raise Skip("why") when it cannot apply
here) and apply(pipeline, knobs). baseline and verify define run(run, iters, warmup) instead.

Trying a phase: rebuild the kept recipe ("previous"), build the recipe plus each candidate, check each
against the baseline's outputs, time the correct ones side by side with "previous" in one process,
keep the fastest if it is not slower beyond noise (or faster beyond noise, for KEEP_IF="faster").
Any exception is recorded as a failed phase; nothing already recorded is touched.
"""
import gc
import importlib
import json
import os
import traceback

import torch

from .. import bench
from ..compare import compare
from ..errors import PlaybookError, choose
from ..pipeline import Pipeline
from ..progress import steps

NAMES = ("baseline", "cudagraph", "attention", "gemm", "fusion", "kernels", "tuning", "verify")


class Skip(Exception):
    """Raised by candidates() when a phase cannot apply here; the message says why."""


def get_phase(name):
    choose("phase", name, NAMES)
    return importlib.import_module(f"{__name__}.{name}")


def available():
    """The phases that exist as modules, in ladder order."""
    out = []
    for name in NAMES:
        try:
            out.append(get_phase(name))
        except ModuleNotFoundError:
            continue
    return out


class Context:
    """What candidates() may look at: the run, the device, and the kept pipeline (not yet built)."""

    def __init__(self, run, pipe, steps):
        self.run, self.pipe, self.steps = run, pipe, steps
        self.device, self.vendor = pipe.device, pipe.vendor
        self.info = {}              # what candidates() found (sites, tables): merged into the phase JSON

    def fresh_pipeline(self):
        """A new copy of the kept pipeline to probe (rewrite, count, measure) without touching ctx.pipe."""
        return Pipeline.from_recipe(self.run.params, self.steps)


def result_template(mod, run):
    return {"phase": mod.NUMBER, "name": mod.NAME, "status": None, "p50_ms": None, "p95_ms": None,
            "mean_ms": None, "std_ms": None, "min_ms": None, "max_ms": None, "iters": None,
            "correct": None, "max_abs_diff": None, "rel_err": None, "knobs": {}, "next_action": "",
            "error": None, "what": mod.WHAT, "notes": []}


def floors(run, p50_ms):
    """p50 against the bandwidth floor (weight bytes / copy bandwidth) and the compute floor."""
    ceilings, wl = run.params.get("ceilings") or {}, run.params.get("workload_info") or {}
    out = {"bandwidth_floor_ms": None, "compute_floor_ms": None, "x_of_floor": None}
    if ceilings.get("copy_gbps") and wl.get("weight_bytes"):
        out["bandwidth_floor_ms"] = round(wl["weight_bytes"] / (ceilings["copy_gbps"] * 1e9) * 1e3, 5)
    if ceilings.get("matmul_tflops") and wl.get("flops"):
        out["compute_floor_ms"] = round(wl["flops"] / (ceilings["matmul_tflops"] * 1e12) * 1e3, 5)
    floor = max([f for f in (out["bandwidth_floor_ms"], out["compute_floor_ms"]) if f] or [0])
    if floor and p50_ms:
        out["x_of_floor"] = round(p50_ms / floor, 2)
        for kind in ("bandwidth", "compute"):
            if out[f"{kind}_floor_ms"]:
                out[f"x_of_{kind}_floor"] = round(p50_ms / out[f"{kind}_floor_ms"], 2)
    return out


def fill_timing(result, timing):
    result.update({k: v for k, v in timing.as_dict().items() if k in result or k == "round_p50_ms"})


PROFILE_FIELDS = ("kernel_count", "cpu_op_count", "gpu_busy_ms", "launch_overhead_ms", "category_ms")


def profile_into(run, result, step, device, trace_name=None):
    """Trace the measured step (after its timing) into traces/<trace_name>.json.gz, NN-<name> by default,
    and add the analysis to result: PROFILE_FIELDS at the top level, the rest under "profile", and the
    diff against the last kept phase. A candidate's record (trace_name given) gets the fields alone."""
    from .. import profile
    name = trace_name or f"{result['phase']:02d}-{result['name']}"
    path = run.path / "traces" / f"{name}.json.gz"
    try:
        summary = profile.profile_step(step, device, path)
    except Exception as e:  # noqa: BLE001  (a trace is an aid: its failure never costs the measurement)
        result.setdefault("notes", []).append(f"profiling failed ({type(e).__name__}: {e}); the timing stands")
        return
    result.update({k: summary.pop(k, None) for k in PROFILE_FIELDS})
    if result.get("p50_ms") is not None and result.get("gpu_busy_ms") is not None:
        summary["host_bound_ms"] = round(max(0.0, result["p50_ms"] - result["gpu_busy_ms"]), 4)
    if trace_name:
        result["profile"] = {k: summary.get(k) for k in ("unit", "trace", "launches", "step_span_ms", "host_bound_ms")}
        return
    result["profile"] = summary
    before = [p for p in run.phases() if p["status"] == "kept" and p.get("profile") and p["phase"] < result["phase"]
              and p["name"] != "verify"]
    if before:
        result["trace_diff"] = {"against": before[-1]["name"], **profile.trace_diff(before[-1], result)}


def next_action(run, result):
    """What the chain does after this phase, in words."""
    target = run.params.get("target_ms")
    later = [m for m in available() if m.NUMBER > result["phase"]]
    nxt = f"go on to phase {later[0].NUMBER} {later[0].NAME}: {later[0].WHAT}" if later else "done"
    kept_p50 = result["p50_ms"] if result["status"] == "kept" else last_kept_p50(run)
    if result["name"] == "verify":
        if not result.get("correct"):
            return "final recipe is not correct: inspect the phase that broke it"
        if target and result["p50_ms"] is not None:
            gap = result["p50_ms"] - target
            return "target met" if gap <= 0 else f"target missed by {gap:.3f} ms: profile the top kernels"
        return "no target set"
    if target and kept_p50 is not None and kept_p50 <= target and result["name"] != "baseline":
        return "target met: skip to verify"
    prefix = {"rejected": "rejected; ", "failed": "failed; ", "skipped": "skipped; "}.get(result["status"], "")
    return prefix + nxt


def last_kept_p50(run):
    kept = [p for p in run.phases() if p["status"] == "kept" and p["p50_ms"] is not None and p["name"] != "verify"]
    return kept[-1]["p50_ms"] if kept else None


def check_knobs_to_try(name, knobs_to_try):
    """The knob sets a notebook asked for, by their names in the phase's CHOICES; [] means every one."""
    if not knobs_to_try:
        return []
    wanted = [knobs_to_try] if isinstance(knobs_to_try, str) else list(knobs_to_try)
    mod = get_phase(name)
    choices = getattr(mod, "CHOICES", {})
    if not choices:
        raise PlaybookError(f"phase {name} has no knobs to choose from: leave knobs_to_try empty")
    for want in wanted:
        choose(f"{name} knob set", want, list(choices))
    return wanted


def run_phase(name, run, iters=100, warmup=10, knobs_to_try=None):
    """Run one phase and record it; never raises for a failure inside the phase. knobs_to_try: names
    from the phase's CHOICES to try (the others are not built); empty: every candidate it offers."""
    mod = get_phase(name)
    knobs_to_try = check_knobs_to_try(name, knobs_to_try)
    result = result_template(mod, run)
    if knobs_to_try:
        result["knobs_to_try"] = knobs_to_try
    # Inductor's FX-graph and autotune caches live in the run, so --resume and re-runs skip recompiles.
    # Set, not defaulted: importing torch's Inductor already fills in its /tmp default.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(run.path.resolve() / "inductor-cache")
    try:
        if hasattr(mod, "run"):
            mod.run(run, result, iters=iters, warmup=warmup)
        else:
            _try(mod, run, result, iters, warmup, knobs_to_try)
    except PlaybookError:
        raise
    except Exception as e:                                        # recorded, and the chain goes on
        result.update(status="failed", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=8))
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if result["p50_ms"] is not None:
        result.update(floors(run, result["p50_ms"]))
    if name not in ("baseline", "verify"):
        if result["status"] == "kept":
            run.keep(result)
        else:
            run.drop(name)          # a re-run that is not kept this time leaves no stale step behind
    result["next_action"] = next_action(run, result)
    run.write_phase(result)
    return result


def _try(mod, run, result, iters, warmup, knobs_to_try=()):
    recipe_steps = run.steps_before(mod.NAME)
    from .baseline import judges as baseline_judges
    judges = baseline_judges(run)
    base = Pipeline.from_recipe(run.params, recipe_steps)
    ctx = Context(run, base, recipe_steps)
    try:
        candidates = mod.candidates(ctx)
        if knobs_to_try:
            left_out = sorted({mod.label(k) for k in candidates} - set(knobs_to_try))
            candidates = [k for k in candidates if mod.label(k) in knobs_to_try]
            if left_out:
                result["notes"].append(f"not tried (not in knobs_to_try): {', '.join(left_out)}")
            if not candidates:
                raise Skip(f"none of knobs_to_try ({', '.join(knobs_to_try)}) is offered here"
                           + (f"; offered: {', '.join(left_out)}" if left_out else ""))
    except Skip as why:
        result.update(ctx.info)
        result.update(status="skipped", next_action="", error=None)
        result["notes"].append(str(why))
        result["skip_reason"] = str(why)
        return
    result.update(ctx.info)
    contenders, records = {"previous": base.build()}, []     # contenders: "previous" and candidate indices
    for i, knobs in enumerate(steps(candidates, f"{mod.NAME}: building candidates")):
        record = {"knobs": knobs, "label": mod.label(knobs) if hasattr(mod, "label") else None, "error": None}
        print(f"[{mod.NAME}] candidate {i + 1}/{len(candidates)} {json.dumps(knobs)[:120]}: building", flush=True)
        try:
            pipe = Pipeline.from_recipe(run.params, recipe_steps, extra=(mod.NAME, knobs))
            runner = pipe.build()
            record.update(compare(runner.outputs(), dtype=pipe.dtype, **judges), compile_s=runner.compile_s,
                          notes=pipe.notes, **({"info": pipe.info} if pipe.info else {}))
            if record["correct"]:
                contenders[i] = runner
        except Exception as e:
            record.update(correct=False, error=f"{type(e).__name__}: {e}")
        records.append(record)
        compiled = "" if record.get("compile_s") is None else f", compiled in {record['compile_s']} s"
        verdict = record["error"] or ("correct" if record["correct"] else "wrong")
        print(f"[{mod.NAME}] candidate {i + 1}/{len(candidates)}: {verdict}{compiled}", flush=True)
    result["candidates"] = records
    timings = bench.time_side_by_side({k: r.step for k, r in contenders.items()}, base.device,
                                      iters=iters, warmup=warmup)
    previous = timings.pop("previous")
    result["previous_p50_ms"] = round(previous.p50_ms, 5)
    for i, t in timings.items():
        records[i].update(p50_ms=round(t.p50_ms, 5), verdict=bench.verdict(t, previous))
    if not timings:
        errors = [r for r in records if r["error"]]
        result.update(status="failed" if len(errors) == len(records) else "rejected", correct=False,
                      knobs=records[0]["knobs"] if records else {},
                      error="; ".join(r["error"] for r in errors) or None)
        wrong = next((r for r in records if not r["error"]), None)
        if wrong:
            result.update(max_abs_diff=wrong["max_abs_diff"], rel_err=wrong["rel_err"])
            result["notes"] += wrong["problems"]
        return
    best_i = min(timings, key=lambda i: timings[i].p50_ms)
    best, rec = timings[best_i], records[best_i]
    fill_timing(result, best)
    profile_into(run, result, contenders[best_i].step, base.device)
    rec.update({k: result.get(k) for k in ("kernel_count", "cpu_op_count", "launch_overhead_ms")})
    for i in timings:                # the other measured candidates: their counts, to compare (their traces too)
        if i != best_i:
            profile_into(run, records[i], contenders[i].step, base.device, f"{mod.NUMBER:02d}-{mod.NAME}-candidate{i + 1}")
    v, noise = bench.verdict(best, previous), bench.noise(best, previous)
    keep = v == "faster" if getattr(mod, "KEEP_IF", "not_slower") == "faster" else v != "slower"
    result.update(status="kept" if keep else "rejected", correct=True, knobs=rec["knobs"],
                  max_abs_diff=rec["max_abs_diff"], rel_err=rec["rel_err"], precise_err=rec["precise_err"],
                  compile_s=rec["compile_s"],
                  verdict=v, speedup_vs_previous=round(previous.p50_ms / best.p50_ms, 3),
                  noise=round(noise, 4))
    result["notes"] += rec.get("notes", [])
    result.update(rec.get("info") or {})
    if not keep:
        result["notes"].append(f"{v} than the kept recipe ({best.p50_ms:.4f} vs {previous.p50_ms:.4f} ms, "
                               f"noise {noise:.1%}): not kept")
