"""The command line: run the ladder, gate a p50 against a target, render a report, guard a recipe.

    python -m playbook run --workload tiny --device cpu --target-ms 1.0
    python -m playbook run --workload llama --preset 1b --target-ms 1.2
    python -m playbook run --workload pi0 --preset full --option cameras=3 --option action_horizon=10 --target-ms 25
    python -m playbook run --out reports/<run> --resume
    python -m playbook run --workload llama --budget-min 4      # plan the chain within four minutes
    python -m playbook run --workload hf --model ./my-qwen --option step=prefill   # a Hugging Face checkpoint
    python -m playbook gate --target-ms 25 --run reports/<run>
    python -m playbook report reports/<run>
    python -m playbook check --recipe reports/<run>/recipe.json [--tolerance 2]
    python -m playbook preflight
    python -m playbook prompt --run reports/<run>
"""
import argparse
import sys

from .errors import PlaybookError

# jsonschema (under papermill and nbconvert's nbformat) imports rfc3987_syntax where it is installed, and that
# builds a grammar at import: 2.4 s of every command's start on this project's 2-core CPU, for IRI formats that
# no notebook schema uses. Without it jsonschema skips those two format checks; nothing else changes.
sys.modules.setdefault("rfc3987_syntax", None)


def parser():
    ap = argparse.ArgumentParser(prog="python -m playbook", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="walk the ladder with papermill into a report")
    run.add_argument("--workload", default="auto",
                     help="tiny | llama | pi0 | hf | custom (auto: llama 1b on a GPU, tiny on a CPU)")
    run.add_argument("--preset", default="", help="the workload's preset (tiny, 1b, ...)")
    run.add_argument("--model", default="", help="hf: a checkpoint folder or a model type (qwen2, bert, ...); "
                                                 "custom: package.module:function")
    run.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                     help="a workload option, repeatable (pi0: cameras, prompt_len, action_horizon, num_steps; hf: "
                          "step, position, tokens, cache and sizes)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda")
    run.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU, float32 on a CPU) | float32 | bfloat16 | float16")
    run.add_argument("--target-ms", default=None, help="p50 target in ms; the ladder stops once it is met")
    run.add_argument("--iters", type=int, default=100, help="timed iterations per measurement")
    run.add_argument("--warmup", type=int, default=10, help="untimed iterations before timing")
    run.add_argument("--out", default=None, help="run directory (default reports/<timestamp>-<workload>-<preset>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out, skipping recorded phases (with --target-ms: a new "
                          "target; phases skipped because the old one was met are tried)")
    run.add_argument("--budget-min", default=None,
                     help="minutes for the whole chain: each phase gets a share of what is left (verify's held "
                          "back); a phase whose share is spent is skipped and says why")
    run.add_argument("--phases", default="", help="only these phases, comma-separated (e.g. baseline,fusion,verify)")

    gate = sub.add_parser("gate", help="exit 0 if p50 <= target, 1 if above, 2 if no p50 was found")
    gate.add_argument("--target-ms", type=float, required=True)
    src = gate.add_mutually_exclusive_group(required=True)
    src.add_argument("--p50-ms", type=float)
    src.add_argument("--run", help="a run directory: verify's p50 (or --phase's)")
    src.add_argument("--benchmark-cmd", help="a command printing JSON with 'p50' or a line 'p50: <ms>'")
    gate.add_argument("--baseline-ms", type=float)
    gate.add_argument("--phase", help="with --run: the phase whose p50 to gate")

    rep = sub.add_parser("report", help="write report.md, report.html and bkc.md for a run directory")
    rep.add_argument("run_dir")

    chk = sub.add_parser("check", help="re-measure a recipe: exit 1 if p50 regressed beyond the tolerance or "
                                       "correctness is lost (do not regress)")
    chk.add_argument("--recipe", required=True, help="a recipe.json (or its run directory)")
    chk.add_argument("--tolerance", type=float, default=2.0, help="allowed p50 regression in percent (default 2)")
    chk.add_argument("--iters", type=int, default=100)
    chk.add_argument("--warmup", type=int, default=10)
    chk.add_argument("--json", default=None, help="also write the result to this JSON file")

    sub.add_parser("preflight", help="device, versions, compile, profilers, free memory, and a verdict")

    pr = sub.add_parser("prompt", help="print the long-horizon hand-off prompt filled from a run")
    pr.add_argument("--run", required=True, help="a run directory")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            from . import forkkernel
            # a CPU run's kernels fork from one server, and a GPU run's first kernel starts here: either way
            # started first, so its imports overlap this process's
            early = forkkernel.ForkServer.start() if forkkernel.enabled(args.device) else None
            first = None
            if early is None and args.device != "cpu":
                from .warmkernel import WarmKernel
                new = None if args.resume else dict(
                    workload=args.workload, preset=args.preset, model=args.model, options=args.option,
                    device=args.device, dtype=args.dtype)
                first = WarmKernel.early(args.device, new)
            try:
                from .chain import run_chain
                from .runs import auto_workload
                workload, preset = auto_workload(args.workload, args.preset, args.device)
                params = dict(workload=workload, preset=preset, model=args.model, options=args.option,
                              device=args.device, dtype=args.dtype, target_ms=args.target_ms, iters=args.iters,
                              warmup=args.warmup)
                run = run_chain(params, out=args.out, resume=args.resume, phases=args.phases,
                                budget_min=args.budget_min, fork_server=early, first_kernel=first)
                first = None          # the chain shut it down
            finally:
                if early:
                    early.stop()
                if first:             # a bad argument before the chain took it over
                    first.shutdown()
            failed = [p["name"] for p in run.phases() if p["status"] == "failed"]
            return 1 if failed else 0
        if args.command == "gate":
            from . import gate
            if args.target_ms <= 0:
                raise PlaybookError("--target-ms must be a positive number of milliseconds")
            if args.p50_ms is not None:
                p50 = args.p50_ms
            elif args.run:
                p50 = gate.p50_from_run(args.run, args.phase)
            else:
                p50 = gate.p50_from_command(args.benchmark_cmd)
            return gate.gate(args.target_ms, p50, args.baseline_ms)
        if args.command == "report":
            from .report import write
            print(write(args.run_dir))
            return 0
        if args.command == "check":
            from .reuse import check
            from .state import write_json
            code, result = check(args.recipe, tolerance_pct=args.tolerance, iters=args.iters, warmup=args.warmup)
            if args.json:
                write_json(args.json, result)
            return code
        if args.command == "preflight":
            from .preflight import main as preflight
            return preflight()
        if args.command == "prompt":
            from .prompt import render
            print(render(args.run))
            return 0
    except PlaybookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
