"""The headless ladder: every phase notebook, in order, executed with papermill into the run directory.

    python -m playbook run --workload tiny --device cpu            # -> reports/<run>/report.html
    python -m playbook run --out reports/<run> --resume            # skip phases already recorded
    python -m playbook run --out reports/<run> --resume --target-ms 20   # lower a met target and go on

Each notebook runs in a fresh kernel and rebuilds the kept recipe from recipe.json. A notebook that
raises is recorded as a failed phase and the chain goes on; once a kept phase meets the target the
remaining optimization phases are recorded as skipped and verify runs.
"""
import json
import os
import time
from pathlib import Path

from . import forkkernel, plan, quiet, report, runs
from .errors import PlaybookError, choose
from .phases import NAMES, get_phase
from .record import last_kept_p50, next_action, result_template
from .state import Run
from .warmkernel import WarmKernel, kernel_env

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def phase_notebooks():
    """(number, name, path) for every phase notebook present, in ladder order."""
    found = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")):
        name = path.stem[3:]
        if name in NAMES:
            found.append((int(path.stem[:2]), name, path))
    return found


def record(run, name, status, error=None, note=None):
    """Write a phase result the notebook could not write itself (it raised, or was skipped)."""
    result = result_template(get_phase(name), run)
    result.update(status=status, error=error, next_action="", time_s={"total": 0.0})
    if note:
        result["notes"].append(note)
    run.write_phase(result)
    if name not in ("baseline", "verify"):
        drop_steps(run, [name])  # as ladder.py does for a phase not kept: a re-run leaves no stale step behind
    return result


def drop_steps(run, names):
    """run.drop_steps, except that a corrupt recipe.json is left for the phases to report (each records the
    error it gives them, and the chain goes on): returns the names dropped."""
    try:
        return run.drop_steps(names)
    except PlaybookError:
        return []


def open_chain_run(params, out=None, resume=False, log=print):
    if resume:
        if not out:
            raise PlaybookError("--resume needs --out DIR, the run directory to continue")
        run = Run.open(out)
        target = runs.check_target(params.get("target_ms"))
        if target and target != run.params.get("target_ms"):
            # a met target lowered (or a missed one raised): phases skipped for it are tried again
            log(f"target changed from {run.params.get('target_ms')} to {target} ms")
            retarget(run, target)
        return run
    if out and (Path(out) / "run.json").exists():
        raise PlaybookError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
    return runs.open_run(out or "", **params)


def retarget(run, target):
    """A new target for a recorded run: what each recorded phase says to do next is said again for it."""
    run.update(target_ms=target)
    for result in run.phases():
        if result["status"] in ("kept", "rejected", "failed"):
            result["next_action"] = next_action(run, result)
            run.write_phase(result)


def select(books, phases):
    """Only the named phases (a comma-separated string or a list), in ladder order."""
    if not phases:
        return books
    names = [p.strip() for p in phases.split(",")] if isinstance(phases, str) else list(phases)
    present = [name for _, name, _ in books]
    for name in names:
        choose("phase", name, present)
    return [b for b in books if b[1] in names]


class _Lines:
    """A file-like sink for the notebook's printed lines (the phase's progress), forwarded to log."""

    def __init__(self, log, prefix="    "):
        self.log, self.prefix, self.buf = log, prefix, ""

    def write(self, text):
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                self.log(self.prefix + line)

    def flush(self):
        pass


def run_chain(params, out=None, resume=False, log=print, phases=None, budget_min=None, fork_server=None,
              first_kernel=None):
    """Walk the ladder. budget_min: minutes for the whole chain; each phase gets a share of what is
    left (verify's share held back), and a phase whose share is spent is skipped with the reason.
    fork_server: a forkkernel.ForkServer the caller started early (the command line does, for --device cpu,
    before its own imports), used if the run is a CPU run; the chain stops it when it ends.
    first_kernel: a WarmKernel.early() the caller started before its imports, for the first phase that runs
    (unused on a CPU run whose kernels fork); the chain shuts it down when it ends."""
    try:
        books = select(phase_notebooks(), phases)
        budget = check_budget(budget_min)
        run = open_chain_run(params, out, resume, log)
        if "baseline" not in [b[1] for b in books] and not run.phase("baseline"):
            raise PlaybookError("--phases without baseline needs a run that has one: add baseline, or --resume a run")
    except BaseException:       # nothing ran: the kernel started early is not left behind
        if first_kernel:
            first_kernel.shutdown()
        raise
    return _walk(run, books, budget, log, resume, fork_server, first_kernel)


