"""Phase 0 `baseline`: measure the untouched model, save its outputs as the reference, measure the device.

Everything later is compared with what this phase records: the outputs (reference.pt, and for a
bf16/fp16 run also the same model's outputs in fp32 on the same rounded weights), the p50, and
the device's copy bandwidth and matmul rate (run.json "ceilings"), which turn p50 into "x of floor".
"""
import torch

from .. import bench, clock
from ..compare import check_inputs, compare, snapshot
from ..devices import measure_ceilings
from ..errors import PlaybookError
from ..pipeline import Pipeline
from ..record import fill_timing, profile_into
from ..workloads.base import counted_flops

NUMBER = 0
NAME = "baseline"
WHAT = "measure the untouched model and keep its outputs as the reference"


def judges(run):
    """run.judges(), rebuilding the reference outputs first where a recorded run lacks them (a run
    directory copied without its .pt files, as committed results are): same seed, same outputs."""
    if run.phase(NAME) and not (run.path / "reference.pt").exists():
        print("reference outputs missing from the run directory: rebuilding them from the untouched model "
              f"(seed {run.params.get('seed', 0)})", flush=True)
        pipe = Pipeline.fresh(run.params)
        reference, dtype = snapshot(pipe.build().outputs()), pipe.dtype
        del pipe                                  # before the fp32 twin is built beside it
        save_references(run, reference, dtype)
    return run.judges()


def save_references(run, reference, dtype):
    """reference.pt (the untouched model's outputs) and, for bf16/fp16, reference_fp32.pt with the
    untouched model's own distance to it (baseline_precise_err in run.json)."""
    run.save_reference(reference)
    if dtype != torch.float32:
        precise_pipe = Pipeline.fresh(run.params, precise=True)
        precise = snapshot(precise_pipe.build().outputs())
        del precise_pipe
        run.save_reference(precise, "reference_fp32")
        run.update(baseline_precise_err=compare(reference, precise, torch.float32)["rel_err"])


def run(run, result, iters, warmup):
    pipe = Pipeline.fresh(run.params)
    wl = pipe.workload
    check_inputs(wl.args, wl.kwargs)
    runner = pipe.build()
    reference = snapshot(runner.outputs())
    again = compare(runner.outputs(), reference, pipe.dtype)
    if not again["correct"]:
        raise PlaybookError("the timed step is not repeatable: two calls on the same inputs gave different "
                            f"outputs ({'; '.join(again['problems'])}); make the step free of hidden state")
    save_references(run, reference, pipe.dtype)
    if pipe.dtype != torch.float32:
        result["notes"].append(f"the untouched model in {run.params['dtype']} is "
                               f"{run.params['baseline_precise_err']:.3g} (relative) from its fp32 twin on the "
                               "same weights; phases may be up to twice as far")
    flops, flops_by = counted_flops(wl)
    run.update(workload_info={"description": wl.description, "weight_bytes": wl.weight_bytes,
                              "kv_bytes": wl.kv_bytes, "flops": flops, "flops_by": flops_by,
                              "outputs": sorted(reference)})
    if not run.params.get("ceilings"):
        with clock.section("time"):
            run.update(ceilings=measure_ceilings(pipe.device))
    with clock.section("time"):
        bench_t = bench.time_step(runner.step, pipe.device, iters=iters, warmup=warmup)
    result.update(status="kept", correct=True, max_abs_diff=0.0, rel_err=0.0,
                  knobs={"compile": False, "capture": False})
    fill_timing(result, bench_t)
    profile_into(run, result, runner.step, pipe.device)
    result["notes"].append(wl.description)
