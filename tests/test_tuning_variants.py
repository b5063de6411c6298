"""benchmarks/tuning_variants.py on the tiny workload: a recipe beside its tuning variants, judged and timed."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import tuning_variants  # noqa: E402

RECIPE = {"workload": {"workload": "tiny", "preset": "tiny", "model": "", "device": "cpu", "dtype": "float32",
                       "options": {}},
          "phases": [{"phase": 1, "name": "cudagraph",
                      "knobs": {"compile": True, "mode": "default", "scope": "model", "capture": False}},
                     {"phase": 6, "name": "tuning", "knobs": {"tune": ["coordinate_descent_tuning"]}}]}


def test_a_variant_replaces_the_tuning_step_or_drops_it():
    phases = RECIPE["phases"]
    swapped = tuning_variants.variant_steps(phases, {"tune": ["max_autotune"]})
    assert [p["name"] for p in swapped] == ["cudagraph", "tuning"]
    assert swapped[-1]["knobs"] == {"tune": ["max_autotune"]}
    assert phases[-1]["knobs"]["tune"] == ["coordinate_descent_tuning"]          # the recipe is left as it was
    assert [p["name"] for p in tuning_variants.variant_steps(phases, None)] == ["cudagraph"]


def test_the_recipe_and_its_variants_are_judged_and_timed_side_by_side(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(RECIPE))
    out = tmp_path / "variants.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tuning_variants.py"), "--recipe", str(recipe),
                           "--variant", "null", "--iters", "5", "--warmup", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["coordinate descent", "no tuning"]
    assert all(r["correct"] is True and r["p50_ms"] > 0 for r in rows)


def test_one_knobs_row_may_merge_into_several_phases():
    merged = tuning_variants.knob_spec('cudagraph={"scope": "regions"}; tuning={"tune": []}', ["cudagraph", "tuning"])
    assert merged == {"cudagraph": {"scope": "regions"}, "tuning": {"tune": []}}
    with pytest.raises(SystemExit, match="no phase 'kernels'"):
        tuning_variants.knob_spec('kernels={"gemv": true}', ["cudagraph", "tuning"])
    with pytest.raises(SystemExit, match="not JSON"):
        tuning_variants.knob_spec('tuning={tune}', ["cudagraph", "tuning"])
