import json

import pytest

from playbook.errors import PlaybookError
from playbook.runs import open_run
from playbook.state import Run, write_json


def phase(n, name, status="kept", p50=1.0):
    return {"phase": n, "name": name, "status": status, "p50_ms": p50, "p95_ms": p50, "mean_ms": p50,
            "std_ms": 0.0, "correct": True, "max_abs_diff": 0.0, "knobs": {"x": n}, "next_action": "", "error": None}


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    write_json(path, {"ok": 1})

    def broken_dump(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        write_json(path, {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_run_records_phases_and_recipe(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    assert (tmp_path / "r" / "run.json").exists()
    assert run.params["versions"]["torch"] and run.params["device_info"]["type"] == "cpu"
    run.write_phase(phase(0, "baseline"))
    run.write_phase(phase(1, "cudagraph"))
    run.keep(phase(1, "cudagraph", p50=0.5))
    run.keep(phase(1, "cudagraph", p50=0.4))
    assert [p["name"] for p in Run.open(tmp_path / "r").phases()] == ["baseline", "cudagraph"]
    recipe = run.recipe()
    assert recipe["phases"] == [{"phase": 1, "name": "cudagraph", "knobs": {"x": 1}}] and recipe["p50_ms"] == 0.4
    assert (tmp_path / "r" / "phases" / "01-cudagraph.json").exists()


def test_phase_without_required_fields_is_refused(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    bad = phase(0, "baseline")
    del bad["correct"]
    with pytest.raises(ValueError):
        run.write_phase(bad)
    with pytest.raises(ValueError):
        run.write_phase({**phase(0, "baseline"), "status": "great"})


def test_corrupt_run_directory_says_what_to_do(tmp_path, run_params):
    open_run(str(tmp_path / "r"), **run_params)
    (tmp_path / "r" / "run.json").write_text("{ half a fi")
    with pytest.raises(PlaybookError, match="corrupt"):
        Run.open(tmp_path / "r")
    with pytest.raises(PlaybookError, match="not a run directory"):
        Run.open(tmp_path / "nothing")


def test_reopening_with_other_parameters_is_refused(tmp_path, run_params):
    open_run(str(tmp_path / "r"), **run_params)
    with pytest.raises(PlaybookError, match="different parameters"):
        open_run(str(tmp_path / "r"), **{**run_params, "workload": "llama"})


def test_missing_reference_names_the_fix(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    with pytest.raises(PlaybookError, match="00-baseline"):
        run.reference()


def test_a_rerun_phase_is_tried_without_its_old_step_and_dropped_when_not_kept(tmp_path, run_params):
    run = open_run(str(tmp_path / "r"), **run_params)
    for n, name, p50 in ((0, "baseline", 2.0), (1, "cudagraph", 1.0), (6, "tuning", 0.8)):
        run.write_phase(phase(n, name, p50=p50))
        if name != "baseline":
            run.keep(phase(n, name, p50=p50))
    assert [s["name"] for s in run.steps_before("tuning")] == ["cudagraph"]
    run.write_phase(phase(6, "tuning", status="rejected", p50=0.9))
    assert run.drop_steps(["tuning"]) == ["tuning"]
    recipe = run.recipe()
    assert [s["name"] for s in recipe["phases"]] == ["cudagraph"] and recipe["p50_ms"] == 1.0
    assert run.drop_steps(["fusion"]) == []              # never kept: nothing changes
    assert run.recipe() == recipe


def test_an_update_keeps_what_another_process_wrote(tmp_path):
    """The chain's Run and a notebook kernel's Run write the same run.json: neither erases the other's fields."""
    from playbook.state import Run
    chain = Run.create(tmp_path / "r", {"workload": "tiny", "device": "cpu"})
    kernel = Run.open(tmp_path / "r")
    kernel.update(workload_info={"flops": 1}, ceilings={"copy_gbps": 2.0})
    chain.update(chain_s={"total": 3.0})
    again = Run.open(tmp_path / "r").params
    assert again["workload_info"] == {"flops": 1} and again["ceilings"] == {"copy_gbps": 2.0}
    assert again["chain_s"] == {"total": 3.0}


def test_reload_sees_what_another_process_wrote(tmp_path):
    from playbook.state import Run
    chain = Run.create(tmp_path / "r", {"workload": "tiny", "device": "cuda"})
    Run.open(tmp_path / "r").update(workload_info={"weight_bytes": 10})
    assert "workload_info" not in chain.params
    assert chain.reload().params["workload_info"] == {"weight_bytes": 10}
    from playbook.chain import ahead_depth
    assert ahead_depth(chain) == 2          # a GPU run of a small model: two kernels ahead, now that it is known


def test_kernels_ahead_follow_the_model_size_and_the_device(tmp_path):
    from playbook.chain import ahead_depth
    from playbook.state import Run
    run = Run.create(tmp_path / "r", {"workload": "tiny", "device": "cpu"})
    assert ahead_depth(run) == 1                                # size unknown before the baseline
    run.update(workload_info={"weight_bytes": 5e6})
    assert ahead_depth(run) == 2                                # a small model on a CPU: two ahead
    run.update(workload_info={"weight_bytes": 2.5e9})
    assert ahead_depth(run) == 1                                # 1b on a CPU: each copy is host memory
    run.update(device="cuda")
    assert ahead_depth(run) == 2 and ahead_depth(Run.open(tmp_path / "r")) == 2
    run.update(workload_info={"weight_bytes": 1.6e10})
    assert ahead_depth(run) == 1


def test_a_phase_budget_can_differ_by_device(tmp_path):
    from types import SimpleNamespace

    from playbook.ladder import phase_budget
    from playbook.state import Run
    mod = SimpleNamespace(NAME="kernels", BUDGET_S={"cuda": 65, "cpu": 45})
    run = Run.create(tmp_path / "r", {"workload": "tiny", "device": "cuda"})
    assert phase_budget(mod, run) == 65
    run.update(device="cpu")
    assert phase_budget(mod, run) == 45
    run.update(budgets={"kernels": 30.0})                  # a chain budget (--budget-min): the plan's share
    assert phase_budget(mod, run) == 30.0
    run.update(budgets={"kernels": 240.0})                 # even above the phase's own default
    assert phase_budget(mod, run) == 240.0


def test_a_phase_run_again_drops_the_later_steps_that_run_again_after_it(tmp_path, run_params):
    """pi0 full resumed from phase 2 (2026-12-03): the recipe still held phases 4 and 5, so phase 2 was tried on
    top of them. The chain drops the steps of the phases that run again after it, and only those."""
    run = open_run(str(tmp_path / "r"), **run_params)
    for n, name, p50 in ((0, "baseline", 4.0), (1, "cudagraph", 2.0), (2, "attention", 1.5), (4, "fusion", 1.2),
                         (5, "kernels", 1.0)):
        run.write_phase(phase(n, name, p50=p50))
        if name != "baseline":
            run.keep(phase(n, name, p50=p50))
    assert run.drop_steps(["gemm", "fusion", "kernels", "verify"]) == ["fusion", "kernels"]
    recipe = run.recipe()
    assert [s["name"] for s in recipe["phases"]] == ["cudagraph", "attention"] and recipe["p50_ms"] == 1.5
    assert run.drop_steps(["verify"]) == [] and run.recipe() == recipe
