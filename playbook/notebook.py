"""What a phase notebook calls: open the run, run the phase, show the result, the table and the plots.

    run = open_run(run_dir, phase="cudagraph", workload=workload, ...)   # the notebook's parameters
    result = run_and_show("cudagraph", run, iters=iters, warmup=warmup)
    # the ipywidgets panel (playbook/panel.py) calls the same two functions from its Run button

With an empty run_dir, 00-baseline starts a new run under reports/ and every later notebook picks the
newest run there with the same workload parameters, so the ladder can be walked by hand in JupyterLab.
"""
from . import clock, report, runs
from .errors import PlaybookError
from .ladder import run_phase
from .state import Run


def latest_run(params):
    wanted = runs.resolve_params(**params)
    candidates = sorted(runs.REPORTS.glob("*/run.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        run = Run.open(path.parent)
        if all(runs.recorded(run.params, k) == wanted[k] for k in runs.WORKLOAD_KEYS):
            return run
    raise PlaybookError(f"no run under {runs.REPORTS}/ for {params.get('workload')!r} yet: "
                        "run 00-baseline first, or set run_dir")


def open_run(run_dir="", phase="baseline", **params):
    if run_dir or phase == "baseline":
        return runs.open_run(run_dir, **params)
    return latest_run(params)


def run_and_show(name, run, iters=100, warmup=10, knobs_to_try=None):
    result = run_phase(name, run, iters=iters, warmup=warmup, knobs_to_try=knobs_to_try)
    with clock.section("render"):
        show(run, result)
    result["time_s"] = clock.time_s()          # now with the rendering, and the total to this point
    run.write_phase(result)
    return result


def show(run, result):
    from IPython.display import Markdown, display
    display(Markdown(report.phase_summary(result)))
    display(Markdown(report.progress_table(run)))
    figs = [report.plot_p50(run)]
    trace = dict((p["name"], path) for p, path in report.traced(run)).get(result["name"])
    if trace:
        figs.append(report.plot_timeline(trace, f"one step of phase {result['phase']} {result['name']}"))
    if result.get("category_ms"):
        figs.append(report.plot_categories(run))
    for fig in figs:
        display(fig)
        report.close(fig)
    table = run.path / "gemm_tuning.csv"
    if result["name"] == "gemm" and table.exists():       # every GEMM shape on every backend
        import pandas as pd
        display(Markdown(f"GEMM shapes and backends (`{table.name}`):"))
        display(pd.read_csv(table))
