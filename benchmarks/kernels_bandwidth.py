"""Benchmark playbook/kernels/ against eager torch, torch.compile of the reference, and Liger-Kernel, on one GPU.

    python benchmarks/kernels_bandwidth.py                       # all kernels, all sizes, bf16 -> benchmarks/results/kernels/
    python benchmarks/kernels_bandwidth.py --quick --out /tmp/k  # two sizes

For each kernel and size, every implementation is timed side by side in one process: each sample is
CUDA events around --calls back-to-back calls (so the GPU stays busy and the CPU's dispatch cost hides
behind the kernel, as it does inside a CUDA graph), implementations interleaved sample by sample; the
median over --samples samples is kept. At the small sizes that number is bound by dispatch, not memory.
GB/s counts the bytes a single pass must move (inputs read + outputs written) and is set against the
device's measured copy bandwidth (read + write). The goal (issue 6): at the largest size every kernel
reaches 85% of that bandwidth and is no slower than Liger's equivalent or the compiled reference.
Writes kernels.json (device, date, torch, rows, goals) and kernels.png.
"""
import argparse
import datetime
import importlib.metadata
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kernels  # noqa: E402
from playbook.kernels import reference  # noqa: E402
from playbook import bench  # noqa: E402  (MIN_NOISE: the margin a rival must beat)
from playbook.devices import describe, measure_ceilings  # noqa: E402

SIZES = [(1, 2048), (16, 4096), (1024, 4096), (8192, 4096), (32768, 4096)]
QUICK = [(1, 2048), (32768, 4096)]
GOAL_BW = 0.85


def liger():
    """Liger-Kernel's equivalents, by our kernel names (None where it is not installed)."""
    try:
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
        from liger_kernel.ops.geglu import LigerGELUMulFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    except Exception as e:  # noqa: BLE001
        print(f"Liger-Kernel not available ({type(e).__name__}: {e}); its column stays empty")
        return {}
    return {
        "rms_norm": lambda x, w, eps: LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama", False),
        "gemma_rms_norm": lambda x, w, eps: LigerRMSNormFunction.apply(x, w, eps, 1.0, "gemma", False),
        "fused_add_rms_norm": lambda x, r, w, eps: LigerFusedAddRMSNormFunction.apply(x, r, w, eps, 0.0, "llama", False),
        "silu_and_mul": lambda x: LigerSiLUMulFunction.apply(*x.chunk(2, dim=-1)),
        "gelu_tanh_and_mul": lambda x: LigerGELUMulFunction.apply(*x.chunk(2, dim=-1)),
    }


