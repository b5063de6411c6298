"""Where a phase's time goes (playbook/clock.py) and how a chain plans within a budget (playbook/plan.py)."""
import time

import pytest

from playbook import clock, plan
from playbook.runs import open_run
from test_state import phase


def test_sections_charge_the_innermost_and_the_total_holds_them_all():
    clock.reset()
    with clock.section("build"):
        time.sleep(0.05)
        with clock.section("compile"):
            time.sleep(0.3)
    t = clock.time_s()
    # build excludes the nested compile: with it, build would be 0.35 s or more (slack for a loaded machine)
    assert 0.29 <= t["compile"] < 0.6 and 0.04 <= t["build"] < 0.25
    # each figure is rounded to 10 ms: the sum of three may pass the rounded total by up to 15 ms
    assert t["total"] >= t["start"] + t["build"] + t["compile"] - 0.02 and t["other"] >= 0
    with pytest.raises(ValueError, match="unknown clock section"):
        with clock.section("compiling"):
            pass


def test_cache_counts_are_differences_since_the_reset():
    from torch._dynamo.utils import counters
    clock.reset()
    counters["inductor"]["fxgraph_cache_hit"] += 2
    assert clock.cache_counts()["fx_graph_hit"] == 2
    clock.reset()
    assert clock.cache_counts()["fx_graph_hit"] == 0


def test_why_aotautograds_cache_was_bypassed_is_kept_and_not_printed(capsys):
    import logging
    clock.reset()
    log = logging.getLogger("torch._functorch._aot_autograd.autograd_cache")
    log.info("Bypassing autograd cache due to: %s", "Cannot cache a graph with freezing enabled")
    log.info("Writing AOTAutograd cache entry to /tmp/x")
    assert clock.cache_counts()["aot_autograd_bypass_why"] == ["Cannot cache a graph with freezing enabled"]
    assert "Bypassing" not in capsys.readouterr().err
    clock.reset()                       # a reason belongs to the phase that met it
    assert "aot_autograd_bypass_why" not in clock.cache_counts()


def _run_with(tmp_path, run_params, totals):
    run = open_run(str(tmp_path / "r"), **run_params)
    for number, (name, total) in enumerate(totals):
        run.write_phase({**phase(number, name, p50=1.0), "time_s": {"start": 5.0, "render": 1.0, "papermill": 1.0,
                                                                      "total": total}})
    return run


def test_the_plan_runs_everything_with_time_to_spare(tmp_path, run_params):
    run = _run_with(tmp_path, run_params, [("baseline", 20.0), ("cudagraph", 40.0)])
    later = ["attention", "gemm", "fusion", "kernels", "tuning", "verify"]
    share, why = plan.share(run, "attention", later, seconds_left=3000)
    assert why is None and 0 < share <= 1.5 * (7.0 + plan.WEIGHT["attention"] * 40) - 7.0
    assert plan.share(run, "verify", ["verify"], seconds_left=0) == (None, None)        # verify always runs


def test_a_short_budget_keeps_the_phases_that_gained_most(tmp_path, run_params):
    run = _run_with(tmp_path, run_params, [("baseline", 20.0), ("cudagraph", 40.0)])
    later = ["attention", "gemm", "fusion", "kernels", "tuning", "verify"]
    share, why = plan.share(run, "attention", later, seconds_left=100)
    assert share is None and "held for" in why and "fusion" in why and "verify" in why
    share, why = plan.share(run, "fusion", later[2:], seconds_left=100)     # verify's 39 s held, fusion runs
    assert why is None and share > 0
    assert plan.share(run, "attention", later, seconds_left=100)[0] is None


def _pi0_like_phase_one(run, library_gemm, triton_elementwise, triton_gemm, attention):
    """Phase 1's trace as a kernel table: cuBLAS's GEMMs, Inductor's Triton kernels, the attention kernels (ms)."""
    table = [{"name": "nvjet_sm90_tst_128x64", "category": "gemm", "count": 90, "ms": library_gemm},
             {"name": "triton_poi_fused_add_mul_0", "category": "elementwise", "count": 300, "ms": triton_elementwise},
             {"name": "triton_red_fused_mm_2", "category": "gemm", "count": 10, "ms": triton_gemm},
             {"name": "cudnn_generated_fort_native_sdpa", "category": "attention", "count": 81, "ms": attention}]
    run.write_phase({**run.phase("cudagraph"), "profile": {"unit": "kernel", "kernel_table": table}})


def test_pi0_full_on_a_slow_machine_gets_attention_gemm_and_fusion_within_nine_minutes(tmp_path, run_params):
    """The H200 of 2026-12-01: phase 1 took 138 s and 363 s of --budget-min 9.2 were left; gemm, fusion and
    verify then took 261 s. The old weights held 394 s for them and skipped attention; the re-measured ones
    hold less than that and give attention a share, and still skip kernels once fusion has run."""
    run = _run_with(tmp_path, run_params, [("baseline", 45.0), ("cudagraph", 137.5)])
    _pi0_like_phase_one(run, library_gemm=19.0, triton_elementwise=3.64, triton_gemm=0.35, attention=5.55)
    later = ["attention", "gemm", "fusion", "kernels", "tuning", "verify"]
    share, why = plan.share(run, "attention", later, seconds_left=363)
    assert why is None and share >= 60, why            # grouped attention's build and the kept recipe's: ~50 s
    share, why = plan.share(run, "kernels", ["kernels", "tuning", "verify"], seconds_left=130)
    assert share is None and "verify" in why


