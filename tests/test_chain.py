"""The headless ladder as CI runs it: papermill executes every phase notebook on the tiny workload."""
import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.chain


def ladder(*args):
    return subprocess.run([sys.executable, "-m", "playbook", "run", "--workload", "tiny", "--device", "cpu",
                           "--iters", "10", "--warmup", "2", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain") / "tiny"
    done = ladder("--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_chain_writes_phases_notebooks_and_report(chain_run):
    out, log = chain_run
    for name in ("00-baseline", "01-cudagraph", "07-verify"):
        assert (out / "phases" / f"{name}.json").exists()
        assert (out / "notebooks" / f"{name}.ipynb").exists()
        assert f"{name}: running" in log                                   # progress is shown
    md = (out / "report.md").read_text()
    assert "| Phase | p50 (ms) | vs Baseline | vs Target | Next Action | Time (s) |" in md
    for row in ("| 0 baseline (kept) |", "| 1 cudagraph (", "| 7 verify (kept) |"):
        assert row in md
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table id=\"progress\">" in html
    assert "http://" not in html and "https://" not in html                # opens offline
    verify = json.loads((out / "phases" / "07-verify.json").read_text())
    assert verify["correct"] is True
    tuning = json.loads((out / "phases" / "06-tuning.json").read_text())     # nothing to tune on a CPU:
    assert tuning["status"] == "skipped" and "Triton" in tuning["notes"][0]  # decided with no kernel started
    assert not (out / "notebooks" / "06-tuning.ipynb").exists() and "skipped before its kernel started" in log
    gemm = json.loads((out / "phases" / "03-gemm.json").read_text())         # one BLAS on a CPU: nothing to choose
    assert gemm["status"] == "skipped" and "03-gemm.ipynb by hand" in gemm["notes"][0]
    assert not (out / "notebooks" / "03-gemm.ipynb").exists()


def test_every_phase_says_where_its_time_went_and_the_terminal_shows_the_work(chain_run):
    out, log = chain_run
    for path in sorted((out / "phases").glob("*.json")):
        p = json.loads(path.read_text())
        t = p["time_s"]
        assert t["total"] >= 0 and all(v >= 0 for v in t.values()), (p["name"], t)
        if p["status"] != "skipped" or p.get("skip_reason"):          # the notebook ran: its sections are there
            assert "papermill" in t and ("start" in t or "start_ahead" in t), (p["name"], t)
            assert sum(v for k, v in t.items() if k != "total" and not k.endswith("_ahead")) <= t["total"] + 0.5
    cudagraph = json.loads((out / "phases" / "01-cudagraph.json").read_text())
    assert cudagraph["time_s"]["compile"] > 0 and "fx_graph_miss" in cudagraph["compile_cache"]
    stages = cudagraph["compile_stages"]                  # where the compile went, by torch's own timers
    assert stages and all(v >= 0.3 for v in stages.values())
    assert list(stages.values()) == sorted(stages.values(), reverse=True)
    assert any(k.startswith("_compile") or "compile" in k for k in stages), stages
    assert "[cudagraph] candidate 1/1" in log                                    # progress and time, line by line
    assert re.search(r"01-cudagraph: kept, p50 [\d.]+ ms \(\d+ s in all: [a-z_]+ \d", log)
    assert "USDT" not in log and "profiler_start" not in log and "IPKernelApp" not in log
    executed = json.loads((out / "notebooks" / "01-cudagraph.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "profiler_start" not in text and "[cudagraph] candidate 1/1" in text
    assert (out / "figures" / "time.png").stat().st_size > 1000
    assert json.loads((out / "run.json").read_text())["chain_s"]["total"] > 0


def test_every_measured_phase_is_traced_and_plotted(chain_run):
    out, _ = chain_run
    measured = [json.loads(p.read_text()) for p in sorted((out / "phases").glob("*.json"))]
    measured = [p for p in measured if p["p50_ms"] is not None]
    assert len(measured) >= 3
    for p in measured:
        assert p["kernel_count"] is None and p["cpu_op_count"] > 0 and "CPU" in p["profile"]["note"]
        assert set(p["category_ms"]) == {"gemm", "attention", "norm", "elementwise", "memcpy", "other"}
        assert (out / "traces" / p["profile"]["trace"]).stat().st_size > 1000
        assert (out / "figures" / f"timeline-{p['phase']:02d}-{p['name']}.png").stat().st_size > 1000
    assert all("trace_diff" in p for p in measured if p["name"] != "baseline")
    html = (out / "report.html").read_text()
    assert "id='categories-plot'" in html and html.count("alt='one step of") == len(measured)
    executed = json.loads((out / "notebooks" / "00-baseline.ipynb").read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2                                              # p50 and the step's timeline, inline


def test_executed_notebooks_carry_outputs_but_committed_ones_do_not(chain_run):
    from playbook.chain import phase_notebooks
    out, _ = chain_run
    executed = json.loads((out / "notebooks" / "01-cudagraph.ipynb").read_text())
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
    for _, _, path in phase_notebooks():
        nb = json.loads(path.read_text())
        assert not any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
        assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"])


def test_resume_skips_recorded_phases(chain_run):
    out, _ = chain_run
    (out / "phases" / "07-verify.json").unlink()
    done = ladder("--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert "00-baseline: already recorded" in done.stdout and "01-cudagraph: already recorded" in done.stdout
    assert "07-verify: running" in done.stdout and (out / "phases" / "07-verify.json").exists()


def test_a_notebook_that_raises_is_recorded_and_the_chain_goes_on(chain_run):
    out, _ = chain_run
    (out / "recipe.json").write_text("{ corrupt")
    (out / "phases" / "07-verify.json").unlink()
    done = ladder("--out", str(out), "--resume")
    verify = json.loads((out / "phases" / "07-verify.json").read_text())
    assert verify["status"] == "failed" and "corrupt" in verify["error"]
    assert done.returncode == 1 and "report:" in done.stdout                # the report is still written
    assert "corrupt" in (out / "bkc.md").read_text()                         # and says why there is no bkc


def test_target_met_skips_to_verify(tmp_path):
    done = ladder("--out", str(tmp_path / "met"), "--target-ms", "10000")
    assert done.returncode == 0, done.stderr
    cudagraph = json.loads((tmp_path / "met" / "phases" / "01-cudagraph.json").read_text())
    verify = json.loads((tmp_path / "met" / "phases" / "07-verify.json").read_text())
    assert cudagraph["status"] == "skipped" and "already met" in cudagraph["notes"][0]
    assert verify["target_met"] is True


def test_a_lowered_target_resumes_the_phases_it_skipped(tmp_path):
    out = tmp_path / "lowered"
    done = ladder("--out", str(out), "--target-ms", "10000", "--phases", "baseline,cudagraph,verify")
    assert done.returncode == 0, done.stderr
    for ref in out.glob("reference*.pt"):       # a run copied without its .pt files, as committed results are
        ref.unlink()
    recipe = json.loads((out / "recipe.json").read_text())     # a later phase's step, kept on the recipe before
    recipe["phases"].append({"phase": 6, "name": "tuning", "knobs": {"tune": ["coordinate_descent_tuning"]}})
    (out / "recipe.json").write_text(json.dumps(recipe))
    done = ladder("--out", str(out), "--resume", "--target-ms", "0.0001", "--phases",
                  "baseline,cudagraph,tuning,verify")
    assert done.returncode == 0, done.stderr
    assert "recipe: the steps of tuning dropped" in done.stdout               # not built under cudagraph again
    assert "tuning" not in [s["name"] for s in json.loads((out / "recipe.json").read_text())["phases"]]
    assert "target changed from 10000.0 to 0.0001 ms" in done.stdout
    assert "00-baseline: already recorded" in done.stdout
    assert "01-cudagraph: running" in done.stdout and "07-verify: running" in done.stdout   # verify was stale
    cudagraph = json.loads((out / "phases" / "01-cudagraph.json").read_text())
    verify = json.loads((out / "phases" / "07-verify.json").read_text())
    assert cudagraph["status"] in ("kept", "rejected") and verify["target_met"] is False
    assert verify["correct"] is True and (out / "reference.pt").exists()
    executed = (out / "notebooks" / "01-cudagraph.ipynb").read_text()
    assert "reference outputs missing from the run directory: rebuilding them" in executed
    assert json.loads((out / "recipe.json").read_text())["workload"]["options"] == {}


def test_retarget_says_again_what_each_recorded_phase_leads_to(tmp_path):
    from playbook.chain import retarget
    from playbook.phases import get_phase
    from playbook.record import next_action, result_template
    from playbook.state import Run
    run = Run.create(tmp_path / "r", {"workload": "tiny", "device": "cpu", "dtype": "float32", "target_ms": 10.0})
    for name, p50 in (("baseline", 40.0), ("cudagraph", 5.0)):
        result = result_template(get_phase(name), run)
        result.update(status="kept", p50_ms=p50)
        result["next_action"] = next_action(run, result)
        run.write_phase(result)
    assert run.phase("cudagraph")["next_action"] == "target met: skip to verify"
    retarget(run, 1.0)
    assert Run.open(tmp_path / "r").params["target_ms"] == 1.0
    assert run.phase("cudagraph")["next_action"].startswith("go on to phase 2 attention")


def test_a_wait_for_the_kernel_started_ahead_is_named(tmp_path):
    """The seconds a notebook's first cell waited for a kernel still preparing are `kernel_wait`, not papermill."""
    from playbook.chain import record_wall_time
    from playbook.state import Run
    nb = tmp_path / "03-gemm.ipynb"
    nb.write_text(json.dumps({"metadata": {"papermill": {"start_time": "2026-11-22T22:17:52.5+00:00"}},
                              "cells": [{"cell_type": "markdown", "metadata": {}},
                                        {"cell_type": "code", "metadata": {"papermill": {
                                            "start_time": "2026-11-22T22:18:00.5+00:00"}}}]}))
    run = Run.create(tmp_path / "r", {"workload": "tiny", "device": "cpu"})
    result = {"phase": 3, "name": "gemm", "status": "skipped", "p50_ms": None, "correct": None, "error": None,
              "notes": ["x"], "knobs": {}, "next_action": "", "time_s": {"start": 6.0, "decide": 1.0, "total": 7.0}}
    for k in ("p95_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "iters", "max_abs_diff", "rel_err", "what"):
        result.setdefault(k, None)
    t = record_wall_time(run, result, 10.0, ahead=True, notebook=nb)["time_s"]
    assert t["start_ahead"] == 6.0 and t["kernel_wait"] == 8.0 and t["papermill"] == 1.0 and t["total"] == 10.0
    # The first phase's kernel, started while the chain imported papermill: 6 s of start, 4 of them hidden.
    result["time_s"] = {"start": 6.0, "decide": 3.0, "total": 9.0}
    t = record_wall_time(run, result, 5.0, ahead=False)["time_s"]
    assert t["start"] == 2.0 and t["start_ahead"] == 4.0 and t["total"] == 5.0 and t["papermill"] == 0.0


def test_a_kernel_started_before_the_run_gets_its_lock_and_cache(tmp_path, monkeypatch):
    """A GPU run's first kernel starts before the run exists (WarmKernel.early) and builds the new run's
    untouched workload from the command line's parameters at once; prepare(run) gives it the quiet lock and
    the compile cache the chain's kernels inherit, and finds that workload built."""
    import time

    from playbook import quiet
    from playbook.runs import resolve_params
    from playbook.state import Run
    from playbook.warmkernel import WarmKernel

    def ask(kernel, expression, name):
        """The JSON of an expression evaluated in the kernel, after what was queued before it."""
        out = tmp_path / f"{name}.json"
        kernel.kc.execute(f"import json, os, playbook.pipeline\njson.dump({expression}, open({str(out)!r}, 'w'))",
                          silent=True)
        deadline = time.time() + 120
        while not out.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert out.exists(), f"the kernel did not get to {name}"
        time.sleep(0.2)
        return json.loads(out.read_text())

    cli = {"workload": "auto", "preset": "", "model": "", "options": [], "device": "auto", "dtype": "auto"}
    run = Run.create(tmp_path / "r", resolve_params(**{**cli, "workload": "tiny"}))
    kernel = WarmKernel.early("auto", cli)
    assert kernel is not None and not kernel.prepared
    built = "[json.loads(k)['workload'] for k in playbook.pipeline._pristine]"
    lock = str(tmp_path / "r" / ".quiet.lock")
    try:
        assert ask(kernel, built, "before") == ["tiny"]          # built before the run was opened
        monkeypatch.setenv(quiet.LOCK_ENV, lock)                  # what the chain sets once the run is open
        kernel.prepare(run)
        got = ask(kernel, f"[os.environ.get({quiet.LOCK_ENV!r}), os.environ.get('TORCHINDUCTOR_CACHE_DIR'),"
                          f" '_run' in dir(), {built}]", "after")
    finally:
        kernel.shutdown()
    got_lock, cache, leftover, after = got
    assert got_lock == lock and not leftover and after == ["tiny"]
    assert cache and str(tmp_path / "r") in cache


def test_a_bad_argument_shuts_the_early_kernel_down(tmp_path):
    """A run refused before the chain opens it (an unknown workload) stops the kernel started for it."""
    from jupyter_core.utils import run_sync

    from playbook.chain import run_chain
    from playbook.errors import PlaybookError
    from playbook.warmkernel import WarmKernel
    kernel = WarmKernel.early("auto")
    assert run_sync(kernel.km.is_alive)()
    with pytest.raises(PlaybookError, match="unknown workload"):
        run_chain({"workload": "nosuch", "device": "cpu"}, out=str(tmp_path / "x"), first_kernel=kernel)
    assert not run_sync(kernel.km.is_alive)()


def test_the_kernels_environment_names_the_playbook_once(monkeypatch):
    """The command line sets it up for the kernel it starts early, and the chain again: the playbook's folder
    goes first in PYTHONPATH once, what was there stays after it, and the kernels draw no progress bars."""
    import os

    from playbook.warmkernel import ROOT, kernel_env
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv("PLAYBOOK_PROGRESS", raising=False)
    kernel_env()
    kernel_env()
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]
    assert os.environ["PLAYBOOK_PROGRESS"] == "0"
