"""The model rewrites of phases 2, 4 and 5: each finds its sites, changes nothing but speed, or says why not."""
import pytest
import torch
import torch.nn as nn

import fixture_models
from playbook.compare import compare, snapshot
from playbook.rewrites import attention, count_ops, fusion, kernel_swap
from playbook.workloads import build_workload

CPU = torch.device("cpu")


def tiny(name="tiny"):
    return build_workload(name, "tiny", device=CPU, dtype=torch.float32)


def outputs(model, args):
    with torch.no_grad():
        return snapshot(model(*args))


def assert_same(got, want, tol=1e-4):
    r = compare(got, dtype=torch.float32, reference=want)
    assert r["correct"], r
    assert r["max_abs_diff"] <= tol


# ---- phase 2: attention -----------------------------------------------------------------------------------

def test_tiny_eager_attention_becomes_sdpa_with_its_mask():
    wl = tiny()
    want = outputs(wl.model, wl.args)
    before = count_ops(wl.model, wl.args)
    sites = attention.rewrite_eager(wl.model)
    assert sites == [f"layers.{i}.self_attn" for i in range(4)]
    after = count_ops(wl.model, wl.args)
    assert (before["sdpa"], after["sdpa"]) == (0, 4) and after["bmm"] < before["bmm"]
    assert_same(outputs(wl.model, wl.args), want)
    calls = attention.record_sdpa_calls(wl.model, wl.args)
    d = attention.describe_call(calls[0])
    assert d["q"] == [1, 8, 1, 32] and d["k"] == [1, 8, 128, 32] and d["mask"] == "bool[1, 128]"
    assert not d["is_causal"]


def test_wrong_mask_is_caught(monkeypatch):
    """is_causal=True with one query against 128 keys is top-left aligned: the query sees key 0 only."""
    wl = tiny()
    want = outputs(wl.model, wl.args)
    monkeypatch.setattr(attention, "_sdpa_kwargs", lambda mask, scale: {"is_causal": True, "scale": scale})
    assert len(attention.rewrite_eager(wl.model)) == 4
    r = compare(outputs(wl.model, wl.args), dtype=torch.float32, reference=want)
    assert not r["correct"] and r["max_abs_diff"] > 1e-2


def test_additive_mask_and_multiplied_scale_on_a_custom_module():
    model, args = fixture_models.cross_attention()
    want = outputs(model, args)
    assert attention.rewrite_eager(model) == [""]           # the root module itself
    assert count_ops(model, args)["sdpa"] == 1
    assert_same(outputs(model, args), want)


def test_hugging_face_eager_attention_is_switched_to_sdpa():
    from transformers import LlamaForCausalLM
    from playbook.workloads.llama import PRESETS, config
    cfg = config(PRESETS["tiny"])
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 7))
    want = outputs(model, (ids,))
    assert count_ops(model, (ids,))["sdpa"] == 0
    assert attention.rewrite_eager(model) == []              # HF modules are left to their own switch
    switched = attention.route_hf(model)
    assert switched == [{"path": "", "was": "eager", "now": "sdpa"}]
    assert count_ops(model, (ids,))["sdpa"] == cfg.num_hidden_layers
    assert_same(outputs(model, (ids,)), want)


