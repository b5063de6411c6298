"""Does a coordinate-descent build served from Inductor's caches tune again? (GPU; issue 17's verify time.)

    python benchmarks/autotune_cache_check.py --out reports/autotune-cache.json            # with playbook's mend
    python benchmarks/autotune_cache_check.py --torch-only --out reports/autotune-cache.json   # torch as it is

On the H200 (llama 1b, torch 2.11, 2026-11-23) verify rebuilt the recipe that tuning had just built and
kept, hit Inductor's FX graph cache, and still spent 13 s in `CachingAutotuner.coordinate_descent_tuning`.
This builds a small decode-like block with coordinate descent in one process, then the same in a second
and a third process on the same cache folder, and records for each: the compile-cache counters, the seconds torch's
timers give coordinate descent and the other compile stages, and the `.best_config` files the first left
(how many say found_by_coordesc).

Found on the H200 (torch 2.11, 2026-11-23, `benchmarks/results/autotune-cache/`): every lookup in the second
process was a hit, yet it benchmarked configs again and saved two of the three kernels' configs without
the coordinate-descent mark, over the tuned ones; the third process then missed on one of them and ran
coordinate descent for it again (6.4 s tuning in the first process, 1.5 s in the second, 0.3 s in the
third). Returning early from coordinate descent on a cache hit (tried that day) changed nothing: torch
already skips it there. So the cached tuned configs churn between processes; the cause is in Inductor.
playbook/autotune_cache.py names the three causes found since and mends them; each process here records
`coordesc_benches` (torch's count of coordinate-descent benchmarks) and `not_retuned` (kernels the mend
kept from tuning again).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # the project importable when run as a script


def _block(dim=2048, hidden=8192):
    """A small decode-like block (RMSNorm, gate/up, SiLU, down, residual) on random bf16 weights."""
    import torch
    torch.manual_seed(0)
    w1 = torch.randn(2 * hidden, dim, device="cuda", dtype=torch.bfloat16) / dim ** 0.5
    w2 = torch.randn(dim, hidden, device="cuda", dtype=torch.bfloat16) / hidden ** 0.5
    nw = torch.ones(dim, device="cuda", dtype=torch.bfloat16)

    def block(x):
        h = x.float()
        h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * nw
        gate, up = (h @ w1.t()).chunk(2, dim=-1)
        return x + (torch.nn.functional.silu(gate) * up) @ w2.t()
    return block


def build_once(mend=True, recipe=None):
    import torch

    from playbook import autotune_cache, clock
    if not mend:                # keep the pipeline's own install() from mending too
        autotune_cache.hold_off("not installed (--torch-only)")
    installed = autotune_cache.install()
    states, saves = [], []
    try:                                # what each kernel's autotune-cache lookup said, and what was saved
        from torch._inductor.runtime import autotune_cache as torch_autotune_cache, triton_heuristics
        check = triton_heuristics.check_autotune_cache

        def checked(configs, filename, inductor_meta):
            got = check(configs, filename, inductor_meta)
            states.append(got[2].get("autotune_cache_state"))
            return got
        triton_heuristics.check_autotune_cache = checked
        save = torch_autotune_cache.AutotuneCache.save

        def counted_save(self, config, time_taken_ns, found_by_coordesc=False, *a, **k):
            saves.append(bool(found_by_coordesc))
            return save(self, config, time_taken_ns, found_by_coordesc, *a, **k)
        counted_save.__name__ = counted_save.__qualname__ = "save"     # a pickled hook names its method "save"
        torch_autotune_cache.AutotuneCache.save = counted_save
    except (ImportError, AttributeError) as e:
        states.append(f"not instrumented: {e}")
    from torch._dynamo.utils import counters
    clock.reset()
    t0 = time.perf_counter()
    if recipe:                  # a kept recipe (with tuning's coordinate descent) built as verify builds it
        from playbook.pipeline import Pipeline
        from playbook.reuse import load_recipe
        data = load_recipe(recipe)
        Pipeline.from_recipe({"seed": 0, **data["workload"]}, data["phases"]).build()
        t0 += clock.time_s().get("build", 0.0)          # the model's build is not the compile
    else:
        fn = torch.compile(_block(), options={"coordinate_descent_tuning": True, "triton.cudagraphs": False})
        fn(torch.randn(1, 1, 2048, device="cuda", dtype=torch.bfloat16))
    torch.cuda.synchronize()
    return {"first_call_s": round(time.perf_counter() - t0, 2), "compile_cache": clock.cache_counts(),
            "compile_stages": clock.compile_stages(least_s=0.01),
            "autotune_cache_states": {k: states.count(k) for k in set(map(str, states))},
            "saves": {"coordesc": saves.count(True), "other": saves.count(False)},
            "coordesc_benches": counters["inductor"]["coordesc_tuning_bench"], "mend": installed,
            "not_retuned": autotune_cache.not_retuned()}


def best_configs(cache):
    files = list(Path(cache).rglob("*.best_config"))
    coordesc = 0
    for f in files:
        try:
            coordesc += bool(json.loads(f.read_text()).get("found_by_coordesc"))
        except (OSError, ValueError):
            pass
    return {"files": len(files), "found_by_coordesc": coordesc}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "reports" / "autotune-cache.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-only", action="store_true", help="without playbook/autotune_cache.py's mend")
    ap.add_argument("--recipe", help="build this recipe.json (a tuned one) instead of the small block")
    ap.add_argument("--processes", type=int, default=3)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(build_once(mend=not args.torch_only, recipe=args.recipe)))
        return 0
    import torch
    cache = tempfile.mkdtemp(prefix="playbook-autotune-check-")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    runs = []
    for i in range(args.processes):     # 1 tunes and fills the cache; the others build the same on it
        child = [sys.executable, __file__, "--child"] + (["--torch-only"] if args.torch_only else []) \
            + (["--recipe", args.recipe] if args.recipe else [])
        done = subprocess.run(child, env=env, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or ["{}"])[-1]
        run = json.loads(last) if done.returncode == 0 else {"error": done.stderr[-2000:]}
        run["best_configs_after"] = best_configs(cache)
        runs.append(run)
        print(f"process {i + 1}: {json.dumps(run)[:600]}", flush=True)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "mend": not args.torch_only, "recipe": args.recipe, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