def _walk(run, books, budget, log, resume, fork_server, first_kernel):
    """run_chain's walk of the opened run: each phase in its kernel, then the report."""
    kernel_env()                                # the playbook importable, no progress bars (headless)
    os.environ[quiet.LOCK_ENV] = str((run.path / ".quiet.lock").resolve())   # warm-ups wait for timing
    # a CPU run on Linux: each phase's kernel is a fork of one process that imported torch and the playbook
    server = (fork_server or forkkernel.ForkServer.start(ROOT)) if forkkernel.enabled(run.params["device"]) else None
    if first_kernel and server:                 # its kernels fork: the early one is not needed
        first_kernel.shutdown()
        first_kernel = None
    # the first phase's kernel: started before the command line's imports, or now, while papermill is imported
    warm = [first_kernel.prepare(run) if first_kernel else WarmKernel(run, ahead=False, server=server)]
    import papermill as pm
    if budget:
        run.update(budget_min=budget / 60)
    target = run.params.get("target_ms")
    workload, preset = run.params["workload"], run.params.get("preset")
    what = workload if not preset or preset == workload else f"{workload} {preset}"
    log(f"run {run.path} ({what}, {run.params['device']}, {run.params['dtype']}, "
        f"{f'target {target} ms' if target else 'no target'}"
        f"{f', budget {budget / 60:g} min' if budget else ''}): {len(books)} phases")
    (run.path / "notebooks").mkdir(exist_ok=True)
    started = time.time()
    stale = False       # once a phase runs again, every later (cumulative) phase's record is stale
    try:
        for i, (number, name, path) in enumerate(books, 1):
            head = f"[{i}/{len(books)}] {path.stem}"
            done = run.phase(name)
            if resume and done and not stale and not _target_skip_to_retry(run, done):
                log(f"{head}: already recorded ({done['status']}), skipped")
                continue
            if resume and not stale:     # the later phases run again too: their old steps leave the recipe now
                dropped = drop_steps(run, [b[1] for b in books[i:]])
                if dropped:
                    log(f"recipe: the steps of {', '.join(dropped)} dropped: they were kept on the recipe before "
                        f"{name} ran again, and run again after it")
            stale = True
            run.reload()            # what the phases before wrote (workload_info sets how many kernels go ahead)
            kept = last_kept_p50(run)
            if target and kept is not None and kept <= target and name not in ("baseline", "verify"):
                record(run, name, "skipped", note=f"target {target} ms already met ({kept:.3f} ms)")
                log(f"{head}: skipped, target already met")
                continue
            early = getattr(get_phase(name), "skip_before_start", None)
            why = early and early(run.params)
            if why:               # decided from the parameters: no kernel, no notebook
                record(run, name, "skipped", note=why)
                log(f"{head}: skipped before its kernel started, {why}")
                continue
            if budget:
                share, why = plan.share(run, name, [b[1] for b in books[i - 1:]], budget - (time.time() - started))
                if why:
                    record(run, name, "skipped", note=why)
                    log(f"{head}: skipped, {why}")
                    continue
                run.update(budgets={**(run.params.get("budgets") or {}), name: share})
            t0 = time.time()
            log(f"{head}: running ...")
            kernel = warm.pop(0) if warm else WarmKernel(run, ahead=False, server=server)
            ahead = kernel.ahead
            while len(warm) < min(ahead_depth(run), len(books) - i):
                warm.append(WarmKernel(run, server=server))
            try:
                pm.execute_notebook(str(path), str(run.path / "notebooks" / path.name), cwd=str(ROOT),
                                    parameters=notebook_parameters(run), progress_bar=False,
                                    kernel_name="python3", log_output=False, stdout_file=_Lines(log),
                                    km=kernel.hand_over())
            except Exception as e:   # papermill wraps the cell's exception; the phase is recorded, the chain goes on
                if not run.phase(name):   # a result the notebook wrote before raising is kept as measured
                    record(run, name, "failed", error=_notebook_error(e))
            finally:
                kernel.shutdown()
            r = run.phase(name) or record(run, name, "failed", error="the notebook wrote no result")
            r = record_wall_time(run, r, time.time() - t0, ahead, run.path / "notebooks" / path.name)
            p50 = f"p50 {r['p50_ms']:.3f} ms" if r["p50_ms"] is not None else "no p50"
            log(f"{head}: {r['status']}, {p50}{', ' + r['error'] if r['error'] else ''} "
                f"({report.time_line(r['time_s'])})")
    finally:                # kernels started ahead are not left behind, whatever happened
        for kernel in warm:
            kernel.shutdown()
        if server:
            server.stop()
        os.environ.pop(quiet.LOCK_ENV, None)
    t0 = time.time()
    html = report.write(run.path)
    run.update(chain_s={"total": round(time.time() - started, 1), "report": round(time.time() - t0, 1)})
    log(f"report: {html} ({time.time() - t0:.0f} s); the chain took {time.time() - started:.0f} s")
    return run


