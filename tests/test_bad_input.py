"""Every mistake a user can make is answered with a message that says what to do, and exit code 2."""
import contextlib
import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch


def cli(*args):
    """The command line in this process (each refusal comes before anything is built or started)."""
    from playbook.__main__ import main
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(args))
    return SimpleNamespace(returncode=code, stderr=err.getvalue(), stdout=out.getvalue())


def test_the_real_command_line_exits_2_with_the_message():
    done = subprocess.run([sys.executable, "-m", "playbook", "run", "--workload", "lama"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "unknown workload 'lama'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args,message", [
    (["--workload", "lama"], "unknown workload 'lama'; choose one of: tiny, llama, pi0, hf, custom"),
    (["--workload", "hf"], "workload 'hf' needs --model"),
    (["--workload", "hf", "--model", "qwen3000"], "unknown model type"),
    (["--workload", "hf", "--model", "qwen2", "--option", "step=sample"], "unknown step"),
    (["--workload", "llama", "--model", "qwen2"], "--model is for workloads custom and hf"),
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
