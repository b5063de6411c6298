"""Programmatic Dependent Launch for our kernels (playbook/rewrites/pdl.py, phase 6's "pdl" knob): which modules
it marks, that each of their calls asks its kernel for PDL, and (on an sm_90+ GPU) that PDL changes no answer."""
import pytest
import torch

from playbook.kernels._triton import pdl_here

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _routed_pi0():
    """pi0 tiny as phase 5 leaves it: the expert's few-token steps on the one-launch rotary, its attention on the
    few-query kernel, every few-row projection on the GEMV."""
    from playbook.rewrites import gemv, grouped_attention, rope_append_rows
    from playbook.workloads import build_workload, set_knob
    wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32,
                        options={"cameras": 1, "action_horizon": 3, "num_steps": 1})
    set_knob(wl, "kv_in_place", True)
    grouped_attention.route(wl.model, few_query=True)
    rope_append_rows.route(wl.model, rope_append_rows.find_sites(wl.model, wl.args)["paths"])
    routed = gemv.route(wl.model, gemv.select(gemv.find_sites(wl.model, wl.args, wl.kwargs), True))
    return wl, routed


def test_mark_gives_pdl_to_every_module_routed_to_our_kernels_and_each_call_then_asks_for_it(monkeypatch):
    import playbook.kernels.few_query_attention as kf
    import playbook.kernels.gemv as kg
    import playbook.kernels.rope_append_rows as kr
    from playbook.compare import compare, snapshot
    from playbook.rewrites import pdl
    wl, routed = _routed_pi0()
    asked = {"gemv": [], "rope_append_rows": [], "few_query": []}
    for mod, name, key in ((kg, "gemv", "gemv"), (kr, "rope_append_rows", "rope_append_rows"),
                           (kf, "few_query_attention", "few_query")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _r=real, _k=key, **k: asked[_k].append(k.get("pdl")) or _r(*a, **k))
    with torch.no_grad():
        want = snapshot(wl.model(*wl.args))
    assert all(calls and set(calls) == {False} for calls in asked.values()), asked
    layers = len(wl.model.denoise.expert.layers)
    counts = pdl.mark(wl.model)
    assert counts["gemv"] == routed["linears"] > 0
    assert counts["rope_append_rows"] == layers
    assert counts["few_query"] >= layers                       # the expert's attention modules, and the prefix's
    for calls in asked.values():
        calls.clear()
    with torch.no_grad():
        got = snapshot(wl.model(*wl.args))
    assert all(calls and set(calls) == {True} for calls in asked.values()), asked
    verdict = compare(got, want, torch.float32)                # PDL is a launch setting: ignored off the GPU
    assert verdict["correct"] and verdict["max_abs_diff"] == 0.0, verdict


def test_mark_on_a_model_nothing_routed_marks_nothing():
    from playbook.rewrites import pdl
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
    assert pdl.mark(model) == {"gemv": 0, "rope_append_rows": 0, "few_query": 0}
    assert not any(pdl.ATTR in m.__dict__ for m in model.modules())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not pdl_here("cuda"), reason="PDL needs an sm_90+ GPU")
