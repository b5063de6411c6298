"""What a phase records: the result template, floors, timing and trace fields, and the next action.

    result = result_template(get_phase("fusion"), run)
    fill_timing(result, timing); profile_into(run, result, step, device)
    result["next_action"] = next_action(run, result)
"""
from . import clock
from .phases import available


def result_template(mod, run):
    return {"phase": mod.NUMBER, "name": mod.NAME, "status": None, "p50_ms": None, "p95_ms": None,
            "mean_ms": None, "std_ms": None, "min_ms": None, "max_ms": None, "iters": None,
            "correct": None, "max_abs_diff": None, "rel_err": None, "knobs": {}, "next_action": "",
            "error": None, "what": mod.WHAT, "notes": []}


def floors(run, p50_ms):
    """p50 against the bandwidth floor ((weight + KV-cache bytes) / copy bandwidth) and the compute floor
    (counted FLOPs / matmul rate)."""
    ceilings, wl = run.params.get("ceilings") or {}, run.params.get("workload_info") or {}
    out = {"bandwidth_floor_ms": None, "compute_floor_ms": None, "x_of_floor": None}
    if ceilings.get("copy_gbps") and wl.get("weight_bytes"):
        nbytes = wl["weight_bytes"] + (wl.get("kv_bytes") or 0)
        out["bandwidth_floor_ms"] = round(nbytes / (ceilings["copy_gbps"] * 1e9) * 1e3, 5)
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


def trace_steps(p50_ms):
    """How many steps to trace: five for a fast step, fewer for a slow one (an eager pi0 step of 200 ms
    has tens of thousands of kernels: five of them took 96 s to trace and analyse on the H100)."""
    if not p50_ms or p50_ms < 50:
        return {"steps": 5, "warmup": 2}
    return {"steps": max(1, min(5, int(250 / p50_ms))), "warmup": 1}


def profile_into(run, result, step, device, trace_name=None):
    """Trace the measured step (after its timing) into traces/<trace_name>.json.gz, NN-<name> by default,
    and add the analysis to result: PROFILE_FIELDS at the top level, the rest under "profile", and the
    diff against the last kept phase. A candidate's record (trace_name given) gets the fields alone."""
    from . import profile
    name = trace_name or f"{result['phase']:02d}-{result['name']}"
    path = run.path / "traces" / f"{name}.json.gz"
    try:
        with clock.section("trace"):
            summary = profile.profile_step(step, device, path, **trace_steps(result.get("p50_ms")))
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


