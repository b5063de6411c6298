"""The ladder against its peers: eager, torch.compile's four modes and the playbook's recipe, one run.

    python benchmarks/peers.py --workload llama --preset 1b --recipe benchmarks/results/llama-1b/recipe.json \
        --out benchmarks/results/peers-llama-1b.json
    python benchmarks/peers.py --workload pi0 --preset full --option cameras=3 --option action_horizon=10 \
        --recipe reports/<pi0 run>/recipe.json --out benchmarks/results/peers-pi0-full.json
    python benchmarks/peers.py --workload hf --model ./my-qwen --recipe reports/<run>/recipe.json --out q.json
    python benchmarks/peers.py --workload custom --model mypkg.models:make --device cpu --dtype float32
    python benchmarks/peers.py --table benchmarks/results/peers-*.json      # the README table and plot

Each peer runs in its own subprocess with a time limit (--together: all built at once, each in its
own process, then timed one at a time, so that pi0's long whole-model compiles fit one sitting): a crash (torch's own CUDA graph modes
segfaulted on our H200) is recorded as a crash with its signal, a hang as a timeout, and the next peer
runs. Every peer builds the same workload (same seed, same weights), checks its outputs against eager's
in the same process with the ladder's judge (an fp32 twin on the same rounded weights), and is timed with CUDA events after warm-up.
Ratios are to eager's p50 and to the device's floor (max of (weight + KV-cache bytes) / copy bandwidth
and counted FLOPs / matmul rate, measured once in the eager peer's process). Any workload the ladder
takes works here, `custom` and `hf` with their --model, on a GPU or on a CPU (--device cpu --dtype float32).
"""
import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PEERS = ("eager",) + tuple(f"compile-{m}" for m in MODES) + ("playbook",)


def measure(peer, params, recipe, iters, warmup, wait=False):
    """Run in the peer's own process: build, check against eager, (wait for its turn,) time."""
    import torch

    from playbook import bench
    from playbook.compare import compare, snapshot
    from playbook.devices import describe, measure_ceilings
    from playbook.pipeline import Pipeline
    from playbook.runs import versions
    pipe = Pipeline.fresh(params)
    wl, device = pipe.workload, pipe.device
    with torch.no_grad():
        reference = snapshot(wl())
        # the ladder's judge: the same model in fp32 on the same rounded weights, and eager's own distance to it
        twin = Pipeline.fresh(params, precise=True) if pipe.dtype != torch.float32 else None
        precise = snapshot(twin.workload()) if twin else None
        base_err = compare(reference, precise, torch.float32)["rel_err"] if twin else None
        del twin
        if device.type == "cuda":
            torch.cuda.empty_cache()      # the twin's memory back to the device: peers built together share it
    out = {"peer": peer, "device": describe(device).get("name"), "torch": versions()["torch"]}
    t0 = time.perf_counter()
    if peer == "eager":
        from playbook.workloads.base import counted_flops
        step = wl
        out["weight_bytes"], out["kv_bytes"] = wl.weight_bytes, wl.kv_bytes
        out["flops"], out["flops_by"] = counted_flops(wl)
    elif peer == "playbook":
        from playbook.reuse import load_recipe
        data = load_recipe(recipe)
        built = Pipeline.from_recipe(params, data["phases"]).build()
        step = built.step
        out["recipe"] = [s["name"] for s in data["phases"]]
    else:
        mode = peer.removeprefix("compile-")
        fn = torch.compile(wl.model, mode=mode)
        marks = mode in ("reduce-overhead", "max-autotune")          # Inductor's own CUDA graphs (cudagraph trees)

        def step():
            if marks:
                torch.compiler.cudagraph_mark_step_begin()
            return fn(*wl.args, **wl.kwargs)
    with torch.no_grad():
        got = snapshot(step())
    out["build_s"] = round(time.perf_counter() - t0, 2)
    verdict = compare(got, reference, pipe.dtype, precise=precise, baseline_err=base_err)
    out.update(correct=verdict["correct"], rel_err=verdict["rel_err"], problems=verdict["problems"])
    if wait:                      # built beside other peers: time only when it is this one's turn alone
        print("PEER_BUILT", flush=True)
        sys.stdin.readline()
    if peer == "eager":
        out["ceilings"] = measure_ceilings(device)
    timing = bench.time_step(step, device, iters=iters, warmup=warmup)
    out.update({k: v for k, v in timing.as_dict().items() if k != "round_p50_ms"})
    return out