AHEAD_BYTES = {"cuda": 4e9, "cpu": 1e9}   # a workload whose weights are larger gets one kernel ahead: each
                                          # holds a copy (in host memory on a CPU run)


def ahead_depth(run):
    """How many kernels to start ahead: two for a model under AHEAD_BYTES (known once the baseline ran),
    so a phase that decides in seconds (attention with nothing to change: 1.5 s on llama 1b; gemm's table
    on a CPU: 2 s) does not leave the next one waiting for its kernel's imports and warm-up (14 s on the
    H200, 6 s on a 2-core CPU); one otherwise. Either way one kernel starts a phase, while the phase
    compiles, so a CPU run's timed step does not share its cores with more start-ups than before."""
    weights = (run.params.get("workload_info") or {}).get("weight_bytes")
    limit = AHEAD_BYTES.get(run.params["device"], AHEAD_BYTES["cpu"])
    return 2 if weights and weights < limit else 1


def check_budget(budget_min):
    """--budget-min as seconds, or None; a bad value is refused before anything runs."""
    minutes = runs.positive_number(budget_min, "budget", "minutes", "--budget-min 5")
    return minutes and minutes * 60


def record_wall_time(run, result, wall_s, ahead=False, notebook=None):
    """The phase's time_s as the chain saw it: the notebook's own sections, plus `kernel_wait` (its first
    cell waited for a kernel started ahead that was still importing and prebuilding: the part of
    start_ahead/build_ahead the phase before did not hide), `papermill` (the rest: executing cells,
    writing the notebook) and `total`, the wall time of the whole notebook. ahead: the kernel was
    started while the phase before ran; its start is then `start_ahead`, outside the total (so is the part
    of the first kernel's start that the chain's own imports hid)."""
    inner = dict(result.get("time_s") or {})
    if ahead and "start" in inner:
        inner["start_ahead"] = inner.pop("start")
        inner["total"] = inner.get("total", 0.0) - inner["start_ahead"]
    elif "start" in inner and inner.get("total", 0.0) > wall_s:
        # the first phase's kernel starts while the chain imports papermill: that part of its start is hidden
        hidden = min(inner["total"] - wall_s, inner["start"])
        inner.update(start=round(inner["start"] - hidden, 2), start_ahead=round(hidden, 2),
                     total=inner["total"] - hidden)
    outside = max(0.0, wall_s - inner.get("total", 0.0))
    wait = min(outside, kernel_wait(notebook)) if ahead and notebook else 0.0
    if wait >= 0.05:
        inner["kernel_wait"] = round(wait, 2)
    inner["papermill"] = round(outside - wait, 2)
    inner["total"] = round(wall_s, 2)
    result["time_s"] = inner
    run.write_phase(result)
    return result


def kernel_wait(notebook):
    """Seconds from papermill's start of an executed notebook to its first cell's start (0 if unknown)."""
    import datetime as dt
    try:
        nb = json.loads(Path(notebook).read_text())
        begin = nb["metadata"]["papermill"]["start_time"]
        first = next(c["metadata"]["papermill"]["start_time"] for c in nb["cells"]
                     if c["metadata"].get("papermill", {}).get("start_time"))
        return max(0.0, (dt.datetime.fromisoformat(first) - dt.datetime.fromisoformat(begin)).total_seconds())
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return 0.0


def _target_skip_to_retry(run, done):
    """A phase skipped because the target was met, in a run whose (changed) target is no longer met."""
    if done["status"] != "skipped" or not any("already met" in n for n in done.get("notes") or []):
        return False
    target, kept = run.params.get("target_ms"), last_kept_p50(run)
    return not (target and kept is not None and kept <= target)


def _notebook_error(e):
    ename, evalue = getattr(e, "ename", type(e).__name__), getattr(e, "evalue", str(e))
    return f"{ename}: {evalue}"


def notebook_parameters(run):
    p = run.params
    return {"workload": p["workload"], "preset": p.get("preset") or "", "model": p.get("model") or "",
            "options": p.get("options") or {},
            "device": p["device"], "dtype": p["dtype"], "target_ms": p.get("target_ms") or 0.0,
            "run_dir": str(run.path.resolve()), "iters": p["iters"], "warmup": p["warmup"], "interactive": False}