def cases(rows, hidden, dtype, device):
    """(kernel name, inputs, ours, reference, bytes moved) for one size."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, hidden, device=device, dtype=dtype, generator=g)
    r = torch.randn(rows, hidden, device=device, dtype=dtype, generator=g)
    w = torch.randn(hidden, device=device, dtype=dtype, generator=g)
    gu = torch.randn(rows, 2 * hidden, device=device, dtype=dtype, generator=g)
    e, n = x.element_size(), x.numel()
    return [
        ("rms_norm", (x, w, 1e-6), lambda x, w, eps: kernels.rms_norm(x, w, eps),
         lambda x, w, eps: reference.rms_norm(x, w, eps), 2 * n * e),
        ("gemma_rms_norm", (x, w, 1e-6), lambda x, w, eps: kernels.rms_norm(x, w, eps, 1.0),
         lambda x, w, eps: reference.rms_norm(x, w, eps, 1.0), 2 * n * e),
        ("fused_add_rms_norm", (x, r, w, 1e-6), kernels.fused_add_rms_norm, reference.fused_add_rms_norm, 4 * n * e),
        ("silu_and_mul", (gu,), kernels.silu_and_mul, reference.silu_and_mul, 3 * n * e),
        ("gelu_tanh_and_mul", (gu,), kernels.gelu_tanh_and_mul, reference.gelu_tanh_and_mul, 3 * n * e),
    ]


def check(name, got, want, dtype):
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), **reference.TOLERANCES[dtype], msg=lambda m: f"{name}: {m}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/kernels"))
    ap.add_argument("--quick", action="store_true", help="two sizes only")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--calls", type=int, default=20, help="back-to-back calls per sample")
    ap.add_argument("--samples", type=int, default=25)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/kernels_bandwidth.py needs a CUDA or ROCm GPU (the kernels' CPU path is the interpreter, "
                 "for tests only)")
    device, dtype = torch.device("cuda"), getattr(torch, args.dtype)
    copy_gbps = measure_ceilings(device)["copy_gbps"]
    theirs = liger()
    compiled = {}
    rows_out = []
    for rows, hidden in (QUICK if args.quick else SIZES):
        for name, inputs, ours, ref_fn, nbytes in cases(rows, hidden, dtype, device):
            with torch.no_grad():
                check(name, ours(*inputs), ref_fn(*inputs), dtype)
            compiled.setdefault(name, torch.compile(ref_fn, dynamic=False))
            steps = {"ours": lambda: ours(*inputs), "eager": lambda: ref_fn(*inputs),
                     "compiled": lambda: compiled[name](*inputs)}
            if name in theirs:
                steps["liger"] = (lambda fn: lambda: fn(*inputs))(theirs[name])
            p50s = back_to_back(steps, args.calls, args.samples)
            row = {"kernel": name, "rows": rows, "hidden": hidden, "dtype": args.dtype, "bytes": nbytes}
            for k, v in p50s.items():
                us = statistics.median(v) * 1e3
                row[f"{k}_us"] = round(us, 2)
                row[f"{k}_gbps"] = round(nbytes / us / 1e3, 1)
                row[f"{k}_pct_copy"] = round(100 * nbytes / us / 1e3 / copy_gbps, 1)
            rows_out.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items() if not k.endswith("_gbps")), flush=True)
    largest = max((r["rows"] * r["hidden"], (r["rows"], r["hidden"])) for r in rows_out)[1]
    goals = []
    for r in rows_out:
        if (r["rows"], r["hidden"]) != largest:
            continue
        rivals = {k: r[f"{k}_us"] for k in ("liger", "compiled") if f"{k}_us" in r}
        slowest_ok = all(r["ours_us"] <= v * (1 + bench.MIN_NOISE) for v in rivals.values())
        goals.append({"kernel": r["kernel"], "pct_copy": r["ours_pct_copy"], "bandwidth_ok": r["ours_pct_copy"] >= 100 * GOAL_BW,
                      "vs": {k: round(v / r["ours_us"], 3) for k, v in rivals.items()}, "no_slower_ok": slowest_ok})
    meta = describe(device)
    out = {"benchmark": "kernels", "device": meta, "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "triton": importlib.metadata.version("triton"),
           "liger_kernel": _version("liger-kernel"), "copy_gbps": copy_gbps, "calls": args.calls,
           "samples": args.samples, "rows": rows_out, "goal_bandwidth": GOAL_BW, "goals": goals}
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "kernels.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(rows_out, copy_gbps, dest / "kernels.png", meta)
    for gl in goals:
        print(f"goal {gl['kernel']}: {gl['pct_copy']}% of copy bandwidth "
              f"({'ok' if gl['bandwidth_ok'] else 'MISSED'}), rivals/ours {gl['vs']} "
              f"({'ok' if gl['no_slower_ok'] else 'SLOWER'})")
    print(f"wrote {dest}/kernels.json and kernels.png")


def _interleaved(runs, calls, samples):
    """{name: [ms per call, one per sample]}: CUDA events around each run (one run makes `calls` calls),
    names interleaved sample by sample."""
    out = {k: [] for k in runs}
    for _ in range(samples):
        for k, run in runs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            out[k].append(start.elapsed_time(end) / calls)
    return out


def back_to_back(steps, calls, samples, warmup=5):
    """{name: [ms per call, one per sample]}: events around `calls` calls, names interleaved per sample."""
    with torch.no_grad():
        for fn in steps.values():
            for _ in range(warmup):
                fn()
        torch.cuda.synchronize()

        def run(fn):
            for _ in range(calls):
                fn()
        return _interleaved({k: (lambda fn=fn: run(fn)) for k, fn in steps.items()}, calls, samples)


def graphed_back_to_back(steps, weights, calls, samples, warmup=3):
    """{name: [ms per call, one per sample]} with launch overhead out of the picture, as in a captured
    decode step: `calls` calls of each step (step(weight), the weights taken in turn) captured into one CUDA
    graph per name, events around each replay, names interleaved per sample."""
    graphs = {}
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):                 # compile and autotune before capture, off the graph
            for fn in steps.values():
                for i in range(warmup):
                    fn(weights[i % len(weights)])
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        for k, fn in steps.items():
            graphs[k] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graphs[k]):
                for i in range(calls):
                    fn(weights[i % len(weights)])
        for g in graphs.values():
            g.replay()
        torch.cuda.synchronize()
        return _interleaved({k: g.replay for k, g in graphs.items()}, calls, samples)


def _version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def plot(rows, copy_gbps, path, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["kernel"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), sharey=True)
    for ax, name in zip(axes, names):
        rs = [r for r in rows if r["kernel"] == name]
        xs = [f"{r['rows']}x{r['hidden']}" for r in rs]
        for impl, style in (("ours", "o-"), ("liger", "s--"), ("compiled", "^--"), ("eager", "x:")):
            if f"{impl}_gbps" in rs[0]:
                ax.plot(xs, [r[f"{impl}_gbps"] for r in rs], style, label=impl)
        ax.axhline(copy_gbps, color="grey", lw=1)
        ax.axhline(GOAL_BW * copy_gbps, color="grey", lw=1, ls=":")
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    axes[0].set_ylabel("GB/s (read + write)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"playbook/kernels/ on {meta.get('name', 'GPU')}: grey = copy bandwidth, dotted = {GOAL_BW:.0%}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
