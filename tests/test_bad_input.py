"""Every mistake a user can make is answered with a message that says what to do, and exit code 2."""
import subprocess
import sys

import pytest
import torch


def cli(*args):
    return subprocess.run([sys.executable, "-m", "playbook", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,message", [
    (["--workload", "lama"], "unknown workload 'lama'; choose one of: tiny, llama, pi0, custom"),
    (["--workload", "llama", "--preset", "70b"], "choose one of: tiny, 1b"),
    (["--workload", "tiny", "--device", "tpu"], "unknown device 'tpu'; choose one of: auto, cpu, cuda"),
    (["--workload", "tiny", "--dtype", "int3"], "unknown dtype 'int3'"),
    (["--workload", "tiny", "--target-ms", "fast"], "not a number of milliseconds"),
    (["--workload", "tiny", "--target-ms", "-1"], "positive"),
    (["--workload", "tiny", "--budget-min", "soon"], "budget 'soon' is not a number of minutes"),
    (["--workload", "tiny", "--budget-min", "0.0"], "budget '0.0' must be a positive"),
    (["--workload", "custom"], "needs --model package.module:function"),
    (["--workload", "custom", "--model", "nocolon"], "is not package.module:function"),
    (["--workload", "custom", "--model", "no_such_pkg.mod:f"], "cannot import"),
    (["--resume"], "--resume needs --out"),
    (["--workload", "tiny", "--phases", "baseline,fusoin"], "unknown phase 'fusoin'"),
    (["--workload", "tiny", "--phases", "fusion,verify"], "add baseline, or --resume a run"),
])
def test_bad_run_arguments(args, message, tmp_path):
    done = cli("run", "--out", str(tmp_path / "r"), *args) if "--resume" not in args else cli("run", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_refused():
    done = cli("run", "--workload", "tiny", "--device", "cuda")
    assert done.returncode == 2 and "sees no GPU" in done.stderr and "--device cpu" in done.stderr


def test_corrupt_run_directory_on_resume(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("not json")
    done = cli("run", "--out", str(tmp_path / "r"), "--resume")
    assert done.returncode == 2 and "corrupt" in done.stderr


def test_custom_model_that_returns_the_wrong_thing(tmp_path):
    from playbook.errors import PlaybookError
    from playbook.workloads import build_workload
    with pytest.raises(PlaybookError, match=r"must return \(model, example_inputs\)"):
        build_workload("custom", model="fixture_models:not_a_pair", device=torch.device("cpu"), dtype=torch.float32)
