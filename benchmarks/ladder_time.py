"""How long a whole ladder takes, start to report, uninterrupted: one row per run in ladder-time.json.

    python benchmarks/ladder_time.py --workload llama --preset 1b --target-ms 0.9 --iters 200 --warmup 20
    python benchmarks/ladder_time.py --workload tiny --device cpu --json /tmp/ladder-time.json

Runs `python -m playbook run` as a new user would (its own process, a fresh compile cache unless
--warm-cache), and appends {workload, preset, options, device, torch, date, total_s, phases: {name:
seconds}, final_p50_ms, correct, compile_cache, run} to the JSON list (benchmarks/results/ladder-time.json
by default). Each phase's seconds are its notebook's wall time, as the chain measured it.
"""
import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playbook.state import Run, read_json, write_json  # noqa: E402


def row(run_dir, total_s, cache):
    run = Run.open(run_dir)
    phases = run.phases()
    verify = run.phase("verify") or {}
    return {"workload": run.params["workload"], "preset": run.params.get("preset"),
            "options": run.params.get("options") or {}, "device": (run.params.get("device_info") or {}).get("name"),
            "torch": (run.params.get("versions") or {}).get("torch"), "date": dt.date.today().isoformat(),
            "target_ms": run.params.get("target_ms"), "budget_min": run.params.get("budget_min"),
            "total_s": round(total_s, 1), "report_s": (run.params.get("chain_s") or {}).get("report"),
            "phases": {p["name"]: (p.get("time_s") or {}).get("total") for p in phases},
            "status": {p["name"]: p["status"] for p in phases},
            "final_p50_ms": verify.get("p50_ms"), "correct": verify.get("correct"),
            "compile_cache": cache, "run": str(run_dir)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="llama")
    ap.add_argument("--preset", default="")
    ap.add_argument("--option", action="append", default=[])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--target-ms", default=None)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--budget-min", default=None)
    ap.add_argument("--out", default=None, help="the run directory (default: a new one under reports/)")
    ap.add_argument("--warm-cache", action="store_true", help="keep the machine's compile cache (default: a cold one)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "ladder-time.json"))
    args = ap.parse_args(argv)
    out = args.out or str(ROOT / "reports" / f"ladder-time-{args.workload}-{args.preset or 'default'}-{int(time.time())}")
    cmd = [sys.executable, "-m", "playbook", "run", "--workload", args.workload, "--device", args.device,
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--out", out]
    cmd += ["--preset", args.preset] if args.preset else []
    cmd += [x for o in args.option for x in ("--option", o)]
    cmd += ["--target-ms", str(args.target_ms)] if args.target_ms else []
    cmd += ["--budget-min", str(args.budget_min)] if args.budget_min else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [os.environ.get("PYTHONPATH", "")]))
    cache = "warm"
    if not args.warm_cache:
        env["PLAYBOOK_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="playbook-cold-cache-")
        cache = "cold"
    t0 = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    total = time.time() - t0
    if not (Path(out) / "run.json").exists():
        print(f"the ladder wrote no run (exit {done.returncode})", file=sys.stderr)
        return 2
    result = row(out, total, cache)
    rows = read_json(args.json, "ladder-time results") if Path(args.json).exists() else []
    write_json(args.json, rows + [result])
    print(json.dumps({k: result[k] for k in ("workload", "preset", "device", "total_s", "phases", "final_p50_ms",
                                             "correct")}, indent=1))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
