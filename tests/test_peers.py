"""benchmarks/peers.py on the tiny workload: every peer in its own process, failures recorded, not raised."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peers(tmp_path, *args):
    out = tmp_path / "peers.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--workload", "tiny",
                           "--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--iters", "5",
                           "--warmup", "1", "--out", str(out), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return {r["peer"]: r for r in json.loads(out.read_text())["peers"]}, json.loads(out.read_text())


def test_built_together_timed_alone_and_a_bad_recipe_is_an_error_not_a_crash(tmp_path):
    bad = tmp_path / "recipe.json"
    bad.write_text("{ not json")
    got, whole = peers(tmp_path, "--peers", "eager,playbook", "--recipe", str(bad), "--together", "--limit-s", "300")
    assert whole["builds"] == "together"
    assert got["eager"]["status"] == "ok" and got["eager"]["correct"] is True and got["eager"]["p50_ms"] > 0
    assert got["eager"]["vs_eager"] == 1.0
    assert got["playbook"]["status"] == "error" and "recipe" in got["playbook"]["error"]


def test_a_peer_past_its_limit_is_recorded_as_a_timeout(tmp_path):
    got, _ = peers(tmp_path, "--peers", "eager,compile-default", "--together", "--limit-s", "1")
    for peer in ("eager", "compile-default"):        # importing torch alone takes longer than a second
        assert got[peer]["status"] == "timeout" and "not built within 1 s" in got[peer]["error"]


def test_a_custom_model_and_a_bad_model_type_on_the_cpu(tmp_path):
    out = tmp_path / "custom.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--workload", "custom", "--model",
           "fixture_models:chain", "--device", "cpu", "--dtype", "float32", "--iters", "5", "--warmup", "1",
           "--peers", "eager,compile-default", "--together", "--out", str(out)]
    env = {**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    whole = json.loads(out.read_text())
    got = {r["peer"]: r for r in whole["peers"]}
    for peer in ("eager", "compile-default"):
        assert got[peer]["status"] == "ok" and got[peer]["correct"] is True and got[peer]["p50_ms"] > 0, got[peer]
    assert got["eager"]["flops_by"] == "FlopCounterMode on the step" and got["eager"]["flops"] > 0
    assert whole["params"]["model"] == "fixture_models:chain" and whole["floor_ms"] > 0
    bad = subprocess.run(cmd[:4] + ["--workload", "hf", "--model", "qwen3000"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode == 2 and "unknown model type" in bad.stderr
