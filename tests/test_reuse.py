"""A run's recipe outside the notebooks: apply(), check (do not regress), bkc.md, preflight, the hand-off prompt."""
import json

import pytest
import torch

import playbook
from playbook import bench, bkc, prompt, reuse
from playbook.__main__ import main
from playbook.errors import PlaybookError
from playbook.ladder import run_phase
from playbook.pipeline import Pipeline
from playbook.runs import open_run

# NOTE: CI's machine is a shared 2-core CPU: p50 moves by 10-20% between runs there, so the tests pass a
# wide --tolerance where they expect "no regression"; the default (2%) is for a quiet GPU.
CPU_TOLERANCE = 40.0


@pytest.fixture(scope="module")
def verified_run(tmp_path_factory):
    run = open_run(str(tmp_path_factory.mktemp("reuse") / "tiny"), workload="tiny", preset="tiny", device="cpu",
                   dtype="float32", target_ms=5.0, iters=20, warmup=3)
    for name in ("baseline", "cudagraph", "verify"):
        assert run_phase(name, run, iters=20, warmup=3)["status"] == "kept"
    return run


def test_recipe_is_a_best_known_config_record(verified_run):
    recipe = json.loads((verified_run.path / "recipe.json").read_text())
    assert [s["name"] for s in recipe["phases"]] == ["cudagraph"]
    assert recipe["verified"]["correct"] and recipe["verified"]["p50_ms"] > 0 and recipe["verified"]["speedup_vs_baseline"]
    assert recipe["device"].startswith("CPU") and recipe["fingerprint"]["torch"] == torch.__version__ and recipe["date"]
    text = bkc.render(verified_run)
    assert "best known config (do not regress)" in text and "phase 1 `cudagraph`" in text
    assert "losing it costs" in text and "python -m playbook check --recipe" in text


def test_apply_gives_verify_outputs_at_its_speed(verified_run):
    recipe = verified_run.path / "recipe.json"
    fresh = Pipeline.fresh(verified_run.params).workload            # a plain model and inputs, as a user has them
    fast = playbook.apply(fresh.model, fresh.args, recipe)
    rebuilt = Pipeline.from_recipe(verified_run.params, json.loads(recipe.read_text())["phases"]).build()
    torch.testing.assert_close(fast(*fresh.args), rebuilt.outputs(), rtol=0, atol=1e-5)
    t = bench.time_side_by_side({"apply": lambda: fast(*fresh.args), "verify": rebuilt.step}, torch.device("cpu"),
                                iters=40, warmup=5)
    assert t["apply"].p50_ms <= t["verify"].p50_ms * (1 + CPU_TOLERANCE / 100)


def test_check_passes_here_and_fails_without_a_kept_knob(verified_run, tmp_path, capsys):
    recipe = verified_run.path / "recipe.json"
    out = tmp_path / "check.json"
    assert main(["check", "--recipe", str(recipe), "--tolerance", str(CPU_TOLERANCE), "--iters", "30",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["correct"] and result["compared"] and result["recorded_p50_ms"] > 0
    stripped = json.loads(recipe.read_text())
    stripped["phases"] = []                                         # the kept compile removed
    # The record it is held to: the full recipe as this test just measured it, not the run's own record from
    # another process minutes ago (CI's shared CPU once timed eager 40% faster than the run beside it had, and
    # once timed it within 5% of a record made under load).
    stripped["p50_ms"] = stripped["verified"]["p50_ms"] = result["p50_ms"]
    bad = tmp_path / "recipe.json"
    bad.write_text(json.dumps(stripped))
    # Without the compile the step is eager again: about 1.8x the compiled p50 here. A lost knob shows as far
    # more than the 5% bar, and the side-by-side ratio says so too: the same eager model twice, about 1x (the
    # tiny model's recorded speedup on CI's CPU has been as low as 1.36x, and that ratio's noise 12%).
    code, result = reuse.check(bad, tolerance_pct=5.0, iters=40, say=lambda m: None)
    assert code == 1 and result["worse_pct"] > 5.0 and result["correct"]
    assert 0.7 < result["speedup_vs_baseline"] < 1.3 and result["recorded_speedup"] > 1.0
    capsys.readouterr()


def test_check_warns_instead_of_comparing_across_devices(verified_run, tmp_path):
    other = json.loads((verified_run.path / "recipe.json").read_text())
    other["device"] = "NVIDIA H200"
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(other))
    said = []
    code, result = reuse.check(path, iters=10, warmup=2, say=said.append)
    assert code == 0 and not result["compared"] and "NVIDIA H200" in result["warning"]
    assert any(line.startswith("warning:") for line in said)


def test_bad_recipes_say_what_to_do(tmp_path):
    with pytest.raises(PlaybookError, match="no recipe at"):
        reuse.load_recipe(tmp_path)
    (tmp_path / "recipe.json").write_text("{ half")
    with pytest.raises(PlaybookError, match="corrupt"):
        reuse.load_recipe(tmp_path / "recipe.json")
    assert main(["check", "--recipe", str(tmp_path / "nothing.json")]) == 2


def test_preflight_passes_on_a_cpu_machine_and_warms_the_ladder_s_compile_cache(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_COMPILE_CACHE", str(tmp_path / "cache"))
    assert main(["preflight"]) == 0
    out = capsys.readouterr().out
    assert "torch.compile: works" in out and "READY (CPU only)" in out and "only CPU phases will run" in out
    assert list((tmp_path / "cache").rglob("*.so")), "the probe compiled outside the ladder's compile cache"


def test_prompt_carries_target_baseline_and_open_phases(verified_run):
    text = prompt.render(verified_run.path)
    baseline = verified_run.phase("baseline")["p50_ms"]
    assert "p50 latency target: <5ms" in text and f"Current baseline: ~{baseline:.3f}ms" in text
    assert "attention, gemm, fusion, kernels, tuning" in text
    assert f"python -m playbook gate --target-ms 5.0 --run {verified_run.path}" in text
    assert "{{" not in text and "| Phase | p50 (ms) |" in text
