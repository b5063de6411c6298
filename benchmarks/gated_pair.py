"""kernels.gemv's gated prologue at pi0 full's down projection, timed alone and after the gate+up projection.

    python benchmarks/gated_pair.py --json out.json

Inside pi0 full's step the down projection with act(gate) * up in its prologue took 16.4 us a call where the
plain one took 5.7 (H200, 2026-12-03); alone it had won against the activation's kernel then cuBLAS. Here the
same shape (11 rows, K 4096, N 1024, tanh GELU) both ways: "alone" on a ready input, as phase 5's table timed
it before, and "after gate+up" with the cuBLAS projection that writes the input in front of each side, as
playbook.rewrites.gemv.time_shapes times it now. Each side is 20 calls in one CUDA graph over rotating weight
copies, replays timed side by side. Writes {device, date, torch, rows: [{timing, gemv_us, cublas_us}]}.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playbook import bench  # noqa: E402
from playbook.rewrites import gemv as gemv_rewrite  # noqa: E402

ROWS, N, K, ACT = 11, 1024, 4096, "gelu_tanh"


def alone(device, dtype, iters=15):
    from playbook.kernels.activations import act_and_mul
    from playbook.kernels.gemv import gemv
    calls, copies = gemv_rewrite.CALLS, 16
    g = torch.Generator(device=device).manual_seed(0)
    ws = [torch.randn(N, K, device=device, dtype=dtype, generator=g) * K ** -0.5 for _ in range(copies)]
    gate, up = torch.randn(ROWS, 2 * K, device=device, dtype=dtype, generator=g).split(K, dim=-1)
    sides = {"gemv": lambda w: gemv(gate, w, up=up, act=ACT),
             "cublas": lambda w: F.linear(act_and_mul(gate, up, ACT), w)}
    us = bench.graphs_side_by_side({name: lambda c=c: [c(ws[i % copies]) for i in range(calls)]
                                    for name, c in sides.items()}, calls, device, iters=iters)
    return {"timing": "alone", "gemv_us": us["gemv"], "cublas_us": us["cublas"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    dev, dt = torch.device("cuda"), torch.bfloat16
    rows = [alone(dev, dt)]
    pair = gemv_rewrite._time_shape(ROWS, N, K, False, dev, dt, 15, act=ACT)
    rows.append({"timing": "after gate+up", "gemv_us": pair["gemv_us"], "cublas_us": pair["cublas_us"]})
    for r in rows:
        print(json.dumps(r), flush=True)
    out = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "shape": {"rows": ROWS, "N": N, "K": K, "act": ACT}, "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
