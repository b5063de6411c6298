"""The phase notebooks' interactive side: the ipywidgets panel, knobs_to_try, and papermill never waiting."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from playbook.errors import PlaybookError
from playbook.panel import build, values
from playbook.ladder import check_knobs_to_try
from playbook.phases import get_phase

ROOT = Path(__file__).resolve().parent.parent


def test_panel_defaults_come_from_the_parameters():
    _, w, _ = build("cudagraph", workload="pi0", preset="tiny", options={"cameras": 2}, device="cpu",
                    target_ms=5.0, iters=20, warmup=3, knobs_to_try=["compile only"])
    assert values(w) == {"workload": "pi0", "preset": "tiny", "model": "", "options": {"cameras": 2},
                         "device": "cpu", "dtype": "auto", "target_ms": 5.0, "iters": 20, "warmup": 3,
                         "knobs_to_try": ["compile only"]}
    w["workload"].value = "llama"                      # presets follow the workload
    assert list(w["preset"].options) == ["", "tiny", "1b"]


def test_every_ladder_phase_names_its_knob_sets_and_labels_each_candidate():
    for name in ("cudagraph", "attention", "gemm", "fusion", "kernels", "tuning"):
        mod = get_phase(name)
        assert mod.CHOICES and all(mod.CHOICES.values())
    assert get_phase("cudagraph").label({"compile": True, "capture": "loop"}) == "compile + loop capture"
    assert get_phase("tuning").label({"tune": ["coordinate_descent_tuning", "max_autotune"]}) == \
        "max-autotune + coordinate descent"
    with pytest.raises(PlaybookError, match="choose one of: compile \\+ loop capture"):
        check_knobs_to_try("cudagraph", ["graph please"])
    with pytest.raises(PlaybookError, match="no knobs to choose"):
        check_knobs_to_try("verify", ["anything"])


@pytest.fixture
def fresh_dynamo():
    """Dynamo reuses a graph compiled earlier in the process: later tests that count compiles must not see ours."""
    import torch
    yield
    torch._dynamo.reset()


def test_the_panel_button_runs_the_phase_like_the_headless_path(tmp_path, fresh_dynamo):
    run_dir = tmp_path / "run"
    panel, _, out = build("baseline", str(run_dir), workload="tiny", device="cpu", iters=10, warmup=2)
    panel.children[2].click()                          # "Run baseline"
    base = json.loads((run_dir / "phases" / "00-baseline.json").read_text())
    assert base["status"] == "kept" and base["p50_ms"] > 0
    panel, w, _ = build("cudagraph", str(run_dir), workload="tiny", device="cpu", iters=10, warmup=2,
                        knobs_to_try=["compile only"])
    assert [n for n, box in w["knobs"].items() if box.value] == ["compile only"]
    panel.children[2].click()
    r = json.loads((run_dir / "phases" / "01-cudagraph.json").read_text())
    assert r["knobs_to_try"] == ["compile only"] and [c["label"] for c in r["candidates"]] == ["compile only"]
    assert r["status"] in ("kept", "rejected") and r["correct"] is True


def test_interactive_notebook_under_papermill_shows_the_panel_and_runs_nothing(tmp_path):
    out_nb, run_dir = tmp_path / "00.ipynb", tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "00-baseline.ipynb"),
                           str(out_nb), "-p", "run_dir", str(run_dir), "-p", "device", "cpu",
                           "-p", "interactive", "True", "--cwd", str(ROOT)],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                             "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    nb = json.loads(out_nb.read_text())
    views = [o for c in nb["cells"] for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, "the panel was not displayed"
    assert not (run_dir / "phases").exists()           # nothing ran: the panel waits for its button
