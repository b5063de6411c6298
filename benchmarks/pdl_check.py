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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playbook.reuse import load_recipe  # noqa: E402
from tuning_variants import measure  # noqa: E402  (benchmarks/: the same build, judge and side-by-side timing)

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
    rows, device = measure(params, [("recipe", data["phases"], {}, {}), ("recipe + pdl", data["phases"], PDL, {})],
                           args.iters, args.warmup)
    if device.type != "cuda" or torch.version.hip or torch.cuda.get_device_capability(device)[0] < 9:
        print("note: PDL needs an NVIDIA GPU of Hopper or newer; here Inductor ignores the setting, so the two "
              "rows measure the same code", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"device": name, "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "recipe": str(args.recipe), "workload": data["workload"], "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