@pytest.mark.parametrize("rope_in_attention", [False, True])
def test_a_denoise_layer_chain_with_pdl_in_a_cuda_graph_gives_what_plain_launches_give(rope_in_attention):
    """The rotary and cache write, the few-query attention (two launches) and the o projection, chained as pi0's
    denoise layer chains them (each reads the one before's output) six times over, captured in a CUDA graph
    with PDL: each waits for the kernel before it, so the answer is the plain launches' to the bit. With
    rope_in_attention the rotary and cache writes are in the attention's first launch
    (kernels.rope_few_query_attention): the plain launches of that chain give the same bits, and the
    unfused chain's answer and caches within bf16 rounding (the new slots are summed in another order)."""
    from playbook.kernels.few_query_attention import few_query_attention, rope_few_query_attention
    from playbook.kernels.gemv import gemv
    from playbook.kernels.rope_append_rows import rope_append_rows
    torch.manual_seed(5)
    bf, dev = torch.bfloat16, "cuda"
    tokens, heads, d, prefix = 11, 8, 256, 816
    w_qkv = torch.randn((heads + 2) * d, 1024, device=dev, dtype=bf) / 32
    w_o = torch.randn(1024, heads * d, device=dev, dtype=bf) / 45
    angle = torch.rand(tokens, d // 2, device=dev) * 6.0
    cos, sin = (torch.cat([f(angle)] * 2, -1).to(bf) for f in (torch.cos, torch.sin))
    allowed = torch.rand(1, 1, tokens, prefix + tokens, device=dev) > 0.1
    x0 = torch.randn(tokens, 1024, device=dev, dtype=bf)

    def chain(pdl, kc, vc, fused=False):
        h = x0
        for _ in range(6):
            qkv = gemv(h, w_qkv, pdl=pdl)
            q, k, v = (t.view(tokens, -1, d) for t in qkv.split([heads * d, d, d], -1))
            if fused:
                out = rope_few_query_attention(q, k, v, cos, sin, kc, vc, prefix, allowed, pdl=pdl)
            else:
                q = rope_append_rows(q, k, v, cos, sin, kc, vc, prefix, pdl=pdl)
                out = few_query_attention(q.unsqueeze(0).transpose(1, 2), kc, vc, allowed, pdl=pdl)
            h = gemv(out.reshape(tokens, -1), w_o, residual=h, pdl=pdl)
        return h
    caches = [torch.randn(1, 1, prefix + tokens, d, device=dev, dtype=bf) for _ in range(2)]
    plain = [c.clone() for c in caches]
    want = chain(False, *plain, fused=rope_in_attention)
    if rope_in_attention:
        unfused_caches = [c.clone() for c in caches]
        unfused = chain(False, *unfused_caches)
        torch.testing.assert_close(want.float(), unfused.float(), atol=0.1, rtol=0.05)
        for got, other in zip(plain, unfused_caches):
            torch.testing.assert_close(got.float(), other.float(), atol=0.1, rtol=0.05)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain(True, *caches, fused=rope_in_attention)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, want), (out.float() - want.float()).abs().max().item()
    assert torch.equal(caches[0], plain[0]) and torch.equal(caches[1], plain[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not pdl_here("cuda"), reason="PDL needs an sm_90+ GPU")
def test_a_llama_decode_chain_with_pdl_in_a_cuda_graph_gives_what_plain_launches_give(monkeypatch):
    """q/k/v with its norm, the one-launch decode attention (which reads the position and its first block of the
    cache before it waits) and o with its residual, six layers as llama 1b's step chains them, captured with PDL:
    the answer and the caches are the plain launches' to the bit. Position 130 of 1024 slots: three chunks a
    head, combined in the launch."""
    import playbook.kernels.decode_attention as da
    from playbook.kernels.gemv import gemv
    torch.manual_seed(7)
    bf, dev = torch.bfloat16, "cuda"
    heads, kv_heads, d, hidden, slots, layers = 32, 8, 64, 2048, 1024, 6
    w_qkv = [torch.randn((heads + 2 * kv_heads) * d, hidden, device=dev, dtype=bf) / 45 for _ in range(layers)]
    w_o = [torch.randn(hidden, heads * d, device=dev, dtype=bf) / 45 for _ in range(layers)]
    norm = torch.rand(hidden, device=dev, dtype=bf) + 0.5
    angle = torch.rand(d // 2, device=dev) * 6.0
    cos, sin = (torch.cat([f(angle)] * 2).to(bf) for f in (torch.cos, torch.sin))
    position = torch.tensor([130], device=dev)
    x0 = torch.randn(1, hidden, device=dev, dtype=bf)

    def chain(pdl, caches):
        h = x0
        for i in range(layers):
            qkv = gemv(h, w_qkv[i], norm_weight=norm, pdl=pdl)
            q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], -1)
            out = da.decode_attention_rope_append(q, k, v, cos, sin, *caches[i], position)
            h = gemv(out.reshape(1, -1), w_o[i], residual=h, pdl=pdl)
        return h
    caches = [[torch.randn(1, kv_heads, slots, d, device=dev, dtype=bf) for _ in range(2)] for _ in range(layers)]
    plain = [[c.clone() for c in pair] for pair in caches]
    monkeypatch.setattr(da, "launch_pdl", lambda device: False)
    want = chain(False, plain)
    monkeypatch.undo()
    assert da.launch_pdl(torch.device(dev))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain(True, caches)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, want), (out.float() - want.float()).abs().max().item()
    for got, other in zip(caches, plain):
        assert torch.equal(got[0], other[0]) and torch.equal(got[1], other[1])
