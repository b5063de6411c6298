from playbook import report
from playbook.runs import open_run
from test_state import phase


def test_progress_table_columns_and_status(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **{**run_params, "target_ms": 1.0})
    run.write_phase(phase(0, "baseline", p50=4.0))
    run.write_phase({**phase(1, "cudagraph", p50=2.0), "next_action": "go on"})
    run.write_phase({**phase(2, "attention", status="rejected", p50=2.2), "next_action": "rejected; go on"})
    run.write_phase({**phase(7, "verify", p50=0.8), "next_action": "target met"})
    table = report.progress_table(run).splitlines()
    assert table[0] == "| Phase | p50 (ms) | vs Baseline | vs Target | Next Action |"
    assert table[2] == "| 0 baseline (kept) | 4.000 | - | +3.000 ms | - |"
    assert table[3] == "| 1 cudagraph (kept) | 2.000 | -50.0% (2.00x) | +1.000 ms | go on |"
    assert table[4].startswith("| 2 attention (rejected) | 2.200 |")
    assert table[5] == "| 7 verify (kept) | 0.800 | -80.0% (5.00x) | met | target met |"


def test_report_files_are_written(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    run.write_phase(phase(0, "baseline", p50=4.0))
    html = report.write(run.path)
    assert html.exists() and (run.path / "report.md").exists() and (run.path / "figures" / "p50.png").stat().st_size > 1000
    assert "no target" in (run.path / "report.md").read_text()