def test_pi0_full_with_gemm_and_verify_at_their_measured_cost_gets_attention(tmp_path, run_params):
    """The H200 of 2026-12-01, later: phase 1 took 134 s and 377 s of --budget-min 9.2 were left. With gemm and
    verify at 0.6 units the plan held 311 s for gemm, fusion and verify (which took 222) and skipped attention
    by 2 s; at their measured cost attention gets a share, and kernels is still skipped once fusion has run."""
    run = _run_with(tmp_path, run_params, [("baseline", 36.6), ("cudagraph", 133.6)])
    _pi0_like_phase_one(run, library_gemm=19.0, triton_elementwise=3.7, triton_gemm=0.4, attention=5.57)
    later = ["attention", "gemm", "fusion", "kernels", "tuning", "verify"]
    share, why = plan.share(run, "attention", later, seconds_left=377)
    assert why is None and share >= 70, why            # grouped attention's build and the vision's SDPA: ~35 s each
    share, why = plan.share(run, "gemm", later[1:], seconds_left=377 - 90)
    from playbook.phases import gemm
    assert why is None and "not started" in gemm.triton_limit(share)[1]       # no Triton timing in that share
    share, why = plan.share(run, "kernels", later[3:], seconds_left=377 - 90 - 25 - 104)
    assert share is None and "verify" in why


def test_no_estimate_before_phase_one(tmp_path, run_params):
    run = _run_with(tmp_path, run_params, [("baseline", 20.0)])
    assert plan.share(run, "attention", ["attention", "verify"], seconds_left=1) == (None, None)


def test_a_short_budget_ranks_phases_by_what_phase_one_s_trace_says_they_can_act_on(tmp_path, run_params):
    """pi0-like: library GEMMs dominate the step, so gemm outranks tuning (Inductor's Triton kernels) and
    tuning is the one a short budget skips; without a GPU trace the fixed order holds."""
    run = _run_with(tmp_path, run_params, [("baseline", 20.0), ("cudagraph", 40.0)])
    assert plan.reach(run) is None and plan.priority(run) == plan.PRIORITY
    p1 = run.phase("cudagraph")
    table = [{"name": "nvjet_sm90_tst_128x64", "category": "gemm", "count": 90, "ms": 18.9},
             {"name": "triton_poi_fused_add_mul_0", "category": "elementwise", "count": 300, "ms": 2.1},
             {"name": "triton_red_fused_mean_pow_1", "category": "norm", "count": 100, "ms": 0.7},
             {"name": "triton_red_fused_mm_2", "category": "gemm", "count": 10, "ms": 1.5},
             {"name": "pytorch_flash::flash_fwd_kernel", "category": "attention", "count": 50, "ms": 1.1}]
    run.write_phase({**p1, "profile": {"unit": "kernel", "kernel_table": table}})
    assert plan.reach(run) == {"gemm": 18.9, "tuning": 4.3, "kernels": 2.8, "attention": 1.1}
    assert plan.priority(run) == ("fusion", "gemm", "tuning", "kernels", "attention")
    later = ["gemm", "fusion", "kernels", "tuning", "verify"]
    share, why = plan.share(run, "gemm", later, seconds_left=130)      # holds fusion and verify only
    assert why is None and share > 0
    share, why = plan.share(run, "tuning", ["tuning", "verify"], seconds_left=60)
    assert share is None and "gemm 18.9" in why and "held for verify" in why


def test_the_eager_step_s_batched_products_count_as_attention_s_reach(tmp_path, run_params):
    """pi0-like: eager attention's per-head products (aten::bmm, 4.5 ms of the eager step) are what grouped
    attention or SDPA replace, so attention outranks tuning and kernels though its own kernels are small."""
    run = _run_with(tmp_path, run_params, [("baseline", 20.0), ("cudagraph", 40.0)])
    _pi0_like_phase_one(run, library_gemm=18.9, triton_elementwise=2.0, triton_gemm=2.06, attention=1.06)
    by_op = [{"op": "aten::bmm", "shapes": [[8, 11, 827], [8, 827, 256]], "kernels": 180, "ms": 2.97},
             {"op": "aten::mm", "shapes": [[816, 2048], [2048, 16384]], "kernels": 72, "ms": 2.64},
             {"op": "aten::bmm", "shapes": [[8, 11, 256], [8, 256, 827]], "kernels": 180, "ms": 1.5}]
    run.write_phase({**run.phase("baseline"), "profile": {"unit": "kernel", "gpu_ms_by_op": by_op}})
    got = plan.reach(run)
    assert got["attention"] == pytest.approx(1.06 + 2.97 + 1.5) and got["tuning"] == pytest.approx(4.06)
    assert plan.priority(run) == ("fusion", "gemm", "attention", "tuning", "kernels")


def test_no_time_is_held_for_a_tuning_phase_that_cannot_fit_one_build(tmp_path, run_params):
    run = _run_with(tmp_path, run_params, [("baseline", 20.0), ("cudagraph", 40.0)])
    later = ["kernels", "tuning", "verify"]
    share, why = plan.share(run, "kernels", later, seconds_left=100)    # tuning outranks kernels: held
    assert share is None and "tuning" in why
    run.write_phase({**run.phase("cudagraph"), "compile_s": 75.5})      # pi0 full's: a tuned build ~151 s > 75
    share, why = plan.share(run, "kernels", later, seconds_left=100)
    assert why is None and share > 0
