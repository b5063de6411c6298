"""Does Programmatic Dependent Launch help a kept recipe? The recipe as recorded, and the same recipe with
Inductor's `triton.enable_pdl` (its Triton kernels launch while the kernel before them finishes and wait
only before their first dependent load, on Hopper and newer), built in one process, checked against the
untouched model and timed side by side in alternating rounds.

    python benchmarks/pdl_check.py --recipe benchmarks/results/llama-1b/recipe.json --json out.json

Writes {device, date, torch, recipe, rows: [{name, p50_ms, spread_ms, correct, rel_err, compile_s}]}.
"""
import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playbook import bench  # noqa: E402
from playbook.compare import compare  # noqa: E402
from playbook.pipeline import Pipeline  # noqa: E402
from playbook.reuse import judge, load_recipe  # noqa: E402

PDL = {"triton.enable_pdl": True}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True, help="a recipe.json (or its run directory)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", required=True, help="where to write the result")
    args = ap.parse_args(argv)
    data = load_recipe(args.recipe)
    params = {"seed": 0, **data["workload"]}
    base, reference, precise, base_err = judge(params)     # the ladder's judge: the fp32 twin too
    del base
    steps, rows = {}, []
    for name, extra in (("recipe", {}), ("recipe + pdl", PDL)):
        pipe = Pipeline.from_recipe(params, data["phases"])
        pipe.inductor.update(extra)
        t0 = time.perf_counter()
        runner = pipe.build()
        built_s = time.perf_counter() - t0
        verdict = compare(runner.outputs(), reference, pipe.dtype, precise=precise, baseline_err=base_err)
        rows.append({"name": name, "correct": verdict["correct"], "rel_err": verdict["rel_err"],
                     "compile_s": runner.compile_s, "build_s": round(built_s, 1)})
        steps[name] = runner.step
        print(f"{name}: built in {built_s:.1f} s, correct {verdict['correct']} (rel err {verdict['rel_err']:.3g})",
              flush=True)
    device = pipe.device
    if device.type != "cuda" or torch.version.hip or torch.cuda.get_device_capability(device)[0] < 9:
        print("note: PDL needs an NVIDIA GPU of Hopper or newer; here Inductor ignores the setting, so the two "
              "rows measure the same code", flush=True)
    timed = bench.time_side_by_side(steps, device, iters=args.iters, warmup=args.warmup)
    for row in rows:
        t = timed[row["name"]]
        row.update(p50_ms=round(t.p50_ms, 5), spread_ms=round(t.p95_ms - t.p50_ms, 5))
        print(f"{row['name']}: p50 {row['p50_ms']} ms", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"device": name, "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "recipe": str(args.recipe), "workload": data["workload"], "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
