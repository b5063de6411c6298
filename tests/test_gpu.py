"""On the GPU machine: capture, replay and the decode workload on CUDA (skipped without a GPU)."""
import pytest
import torch

from playbook.capture import GraphStep
from playbook.compare import compare, snapshot
from playbook.pipeline import Pipeline

pytestmark = pytest.mark.gpu


def test_graph_replay_matches_eager_and_takes_new_inputs():
    lin = torch.nn.Linear(64, 64, device="cuda")
    x = torch.randn(4, 64, device="cuda")
    g = GraphStep(lin, (x,), {})
    with torch.no_grad():
        assert torch.allclose(g(x), lin(x))
        y = torch.randn(4, 64, device="cuda")
        assert torch.allclose(g(y).clone(), lin(y))


@pytest.mark.parametrize("workload", ["tiny", "llama"])
@pytest.mark.parametrize("compile_", [False, True])
def test_captured_decode_step_is_correct(workload, compile_):
    params = {"workload": workload, "preset": "tiny", "device": "cuda", "dtype": "bfloat16"}
    ref = snapshot(Pipeline.fresh(params).build().outputs())
    precise = snapshot(Pipeline.fresh(params, precise=True).build().outputs())
    base_err = compare(ref, precise, torch.float32)["rel_err"]
    pipe = Pipeline.fresh(params)
    pipe.compile, pipe.capture = compile_, True
    runner = pipe.build()
    first = snapshot(runner.outputs())
    v = compare(runner.outputs(), ref, torch.bfloat16, precise=precise, baseline_err=base_err)
    assert v["correct"], v["problems"]
    assert compare(runner.outputs(), first, torch.bfloat16)["rel_err"] == 0.0     # replays are repeatable
