from playbook import report
from playbook.runs import open_run
from test_state import phase


def test_progress_table_columns_and_status(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **{**run_params, "target_ms": 1.0})
    run.write_phase(phase(0, "baseline", p50=4.0))
    run.write_phase({**phase(1, "cudagraph", p50=2.0), "next_action": "go on"})
    run.write_phase({**phase(2, "attention", status="rejected", p50=2.2), "next_action": "rejected; go on"})
    run.write_phase({**phase(7, "verify", p50=0.8), "next_action": "target met", "time_s": {"total": 41.6}})
    table = report.progress_table(run).splitlines()
    assert table[0] == "| Phase | p50 (ms) | vs Baseline | vs Target | Next Action | Time (s) |"
    assert table[2] == "| 0 baseline (kept) | 4.000 | - | +3.000 ms | - | - |"
    assert table[3] == "| 1 cudagraph (kept) | 2.000 | -50.0% (2.00x) | +1.000 ms | go on | - |"
    assert table[4].startswith("| 2 attention (rejected) | 2.200 |")
    assert table[5] == "| 7 verify (kept) | 0.800 | -80.0% (5.00x) | met | target met | 42 |"


def test_report_files_are_written(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    run.write_phase(phase(0, "baseline", p50=4.0))
    html = report.write(run.path)
    assert html.exists() and (run.path / "report.md").exists() and (run.path / "figures" / "p50.png").stat().st_size > 1000
    assert "no target" in (run.path / "report.md").read_text()


def test_time_per_phase_is_a_figure_and_the_waterfall_turns_logarithmic(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    run.write_phase({**phase(0, "baseline", p50=20.0), "time_s": {"start": 5.0, "build": 2.0, "total": 9.0}})
    run.write_phase({**phase(1, "cudagraph", p50=1.5), "time_s": {"start_ahead": 5.0, "compile": 25.0, "time": 1.0,
                                                                  "papermill": 1.0, "total": 27.0}})
    run.write_phase({**phase(4, "fusion", p50=1.3), "time_s": {"compile": 12.0, "total": 13.0}})
    assert report.plot_waterfall(run).axes[0].get_yscale() == "log"        # 20 ms -> 1.3 ms: a tenfold fall
    fig = report.plot_time(run)
    widths = [b.get_width() for b in fig.axes[0].patches]
    assert 25.0 in widths and 12.0 in widths and len(fig.axes[0].get_yticklabels()) == 3
    report.close(fig)
    report.write(run.path)
    assert (run.path / "figures" / "time.png").stat().st_size > 1000
    assert "figures/time.png" in (run.path / "report.md").read_text()
    run2 = open_run(str(tmp_path / "r2"), **run_params)
    run2.write_phase(phase(0, "baseline", p50=2.0))
    run2.write_phase(phase(1, "cudagraph", p50=1.5))
    assert report.plot_waterfall(run2).axes[0].get_yscale() == "linear"


def test_a_timeline_of_thousands_of_kernels_is_merged_into_what_a_figure_can_show():
    from playbook.report.plots import BARS_PER_LANE, merge_events
    events = [(i * 0.01, 0.008, f"k{i}", "gemm" if i % 1000 < 500 else "norm") for i in range(40000)]
    merged = merge_events(events)
    assert len(merged) <= BARS_PER_LANE and {m[2] for m in merged} == {"gemm", "norm"}
    assert abs(sum(m[1] for m in merged) - 400.0) < 1.0               # the lane's span is kept
    assert merge_events([(0.0, 1.0, "a", "gemm"), (5.0, 1.0, "b", "gemm")]) == [[0.0, 1.0, "gemm"], [5.0, 1.0, "gemm"]]


def test_phase_5s_shape_table_says_which_projections_were_routed():
    p = phase(5, "kernels")
    p["knobs"] = {"gemv": [[11, 1024, 4096, False]], "inductor_fusion": True}
    p["gemv_shapes"] = [{"rows": 11, "N": 1024, "K": 4096, "norm": False, "gemv_us": 6.84, "cublas_us": 8.05},
                        {"rows": 11, "N": 8192, "K": 1024, "norm": True, "gemv_us": 7.7, "cublas_us": 6.89}]
    text = report.phase_summary(p)
    assert "| 11, 1024 x 4096 | no | 6.84 | 8.05 | yes |" in text
    assert "| 11, 8192 x 1024 | yes | 7.7 | 6.89 | no |" in text
    p["status"] = "rejected"                       # a rejected phase routed nothing in the recipe
    assert "| 11, 1024 x 4096 | no | 6.84 | 8.05 | no |" in report.phase_summary(p)


def test_what_a_phase_did_not_build_is_said():
    p = phase(4, "fusion")
    p["not_built"] = {"labels": ["fuse projections"],
                      "why": "fuse projections + model knobs holds them and is correct (this phase's candidates are nested)"}
    assert "- not built: fuse projections (fuse projections + model knobs holds them" in report.phase_summary(p)


def test_the_time_line_says_why_aotautograds_cache_was_bypassed():
    p = phase(5, "kernels")
    p["time_s"] = {"start": 1.0, "compile": 3.3, "total": 5.0}
    p["compile_cache"] = {"fx_graph_hit": 1, "fx_graph_miss": 0, "aot_autograd_hit": 0, "aot_autograd_miss": 0,
                          "aot_autograd_bypass": 1,
                          "aot_autograd_bypass_why": ["Cannot cache a graph with freezing enabled"]}
    text = report.phase_summary(p)
    assert "AOTAutograd 0 hit / 0 missed / 1 bypassed (Cannot cache a graph with freezing enabled)" in text
    p["compile_cache"] = {"fx_graph_hit": 1, "aot_autograd_hit": 1}        # an older record: no bypass counted
    assert "bypassed" not in report.phase_summary(p)