def peer_command(peer, args):
    cmd = [sys.executable, __file__, "--one", peer, "--workload", args.workload, "--preset", args.preset,
           "--model", args.model, "--device", args.device, "--dtype", args.dtype, "--iters", str(args.iters), "--warmup", str(args.warmup)]
    return cmd + [x for o in args.option for x in ("--option", o)] + (["--recipe", args.recipe] if args.recipe else [])


def _died(peer, proc, err_path, wall, what, timed_out=False):
    tail = Path(err_path).read_text(errors="replace")[-800:]
    if timed_out:
        return {"peer": peer, "status": "timeout", "error": what, "wall_s": wall, "log_tail": tail}
    if proc.returncode < 0:
        status, error = "crash", f"killed by {signal.Signals(-proc.returncode).name}"
    else:
        status, error = "error", (tail.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
    return {"peer": peer, "status": status, "error": error, "wall_s": wall, "log_tail": tail}


def run_group(peers, args, limit_s, cache_dir, log=lambda m: print(m, flush=True)):
    """Peers in their own subprocesses, built together, then timed one at a time.

    Each process builds its peer and checks it, prints PEER_BUILT and waits; once every process of the
    group has built (or died, or run past limit_s), each is told to time in turn, alone on the device, so
    a build never runs beside a measurement. A crash is recorded with its signal, a hang as a timeout."""
    import queue
    import threading
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    events, procs, errs, t0 = queue.Queue(), {}, {}, time.perf_counter()
    for peer in peers:
        errs[peer] = tempfile.NamedTemporaryFile(prefix=f"peer-{peer}-", suffix=".err", delete=False).name
        procs[peer] = subprocess.Popen(peer_command(peer, args) + ["--wait"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=open(errs[peer], "w"), text=True, env=env)

        def pump(peer=peer):
            for line in procs[peer].stdout:
                if line.startswith(("PEER_BUILT", "PEER_RESULT ")):
                    events.put((peer, line.strip()))
            events.put((peer, "EXIT"))
        threading.Thread(target=pump, daemon=True).start()

    def wait_for(peer_set, word, deadline):
        got = {}
        while len(got) < len(peer_set) and time.perf_counter() < deadline:
            try:
                peer, line = events.get(timeout=max(0.1, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if peer in peer_set and peer not in got and (line.startswith(word) or line == "EXIT"):
                got[peer] = line
        return got

    results, built = {}, wait_for(set(peers), "PEER_BUILT", t0 + limit_s)
    build_wall = round(time.perf_counter() - t0, 1)
    for peer in peers:
        if peer not in built:                        # still building at the limit
            procs[peer].kill()
            procs[peer].wait()
            results[peer] = _died(peer, procs[peer], errs[peer], build_wall, f"not built within {limit_s} s" + (
                f" (built beside {len(peers) - 1} others)" if len(peers) > 1 else ""), timed_out=True)
        elif built[peer] == "EXIT":                  # died while building: crashed or raised
            procs[peer].wait(timeout=60)
            results[peer] = _died(peer, procs[peer], errs[peer], build_wall, "")
        if peer in results:
            log(f"{peer}: {results[peer]['status']}: {results[peer]['error']}")
    for peer in peers:
        if peer in results:
            continue
        proc, t1 = procs[peer], time.perf_counter()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        line = wait_for({peer}, "PEER_RESULT ", t1 + limit_s).get(peer, "EXIT")
        if line != "EXIT":
            proc.wait(timeout=60)
        if line.startswith("PEER_RESULT "):
            results[peer] = {**json.loads(line[len("PEER_RESULT "):]), "status": "ok",
                             "wall_s": round(build_wall + time.perf_counter() - t1, 1)}
        else:
            hung = proc.poll() is None
            if hung:
                proc.kill()
                proc.wait()
            results[peer] = _died(peer, proc, errs[peer], round(time.perf_counter() - t0, 1),
                                  f"no timing within {limit_s} s", timed_out=hung)
        r = results[peer]
        log(f"{peer}: {r['status']}" + (f", p50 {r['p50_ms']:.3f} ms, correct {r['correct']}, built in "
                                        f"{r['build_s']} s" if r["status"] == "ok" else f": {r['error']}"))
    for path in errs.values():
        os.unlink(path)
    return [results[p] for p in peers]


def add_ratios(results):
    eager = next((r for r in results if r["peer"] == "eager" and r["status"] == "ok"), None)
    if not eager:
        return None
    c = eager["ceilings"]
    nbytes = eager["weight_bytes"] + (eager.get("kv_bytes") or 0)
    floor = max(nbytes / (c["copy_gbps"] * 1e9), (eager["flops"] or 0) / (c["matmul_tflops"] * 1e12)) * 1e3
    for r in results:
        if r["status"] == "ok":
            r["vs_eager"] = round(eager["p50_ms"] / r["p50_ms"], 2)
            r["x_of_floor"] = round(r["p50_ms"] / floor, 2)
    return float(f"{floor:.4g}")          # four significant digits: a tiny model's floor is not rounded to 0


def table(files):
    """The README's peers table (Markdown) and a plot beside the first file."""
    rows = ["| workload | peer | p50 (ms) | vs eager | x of floor | correct | build (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    data = [json.loads(Path(f).read_text()) for f in files]
    for d in data:
        for r in d["peers"]:
            if r["status"] == "ok":
                rows.append(f"| {d['label']} | {r['peer']} | {r['p50_ms']:.3f} | {r['vs_eager']}x | {r['x_of_floor']} "
                            f"| {r['correct']} | {r['build_s']} |")
            else:
                rows.append(f"| {d['label']} | {r['peer']} | {r['status']} | - | - | - | {r['error'][:60]} |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 3.6), squeeze=False)
    for ax, d in zip(axes[0], data):
        ok = [r for r in d["peers"] if r["status"] == "ok"]
        ax.barh([r["peer"] for r in ok], [r["p50_ms"] for r in ok],
                color=["tab:green" if r["peer"] == "playbook" else "tab:gray" for r in ok])
        ax.axvline(d["floor_ms"], color="tab:red", linestyle="--", label=f"floor {d['floor_ms']:.2f} ms")
        ax.set_xscale("log")
        ax.set_xlabel("p50 (ms, log scale)")
        ax.set_title(f"{d['label']} on {d['device']}")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    fig.tight_layout()
    png = Path(files[0]).with_name("peers.png")
    fig.savefig(png, dpi=110)
    return "\n".join(rows), png


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="llama")
    ap.add_argument("--preset", default="", help="the workload's preset (default: the ladder's, 1b for llama on a GPU)")
    ap.add_argument("--model", default="", help="custom: package.module:function; hf: a checkpoint folder or a "
                                                "model type")
    ap.add_argument("--option", action="append", default=[])
    ap.add_argument("--recipe", default="", help="the playbook run's recipe.json (the 'playbook' peer)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--limit-s", type=int, default=300, help="time limit per peer, build included")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--out", default="")
    ap.add_argument("--together", action="store_true",
                    help="build every peer at once (each in its own process), then time them one at a time")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--table", nargs="*", help="print the Markdown table of these result files and plot them")
    args = ap.parse_args()
    if args.table:
        md, png = table(args.table)
        print(md + f"\n\n![peers]({png})")
        return 0
    from playbook.errors import PlaybookError
    from playbook.runs import resolve_params
    try:          # what the ladder refuses is refused here too, by name, before any peer starts
        params = resolve_params(workload=args.workload, preset=args.preset, model=args.model, device=args.device,
                                dtype=args.dtype, options=args.option, iters=args.iters, warmup=args.warmup)
    except PlaybookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.preset, args.model = params["preset"], params["model"]
    if args.one:
        print("PEER_RESULT " + json.dumps(measure(args.one, params, args.recipe, args.iters, args.warmup, args.wait)),
              flush=True)
        return 0
    peers = [p for p in args.peers.split(",") if p != "playbook" or args.recipe]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    with tempfile.TemporaryDirectory(prefix="peers-inductor-") as cache:   # shared by the compiling peers
        if args.together:
            results = run_group(peers, args, args.limit_s, cache)
        else:
            results = [r for peer in peers for r in run_group([peer], args, args.limit_s, cache)]
    floor = add_ratios(results)
    label = " ".join(filter(None, (args.workload, Path(args.model).name if args.workload == "hf" else args.model,
                                   args.preset))) + "".join(f" {o}" for o in args.option)
    ok = [r for r in results if r["status"] == "ok"]
    out = {"label": label, "params": params, "date": dt.date.today().isoformat(),
           "device": ok[0]["device"] if ok else None, "torch": ok[0]["torch"] if ok else None,
           "iters": args.iters, "limit_s": args.limit_s, "builds": "together" if args.together else "one at a time",
           "floor_ms": floor, "peers": results}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
