"""Before a ladder run: what this machine can do, and a verdict.

    python -m playbook preflight          # exit 0 ready (a CPU-only machine too), 1 not ready

Device and driver, torch / triton / transformers versions, whether torch.compile works (in a
subprocess: a broken compiler must not take the caller down), which profilers are on PATH (ncu,
nsys, compute-sanitizer, rocprof), free GPU memory, and one verdict line.
"""
import os
import shutil
import subprocess
import sys

import torch

PROFILERS = ("ncu", "nsys", "compute-sanitizer", "rocprof", "rocprofv3")
COMPILE_PROBE = ("import torch; f = torch.compile(lambda x: torch.relu(x) * 2 + 1); "
                 "d = 'cuda' if torch.cuda.is_available() else 'cpu'; "
                 "x = torch.randn(64, device=d); assert torch.allclose(f(x), torch.relu(x) * 2 + 1); print('ok')")


def compile_works(timeout=600):
    """(True, "") when torch.compile builds and runs a small function here, else (False, why).
    The probe compiles into the ladder's own compile cache (runs.compile_cache()), so it also warms what
    every first compile of a run would pay for: on a CPU, Inductor's check of the vector ISA (a C++ build,
    3.5 s on the 2-core CPU, kept per cache folder) and the precompiled header of its kernels' prelude
    (kept per machine); `make setup` runs preflight for that reason."""
    from .runs import compile_cache
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": compile_cache()}
    try:
        done = subprocess.run([sys.executable, "-c", COMPILE_PROBE], capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return False, f"no answer in {timeout} s"
    if done.returncode == 0 and done.stdout.strip().endswith("ok"):
        return True, ""
    return False, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300]


def facts():
    from .devices import describe, resolve_device
    from .runs import versions
    device = resolve_device("auto")
    out = {"device": describe(device), "versions": versions(),
           "profilers": {name: shutil.which(name) for name in PROFILERS}}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        out["gpu_memory_gib"] = {"free": round(free / 2**30, 1), "total": round(total / 2**30, 1)}
    ok, why = compile_works()
    out["compile"] = {"works": ok, "error": why or None}
    return out


def verdict(f):
    """(exit code, one line)."""
    if not f["compile"]["works"]:
        return 1, (f"NOT READY: torch.compile fails here ({f['compile']['error']}); phases 1, 5 and 6 would all "
                   "fail: fix the compiler (a C++ compiler for CPU builds, Triton for GPUs) first")
    if f["device"]["type"] != "cuda":
        return 0, ("READY (CPU only): no GPU seen, so only CPU phases will run: cudagraph measures compile alone, "
                   "gemm and tuning say why they skip, kernels run only under TRITON_INTERPRET=1")
    mem = f.get("gpu_memory_gib", {})
    tools = [n for n, p in f["profilers"].items() if p]
    return 0, (f"READY: {f['device'].get('name')} ({f['device'].get('vendor')}), {mem.get('free')} of {mem.get('total')} "
               f"GiB free; profilers: {', '.join(tools) or 'none on PATH (torch.profiler traces still work)'}")


def main(say=print):
    f = facts()
    d, v = f["device"], f["versions"]
    say(f"device: {d.get('name')} ({d.get('vendor')}), driver {d.get('driver')}, runtime {d.get('runtime')}")
    say(f"torch {v['torch']} (cuda {v['cuda']}, hip {v['hip']}), triton {v['triton']}, transformers {v['transformers']}, "
        f"python {v['python']}")
    if "gpu_memory_gib" in f:
        say(f"GPU memory: {f['gpu_memory_gib']['free']} GiB free of {f['gpu_memory_gib']['total']}")
    say("torch.compile: " + ("works" if f["compile"]["works"] else f"FAILS: {f['compile']['error']}"))
    say("profilers: " + ", ".join(f"{n} {'at ' + p if p else 'not found'}" for n, p in f["profilers"].items()))
    code, line = verdict(f)
    say(line)
    return code
