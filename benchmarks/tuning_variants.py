"""A kept recipe with its tuning phase's knobs replaced by each of several variants, built in one process,
checked against the untouched model with the ladder's judge and timed side by side in alternating rounds:
what would tuning have kept had its budget built every candidate?

    python benchmarks/tuning_variants.py --recipe benchmarks/results/llama-1b/recipe.json --json out.json \
        --variant '{"tune": ["coordinate_descent_tuning", "pdl"]}' --variant '{"tune": ["coordinate_descent_tuning"]}'
    python benchmarks/tuning_variants.py --recipe ... --json out.json --inductor '{"combo_kernels": true}'
    python benchmarks/tuning_variants.py --recipe ... --json out.json --knobs 'attention={"rope_append": [...]}'

The recipe as recorded is always the first row; a variant of "null" drops the tuning phase; --inductor adds a
row of the recipe as recorded with those Inductor options on top; --knobs PHASE=JSON adds a row of the recipe
with those knobs merged into that phase's (several phases in one row: 'kernels={...};attention={...}'). With
--kernels each row also has one profiled step's kernel count, GPU busy time, idle fraction and launch table
(the top kernels by GPU time, each grid apart: how long each launch took inside the step). Writes {device, date,
torch, recipe, rows: [{name, knobs, inductor, p50_ms, spread_ms, correct, rel_err, compile_s, kernels,
gpu_busy_ms, idle_fraction, launch_table}]}.
"""
import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playbook import bench, profile  # noqa: E402
from playbook.compare import compare  # noqa: E402
from playbook.phases import tuning  # noqa: E402
from playbook.pipeline import Pipeline  # noqa: E402
from playbook.reuse import judge, load_recipe  # noqa: E402


def variant_steps(phases, knobs):
    """The recipe's steps with the tuning step's knobs replaced (knobs None: no tuning step)."""
    out = [p for p in phases if p["name"] != "tuning"]
    if knobs is not None:
        out.append({"phase": tuning.NUMBER, "name": tuning.NAME, "knobs": knobs})
    return out


def measure(params, contenders, iters, warmup, kernels=False):
    """contenders: [(name, recipe steps, extra Inductor options, fields for its row)], each built, checked with
    the ladder's judge (the untouched model and its fp32 twin) and timed side by side in one process; a build
    that fails is a row with its error. Returns (rows, device)."""
    base, reference, precise, base_err = judge(params)
    del base
    steps, rows = {}, []
    for name, recipe_steps, extra, fields in contenders:
        pipe = Pipeline.from_recipe(params, recipe_steps)
        pipe.inductor.update(extra)
        t0 = time.perf_counter()
        try:
            runner = pipe.build()
        except Exception as e:  # noqa: BLE001  (a contender that does not build is a row with its error)
            rows.append({"name": name, **fields, "error": f"{type(e).__name__}: {e}"[:300]})
            print(f"{name}: failed to build: {rows[-1]['error']}", flush=True)
            continue
        built_s = time.perf_counter() - t0
        verdict = compare(runner.outputs(), reference, pipe.dtype, precise=precise, baseline_err=base_err)
        rows.append({"name": name, **fields, "correct": verdict["correct"], "rel_err": verdict["rel_err"],
                     "compile_s": runner.compile_s, "build_s": round(built_s, 1)})
        steps[name] = runner.step
        print(f"{name}: built in {built_s:.1f} s, correct {verdict['correct']} (rel err {verdict['rel_err']:.3g})",
              flush=True)
    if kernels and pipe.device.type == "cuda":
        for row in rows:
            if row["name"] in steps:
                row.update(profile.step_summary(steps[row["name"]], pipe.device))
                print(f"{row['name']}: {row['kernels']} kernels a step, GPU busy {row['gpu_busy_ms']} ms, idle "
                      f"{row['idle_fraction']}", flush=True)
                for k in row["launch_table"][:12]:
                    print(f"    {k['ms']:8.3f} ms {k['count']:5d} x {k['us_each']:7.2f} us  gap {k['gap_us']}  "
                          f"grid {k['grid']}  {k['name'][:70]}", flush=True)
    timed = bench.time_side_by_side(steps, pipe.device, iters=iters, warmup=warmup)
    for row in rows:
        if row["name"] in timed:
            t = timed[row["name"]]
            row.update(p50_ms=round(t.p50_ms, 5), spread_ms=round(t.p95_ms - t.p50_ms, 5))
            print(f"{row['name']}: p50 {row['p50_ms']} ms", flush=True)
    return rows, pipe.device


def knob_spec(spec, phases):
    """'PHASE=JSON[;PHASE=JSON...]' -> {phase: knobs}, each phase one the recipe has."""
    out = {}
    for part in spec.split(";"):
        phase, _, knobs = part.strip().partition("=")
        if phase not in phases:
            raise SystemExit(f"--knobs {phase}=...: the recipe has no phase {phase!r} (it has {', '.join(phases)})")
        try:
            out[phase] = json.loads(knobs)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--knobs {phase}=...: not JSON ({e})") from None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True, help="a recipe.json (or its run directory)")
    ap.add_argument("--variant", action="append", default=[], help="tuning knobs as JSON (null: no tuning)")
    ap.add_argument("--inductor", action="append", default=[],
                    help="Inductor options as JSON, added on top of the recipe as recorded (one row each)")
    ap.add_argument("--knobs", action="append", default=[],
                    help="PHASE=JSON[;PHASE=JSON...]: knobs merged into those recorded phases' (one row each)")
    ap.add_argument("--kernels", action="store_true", help="count each row's kernels a step (GPU)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", required=True, help="where to write the result")
    args = ap.parse_args(argv)
    data = load_recipe(args.recipe)
    params = {"seed": 0, **data["workload"]}
    recorded = next((p["knobs"] for p in data["phases"] if p["name"] == "tuning"), None)
    contenders = []
    for knobs in [recorded] + [json.loads(v) for v in args.variant]:
        name = "no tuning" if knobs is None else tuning.label(knobs)
        name = name if name not in [c[0] for c in contenders] else f"{name} ({len(contenders)})"
        contenders.append((name, variant_steps(data["phases"], knobs), {}, {"knobs": knobs}))
    for extra in (json.loads(v) for v in args.inductor):
        name = "recipe + " + ", ".join(f"{k}={v}" for k, v in extra.items())
        contenders.append((name, data["phases"], extra, {"knobs": recorded, "inductor": extra}))
    for spec in args.knobs:
        merged = knob_spec(spec, [p["name"] for p in data["phases"]])
        steps = [dict(p, knobs={**p["knobs"], **merged[p["name"]]}) if p["name"] in merged else p
                 for p in data["phases"]]
        name = "recipe, " + "; ".join(f"{phase} + " + ", ".join(extra) for phase, extra in merged.items())
        name = name if name not in [c[0] for c in contenders] else f"{name} ({len(contenders)})"
        contenders.append((name, steps, {}, {"knobs": recorded, **merged}))
    rows, device = measure(params, contenders, args.iters, args.warmup, kernels=args.kernels)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"device": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
           "recipe": str(args.recipe), "workload": data["workload"], "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
