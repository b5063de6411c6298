"""playbook/kernels/rope_append_rows.py against its reference, and the few-token attention rewrite that uses it."""
import pytest
import torch

from playbook.kernels import reference as ref
from playbook.kernels.rope_append_rows import rope_append_rows

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}


def _operands(tokens, heads, kvh, d, slots, dtype, seed=0):
    """q, k, v as views of one fused projection output [1, tokens, (heads + 2 kvh) d] (strided, as phase 4
    leaves them), cos/sin of real angles, caches of random numbers (what was there before must stay)."""
    g = torch.Generator().manual_seed(seed)
    fused = torch.randn(1, tokens, (heads + 2 * kvh) * d, generator=g).to(DEVICE, dtype)
    q, k, v = fused.split([heads * d, kvh * d, kvh * d], dim=-1)
    q, k, v = q.view(tokens, heads, d), k.view(tokens, kvh, d), v.view(tokens, kvh, d)
    angle = torch.rand(tokens, d // 2, generator=g) * 6.0
    cos = torch.cat([angle.cos()] * 2, dim=-1).to(DEVICE, dtype)
    sin = torch.cat([angle.sin()] * 2, dim=-1).to(DEVICE, dtype)
    caches = [torch.randn(1, kvh, slots, d, generator=g).to(DEVICE, dtype) for _ in range(2)]
    return q, k, v, cos, sin, caches


@pytest.mark.parametrize("tokens,heads,kvh,d,slots,start", [(1, 1, 1, 2, 3, 0), (11, 8, 1, 256, 40, 21),
                                                            (5, 6, 3, 48, 17, 12), (3, 4, 2, 12, 9, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotates_and_writes_what_the_reference_does_and_nothing_else(tokens, heads, kvh, d, slots, start, dtype):
    q, k, v, cos, sin, (kc, vc) = _operands(tokens, heads, kvh, d, slots, dtype)
    want_kc, want_vc = kc.clone(), vc.clone()
    want = ref.rope_append_rows(q, k, v, cos, sin, want_kc, want_vc, start)
    got = rope_append_rows(q, k, v, cos, sin, kc, vc, start)
    assert got.shape == (tokens, heads, d) and got.is_contiguous() and torch.isfinite(got).all()
    tol = TOL[dtype]
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    torch.testing.assert_close(kc, want_kc, atol=tol, rtol=tol)
    assert torch.equal(vc, want_vc)                      # v is copied, not computed
    # the rotation is the model's: rotate-half against q * cos + rotate_half(q) * sin in fp32
    hf = q.float() * cos.float()[:, None] + ref.rotate_half(q.float()) * sin.float()[:, None]
    torch.testing.assert_close(got.float(), hf, atol=tol * 4, rtol=tol * 4)


def test_bad_operands_say_which():
    q, k, v, cos, sin, (kc, vc) = _operands(3, 2, 1, 8, 5, torch.float32)
    with pytest.raises(ValueError, match="do not fit"):
        rope_append_rows(q, k, v, cos, sin, kc, vc, 3)
    with pytest.raises(ValueError, match="cos and sin"):
        rope_append_rows(q, k, v, cos[:2], sin, kc, vc, 0)
    with pytest.raises(ValueError, match="caches"):
        rope_append_rows(q, k, v, cos, sin, kc[:, :, :, :4], vc, 0)


def test_compiles_as_one_op_that_writes_the_caches():
    q, k, v, cos, sin, (kc, vc) = _operands(4, 2, 1, 16, 12, torch.float32)
    want_kc, want_vc = kc.clone(), vc.clone()
    want = ref.rope_append_rows(q, k, v, cos, sin, want_kc, want_vc, 5)

    def step(q, k, v, cos, sin, kc, vc):
        out = rope_append_rows(q, k, v, cos, sin, kc, vc, 5)
        return out * 1.0, kc.sum()               # the cache read after the write sees it

    got, total = torch.compile(step, fullgraph=True, dynamic=False)(q, k, v, cos, sin, kc, vc)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(kc, want_kc)
    torch.testing.assert_close(total, want_kc.sum())


# --- the rewrite: playbook/rewrites/rope_append_rows.py --------------------------------------------------------

@pytest.mark.parametrize("attention,fuse", [("eager", False), ("grouped", True)])
def test_pi0s_denoise_attention_takes_the_one_launch_step_and_the_actions_agree(attention, fuse):
    """Found by data flow: the expert's attention modules (their denoise calls write 1 + horizon tokens in
    place), not the prefix's (their calls fill the cache); the actions are the unrouted model's, eager and
    compiled, and the compiled step runs the op once a layer."""
    from playbook.compare import compare, snapshot
    from playbook.rewrites import fusion, grouped_attention, rope_append_rows as rr
    from playbook.workloads import build_workload, set_knob
    wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32,
                        options={"cameras": 2, "action_horizon": 5, "num_steps": 2})
    set_knob(wl, "kv_in_place", True)
    if attention == "grouped":
        grouped_attention.route(wl.model)
    if fuse:
        fusion.fuse(wl.model, fusion.find_siblings(wl.model, wl.args, wl.kwargs))
    with torch.no_grad():
        want = snapshot(wl.model(*wl.args))
    found = rr.find_sites(wl.model, wl.args)
    layers = len(wl.model.denoise.expert.layers)
    assert found["paths"] == sorted(f"denoise.expert.layers.{i}.self_attn" for i in range(layers)), found
    assert not found["left"]                       # the prefix's modules never append in place: not candidates
    assert rr.route(wl.model, found["paths"]) == found["paths"]
    codes = _agrees_eager_and_compiled(wl, want)
    assert sum(c.count("torch.ops.playbook.rope_append_rows.default(") for c in codes) == layers
    assert rr.unroute(wl.model) == layers
    with torch.no_grad():
        assert compare(snapshot(wl.model(*wl.args)), want, torch.float32)["correct"]


def _agrees_eager_and_compiled(wl, want):
    """The routed model's actions are want's eager, and with its denoise step compiled; returns Inductor's code."""
    from torch._inductor.utils import run_and_get_code

    from playbook.compare import compare, snapshot
    with torch.no_grad():
        got = snapshot(wl.model(*wl.args))
    verdict = compare(got, want, torch.float32)
    assert verdict["correct"] and verdict["max_abs_diff"] < 1e-4, verdict
    wl.model.denoise.velocity = torch.compile(wl.model.denoise.velocity, dynamic=False)
    with torch.no_grad():
        out, codes = run_and_get_code(wl.model, *wl.args)
    assert compare(snapshot(out), want, torch.float32)["correct"]
    return codes


def test_without_in_place_room_the_modules_are_left_as_they_are():
    from playbook.rewrites import rope_append_rows as rr
    from playbook.workloads import build_workload
    wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32,
                        options={"cameras": 1, "action_horizon": 3, "num_steps": 1})
    wl.model.kv_in_place = False                   # the denoise K/V are concatenated: nowhere to write them
    assert rr.find_sites(wl.model, wl.args)["paths"] == []


def test_with_the_few_query_kernel_the_rotary_goes_into_its_launch_and_the_actions_agree():
    """route(attention=True) on a model whose expert attends through the few-query kernel: each denoise layer's
    rotary, cache writes and attention are one op (kernels.rope_few_query_attention), the actions are the
    unrouted model's eager and compiled, and a module whose attention is not the kernel's keeps the two ops."""
    from playbook.compare import snapshot
    from playbook.rewrites import fusion, grouped_attention, rope_append_rows as rr
    from playbook.workloads import build_workload, set_knob
    wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32,
                        options={"cameras": 1, "action_horizon": 4, "num_steps": 2})
    set_knob(wl, "kv_in_place", True)
    fusion.fuse(wl.model, fusion.find_siblings(wl.model, wl.args, wl.kwargs))      # q/k/v views of one output
    with torch.no_grad():
        want = snapshot(wl.model(*wl.args))
    grouped_attention.route(wl.model, few_query=True)
    paths = rr.find_sites(wl.model, wl.args)["paths"]
    layers = len(wl.model.denoise.expert.layers)
    assert rr.route(wl.model, paths, attention=True) == paths and len(paths) == layers
    codes = _agrees_eager_and_compiled(wl, want)
    assert sum(c.count("torch.ops.playbook.rope_few_query_attention.default(") for c in codes) == layers
    assert sum(c.count("torch.ops.playbook.rope_append_rows.default(") for c in codes) == 0
    assert rr.unroute(wl.model) == layers
    assert not any(rr.ATTENTION in m.__dict__ for m in wl.model.modules())


def test_rope_attention_asked_for_where_attention_is_not_the_few_query_kernel_keeps_the_one_launch_step():
    from playbook.compare import compare, snapshot
    from playbook.rewrites import rope_append_rows as rr
    from playbook.workloads import build_workload, set_knob
    wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32,
                        options={"cameras": 1, "action_horizon": 3, "num_steps": 1})
    set_knob(wl, "kv_in_place", True)
    with torch.no_grad():
        want = snapshot(wl.model(*wl.args))
    rr.route(wl.model, rr.find_sites(wl.model, wl.args)["paths"], attention=True)     # eager attention
    import playbook.kernels.few_query_attention as fq
    calls = []
    real = fq.rope_few_query_attention
    fq.rope_few_query_attention = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with torch.no_grad():
            got = snapshot(wl.model(*wl.args))
    finally:
        fq.rope_few_query_attention = real
    assert calls == [] and compare(got, want, torch.float32)["correct"]


def test_phase_5_apply_routes_the_rotary_into_the_few_query_launch_only_where_the_recipe_says_so():
    import types

    from playbook.phases import kernels as phase
    from playbook.rewrites import grouped_attention, rope_append_rows as rr
    from playbook.workloads import build_workload, set_knob
    for asked in (True, False):
        wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32,
                            options={"cameras": 1, "action_horizon": 3, "num_steps": 1})
        set_knob(wl, "kv_in_place", True)
        grouped_attention.route(wl.model)
        pipe = types.SimpleNamespace(workload=wl, info={}, inductor={}, notes=[], device=torch.device(DEVICE))
        knobs = {"rope_append_rows": True, "few_query": ["denoise.expert"], **({"rope_attention": True} if asked else {})}
        phase.apply(pipe, knobs)
        marked = [m for m in wl.model.modules() if m.__dict__.get(rr.ATTENTION)]
        assert len(marked) == (pipe.info["rope_append_rows"] if asked else 0) and pipe.info["rope_append_rows"] > 0
