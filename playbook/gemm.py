"""Every GEMM of one step, and each shape timed on every GEMM backend the device has.

    shapes = record_gemms(model, args, kwargs)          # [{"M", "N", "K", "dtype", "bias", "count"}]
    rows = measure(shapes, device, ceilings)           # one row per shape x backend
    write_csv(rows, run.path / "gemm_tuning.csv")

Backends: on CUDA the BLAS libraries torch can prefer (cuBLAS, cuBLASLt), and Inductor's Triton GEMM
templates autotuned for the shape; on ROCm the same switches mean rocBLAS / hipBLASLt (plus CK where
torch has it), and aiter's tuned GEMM when amd-aiter is installed (unverified on hardware here); on a
CPU, ATen's own GEMM only. Each shape is timed as nn.Linear calls it (weight [N, K]) inside a captured
CUDA graph of REPEAT calls, so the number is kernel time, not Python dispatch.
"""
import csv
from collections import Counter

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from . import bench, stderr_filter
from .devices import dtype_name
from .quiet import quiet

REPEAT = 20
aten = torch.ops.aten


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            self.shapes[(a.shape[0], b.shape[1], a.shape[1], dtype_name(a.dtype), packet is aten.addmm)] += 1
        return func(*args, **(kwargs or {}))


def record_gemms(model, args, kwargs=None):
    rec = _Recorder()
    with torch.no_grad(), rec:
        model(*args, **(kwargs or {}))
    return [{"M": m, "N": n, "K": k, "dtype": dt, "bias": bias, "count": c}
            for (m, n, k, dt, bias), c in sorted(rec.shapes.items(), key=lambda kv: -kv[1])]


def blas_libraries(device):
    """The BLAS library names torch can be told to prefer here, as (switch value, display name)."""
    if device.type != "cuda":
        return []
    if torch.version.hip:
        return [("cublas", "rocblas"), ("cublaslt", "hipblaslt")]
    return [("cublas", "cublas"), ("cublaslt", "cublaslt")]


def _time_graphed(fn, device, iters=30):
    """Kernel time of fn() in microseconds: REPEAT calls captured in one CUDA graph, replays timed."""
    if device.type != "cuda":
        t = bench.time_step(fn, device, iters=iters, warmup=3)
        return t.p50_ms * 1e3
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPEAT):
            fn()
    t = bench.time_step(graph.replay, device, iters=iters, warmup=3)
    return t.p50_ms * 1e3 / REPEAT


def _operands(shape, device):
    dt = getattr(torch, shape["dtype"])
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(shape["M"], shape["K"], device=device, dtype=dt, generator=g)
    w = torch.randn(shape["N"], shape["K"], device=device, dtype=dt, generator=g) / shape["K"] ** 0.5
    b = torch.randn(shape["N"], device=device, dtype=dt, generator=g) if shape["bias"] else None
    return a, w, b


def backends_here(device):
    names = [name for _, name in blas_libraries(device)] or ["aten"]
    if device.type == "cuda" and not torch.version.hip:
        names.append("triton")
    if device.type == "cuda" and torch.version.hip:
        names.append("triton")
        from .rewrites import aiter_ops
        if aiter_ops.available():
            names.append("aiter")
    return names


def _runner(name, device, a, w, b):
    """fn() computing F.linear(a, w, b) on backend name, and a restore() for global switches."""
    libs = dict((display, switch) for switch, display in blas_libraries(device))
    if name in libs:
        prev = stderr_filter.prefer_blas(libs[name])
        return (lambda: F.linear(a, w, b)), (lambda: torch.backends.cuda.preferred_blas_library(prev))
    if name == "aten":
        return (lambda: F.linear(a, w, b)), (lambda: None)
    if name == "triton":
        fn = torch.compile(lambda a, w, b: F.linear(a, w, b), dynamic=False,
                           options={"max_autotune_gemm": True, "max_autotune_gemm_backends": "TRITON",
                                    "triton.cudagraphs": False})
        return (lambda: fn(a, w, b)), (lambda: None)
    if name == "aiter":
        from aiter.tuned_gemm import gemm_a16w16          # B as [N, K]: nn.Linear's layout
        return (lambda: gemm_a16w16(a, w, bias=b)), (lambda: None)
    raise ValueError(f"unknown GEMM backend {name!r}")


def measure(shapes, device, ceilings=None, progress=print, backends=None):
    """Rows of shape x backend: us, TFLOP/s, GB/s, the shape's floor (floor_us) and % of it reached.
    backends: the names to time (default: every one here)."""
    with quiet():       # the kernels started ahead wait once for the whole table, not once a timing
        return _measure(shapes, device, ceilings or {}, progress, backends or backends_here(device))


