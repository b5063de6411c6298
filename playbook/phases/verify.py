"""Phase 7 `verify`: rebuild the whole recipe, measure it beside the untouched model, check it, gate it.

The final number is taken side by side with a fresh baseline in this one process, so the speedup is
a ratio measured under the same conditions, not two numbers from different processes.
"""
from .. import bench, clock
from ..compare import compare
from ..pipeline import Pipeline
from ..record import fill_timing, profile_into
from .baseline import judges

NUMBER = 7
NAME = "verify"
WHAT = "rebuild the kept recipe, check it against the baseline, measure it and apply the target gate"


def run(run, result, iters, warmup):
    steps = run.recipe()["phases"]
    final_pipe = Pipeline.from_recipe(run.params, steps)
    final = final_pipe.build()
    verdict = compare(final.outputs(), dtype=final_pipe.dtype, **judges(run))
    base = Pipeline.fresh(run.params).build()
    with clock.section("time"):
        timings = bench.time_side_by_side({"baseline": base.step, "final": final.step}, final_pipe.device,
                                          iters=iters, warmup=warmup)
    t = timings["final"]
    fill_timing(result, t)
    profile_into(run, result, final.step, final_pipe.device)
    target = run.params.get("target_ms")
    result.update(status="kept" if verdict["correct"] else "rejected", correct=verdict["correct"],
                  max_abs_diff=verdict["max_abs_diff"], rel_err=verdict["rel_err"], precise_err=verdict["precise_err"],
                  knobs={"recipe": [s["name"] for s in steps]},
                  baseline_same_run_p50_ms=round(timings["baseline"].p50_ms, 5),
                  speedup_vs_baseline=round(timings["baseline"].p50_ms / t.p50_ms, 3),
                  target_ms=target, target_met=bool(target and t.p50_ms <= target and verdict["correct"]))
    result["notes"] += final_pipe.notes + verdict["problems"]
    if verdict["correct"]:
        run.record_verified(result)
