import pytest
import torch

from playbook.compare import compare, snapshot
from playbook.workloads import build_workload
from playbook.workloads.base import counted_flops


@pytest.mark.parametrize("name,preset", [("tiny", "tiny"), ("llama", "tiny")])
def test_builtin_workloads_are_repeatable_and_state_their_floors(name, preset):
    wl = build_workload(name, preset, "", torch.device("cpu"), torch.float32)
    with torch.no_grad():
        first, second = snapshot(wl()), snapshot(wl())
    assert compare(second, first, torch.float32)["rel_err"] == 0.0     # the decode step writes the same slot
    assert first["output"].abs().max() > 0
    flops, how = counted_flops(wl)
    assert wl.weight_bytes > 0 and flops > 0 and how == "FlopCounterMode on the step" and wl.description


def test_llama_1b_geometry():
    from playbook.workloads.llama import PRESETS, config
    c = config(PRESETS["1b"])
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.intermediate_size, c.vocab_size, c.tie_word_embeddings) == (2048, 16, 32, 8, 8192, 128256, True)


def test_weights_via_rounds_the_weights_the_same_way():
    lo = build_workload("tiny", "tiny", "", torch.device("cpu"), torch.bfloat16)
    hi = build_workload("tiny", "tiny", "", torch.device("cpu"), torch.float32, weights_via=torch.bfloat16)
    w_lo, w_hi = lo.model.lm_head.weight, hi.model.lm_head.weight
    assert w_hi.dtype == torch.float32 and torch.equal(w_lo.float(), w_hi)


def test_custom_workload_with_keyword_inputs_and_nested_outputs():
    wl = build_workload("custom", model="fixture_models:make", device=torch.device("cpu"), dtype=torch.float32)
    assert wl.args == () and set(wl.kwargs) == {"x", "scale"}
    leaves = snapshot(wl())
    assert set(leaves) == {"a", "nested.0", "nested.1"} and leaves["nested.1"].dtype == torch.long
