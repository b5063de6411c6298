"""Phase 0 `baseline`: measure the untouched model, save its outputs as the reference, measure the device.

Everything later is compared with what this phase records: the outputs (reference.pt), the p50, and
the device's copy bandwidth and matmul rate (run.json "ceilings"), which turn p50 into "x of floor".
"""
from .. import bench
from ..compare import check_inputs, compare, snapshot
from ..devices import measure_ceilings
from ..errors import PlaybookError
from ..pipeline import Pipeline

NUMBER = 0
NAME = "baseline"
WHAT = "measure the untouched model and keep its outputs as the reference"


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
    run.save_reference(reference)
    run.update(workload_info={"description": wl.description, "weight_bytes": wl.weight_bytes,
                              "flops": wl.flops, "outputs": sorted(reference)})
    if not run.params.get("ceilings"):
        run.update(ceilings=measure_ceilings(pipe.device))
    bench_t = bench.time_step(runner.step, pipe.device, iters=iters, warmup=warmup)
    result.update(status="kept", correct=True, max_abs_diff=0.0, rel_err=0.0,
                  knobs={"compile": False, "capture": False})
    result.update({k: v for k, v in bench_t.as_dict().items() if k in result})
    result["notes"].append(wl.description)
