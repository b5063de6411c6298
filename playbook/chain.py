"""The headless ladder: every phase notebook, in order, executed with papermill into the run directory.

    python -m playbook run --workload tiny --device cpu            # -> reports/<run>/report.html
    python -m playbook run --out reports/<run> --resume            # skip phases already recorded
    python -m playbook run --out reports/<run> --resume --target-ms 20   # lower a met target and go on

Each notebook runs in a fresh kernel and rebuilds the kept recipe from recipe.json. A notebook that
raises is recorded as a failed phase and the chain goes on; once a kept phase meets the target the
remaining optimization phases are recorded as skipped and verify runs.
"""
import os
import time
from pathlib import Path

from . import report, runs
from .errors import PlaybookError, choose
from .phases import NAMES, get_phase, last_kept_p50, next_action, result_template
from .state import Run

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
    result.update(status=status, error=error, next_action="")
    if note:
        result["notes"].append(note)
    run.write_phase(result)
    return result


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


def run_chain(params, out=None, resume=False, log=print, phases=None):
    import papermill as pm
    books = select(phase_notebooks(), phases)
    run = open_chain_run(params, out, resume, log)
    if "baseline" not in [b[1] for b in books] and not run.phase("baseline"):
        raise PlaybookError("--phases without baseline needs a run that has one: add baseline, or --resume a run")
    target = run.params.get("target_ms")
    log(f"run {run.path} ({run.params['workload']} {run.params.get('preset')}, {run.params['device']}, "
        f"{run.params['dtype']}, target {target or 'none'} ms): {len(books)} phases")
    (run.path / "notebooks").mkdir(exist_ok=True)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env_path] if env_path else []))
    os.environ["PLAYBOOK_PROGRESS"] = "0"      # headless: no progress bars in the executed notebooks
    stale = False       # once a phase runs again, every later (cumulative) phase's record is stale
    for i, (number, name, path) in enumerate(books, 1):
        head = f"[{i}/{len(books)}] {path.stem}"
        done = run.phase(name)
        if resume and done and not stale and not _target_skip_to_retry(run, done):
            log(f"{head}: already recorded ({done['status']}), skipped")
            continue
        stale = True
        kept = last_kept_p50(run)
        if target and kept is not None and kept <= target and name not in ("baseline", "verify"):
            record(run, name, "skipped", note=f"target {target} ms already met ({kept:.3f} ms)")
            log(f"{head}: skipped, target already met")
            continue
        t0 = time.time()
        log(f"{head}: running ...")
        try:
            pm.execute_notebook(str(path), str(run.path / "notebooks" / path.name), cwd=str(ROOT),
                                parameters=notebook_parameters(run), progress_bar=False,
                                kernel_name="python3", log_output=False)
        except Exception as e:   # papermill wraps the cell's exception; the phase is recorded, the chain goes on
            if not run.phase(name):   # a result the notebook wrote before raising is kept as measured
                record(run, name, "failed", error=_notebook_error(e))
        r = run.phase(name) or record(run, name, "failed", error="the notebook wrote no result")
        p50 = f"p50 {r['p50_ms']:.3f} ms" if r["p50_ms"] is not None else "no p50"
        log(f"{head}: {r['status']}, {p50}{', ' + r['error'] if r['error'] else ''} ({time.time() - t0:.0f} s)")
    html = report.write(run.path)
    log(f"report: {html}")
    return run


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
