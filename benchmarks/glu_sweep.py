"""kernels.gemv's GLU epilogue and gated prologue at pi0 full's denoise shapes, over block, warp and pipeline
choices, beside the plain kernel they would replace (issue 19).

    python benchmarks/glu_sweep.py --json out.json

Phase 5's table (H200, 2026-12-04) had the GLU epilogue at pi0's gate+up (11 rows, W [8192, 1024], the norm
folded in, tanh GELU) at 10.08 us against 9.23 for the plain gemv then the activation's kernel (7.65 for the gemv
alone), and the gated prologue at the down projection (11 rows, W [1024, 4096]) at 21.9 us against 15.0. Both
add work to each chunk of K; the prologue also takes more shared memory than two programs an SM can hold at
Triton's default three pipeline stages (114 KB a program, compiled for sm_90). Each side here is 20 calls in one
CUDA graph over weight copies that rotate past the L2 (as phase 5's table times them), replays timed side by
side. Writes {device, date, torch, rows: [{shape, variant, block_n, block_k, num_warps, num_stages, us}]}.
"""
import argparse
import datetime
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playbook import bench  # noqa: E402
from playbook.capture import GraphStep  # noqa: E402
from playbook.rewrites import gemv as gemv_rewrite  # noqa: E402

ROWS, HIDDEN, INTER, ACT = 11, 1024, 4096, "gelu_tanh"


class Staged:
    """kernels.gemv's few-row kernel launched with num_stages (the op does not take it: a sweep's knob)."""

    def __init__(self, fn, stages):
        self.fn, self.stages = fn, stages

    def __getitem__(self, grid):
        launch = self.fn[grid]
        return lambda *a, **kw: launch(*a, num_stages=self.stages, **kw)


def capture(side, stages):
    import playbook.kernels.gemv as gv
    plain = gv._gemv_rows
    if stages:
        gv._gemv_rows = Staged(plain, stages)
    try:
        return GraphStep(side, (), {}).graph.replay     # compiled, warmed up and captured with these stages
    finally:
        gv._gemv_rows = plain


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--iters", type=int, default=15)
    args = ap.parse_args(argv)
    from playbook.kernels.activations import act_and_mul
    from playbook.kernels.gemv import gemv
    device, dtype, calls = torch.device("cuda"), torch.bfloat16, gemv_rewrite.CALLS
    g = torch.Generator(device=device).manual_seed(0)
    copies = 16
    w_gu = [torch.randn(2 * INTER, HIDDEN, device=device, dtype=dtype, generator=g) * HIDDEN ** -0.5
            for _ in range(copies)]
    w_down = [torch.randn(HIDDEN, INTER, device=device, dtype=dtype, generator=g) * INTER ** -0.5
              for _ in range(copies)]
    x = torch.randn(ROWS, HIDDEN, device=device, dtype=dtype, generator=g)
    nw = torch.rand(HIDDEN, device=device, dtype=dtype, generator=g) + 0.5
    gate, up = torch.randn(ROWS, 2 * INTER, device=device, dtype=dtype, generator=g).split(INTER, dim=-1)

    def many(call):
        return lambda: [call(i % copies) for i in range(calls)]

    sides, rows = {}, {}

    def add(name, shape, variant, call, stages=0, **cfg):
        sides[name] = capture(many(call), stages)
        rows[name] = {"shape": shape, "variant": variant, **cfg, "num_stages": stages or "default"}

    add("gate+up: gemv", "gate+up", "gemv (norm folded)", lambda i: gemv(x, w_gu[i], norm_weight=nw))
    add("gate+up: gemv, then act", "gate+up", "gemv then the activation's kernel",
        lambda i: act_and_mul(*gemv(x, w_gu[i], norm_weight=nw).chunk(2, dim=-1), ACT))
    for bn, bk, nwarps, stages in itertools.product((8, 16, 32), (128, 256), (4, 8), (0, 2)):
        add(f"gate+up: glu {bn} {bk} {nwarps} {stages}", "gate+up", "GLU epilogue",
            lambda i, bn=bn, bk=bk, nwarps=nwarps: gemv(x, w_gu[i], norm_weight=nw, glu=ACT, block_n=bn,
                                                         block_k=bk, num_warps=nwarps),
            stages, block_n=bn, block_k=bk, num_warps=nwarps)
    add("down: act, then gemv", "down", "the activation's kernel then gemv",
        lambda i: gemv(act_and_mul(gate, up, ACT), w_down[i]))
    for stages, nwarps in itertools.product((0, 2), (4, 8)):
        add(f"down: gated {stages} {nwarps}", "down", "gated prologue",
            lambda i, nwarps=nwarps: gemv(gate, w_down[i], up=up, act=ACT, num_warps=nwarps), stages,
            num_warps=nwarps)
    timed = bench.time_side_by_side(sides, device, iters=args.iters, warmup=3)
    out = []
    for name, row in rows.items():
        out.append({**row, "us": round(timed[name].p50_ms * 1e3 / calls, 2)})
        print(f"{name:40s} {out[-1]['us']:7.2f} us", flush=True)
    Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(device),
                                           "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                                           "rows": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
