import pytest
import torch

from playbook.compare import TOLERANCES, check_inputs, compare, flatten, snapshot
from playbook.errors import PlaybookError


def test_flatten_nested_outputs_and_model_output():
    from transformers.modeling_outputs import CausalLMOutput
    out = {"a": torch.ones(2), "b": (torch.zeros(1), [torch.ones(3)]), "lm": CausalLMOutput(logits=torch.ones(4))}
    assert set(flatten(out)) == {"a", "b.0", "b.1.0", "lm.logits"}


def test_equal_outputs_pass_and_perturbed_fail():
    ref = snapshot({"y": torch.randn(64, 64)})
    assert compare({"y": ref["y"].clone()}, ref, torch.float32)["correct"]
    bad = compare({"y": ref["y"] * 1.01}, ref, torch.float32)
    assert not bad["correct"] and bad["rel_err"] == pytest.approx(0.01, rel=1e-3)
    assert bad["max_abs_diff"] > 0 and bad["problems"]


def test_nan_never_passes():
    ref = snapshot({"y": torch.randn(8)})
    y = ref["y"].clone()
    y[3] = float("nan")
    v = compare({"y": y}, ref, torch.bfloat16)
    assert not v["correct"] and v["max_abs_diff"] is None


def test_shape_and_key_mismatches_fail():
    ref = snapshot({"y": torch.randn(8)})
    assert not compare({"y": torch.randn(9)}, ref, torch.float32)["correct"]
    assert not compare({"z": torch.randn(8)}, ref, torch.float32)["correct"]


def test_low_precision_is_judged_against_the_fp32_twin():
    precise = {"y": torch.randn(1000, dtype=torch.float64).float()}
    reference = {"y": precise["y"] + 0.03 * torch.randn(1000)}       # the untouched bf16 model: 3% off
    closer = {"y": precise["y"] + 0.01 * torch.randn(1000)}          # a phase that is more accurate
    v = compare(closer, reference, torch.bfloat16, precise=precise, baseline_err=0.03)
    assert v["correct"] and v["rel_err"] > TOLERANCES[torch.bfloat16]   # 3% from eager, yet correct
    worse = {"y": precise["y"] + 0.2 * torch.randn(1000)}
    assert not compare(worse, reference, torch.bfloat16, precise=precise, baseline_err=0.03)["correct"]


def test_zero_inputs_are_refused():
    with pytest.raises(PlaybookError, match="all zeros"):
        check_inputs((torch.zeros(3),), {})
    check_inputs((torch.randn(3), torch.zeros(2, dtype=torch.long)), {})
