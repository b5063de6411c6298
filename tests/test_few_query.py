"""playbook/rewrites/few_query.py and phase 5's few-query candidate: a grouped-attention model's few-query calls
recorded from one step, the kernel's table deciding before anything is built, and apply() routing the model."""
import types

import pytest
import torch

from playbook.phases import kernels as phase
from playbook.rewrites import few_query, grouped_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"      # on a CPU the kernel runs in Triton's interpreter


def gqa_step(queries=3, cached=20, dtype=torch.float32):
    """A tiny Gemma (6 query heads over 2 K/V heads) on grouped attention, and a step of `queries` tokens over a
    cache of `cached`: (model, args, kwargs)."""
    from transformers import DynamicCache, GemmaConfig, GemmaModel
    cfg = GemmaConfig(vocab_size=64, hidden_size=96, intermediate_size=128, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=24, attn_implementation="eager")
    torch.manual_seed(0)
    model = GemmaModel(cfg).eval().to(DEVICE, dtype)
    cache = DynamicCache()
    with torch.no_grad():
        model(torch.randint(0, 64, (1, cached), device=DEVICE), past_key_values=cache, use_cache=True)
    assert [s["path"] for s in grouped_attention.route(model)] == [""]
    return model, (torch.randint(0, 64, (1, queries), device=DEVICE),), {"past_key_values": cache}


def test_one_step_records_each_few_query_shape_once_and_passes_every_call_on():
    from transformers import AttentionInterface
    model, args, kwargs = gqa_step()
    calls = few_query.record_calls(model, args, kwargs, [""])
    assert len(calls) == 1                                      # both layers: one shape
    c = calls[0]
    assert c["path"] == "" and c["q"].shape == (1, 6, 3, 24) and c["k"].shape == (1, 2, 23, 24)
    described = few_query.describe(c)
    assert described.pop("mask") in (None, "boolean", "additive")
    assert described == {"path": "", "queries": 3, "slots": 23, "heads": 6, "kv_heads": 2, "head_dim": 24}
    assert AttentionInterface._global_mapping[grouped_attention.NAME] is grouped_attention.grouped_attention_forward
    want = grouped_attention.grouped_attention_forward(None, c["q"], c["k"], c["v"], c["mask"],
                                                       scaling=c["scaling"])[0]
    from playbook.kernels.few_query_attention import few_query_attention
    got = few_query_attention(c["q"], c["k"], c["v"], c["mask"], scale=c["scaling"])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_step_of_many_queries_has_no_few_query_call():
    model, args, kwargs = gqa_step(queries=20, cached=4)
    assert few_query.record_calls(model, args, kwargs, [""]) == []


def test_winners_are_the_models_that_won_every_shape_by_the_margin():
    row = lambda path, kernel, math: {"path": path, "kernel_us": kernel, "math_us": math}
    table = [row("expert", 7.9, 11.1), row("expert", 4.0, 5.0), row("lm", 7.0, 7.2), row("vision", 3.0, 9.0),
             row("vision", 9.0, 8.0)]
    assert few_query.winners(table) == ["expert"]              # lm only ties; vision lost one shape


def ctx_for(model, args, kwargs, attention_knobs):
    return types.SimpleNamespace(info={}, device=torch.device(DEVICE),
                                 steps=[{"phase": 2, "name": "attention", "knobs": attention_knobs}],
                                 pipe=types.SimpleNamespace(compile=True))


def test_phase_5_decides_from_the_table_and_apply_routes_the_model():
    model, args, kwargs = gqa_step()
    pipe = types.SimpleNamespace(workload=types.SimpleNamespace(model=model, args=args, kwargs=kwargs), info={})

    def timed(kernel_us):       # a stand-in for time_calls (a GPU's graphs)
        return lambda calls, device: [{**few_query.describe(c), "kernel_us": kernel_us, "math_us": 10.0}
                                      for c in calls]
    ctx, notes = ctx_for(model, args, kwargs, {"grouped": [""]}), []
    assert phase._few_query_paths(ctx, pipe, notes, timed(6.0)) == [""]
    assert ctx.info["few_query_shapes"][0]["queries"] == 3
    assert phase._few_query_paths(ctx, pipe, notes, timed(9.8)) == []           # within the margin: not built
    assert "as fast, or within 5%" in notes[-1]
    kept = ctx_for(model, args, kwargs, {"grouped": [""], "few_query": True})
    assert phase._few_query_paths(kept, pipe, notes, timed(6.0)) == []          # the recipe has it already
    assert phase._few_query_paths(ctx_for(model, args, kwargs, {"route": {}}), pipe, notes, timed(6.0)) == []

    def broken(calls, device):
        raise RuntimeError("no kernel image for this GPU")
    assert phase._few_query_paths(ctx, pipe, notes, broken) == []              # the phase goes on without it
    assert "timing its calls failed: RuntimeError: no kernel image" in notes[-1]
    phase.apply(pipe, {"few_query": [""]})
    assert model.config._attn_implementation == grouped_attention.FEW_QUERY and pipe.info["few_query"] == [""]
    with pytest.raises(RuntimeError, match="recorded"):
        phase.apply(pipe, {"few_query": ["lm"]})


@pytest.mark.parametrize("knobs", [{"gemv": [[1, 8, 8, False]], "inductor_fusion": True, "few_query": ["x"]},
                                   {"gemv": True, "few_query": ["x"]}, {"inductor_fusion": True, "few_query": ["x"]}])
def test_every_few_query_candidate_is_a_named_choice(knobs):
    assert phase.label(knobs).endswith(", few-query attention") and phase.label(knobs) in phase.CHOICES


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA graphs")
def test_the_table_times_the_kernel_against_the_compiled_math_on_a_gpu():
    model, args, kwargs = gqa_step(dtype=torch.bfloat16)
    calls = few_query.record_calls(model, args, kwargs, [""])
    (row,) = few_query.time_calls(calls, torch.device("cuda"))
    assert row["kernel_us"] > 0 and row["math_us"] > 0 and row["queries"] == 3