def _eager_reference(q, k, v, mask, scale):
    """Hugging Face's eager attention: K/V copied per query head, then one product per head."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    s = q @ k.transpose(2, 3) * scale
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min) if mask.dtype == torch.bool else s + mask
    return (torch.softmax(s.float(), -1).to(q.dtype) @ v).transpose(1, 2)


@pytest.mark.parametrize("heads,kv_heads,q_len,k_len,mask_heads", [(6, 2, 7, 13, 1), (8, 1, 11, 37, 8), (6, 2, 5, 13, 6),
                                                                     (3, 3, 5, 5, 1), (4, 2, 1, 9, None)])
@pytest.mark.parametrize("boolean", [True, False])
def test_grouped_attention_is_eager_attention_with_any_mask(heads, kv_heads, q_len, k_len, mask_heads, boolean):
    from playbook.rewrites.grouped_attention import grouped_attention_forward
    torch.manual_seed(0)
    q, k, v = torch.randn(2, heads, q_len, 24), torch.randn(2, kv_heads, k_len, 24), torch.randn(2, kv_heads, k_len, 24)
    mask = None
    if mask_heads:
        allowed = torch.rand(2, mask_heads, q_len, k_len) > 0.3
        allowed[..., 0] = True                                   # every row attends to something
        mask = allowed if boolean else torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    out, weights = grouped_attention_forward(nn.Module(), q, k, v, mask, scaling=0.2)
    assert weights is None and out.shape == (2, q_len, heads, 24)
    assert torch.allclose(out, _eager_reference(q, k, v, mask, 0.2), atol=1e-5)


@pytest.mark.parametrize("q_len,boolean", [(11, True), (3, False), (40, True)])
def test_few_query_attention_is_grouped_attention_in_one_launch(q_len, boolean):
    """Calls of up to 16 queries go to kernels.few_query_attention (Triton's interpreter here), longer ones to the
    grouped math: the same outputs either way, pi0's suffix mask included."""
    from playbook.rewrites import grouped_attention as ga
    torch.manual_seed(1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"          # on a CPU, the kernel in Triton's interpreter
    q, k, v = (torch.randn(1, h, n, 32, device=dev) for h, n in ((8, q_len), (1, q_len + 90), (1, q_len + 90)))
    allowed = torch.ones(1, 1, q_len, q_len + 90, dtype=torch.bool, device=dev)
    allowed[..., 80:90] = False                                  # padded prefix slots
    allowed[0, 0, 0, 91:] = False                                # the state token does not see the actions
    mask = allowed if boolean else torch.zeros(allowed.shape, device=dev).masked_fill(~allowed, -3.0e38)
    assert ga._kernel_takes(nn.Module(), q, k, mask, 0.0) is (q_len <= 16)
    out, weights = ga.few_query_forward(nn.Module(), q, k, v, mask, scaling=0.2)
    assert weights is None and out.shape == (1, q_len, 8, 32)
    assert torch.allclose(out, _eager_reference(q, k, v, mask, 0.2), atol=1e-4)
    calls = [((q, k, v), {}), ((torch.randn(1, 8, 816, 32), torch.randn(1, 8, 816, 32), None), {})]   # + a prefix
    assert len(ga.few_query_calls(calls)) == (1 if q_len <= 16 else 0)


def test_grouped_attention_refuses_heads_that_do_not_group():
    from playbook.rewrites.grouped_attention import grouped_attention_forward
    with pytest.raises(ValueError, match="not a multiple"):
        grouped_attention_forward(nn.Module(), torch.randn(1, 5, 2, 8), torch.randn(1, 2, 3, 8),
                                  torch.randn(1, 2, 3, 8), None)


def test_a_gqa_hugging_face_model_on_eager_attention_is_grouped_with_its_own_padding_mask():
    from transformers import GemmaConfig, GemmaModel
    from playbook.rewrites import grouped_attention
    cfg = GemmaConfig(vocab_size=64, hidden_size=96, intermediate_size=128, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=24, attn_implementation="eager")
    torch.manual_seed(0)
    model = GemmaModel(cfg).eval()
    ids, pad = torch.randint(0, 64, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    pad[1, :3] = 0                                                # left padding: HF builds the mask itself
    with torch.no_grad():
        want = snapshot(model(input_ids=ids, attention_mask=pad).last_hidden_state)
    assert grouped_attention.route(model) == [{"path": "", "heads": 6, "kv_heads": 2, "was": "eager"}]
    assert model.config._attn_implementation == grouped_attention.NAME
    with torch.no_grad():
        assert_same(snapshot(model(input_ids=ids, attention_mask=pad).last_hidden_state), want)
    assert grouped_attention.route(model, few_query=True)[0]["was"] == grouped_attention.NAME
    assert model.config._attn_implementation == grouped_attention.FEW_QUERY
    with torch.no_grad():                                         # 7 queries a call: the kernel takes them
        assert_same(snapshot(model(input_ids=ids, attention_mask=pad).last_hidden_state), want)
    mha = GemmaModel(GemmaConfig(**{**cfg.to_dict(), "num_key_value_heads": 6})).eval()
    assert grouped_attention.find_sites(mha) == []               # no groups: nothing to fold


def test_nothing_to_rewrite_is_left_alone():
    model, args = fixture_models.chain()
    assert attention.rewrite_eager(model) == [] and attention.record_sdpa_calls(model, args) == []


def test_backends_are_measured_and_failures_recorded():
    wl = tiny()
    attention.rewrite_eager(wl.model)
    table = attention.measure_backends(attention.record_sdpa_calls(wl.model, wl.args), CPU, iters=3, warmup=1)
    names = {r["backend"] for r in table}
    assert {"default", "math"} <= names
    assert all(r["us"] > 0 for r in table if r["ok"]) and all(r["error"] for r in table if not r["ok"])
    assert table[0]["ok"] and table[0]["us"] == min(r["us"] for r in table if r["ok"])


def test_torch_s_own_backend_pick_is_read_per_call(monkeypatch):
    """Forcing the backend torch picks anyway changes nothing: the attention phase does not build it."""
    wl = tiny()
    attention.rewrite_eager(wl.model)
    calls = attention.record_sdpa_calls(wl.model, wl.args)
    assert attention.torch_picks(calls) == {"flash"}              # the CPU's pick for float32, no mask
    q = torch.randn(1, 2, 3, 8)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    assert attention.torch_picks([((q, q, q), {"attn_mask": mask})]) == {"flash"}   # the CPU's flash takes masks
    assert attention.torch_picks([((q, q, q), {"dropout_p": 0.5})]) == {"math"}      # no fused kernel drops out here
    def refuses(*a, **kw):                                          # a torch whose chooser cannot take a call
        raise TypeError("unexpected argument")
    monkeypatch.setattr(torch, "_fused_sdp_choice", refuses)
    assert attention.torch_picks([((q, q, q), {})]) is None


# ---- phase 4: fusion --------------------------------------------------------------------------------------

def test_tiny_qkv_and_gate_up_are_fused_with_one_copy_of_the_weights():
    wl = tiny()
    want = outputs(wl.model, wl.args)
    groups = fusion.find_siblings(wl.model, wl.args)
    assert sorted({tuple(g.names) for g in groups}) == [("gate_proj", "up_proj"), ("q_proj", "k_proj", "v_proj")]
    assert len(groups) == 8 and all(g.found_by == "names" for g in groups)
    gemms, nbytes = count_ops(wl.model, wl.args)["gemm"], fusion.param_bytes(wl.model)
    fusion.fuse(wl.model, groups)
    assert count_ops(wl.model, wl.args)["gemm"] == gemms - 4 * (2 + 1)
    assert fusion.param_bytes(wl.model) == nbytes
    assert_same(outputs(wl.model, wl.args), want)
    part = wl.model.layers[0].self_attn.k_proj
    assert part.weight.shape == (128, 256) and part.weight.data_ptr() != wl.model.layers[0].self_attn.q_proj.weight.data_ptr()


def test_siblings_found_by_data_flow_with_mixed_biases():
    model, args = fixture_models.cross_attention()
    want = outputs(model, args)
    groups = fusion.find_siblings(model, args)
    assert [(g.parent, g.names, g.found_by) for g in groups] == [("", ["to_q", "to_k", "to_v"], "data flow")]
    fusion.fuse(model, groups)
    assert count_ops(model, args)["gemm"] == 2
    assert_same(outputs(model, args), want)


def test_compiled_fused_model_matches():
    wl = tiny("llama")
    want = outputs(wl.model, wl.args)
    fusion.fuse(wl.model, fusion.find_siblings(wl.model, wl.args))
    compiled = torch.compile(wl.model)
    assert_same(outputs(compiled, wl.args), want)


def test_nothing_to_fuse_and_tied_weights_are_left_alone():
    model, args = fixture_models.chain()
    assert fusion.find_siblings(model, args) == []
    tied = nn.ModuleDict({"a": nn.Linear(8, 8), "b": nn.Linear(8, 8)})
    tied.b.weight = tied.a.weight
    assert fusion._by_data_flow(lambda x: (tied.a(x), tied.b(x)), dict(tied.named_modules()),
                                fusion._shared_weights(tied), set(), (torch.randn(1, 8),), {}) == []


# ---- phase 5: kernel swap ---------------------------------------------------------------------------------

def test_norm_flavours_are_told_apart_by_probe():
    gemma = fixture_models.GemmaNorm(64)
    assert kernel_swap.norm_flavour(gemma) == (1e-6, 1.0)
    wl = tiny()
    assert kernel_swap.norm_flavour(wl.model.norm) == (1e-6, 0.0)
    assert kernel_swap.norm_flavour(nn.LayerNorm(64)) is None


def test_swap_on_tiny_is_correct_and_compiles_without_graph_breaks():
    wl = tiny()
    want = outputs(wl.model, wl.args)
    found = kernel_swap.find_sites(wl.model)
    assert (len(found["norms"]), len(found["mlps"]), len(found["layers"])) == (9, 4, 4)
    assert all(n["offset"] == 0.0 for n in found["norms"]) and all(m["act"] == "silu" for m in found["mlps"])
    fusion.fuse(wl.model, fusion.find_siblings(wl.model, wl.args))     # the MLP then reads two views
    assert kernel_swap.swap(wl.model, found) == {"norms": 9, "mlps": 4, "layers": 4}
    assert_same(outputs(wl.model, wl.args), want)
    assert torch._dynamo.explain(wl.model)(*wl.args).graph_break_count == 0


def test_gemma_norm_in_a_custom_model_gets_the_offset():
    model, args = fixture_models.cross_attention()
    want = outputs(model, args)
    found = kernel_swap.find_sites(model)
    assert found["norms"] == [{"path": "norm", "eps": 1e-6, "offset": 1.0}]
    kernel_swap.swap(model, found)
    assert_same(outputs(model, args), want)


def test_aiter_flash_attention_dispatch_with_a_stand_in_module(monkeypatch):
    """ROCm is unverified on hardware here: a stand-in `aiter` with flash_attn_func's signature (BSHD, GQA)
    checks the layout round trip, the scale, the custom op and which calls are routed to it."""
    import sys
    import types
    import torch.nn.functional as F
    from playbook.rewrites import aiter_ops
    seen = []

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
        seen.append((tuple(q.shape), causal))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))               # BSHD -> BHSD for the reference
        out = F.scaled_dot_product_attention(q, k, v, scale=softmax_scale, is_causal=causal, enable_gqa=True)
        return out.transpose(1, 2), None
    monkeypatch.setitem(sys.modules, "aiter", types.SimpleNamespace(flash_attn_func=flash_attn_func))
    assert aiter_ops.flash_available()
    q, k, v = torch.randn(1, 8, 5, 16), torch.randn(1, 2, 9, 16), torch.randn(1, 2, 9, 16)
    with attention.sdpa_context("aiter"):
        out = F.scaled_dot_product_attention(q, k, v, scale=0.3, enable_gqa=True)
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 9, dtype=torch.bool), enable_gqa=True)
        torch.testing.assert_close(F.scaled_dot_product_attention(q, q, q, is_causal=True),
                                   F.scaled_dot_product_attention(q, q, q, is_causal=True, scale=0.25))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3, enable_gqa=True))
    torch.testing.assert_close(masked, F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    assert seen == [((1, 5, 8, 16), False), ((1, 5, 8, 16), True), ((1, 5, 8, 16), True)]   # the mask stayed on SDPA
    assert not aiter_ops.flash_applies(q, k, is_causal=True)         # causal with q_len != k_len: SDPA's alignment
    torch.library.opcheck(torch.ops.playbook.aiter_flash_attn, (q, k, v, 0.3, False))


def test_a_preferred_sdpa_backend_falls_back_where_it_cannot_run():
    """A recipe's forced backend must not fail a call it cannot take (flash with a compiled HF model's
    explicit mask): the strict form (the probe) raises, the recipe's form runs the call on the next one."""
    import torch.nn.functional as F
    from playbook.rewrites.attention import sdpa_context
    q = torch.randn(1, 2, 8, 16)
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    want = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    with pytest.raises(RuntimeError):
        with sdpa_context("efficient"):                  # no memory-efficient kernel on a CPU
            F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    with sdpa_context("efficient", fallback=True):
        got = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    compiled = torch.compile(lambda q, m: F.scaled_dot_product_attention(q, q, q, attn_mask=m), fullgraph=True)
    with sdpa_context("efficient", fallback=True):
        again = compiled(q, mask)
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(again, want, atol=1e-5)
    torch._dynamo.reset()


def test_finding_hf_models_does_not_import_transformers():
    """A model without Hugging Face parts is searched without importing transformers (2.5 s of every
    tiny CPU phase's build); one with them is found."""
    import subprocess
    import sys
    code = ("import sys\nfrom playbook.rewrites.attention import hf_models\n"
            "from playbook.workloads import build_workload\nimport torch\n"
            "wl = build_workload('tiny', 'tiny', '', torch.device('cpu'), torch.float32)\n"
            "assert hf_models(wl.model) == []\nprint('transformers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False"
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64)
    wrapped = nn.Sequential(nn.Identity(), LlamaForCausalLM(cfg))
    assert [path for path, _ in attention.hf_models(wrapped)] == ["1"]