def _measure(shapes, device, ceilings, progress, names):
    rows = []
    for i, s in enumerate(shapes):
        a, w, b = _operands(s, device)
        want = F.linear(a.float(), w.float(), None if b is None else b.float())
        flops = 2 * s["M"] * s["N"] * s["K"]
        nbytes = (s["M"] * s["K"] + s["N"] * s["K"] + s["M"] * s["N"]) * a.element_size()
        floor_us = max(nbytes / (ceilings["copy_gbps"] * 1e9) * 1e6 if ceilings.get("copy_gbps") else 0,
                       flops / (ceilings["matmul_tflops"] * 1e12) * 1e6 if ceilings.get("matmul_tflops") else 0)
        for name in names:
            row = dict(s, backend=name, us=None, tflops=None, gbps=None, floor_us=round(floor_us, 3) or None,
                       pct_of_floor=None, error=None)
            restore = lambda: None  # noqa: E731
            try:
                fn, restore = _runner(name, device, a, w, b)
                with torch.no_grad():
                    err = (fn().float() - want).abs().max().item() / (want.abs().max().item() or 1.0)
                    if not err < 2e-2:
                        raise RuntimeError(f"wrong result: relative error {err:.3g}")
                    us = _time_graphed(fn, device)
                row.update(us=round(us, 3), tflops=round(flops / us / 1e6, 2), gbps=round(nbytes / us / 1e3, 1),
                           pct_of_floor=round(100 * floor_us / us, 1) if floor_us else None)
            except Exception as e:  # noqa: BLE001  (recorded per backend)
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
            finally:
                restore()
            rows.append(row)
        progress(f"gemm shape {i + 1}/{len(shapes)}: M={s['M']} N={s['N']} K={s['K']} x{s['count']}: " +
                 ", ".join(f"{r['backend']} {r['us']} us" for r in rows[-len(names):]))
    mark_best(rows)
    return rows


def mark_best(rows):
    """Set each row's "best": the fastest backend of its shape."""
    best = {}
    for r in rows:
        key = (r["M"], r["N"], r["K"], r["dtype"], r["bias"])
        if r["us"] is not None and (key not in best or r["us"] < best[key]["us"]):
            best[key] = r
    for r in rows:
        r["best"] = best.get((r["M"], r["N"], r["K"], r["dtype"], r["bias"])) is r


def step_total(rows, backend):
    """The step's GEMM time on one backend (each shape times its count); None if any shape fails there."""
    total = 0.0
    for r in rows:
        if r["backend"] == backend:
            if r["us"] is None:
                return None
            total += r["us"] * r["count"]
    return total


def headroom(rows, backend):
    """[(shape row, us a step this backend is above the shape's floor)], largest first: what any other
    backend could save at most, shape by shape (count included)."""
    out = [(r, r["count"] * max(0.0, r["us"] - r["floor_us"])) for r in rows
           if r["backend"] == backend and r["us"] is not None and r.get("floor_us")]
    return sorted(out, key=lambda x: -x[1])


def saving(rows, base, other):
    """us a step saved by running each shape on `other` where it beats `base` (per-shape choice)."""
    by = {}
    for r in rows:
        if r["us"] is not None:
            by.setdefault((r["M"], r["N"], r["K"], r["dtype"], r["bias"]), {})[r["backend"]] = r
    return sum(b[base]["count"] * max(0.0, b[base]["us"] - b[other]["us"]) for b in by.values()
               if base in b and other in b)


COLUMNS = ["M", "N", "K", "dtype", "bias", "count", "backend", "us", "tflops", "gbps", "floor_us", "pct_of_floor",
           "best", "error"]
# aiter's GEMM configs (REFERENCE.md): the shapes its tuner reads, and the columns of what it writes, which
# tuned_gemm reads back from the CSV(s) named in AITER_CONFIG_GEMM_BF16.
AITER_UNTUNED = ["M", "N", "K", "bias", "dtype", "outdtype", "scaleAB", "bpreshuffle"]
AITER_TUNED = ["gfx", "cu_num", "M", "N", "K", "bias", "dtype", "outdtype", "scaleAB", "bpreshuffle", "libtype",
               "solidx", "splitK", "us", "kernelName", "err_ratio", "tflops", "bw"]


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        out.writeheader()
        out.writerows(rows)


def write_aiter_untuned(shapes, path):
    """The step's GEMM shapes in aiter's untuned-CSV form (dtype as aiter writes it: torch.bfloat16)."""
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=AITER_UNTUNED)
        out.writeheader()
        for s in shapes:
            dt = f"torch.{s['dtype']}"
            out.writerow({"M": s["M"], "N": s["N"], "K": s["K"], "bias": s["bias"], "dtype": dt, "outdtype": dt,
                          "scaleAB": False, "bpreshuffle": False})
    return path


def aiter_tune(shapes, run_dir, timeout=1800):
    """Tune the step's shapes with aiter's own tuner (gradlib) into aiter_tuned_gemm.csv and point
    AITER_CONFIG_GEMM_BF16 at it, so aiter's GEMM is timed with configs for these shapes. Returns
    (tuned path or None, a note). ROCm only; unverified on hardware here."""
    import importlib.util
    import os
    import subprocess
    import sys
    untuned = write_aiter_untuned(shapes, run_dir / "aiter_untuned_gemm.csv")
    tuned = run_dir / "aiter_tuned_gemm.csv"
    command = [sys.executable, "-m", "gradlib.gemm_tuner", "--input_file", str(untuned), "--tuned_file", str(tuned)]
    if importlib.util.find_spec("gradlib") is None:
        return None, (f"aiter's tuner (gradlib) is not installed: shapes written to {untuned.name}; tune them with "
                      f"`{' '.join(command[1:])}` and set AITER_CONFIG_GEMM_BF16 to the result")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not tuned.exists():
        return None, f"aiter's tuner failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"
    with open(tuned) as f:
        header = next(csv.reader(f), [])
    missing = [c for c in AITER_TUNED if c not in header]
    if missing:
        return None, f"{tuned.name} lacks aiter's columns {missing}: not used"
    os.environ["AITER_CONFIG_GEMM_BF16"] = str(tuned.resolve())
    return tuned, f"aiter's GEMM timed with {tuned.name} (AITER_CONFIG_GEMM_BF16), tuned by its own tuner"
