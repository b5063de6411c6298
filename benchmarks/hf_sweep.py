"""Every model type the installed transformers knows, built by `--workload hf` at a preset's sizes and run once.

    python benchmarks/hf_sweep.py --out benchmarks/results/hf-sweep/cpu.json            # all of them, on a CPU
    python benchmarks/hf_sweep.py --only jamba,whisper,clip --out /tmp/sweep.json
    python benchmarks/hf_sweep.py --shard 0/2 --out a.json & python benchmarks/hf_sweep.py --shard 1/2 --out b.json

Each type runs in one worker process with a time limit and a memory limit, so a model that hangs or
swallows memory is recorded as such and the sweep goes on (a worker that dies is replaced). A row:
{model, status, seconds, what, output, weight_mb, error}; status is `ok` (built, and two calls of its step
gave the same finite, non-zero output), `refused` (a PlaybookError: what the workload cannot build, with
what to do), `error` (anything else escaped: a defect of the workload), `timeout` or `crashed`.
"""
import argparse
import datetime as dt
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(model, preset, memory_gb):
    """The row of one model type (in a worker)."""
    import resource

    import torch

    from playbook.errors import PlaybookError
    from playbook.workloads import build_workload
    resource.setrlimit(resource.RLIMIT_AS, (memory_gb << 30, memory_gb << 30))
    row = {"model": model}
    start = time.perf_counter()
    try:
        wl = build_workload("hf", preset, model, torch.device("cpu"), torch.float32, options={})
        with torch.no_grad():
            first, second = wl.model(*wl.args, **wl.kwargs), wl.model(*wl.args, **wl.kwargs)
        sound = bool(torch.isfinite(first).all() and first.abs().max() > 0 and torch.equal(first, second))
        row.update(status="ok" if sound else "error", what=wl.description, output=list(first.shape),
                   weight_mb=round(wl.weight_bytes / 1e6, 1),
                   **({} if sound else {"error": "two calls differ, or the output is not finite and non-zero"}))
    except PlaybookError as e:
        row.update(status="refused", error=str(e)[:400])
    except Exception as e:
        row.update(status="error", error=f"{type(e).__name__}: {str(e)[:400]}")
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _worker(jobs, results, preset, memory_gb):
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    for model in iter(jobs.get, None):
        results.put(one(model, preset, memory_gb))


def sweep(models, preset="tiny", limit_s=90, memory_gb=12, progress=print):
    """Rows for `models`, one worker at a time, each type within `limit_s` seconds."""
    ctx = mp.get_context("spawn")
    rows, todo = [], list(models)
    while todo:
        jobs, results = ctx.Queue(), ctx.Queue()
        for model in todo:
            jobs.put(model)
        jobs.put(None)
        worker = ctx.Process(target=_worker, args=(jobs, results, preset, memory_gb), daemon=True)
        worker.start()
        fresh = True
        while todo:
            model, started = todo[0], time.perf_counter()
            try:
                row = results.get(timeout=limit_s + 60 * fresh)   # a fresh worker's first type waits for imports too
            except Exception:
                alive = worker.is_alive()
                worker.kill()
                worker.join()
                row = {"model": model, "status": "timeout" if alive else "crashed",
                       "seconds": round(time.perf_counter() - started, 2),
                       "error": f"no answer in {limit_s} s" if alive else f"the worker died ({worker.exitcode})"}
                rows.append(row)
                todo.pop(0)
                progress(f"{model:36s} {row['status']}")
                break                                   # a fresh worker for the rest
            rows.append(row)
            todo.pop(0)
            fresh = False
            progress(f"{model:36s} {row['status']:8s} {row['seconds']:6.1f}s {(row.get('error') or row.get('what', ''))[:90]}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--only", default="", help="comma-separated model types (default: every one)")
    ap.add_argument("--shard", default="0/1", help="I/N: every Nth type from the Ith")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--limit-s", type=int, default=90)
    ap.add_argument("--memory-gb", type=int, default=12)
    args = ap.parse_args()
    import torch
    import transformers

    from playbook.workloads import hf
    models = [m for m in args.only.split(",") if m] or hf.model_types()
    i, n = (int(x) for x in args.shard.split("/"))
    models = models[i::n]
    started = time.perf_counter()
    rows = sweep(models, args.preset, args.limit_s, args.memory_gb)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "refused", "error", "timeout", "crashed")}
    out = {"date": dt.date.today().isoformat(), "device": "cpu", "torch": torch.__version__,
           "transformers": transformers.__version__, "preset": args.preset, "shard": args.shard,
           "limit_s": args.limit_s, "seconds": round(time.perf_counter() - started, 1), "counts": counts,
           "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
