"""Sweep block shapes and warps of playbook/kernels/ at one size on a GPU, to choose the defaults in config().

    python benchmarks/kernels_sweep.py --rows 32768 --hidden 4096      # prints GB/s per config, best first

Each config is checked against the reference before it is timed (side by side, CUDA events).
"""
import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playbook.kernels import activations, norms, reference  # noqa: E402
from playbook import bench  # noqa: E402
from playbook.devices import measure_ceilings  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=60)
    args = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    m, n = args.rows, args.hidden
    copy = measure_ceilings(dev)["copy_gbps"]
    x, r = torch.randn(m, n, device=dev, dtype=dt), torch.randn(m, n, device=dev, dtype=dt)
    w = torch.randn(n, device=dev, dtype=dt)
    gu = torch.randn(m, 2 * n, device=dev, dtype=dt)
    e = x.element_size()
    jobs = {}
    for bm, nw in itertools.product((1, 2, 4, 8), (2, 4, 8, 16)):
        cfg = {"block_m": bm, "block_n": norms.next_pow2(min(n, norms.MAX_BLOCK)), "num_warps": nw}
        jobs[("rms_norm", str(cfg))] = (lambda c: lambda: norms._launch(x, None, w, 1e-6, 0.0, cfg=c))(cfg), 2 * m * n * e, \
            (lambda c: (norms._launch(x, None, w, 1e-6, 0.0, cfg=c)[0], reference.rms_norm(x, w, 1e-6)))(cfg)
    for bm, bn, nw in itertools.product((1, 2, 4), (512, 1024, 2048, 4096), (2, 4, 8)):
        cfg = {"block_m": bm, "block_n": min(bn, norms.next_pow2(n)), "num_warps": nw}
        jobs[("silu_and_mul", str(cfg))] = (lambda c: lambda: activations._launch(gu[:, :n], gu[:, n:], "silu", cfg=c))(cfg), \
            3 * m * n * e, (lambda c: (activations._launch(gu[:, :n], gu[:, n:], "silu", cfg=c), reference.silu_and_mul(gu)))(cfg)
    results = []
    for (kernel, cfg), (step, nbytes, (got, want)) in jobs.items():
        torch.testing.assert_close(got.float(), want.float(), **reference.TOLERANCES[dt])
        t = bench.time_step(step, dev, iters=args.iters, warmup=5)
        results.append((kernel, cfg, nbytes / t.p50_ms / 1e6))
    for kernel in ("rms_norm", "silu_and_mul"):
        rs = sorted((x for x in results if x[0] == kernel), key=lambda x: -x[2])
        default = {"rms_norm": norms.config(m, n), "silu_and_mul": activations.config(m, n)}[kernel]
        print(f"{kernel} {m}x{n}: default {default}")
        for _, cfg, gbps in rs[:6]:
            print(f"  {gbps:8.1f} GB/s  {100 * gbps / copy:5.1f}% of copy  {cfg}")


if __name__ == "__main__":
    main()
