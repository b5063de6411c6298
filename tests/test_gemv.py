"""playbook/kernels/gemv.py against its reference: odd shapes, every dtype, the norm prologue, bias and residual."""
import pytest
import torch

from playbook.kernels import gemv as gv
from playbook.kernels import reference as ref
from playbook.kernels._triton import pdl_here

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# One fp32 dot product of K terms, summed in another order than torch's: the fp32 bar grows with K.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def tensors(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(device=DEVICE, dtype=dtype)


def close(got, want, dtype, k):
    assert got.shape == want.shape and got.dtype == want.dtype and torch.isfinite(got).all()
    bar = TOL[dtype] * max(1.0, want.float().abs().max().item()) * (k ** 0.5 if dtype == torch.float32 else 1.0)
    assert (got.float() - want.float()).abs().max().item() <= bar


SHAPES = [((1,), 1, 1), ((1, 1), 37, 123), ((3,), 130, 257), ((1, 2), 64, 1000)]
PARTS = ["plain", "norm", "bias+residual", "norm+bias+residual", "gemma norm"]
CASES = ([(lead, n, k, dtype, parts) for dtype in (torch.float32, torch.bfloat16) for lead, n, k in SHAPES
          for parts in PARTS]
         + [(lead, n, k, torch.float16, parts) for lead, n, k in SHAPES[1:3] for parts in PARTS[3:]])


def operands(lead, n, k, dtype, parts):
    """x [*lead, k], W [n, k] and the keyword arguments `parts` names: norm (Llama's w or Gemma's 1 + w), bias,
    residual."""
    x = tensors((*lead, k), dtype, 0, 2.0)
    w = tensors((n, k), dtype, 1, k ** -0.5)
    kw = {}
    if "norm" in parts:
        kw.update(norm_weight=tensors((k,), dtype, 2, 0.5) + (0.0 if "gemma" in parts else 1.0), eps=1e-5,
                  offset=1.0 if "gemma" in parts else 0.0)
    if "bias" in parts:
        kw["bias"] = tensors((n,), dtype, 3)
    if "residual" in parts:
        kw["residual"] = tensors((*lead, n), dtype, 4)
    return x, w, kw


@pytest.mark.parametrize("lead,n,k,dtype,parts", CASES)
def test_matches_the_reference_on_odd_shapes(lead, n, k, dtype, parts):
    x, w, kw = operands(lead, n, k, dtype, parts)
    close(gv.gemv(x, w, **kw), ref.gemv(x, w, **kw), dtype, k)


@pytest.mark.parametrize("block_n,block_k", [(1, 16), (4, 64), (16, 32)])
def test_any_block_choice_gives_the_same_answer(block_n, block_k):
    x, w = tensors((1, 200), torch.float32, 0), tensors((45, 200), torch.float32, 1)
    nw = tensors((200,), torch.float32, 2)
    close(gv.gemv(x, w, norm_weight=nw, block_n=block_n, block_k=block_k), ref.gemv(x, w, norm_weight=nw),
          torch.float32, 200)


# Few rows (pi0's 11 suffix tokens, a short prompt): one program takes them all, K split where N is small.
ROW_CASES = [(2, 19, 40, 1, torch.float32), (11, 70, 300, 3, torch.float32), (16, 33, 129, 2, torch.bfloat16),
             (11, 48, 1000, 4, torch.bfloat16), (20, 17, 64, 2, torch.float32)]     # 20: two launches of 16 and 4


@pytest.mark.parametrize("rows,n,k,splits,dtype", ROW_CASES)
@pytest.mark.parametrize("parts", ["plain", "norm+bias+residual", "gemma norm"])
def test_few_rows_read_the_weight_once_and_match_the_reference(rows, n, k, splits, dtype, parts):
    x, w, kw = operands((1, rows), n, k, dtype, parts)
    want = ref.gemv(x, w, **kw)
    for _ in range(2):          # a second call finds the split-K counters back at zero
        close(gv.gemv(x, w, splits=splits, block_n=16, block_k=32, **kw), want, dtype, k)
    assert all(int(c.abs().sum()) == 0 for c in gv._counters.values())


@pytest.mark.parametrize("rows,n,k,splits,dtype", [(1, 37, 123, 1, torch.float32), (1, 64, 1000, 1, torch.bfloat16),
                                                   (11, 70, 300, 3, torch.float32), (11, 48, 1000, 4, torch.bfloat16),
                                                   (20, 17, 64, 2, torch.float32)])
@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_a_gated_input_is_the_activation_times_up_read_from_a_fused_gate_up(rows, n, k, splits, dtype, act):
    """down(act(gate) * up) with gate and up the two halves of one fused gate+up output (row stride 2K, no
    copy), bias and residual in the epilogue; one row and the few-row kernel, split K."""
    gu = tensors((1, rows, 2 * k), dtype, 0, 2.0)
    gate, up = gu.split(k, dim=-1)
    w, b, r = tensors((n, k), dtype, 1, k ** -0.5), tensors((n,), dtype, 3), tensors((1, rows, n), dtype, 4)
    want = ref.gemv(gate, w, bias=b, residual=r, up=up, act=act)
    unfused = torch.nn.functional.linear((ref.silu_and_mul if act == 'silu' else ref.gelu_tanh_and_mul)(gu), w, b) + r if dtype == torch.float32 else want
    close(want, unfused, dtype, k)
    got = gv.gemv(gate, w, bias=b, residual=r, up=up, act=act, splits=splits, block_n=16, block_k=32)
    close(got, want, dtype, k)


def test_a_gated_input_needs_both_halves_and_no_norm():
    x, w = tensors((1, 8), torch.float32, 0), tensors((4, 8), torch.float32, 1)
    with pytest.raises(ValueError, match="both up and act"):
        gv.gemv(x, w, up=x)
    with pytest.raises(ValueError, match="one of"):
        gv.gemv(x, w, up=x, act="relu")
    with pytest.raises(ValueError, match="no norm"):
        gv.gemv(x, w, up=x, act="silu", norm_weight=torch.ones(8, device=DEVICE))


@pytest.mark.parametrize("rows,half,k,splits,dtype", [(1, 37, 123, 1, torch.float32), (1, 20, 1000, 1, torch.bfloat16),
                                                      (3, 37, 45, 1, torch.float32), (11, 35, 300, 3, torch.float32),
                                                      (11, 24, 1000, 4, torch.bfloat16), (20, 17, 64, 2, torch.float32)])
@pytest.mark.parametrize("glu", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("parts", ["plain", "norm+bias", "gemma norm"])
def test_a_glu_output_is_the_activation_of_the_gate_half_times_the_up_half(rows, half, k, splits, dtype, glu, parts):
    """A fused gate+up projection (gate rows, then as many up rows) writing act(gate) * up: the unfused pair (the
    projection, then the activation's kernel) within the dtype's bar; one row and the few-row kernel, split K, two
    launches for 20 rows, odd halves and K."""
    x, w, kw = operands((1, rows), 2 * half, k, dtype, parts)
    kw.pop("residual", None)
    want = ref.gemv(x, w, glu=glu, **kw)
    assert want.shape == (1, rows, half)
    gate, up = ref.gemv(x, w, **kw).chunk(2, dim=-1)
    close(want, (ref.silu_and_mul if glu == "silu" else ref.gelu_tanh_and_mul)(torch.cat([gate, up], -1)), dtype, k)
    for _ in range(2):          # a second call finds the split-K counters back at zero
        close(gv.gemv(x, w, glu=glu, splits=splits, block_n=16 if rows > 1 else 0, block_k=32, **kw), want, dtype, k)
    assert all(int(c.abs().sum()) == 0 for c in gv._counters.values())


def test_a_glu_output_needs_an_even_weight_and_no_gated_input():
    x, w = tensors((1, 8), torch.float32, 0), tensors((5, 8), torch.float32, 1)
    with pytest.raises(ValueError, match="even N"):
        gv.gemv(x, w, glu="silu")
    with pytest.raises(ValueError, match="glu 'relu' is not one of"):
        gv.gemv(x, tensors((4, 8), torch.float32, 1), glu="relu")
    with pytest.raises(ValueError, match="no gated input"):
        gv.gemv(x, tensors((4, 8), torch.float32, 1), up=x, act="silu", glu="silu")


def test_few_row_blocks_split_k_only_where_the_columns_cannot_fill_the_sms():
    assert gv.rows_gpu_blocks(8192, 1024, sms=132) == (32, 256, 1)     # pi0's gate+up: 256 column blocks
    assert gv.rows_gpu_blocks(2560, 1024, sms=132) == (32, 256, 1)     # q/k/v: 80 blocks, over half the SMs
    assert gv.rows_gpu_blocks(1024, 4096, sms=132) == (32, 256, 8)     # down: 32 column blocks, 8 splits of 512
    assert gv.rows_gpu_blocks(1024, 256, sms=132) == (32, 256, 1)      # one chunk of K: nothing to split
    assert gv.rows_gpu_blocks(100000, 2048, sms=132) == (32, 256, 1)
    for n, k in ((1, 1), (2560, 1024), (1024, 2048), (7, 3000)):
        _, bk, splits = gv.rows_gpu_blocks(n, k, sms=132)
        assert splits >= 1 and (splits - 1) * -(-k // (splits * bk)) * bk < k     # no split without a chunk


def test_the_norm_folded_in_is_the_norm_then_the_projection():
    """rms_norm(x) @ W.T with the norm's own rounding left out: the unfused pair agrees within bf16's bar."""
    x, w = tensors((1, 96), torch.float32, 0, 3.0), tensors((40, 96), torch.float32, 1)
    nw = tensors((96,), torch.float32, 2)
    unfused = torch.nn.functional.linear(ref.rms_norm(x, nw, 1e-6), w)
    torch.testing.assert_close(gv.gemv(x, w, norm_weight=nw, eps=1e-6), unfused, rtol=1e-4, atol=1e-4)


def test_blocks_spread_a_small_projection_over_the_sms_and_keep_the_tile():
    assert gv.gpu_blocks(2048, 2048, sms=132) == (2, 1024)   # 1024 programs: two rows each
    assert gv.gpu_blocks(512, 2048, sms=128) == (2, 1024)    # 256 programs wanted: 2 rows each still give them
    assert gv.gpu_blocks(512, 2048, sms=132) == (1, 1024)    # 264 wanted: one row each
    assert gv.gpu_blocks(7, 3, sms=132) == (1, 4)            # tiny K: one block of 4
    for n, k in ((1, 1), (3072, 2048), (2048, 8192), (128256, 2048)):
        for bn, bk in (gv.gpu_blocks(n, k, sms=132), gv.blocks(n, k, "cpu")):
            assert bn * bk <= gv.TILE and bk >= min(k, 512) and bn & (bn - 1) == 0
    assert gv.blocks(2048, 2048, "cpu") == (8, 512)          # the interpreter: few, large programs


def test_bad_shapes_say_which():
    x, w = tensors((1, 8), torch.float32, 0), tensors((4, 8), torch.float32, 1)
    with pytest.raises(ValueError, match="weight \\[N, K\\]"):
        gv.gemv(x, w.t().contiguous())
    with pytest.raises(ValueError, match="norm_weight must be \\[8\\]"):
        gv.gemv(x, w, norm_weight=torch.ones(4, device=DEVICE))
    with pytest.raises(ValueError, match="residual must be"):
        gv.gemv(x, w, residual=torch.ones(1, 8, device=DEVICE))


def test_custom_op_checks_and_compiles_without_a_graph_break():
    x, w = tensors((1, 64), torch.float32, 0), tensors((32, 64), torch.float32, 1)
    nw, r = tensors((64,), torch.float32, 2), tensors((1, 32), torch.float32, 3)
    torch.library.opcheck(torch.ops.playbook.gemv.default, (x, w, None, r, nw, 1e-6, 0.0, 0, 0, 4, 0, False, None, "", ""),
                          test_utils=("test_schema", "test_faketensor"))
    fn = torch.compile(lambda x: gv.gemv(x, w, residual=r, norm_weight=nw), fullgraph=True)
    close(fn(x), ref.gemv(x, w, residual=r, norm_weight=nw), torch.float32, 64)


# --- the rewrite: playbook/rewrites/gemv.py --------------------------------------------------------------

def _hf(family, options, fuse=False):
    from playbook.rewrites import fusion
    from playbook.workloads import build_workload
    wl = build_workload("hf", "tiny", family, torch.device(DEVICE), torch.float32, options=options)
    if fuse:
        fusion.fuse(wl.model, fusion.find_siblings(wl.model, wl.args, wl.kwargs))
    return wl


@pytest.mark.parametrize("family,fuse", [("llama", False), ("qwen2", True), ("gemma", False)])
def test_decode_projections_routed_and_norms_folded_give_the_same_logits(family, fuse):
    """Every one-row projection goes through kernels.gemv, and each decoder norm that feeds only
    projections is folded into them (Gemma's 1 + w too); the logits match the untouched step's, eager and
    compiled (the fused case)."""
    import copy

    from playbook.rewrites import gemv
    wl = _hf(family, {"position": "6"}, fuse)
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    model = copy.deepcopy(wl.model)
    found = gemv.find_sites(model, wl.args, wl.kwargs)
    layers = model.model.config.num_hidden_layers            # the decode step wraps the HF model as .model
    folded = {f["norm"] for f in found["folds"]}
    assert all(f"model.model.layers.{i}.input_layernorm" in folded for i in range(layers)), found["left"]
    if family != "gemma":            # Gemma's MLP norm: pre_feedforward_layernorm; both feed projections only
        assert all(f"model.model.layers.{i}.post_attention_layernorm" in folded for i in range(layers))
    final = next(x for x in found["left"] if x["path"] == "model.model.norm")
    assert "read by" in final["why"]                   # the lm_head takes a slice of it: left, with the op
    assert "model.lm_head" in found["linears"] and len(found["linears"]) >= 4 * layers
    counts = gemv.route(model, found)
    assert counts["norms_folded"] == len(found["folds"]) and counts["linears"] == len(found["linears"])
    assert all(len(f["into"]) in (1, 2, 3) for f in found["folds"])
    with torch.no_grad():
        got = model(*wl.args, **wl.kwargs)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if fuse:                          # compiled once (a CPU compile of the step is ~10 s): the fused case
        with torch.no_grad():
            compiled = torch.compile(model)(*wl.args, **wl.kwargs)
        torch.testing.assert_close(compiled, want, atol=1e-4, rtol=1e-4)


def test_a_prompt_is_left_to_cublas_with_the_reason():
    from playbook.rewrites import gemv
    wl = _hf("qwen2", {"step": "prefill", "tokens": "20"})
    found = gemv.find_sites(wl.model, wl.args, wl.kwargs)
    assert not found["folds"] and any(p.endswith("lm_head") for p in found["linears"])   # logits_to_keep=1
    assert any("called with 20 rows (the GEMV takes 1 to 16)" in x["why"] for x in found["left"])
    assert gemv.MAX_ROWS == gv.MAX_ROWS


def test_a_short_prompt_goes_through_the_few_row_kernel_with_its_norms_folded():
    """Eight rows a projection (a short prompt; pi0's denoise steps have eleven): routed and folded, same logits."""
    from playbook.rewrites import gemv
    wl = _hf("qwen2", {"step": "prefill", "tokens": "8"})
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    found = gemv.find_sites(wl.model, wl.args, wl.kwargs)
    layers = wl.model.model.config.num_hidden_layers
    assert len(found["folds"]) == 2 * layers and len(found["linears"]) >= 7 * layers, found["left"]
    gemv.route(wl.model, found)
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)


def test_pi0s_denoise_projections_take_the_few_row_kernel_and_the_actions_agree():
    """pi0's action expert runs 11 suffix rows a denoise step (action_horizon 10): its projections are routed,
    each layer's two Gemma norms (1 + w) are folded into them, the final norm (sliced) is left, same actions."""
    from playbook.rewrites import gemv
    from playbook.workloads import build_workload
    wl = build_workload("pi0", "tiny", "", torch.device(DEVICE), torch.float32, options={"action_horizon": "10"})
    with torch.no_grad():
        want = wl.model(*wl.args)
    found = gemv.find_sites(wl.model, wl.args, wl.kwargs)
    layers = len(wl.model.denoise.expert.layers)
    assert {f"denoise.expert.layers.{i}.{n}" for i in range(layers) for n in ("input_layernorm", "post_attention_layernorm")} \
        == {f["norm"] for f in found["folds"]}
    assert all(f"denoise.expert.layers.{i}.mlp.down_proj" in found["linears"] for i in range(layers))
    assert "slice" in next(x["why"] for x in found["left"] if x["path"] == "denoise.expert.norm")
    gemv.route(wl.model, found)
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args), want, atol=1e-4, rtol=1e-4)


def test_a_norm_whose_output_is_also_added_is_not_folded():
    from playbook.rewrites import gemv

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.RMSNorm(16, eps=1e-6)
            self.up, self.down = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)

        def forward(self, x):
            h = self.norm(x)
            return h + self.down(torch.relu(self.up(h)))    # the normed tensor is the residual too

    block = Block().to(DEVICE)
    torch.nn.init.uniform_(block.norm.weight, 0.5, 1.5)
    x = torch.randn(1, 16, device=DEVICE)
    found = gemv.find_sites(block, (x,))
    assert found["folds"] == [] and found["linears"] == ["up", "down"]
    assert "read by add" in next(l["why"] for l in found["left"] if l["path"] == "norm")
    want = block(x)
    gemv.route(block, found)
    torch.testing.assert_close(block(x), want, atol=1e-5, rtol=1e-5)


def test_phase_5_offers_the_decode_gemv_to_a_decode_step_and_applies_it():
    """What phase 5 does on a GPU, called directly: the candidate for a decode step, none for a prompt, and
    apply() routing the step the way the rewrite test checks."""
    import types as pytypes

    from playbook.phases import kernels as phase
    from playbook.pipeline import Pipeline
    from playbook.rewrites import gemv
    wl = _hf("llama", {"position": "3"})
    layers = wl.model.model.config.num_hidden_layers
    ctx = pytypes.SimpleNamespace(info={}, pipe=pytypes.SimpleNamespace(compile=True), device=torch.device(DEVICE))
    step = pytypes.SimpleNamespace(workload=wl, dtype=torch.float32)
    notes = []

    def timed(lose):           # a stand-in for time_shapes (a GPU's graphs): the kernel loses at the shapes `lose` picks
        def table(found, device, dtype):
            return [{"rows": r, "N": n, "K": k, "norm": norm, "gemv_us": 5.0 if lose(n, k, norm) else 3.0,
                     "cublas_us": 4.0} for r, n, k, norm in sorted(set(gemv.shape_keys(found).values()))]
        return table
    down = lambda n, k, norm: k > n and not norm                 # the MLP's down projection: cuBLAS wins
    (knobs,) = phase._gemv_candidates(ctx, step, notes, timed(down))
    assert knobs["inductor_fusion"] and all(not down(n, k, norm) for _, n, k, norm in knobs["gemv"])
    assert knobs["gemv_residual"] and not knobs["gemv_gated"]    # down is left to cuBLAS: no gated fold
    assert "rope_append_rows" not in knobs                        # a StaticCache says nowhere to append rows
    other = pytypes.SimpleNamespace(info={}, pipe=ctx.pipe, device=ctx.device)
    (unfolded,) = phase._gemv_candidates(other, step, [], timed(lambda n, k, norm: norm))
    assert not unfolded["gemv_residual"]        # the norms stay (their projections on cuBLAS): the add would only move
    assert len(ctx.info["gemv_shapes"]) == len({tuple(s) for s in knobs["gemv"]}) + 1
    sites = ctx.info["gemv_sites"]
    assert sites["norms_folded"] == 2 * layers                   # the norms feed q/k/v and gate/up: still folded
    assert sites["of_linears"] - sites["linears"] == layers
    assert phase.label(knobs) in phase.CHOICES
    assert phase._gemv_candidates(ctx, step, notes, timed(lambda *a: True)) == []     # decided before building
    assert "cuBLAS was as fast or faster at every one" in notes[-1]

    def broken(found, device, dtype):
        raise RuntimeError("no kernel image for this GPU")
    assert phase._gemv_candidates(ctx, step, notes, broken) == []          # the phase goes on without it
    assert "timing its projection shapes failed: RuntimeError: no kernel image" in notes[-1]
    prompt = _hf("qwen2", {"step": "prefill", "tokens": "20"})
    prompt.model.model.lm_head = torch.nn.Identity()            # no few-row projection left
    assert phase._gemv_candidates(ctx, pytypes.SimpleNamespace(workload=prompt), notes, timed(down)) == []
    assert "not a decode step" in notes[-1]
    pipe = Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32)
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    phase.apply(pipe, {"gemv": knobs["gemv"]})
    assert pipe.info["gemv"]["norms_folded"] == 2 * layers
    assert pipe.info["gemv"]["linears"] == sites["linears"]
    assert all("forward" not in m.__dict__ for n, m in wl.model.named_modules() if n.endswith("down_proj"))
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_phase_5_folds_gated_mlps_and_residual_adds_into_the_gemv(family):
    """Every shape won: the candidate folds each gated MLP's activation into its down projection's prologue and,
    compiled, each residual add after a routed projection into its epilogue (Inductor's graph, found by data
    flow). The logits are the unrouted model's, and the compiled step has no add after a gemv left."""
    import types as pytypes

    from torch._inductor.utils import run_and_get_code

    from playbook.phases import kernels as phase
    from playbook.pipeline import Pipeline
    from playbook.rewrites import gemv
    wl = _hf(family, {"position": "3"})
    layers = wl.model.model.config.num_hidden_layers
    ctx = pytypes.SimpleNamespace(info={}, pipe=pytypes.SimpleNamespace(compile=True), device=torch.device(DEVICE))
    step = pytypes.SimpleNamespace(workload=wl, dtype=torch.float32)

    def table(found, device, dtype, gated_us=3.0):
        shapes = [{"rows": r, "N": n, "K": k, "norm": norm, "gemv_us": 3.0, "cublas_us": 4.0}
                  for r, n, k, norm in sorted(set(gemv.shape_keys(found).values()))]
        return shapes + [{"rows": key[0], "N": key[1], "K": key[2], "norm": False, "gated": act, "gemv_us": gated_us,
                          "cublas_us": 4.0} for key, act in sorted(gemv.gated_keys(found))]
    (lost,) = phase._gemv_candidates(ctx, step, [], lambda *a: table(*a, gated_us=5.0))
    assert not lost["gemv_gated"] and lost["gemv"]          # the prologue lost its own timing: the shapes still won
    (knobs,) = phase._gemv_candidates(ctx, step, [], table)
    assert knobs["gemv_gated"] and knobs["gemv_residual"] and ctx.info["gemv_sites"]["gated"] == layers
    act = "silu" if family == "llama" else "gelu_tanh"
    assert [r["gated"] for r in ctx.info["gemv_shapes"] if r.get("gated")] == [act]     # one down shape, timed once
    assert all(len(s) == 4 for s in knobs["gemv"])          # the gated row is no routed shape of its own
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    pipe = Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32)
    phase.apply(pipe, knobs)
    assert pipe.info["gemv"]["gated"] == layers
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)
    folder = pipe.inductor["post_grad_custom_post_pass"]
    compiled = torch.compile(wl.model, dynamic=False, options={"post_grad_custom_post_pass": folder})
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False):     # the pass runs: no cache hit
        out, codes = run_and_get_code(compiled, *wl.args, **wl.kwargs)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    assert folder.folded == 2 * layers                     # after o_proj and after down_proj, every layer
    code = "\n".join(codes)
    assert code.count("torch.ops.playbook.gemv.default(") >= 4 * layers
    import re
    kernels_run = set(re.findall(r"\b(?:cpp|triton)_\w+(?=\()", code))
    assert not [k for k in kernels_run if "gelu" in k or "silu" in k], kernels_run   # each is in a down projection


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_phase_5_has_the_fused_gate_up_gemv_write_the_activation_where_it_wins(family):
    """A fused gate+up projection whose shape won, and whose GLU row won too: the candidate asks for the GLU
    epilogue, apply() routes each MLP through it, the logits are the unrouted model's, and the compiled step runs
    one gemv for gate+up and no activation kernel. Where the GLU row loses, the knob is not set."""
    import re
    import types as pytypes

    from torch._inductor.utils import run_and_get_code

    from playbook.phases import kernels as phase
    from playbook.pipeline import Pipeline
    from playbook.rewrites import gemv
    wl = _hf(family, {"position": "3"}, fuse=True)
    layers = wl.model.model.config.num_hidden_layers
    ctx = pytypes.SimpleNamespace(info={}, pipe=pytypes.SimpleNamespace(compile=True), device=torch.device(DEVICE))
    step = pytypes.SimpleNamespace(workload=wl, dtype=torch.float32)

    def table(found, device, dtype, glu_us=3.0):
        shapes = [{"rows": r, "N": n, "K": k, "norm": norm, "gemv_us": 3.0, "cublas_us": 4.0}
                  for r, n, k, norm in sorted(set(gemv.shape_keys(found).values()))]
        return shapes + [{"rows": key[0], "N": key[1], "K": key[2], "norm": key[3], "glu": act, "gemv_us": glu_us,
                          "cublas_us": 4.0} for key, act in sorted(gemv.glu_keys(found))]
    (lost,) = phase._gemv_candidates(ctx, step, [], lambda *a: table(*a, glu_us=5.0))
    assert "gemv_glu" not in lost and lost["gemv"]
    (knobs,) = phase._gemv_candidates(ctx, step, [], table)
    act = "silu" if family == "llama" else "gelu_tanh"
    assert knobs["gemv_glu"] and ctx.info["gemv_sites"]["glu"] == layers
    glu_rows = [r for r in ctx.info["gemv_shapes"] if r.get("glu")]
    assert [r["glu"] for r in glu_rows] == [act] and glu_rows[0]["norm"]     # one gate+up shape, its norm folded
    assert all(len(s) == 4 for s in knobs["gemv"])            # the GLU row is no routed shape of its own
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    pipe = Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32)
    phase.apply(pipe, knobs)
    assert pipe.info["gemv"]["glu"] == layers
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)
    compiled = torch.compile(wl.model, dynamic=False)
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False):
        out, codes = run_and_get_code(compiled, *wl.args, **wl.kwargs)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    code = "\n".join(codes)
    kernels_run = set(re.findall(r"\b(?:cpp|triton)_\w+(?=\()", code))
    assert not [k for k in kernels_run if "gelu" in k or "silu" in k], kernels_run   # each is in a gate+up gemv
    from playbook.rewrites import pdl
    assert pdl.mark(wl.model)["gemv"] >= 2 * layers           # the gate+up groups launch with PDL when asked
    assert gemv.unroute(wl.model) and not any("_playbook_glu" in m.__dict__ for m in wl.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)


def test_a_norm_stays_unfolded_when_its_projections_are_left_to_cublas():
    from playbook.rewrites import gemv
    wl = _hf("qwen2", {"position": "4"}, fuse=True)
    found = gemv.find_sites(wl.model, wl.args, wl.kwargs)
    keys = gemv.shape_keys(found)
    qkv = next(k for p, k in keys.items() if p.endswith("layers.0.self_attn.q_proj"))
    assert qkv[3] and keys["model.model.layers.0.self_attn.k_proj"] == qkv      # one fused group, one key
    chosen = gemv.select(found, [list(k) for k in set(keys.values()) if k != qkv])
    assert not any(p.endswith(("q_proj", "k_proj", "v_proj")) for p in chosen["linears"])
    assert all(not f["norm"].endswith("input_layernorm") for f in chosen["folds"])
    assert any(x["why"] == "its projections are left to cuBLAS" for x in chosen["left"])
    assert gemv.select(found, True) is found


def test_tuning_can_give_the_projections_back_to_inductor():
    """Phase 6 on a recipe that kept the decode GEMV: coordinate descent with the projections given back to
    Inductor goes first, and its apply() undoes the routing (no module keeps a patched forward; same logits)."""
    import types as pytypes

    from playbook.phases import kernels as phase5
    from playbook.phases import tuning as phase6
    from playbook.pipeline import Pipeline
    wl = _hf("llama", {"position": "3"})
    pipe = Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32)
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    phase5.apply(pipe, {"gemv": True, "gemv_gated": True, "gemv_residual": True})
    routed = pipe.info["gemv"]["linears"]
    assert pipe.info["gemv"]["gated"] == wl.model.model.config.num_hidden_layers
    ctx = pytypes.SimpleNamespace(pipe=pytypes.SimpleNamespace(compile=True, info=pipe.info),
                                  device=torch.device("cuda"), budget_s=None, info={})
    first = phase6.candidates(ctx)[0]              # with PDL too where the GPU has it (Hopper and newer)
    assert first["projections"] == "inductor" and first["tune"][0] == "coordinate_descent_tuning"
    assert phase6.label(first) in phase6.CHOICES
    ctx.pipe.info = {}
    assert all("projections" not in c for c in phase6.candidates(ctx))    # no GEMV kept: nothing to give back
    phase6.apply(pipe, first)
    assert pipe.info["gemv"] == {"linears": 0, "given_back": routed}
    assert not any({"forward", "_playbook_norm", "_playbook_forward", "_playbook_act"} & set(m.__dict__)
                   for m in wl.model.modules())                 # the gated MLPs' forwards are given back too
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)


def test_on_a_gpu_the_gemv_candidate_replaces_inductor_fusion_alone(monkeypatch):
    """Where the shape table found projections the kernel wins, phase 5 builds the GEMV with Inductor's fusion
    settings and not the fusion settings alone (a build that only told the two apart); otherwise the latter."""
    import types as pytypes

    from playbook.phases import kernels as phase
    wl = _hf("llama", {"position": "3"})
    ctx = pytypes.SimpleNamespace(info={}, pipe=pytypes.SimpleNamespace(compile=True), device=torch.device("cuda"),
                                  vendor="cuda", steps=[], fresh_pipeline=lambda: pytypes.SimpleNamespace(workload=wl))
    gemv = {"gemv": [[1, 256, 256, False]], "inductor_fusion": True}
    monkeypatch.setattr(phase, "_gemv_candidates", lambda ctx, pipe, notes: [gemv])
    out = phase.candidates(ctx)
    assert out[0] == gemv and {"inductor_fusion": True} not in out
    assert any("fusion settings alone not built" in n for n in ctx.info["kernels_notes"])
    monkeypatch.setattr(phase, "_gemv_candidates", lambda ctx, pipe, notes: [])
    assert phase.candidates(ctx)[0] == {"inductor_fusion": True}


def test_pdl_is_ignored_where_it_cannot_run_and_the_answer_is_the_same():
    """pdl=True on a CPU (Triton's interpreter) or a GPU without it launches as before: same outputs."""
    torch.manual_seed(3)
    x, w = torch.randn(11, 300, device=DEVICE), torch.randn(200, 300, device=DEVICE)
    assert not pdl_here("cpu")
    assert torch.equal(gv.gemv(x, w, pdl=True), gv.gemv(x, w))
    assert torch.equal(gv.gemv(x[:1], w, pdl=True), gv.gemv(x[:1], w))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not pdl_here("cuda"), reason="PDL needs an sm_90+ GPU")
def test_pdl_chains_in_a_cuda_graph_give_what_plain_launches_give():
    """Projections chained as a layer chains them (each reads the one before's output), captured in a CUDA
    graph with Programmatic Dependent Launch: each waits for the kernel before it, so the answer is the
    plain launches' to the bit (one row and 11 rows, split K and not, a residual, a GLU epilogue)."""
    torch.manual_seed(4)
    for rows in (1, 11):
        x = torch.randn(rows, 2048, device="cuda", dtype=torch.bfloat16)
        w1 = torch.randn(4096, 2048, device="cuda", dtype=torch.bfloat16) / 45
        w2 = torch.randn(2048, 4096, device="cuda", dtype=torch.bfloat16) / 64
        nw = torch.randn(2048, device="cuda", dtype=torch.bfloat16)
        w_gu = torch.randn(8192, 2048, device="cuda", dtype=torch.bfloat16) / 45

        def chain(pdl):
            h = x
            for _ in range(6):
                h = gv.gemv(gv.gemv(h, w1, norm_weight=nw, pdl=pdl), w2, residual=h, pdl=pdl)
                h = gv.gemv(gv.gemv(h, w_gu, norm_weight=nw, glu="gelu_tanh", pdl=pdl), w2, residual=h, pdl=pdl)
            return h
        want = chain(False)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = chain(True)
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, want), (rows, (out.float() - want.float()).abs().max().item())


def test_a_recipe_can_ask_for_the_gemv_with_pdl_and_give_it_back(monkeypatch):
    """kernels {"gemv": ..., "pdl": true} routes the projections with PDL (a recipe's knob; phase 5 does not offer
    it yet): each routed call asks kernels.gemv for it, the logits are the same (PDL is ignored off an sm_90+
    GPU), and giving the projections back to Inductor leaves nothing of it on the modules."""
    import playbook.kernels.gemv as kg
    from playbook.phases import kernels as phase5
    from playbook.pipeline import Pipeline
    from playbook.rewrites import gemv as rg
    wl = _hf("llama", {"position": "3"})
    pipe = Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32)
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    asked = []
    real = kg.gemv
    monkeypatch.setattr(kg, "gemv", lambda *a, **k: asked.append(k.get("pdl")) or real(*a, **k))
    phase5.apply(pipe, {"gemv": True, "pdl": True})
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)
    assert len(asked) == pipe.info["gemv"]["linears"] > 0 and set(asked) == {True}
    assert rg.unroute(wl.model) == pipe.info["gemv"]["linears"]
    assert not any("_playbook_pdl" in m.__dict__ for m in wl.model.modules())


def test_the_report_lists_the_gated_down_projection_beside_the_shapes():
    from playbook.report.tables import phase_details
    p = {"status": "kept", "knobs": {"gemv": [[11, 1024, 4096, False]], "gemv_gated": True},
         "gemv_shapes": [{"rows": 11, "N": 1024, "K": 4096, "norm": False, "gemv_us": 6.9, "cublas_us": 8.1},
                         {"rows": 11, "N": 1024, "K": 4096, "norm": False, "gated": "gelu_tanh", "gemv_us": 7.2,
                          "cublas_us": 9.5}]}
    text = "\n".join(phase_details(p))
    assert "| 11, 1024 x 4096 | no | 6.9 | 8.1 | yes |" in text
    assert "| 11, 1024 x 4096 | gelu_tanh(gate) * up | 7.2 | 9.5 | yes |" in text
    p["knobs"]["gemv_gated"] = False
    assert "| gelu_tanh(gate) * up | 7.2 | 9.5 | no |" in "\n".join(phase_details(p))
    assert "block choices" not in text
    p["gemv_shapes"].append({"rows": 1, "N": 16384, "K": 2048, "norm": True, "gemv_us": 17.1, "cublas_us": 19.3,
                             "blocks": [4, 1024, 8], "blocks_us": {"2x1024, 4 warps": 21.2, "4x1024, 8 warps": 17.0}})
    text = "\n".join(phase_details(p))
    assert "| 1, 16384 x 2048 | yes | 17.1 (4 x 1024, 8 warps) | 19.3 | no |" in text
    assert "at the fastest of 2 block choices a shape" in text
    p["gemv_shapes"][-1]["gemv_pdl_us"] = 16.2
    assert "| 17.1 (4 x 1024, 8 warps); with PDL 16.2 | 19.3 | no |" in "\n".join(phase_details(p))
    tuning = {"status": "kept", "knobs": {}, "gemv_more": {"shapes": [[1, 16384, 2048, True]], "why": "faster"}}
    assert ("- more shapes to the GEMV offered with PDL: 1, 16384 x 2048 with its norm (faster)"
            in "\n".join(phase_details(tuning)))


def test_a_module_the_gated_probe_cannot_call_is_not_folded():
    """A module with gate_proj / up_proj / down_proj whose forward takes something else (an MoE block, a
    router) is left unfolded, and the projections are still routed."""
    from playbook.rewrites import gemv

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj = torch.nn.Linear(16, 32), torch.nn.Linear(16, 32)
            self.down_proj = torch.nn.Linear(32, 16)

        def forward(self, x, route):
            return self.down_proj(torch.relu(self.gate_proj(x)) * self.up_proj(x)) * route

    class Top(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Odd()

        def forward(self, x):
            return self.block(x, 2.0)

    top = Top().to(DEVICE)
    x = torch.randn(1, 16, device=DEVICE)
    found = gemv.find_sites(top, (x,))
    assert found["gated"] == [] and "block.down_proj" in found["linears"]


def test_one_row_block_choices_start_at_the_default_and_give_every_sm_a_program():
    """What phase 5 times a one-row shape at: the kernel's default first, then each listed choice that still
    spreads over the SMs (a 512-row K/V projection takes no 4- or 8-row programs on 132 SMs), K chunks cut to K;
    a GLU's choices count output columns, each program reading as many rows of both halves."""
    from playbook.rewrites import gemv
    sms = 132
    plain = gemv.one_row_choices(2048, 8192, sms)
    assert plain[0] == (*gv.gpu_blocks(2048, 8192, sms), 4) and len(set(plain)) == len(plain) > 2
    assert all(-(-2048 // bn) >= sms for bn, _, _ in plain[1:])
    assert {bn for bn, _, _ in gemv.one_row_choices(512, 2048, sms)} == {1, 2}
    assert all(bk <= 64 for _, bk, _ in gemv.one_row_choices(4096, 48, sms))         # K of 48: chunks of 64
    glu = gemv.one_row_choices(16384, 2048, sms, glu="silu")
    assert glu[0] == (gv.gpu_blocks(16384, 2048, sms)[0] // 2, 1024, 4) and len(glu) > 2
    assert gemv.block_choices(1, 2048, 2048, "cpu") == [] and gemv.block_choices(11, 2048, 2048, DEVICE) == []
    assert gemv.block_choices(1, 1024, 32, DEVICE) == []             # 64 KB of weight: launch-bound, not tuned


@pytest.mark.parametrize("variant", ["", "norm", "glu", "gated"])
def test_a_one_row_shape_is_timed_at_each_block_choice_and_the_fastest_again_beside_cublas(monkeypatch, variant):
    """_time_shape on a one-row shape: every block choice timed side by side, the fastest kept (the row's blocks
    and blocks_us), then only it timed against the other side in a graph of its own (the best of several noisy
    timings is not what is compared). Stand-ins for the GPU's graphs; the calls run for real."""
    from playbook import bench
    from playbook.rewrites import gemv
    choices = [(2, 64, 4), (4, 32, 4), (1, 64, 2)]
    monkeypatch.setattr(gemv, "block_choices",
                        lambda rows, n, k, device, glu="", itemsize=2: choices if rows == 1 else [])
    monkeypatch.setattr(gemv, "ROTATE_BYTES", 1)
    monkeypatch.setattr(gemv, "CALLS", 2)
    import playbook.kernels._triton as kt
    monkeypatch.setattr(kt, "pdl_here", lambda device: False)   # PDL's side has its test below (on sm_90 it runs)
    seen, calls = [], []
    real = gv.gemv

    def spy(*a, **kw):
        calls.append({k: kw[k] for k in ("block_n", "block_k", "num_warps") if k in kw})
        return real(*a, **kw)
    monkeypatch.setattr(gv, "gemv", spy)

    def graphs(sides, n_calls, device, iters=15):
        seen.append(sorted(sides))
        outs = {name: side() for name, side in sides.items()}     # each side runs: its calls are real
        assert all(len(o) == n_calls and torch.isfinite(o[0]).all() for o in outs.values())
        if "cublas" in sides:
            return {"gemv": 7.0, "cublas": 9.0}
        return {name: 1.0 if name == "4x32, 4 warps" else 2.0 for name in sides}
    monkeypatch.setattr(bench, "graphs_side_by_side", graphs)
    act, glu = ("silu", "") if variant == "gated" else ("", "silu") if variant == "glu" else ("", "")
    row = gemv._time_shape(1, 48, 40, variant in ("norm", "glu"), DEVICE, torch.float32, 3, act=act, glu=glu)
    assert row["blocks"] == [4, 32, 4] and set(row["blocks_us"]) == {"2x64, 4 warps", "4x32, 4 warps", "1x64, 2 warps"}
    assert seen == [sorted(row["blocks_us"]), ["cublas", "gemv"]]
    assert {"block_n": 4, "block_k": 32, "num_warps": 4} in calls[-2 * gemv.CALLS:]     # the second graph: the fastest
    assert (row["gemv_us"], row["cublas_us"]) == (7.0, 9.0)           # the second graph's times
    few = gemv._time_shape(3, 48, 40, False, DEVICE, torch.float32, 3, act=act, glu=glu)
    assert "blocks" not in few and seen[-1] == ["cublas", "gemv"]       # a few-row shape: one graph, its own blocks

    def no_build(sides, n_calls, device, iters=15):
        if "cublas" not in sides:
            raise RuntimeError("out of resource: shared memory")
        return graphs(sides, n_calls, device, iters)
    monkeypatch.setattr(bench, "graphs_side_by_side", no_build)
    row = gemv._time_shape(1, 48, 40, False, DEVICE, torch.float32, 3, act=act, glu=glu)
    assert "blocks" not in row and "out of resource" in row["blocks_error"] and row["gemv_us"] == 7.0   # defaults


def test_phase_5_records_the_tuned_blocks_and_routes_each_one_row_call_with_them(monkeypatch):
    """The table's blocks become the gemv_blocks knob (only for what the candidate routes: a GLU row's where the
    GLU is taken), and apply() hands each routed projection, GLU and gated call its shape's blocks; a shape the
    table did not tune takes the kernel's defaults. The logits are the unrouted model's at those blocks."""
    import types as pytypes

    from playbook.phases import kernels as phase
    from playbook.pipeline import Pipeline
    from playbook.rewrites import gemv
    wl = _hf("llama", {"position": "3"}, fuse=True)
    ctx = pytypes.SimpleNamespace(info={}, pipe=pytypes.SimpleNamespace(compile=True), device=torch.device(DEVICE))
    step = pytypes.SimpleNamespace(workload=wl, dtype=torch.float32)
    odd = {}

    def table(found, device, dtype):
        rows = []
        for i, (r, n, k, norm) in enumerate(sorted(set(gemv.shape_keys(found).values()))):
            odd[(r, n, k, norm)] = [(8, 16, 32)[i % 3], 32 * (1 + i % 2), 4]     # few programs: the interpreter
            rows.append({"rows": r, "N": n, "K": k, "norm": norm, "gemv_us": 3.0, "cublas_us": 4.0,
                         **({"blocks": odd[(r, n, k, norm)], "blocks_us": {"x": 3.0}} if i % 2 == 0 else {})})
        return rows + [{"rows": key[0], "N": key[1], "K": key[2], "norm": key[3], "glu": act, "gemv_us": 3.0,
                        "cublas_us": 4.0, "blocks": [16, 32, 2], "blocks_us": {"x": 3.0}}
                       for key, act in sorted(gemv.glu_keys(found))]
    (knobs,) = phase._gemv_candidates(ctx, step, [], table)
    tuned = {(tuple(b["shape"]), b["variant"]): b["blocks"] for b in knobs["gemv_blocks"]}
    assert knobs["gemv_glu"] and [v for (_, v) in tuned].count("glu") == 1
    assert {s for (s, v) in tuned if not v} == {s for i, s in enumerate(sorted(odd)) if i % 2 == 0}
    calls = []
    real = gv.gemv

    def spy(x, w, *a, **kw):
        blocks = tuple(kw.get(k, 0) for k in ("block_n", "block_k", "num_warps"))
        calls.append((tuple(w.shape), kw.get("glu", ""), blocks))
        return real(x, w, *a, **kw)
    monkeypatch.setattr(gv, "gemv", spy)
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    phase.apply(Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32), knobs)
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)
    by_weight = {(n, k): b for (_, n, k, _), b in odd.items()}
    glu_calls = [c for c in calls if c[1]]
    assert glu_calls and all(c[2] == (16, 32, 2) for c in glu_calls)
    for shape, _, blocks in (c for c in calls if not c[1]):
        key = next(s for s in odd if s[1:3] == shape)
        assert blocks == (tuple(by_weight[shape]) if (key, "") in tuned else (0, 0, 0)), (shape, blocks)
    from playbook.rewrites.gemv import unroute
    unroute(wl.model)
    assert not [m for m in wl.model.modules() if {"_playbook_blocks", "_playbook_glu_blocks"} & set(m.__dict__)]


def test_a_plain_or_norm_shape_is_timed_with_pdl_too_where_the_gpu_has_it(monkeypatch):
    """Where PDL can run, _time_shape times a plain or norm row's gemv with it beside the plain launch and cuBLAS
    (gemv_pdl_us); a GLU or gated row, and any row where PDL cannot run, has no such timing. Stand-ins for the
    GPU's graphs; the calls run for real (PDL asked for, then dropped: the interpreter has none)."""
    import playbook.kernels._triton as kt
    from playbook import bench
    from playbook.rewrites import gemv
    monkeypatch.setattr(gemv, "block_choices", lambda *a, **k: [])
    monkeypatch.setattr(gemv, "ROTATE_BYTES", 1)
    monkeypatch.setattr(gemv, "CALLS", 2)
    asked, seen = [], []
    real = gv.gemv

    def spy(*a, pdl=False, **kw):
        asked.append(pdl)
        return real(*a, **kw)
    monkeypatch.setattr(gv, "gemv", spy)

    def graphs(sides, n_calls, device, iters=15):
        seen.append(sorted(sides))
        for side in sides.values():
            side()
        return {"gemv": 9.5, "cublas": 9.0, "gemv_pdl": 8.0}
    monkeypatch.setattr(bench, "graphs_side_by_side", graphs)
    monkeypatch.setattr(kt, "pdl_here", lambda device: True)
    for norm in (False, True):
        row = gemv._time_shape(1, 48, 40, norm, DEVICE, torch.float32, 3)
        assert seen[-1] == ["cublas", "gemv", "gemv_pdl"] and row["gemv_pdl_us"] == 8.0 and row["gemv_us"] == 9.5
        assert asked[-4:] == [False, False, True, True]            # CALLS plain calls, then CALLS with PDL
    for act, glu in (("silu", ""), ("", "silu")):
        row = gemv._time_shape(1, 48, 40, bool(glu), DEVICE, torch.float32, 3, act=act, glu=glu)
        assert "gemv_pdl_us" not in row and seen[-1] == ["cublas", "gemv"]
    monkeypatch.setattr(kt, "pdl_here", lambda device: False)
    assert "gemv_pdl_us" not in gemv._time_shape(1, 48, 40, False, DEVICE, torch.float32, 3)


def test_pdl_winners_are_the_shapes_only_pdl_made_faster_than_cublas():
    from playbook.rewrites import gemv
    table = [{"rows": 1, "N": 64, "K": 32, "norm": False, "gemv_us": 3.0, "cublas_us": 4.0, "gemv_pdl_us": 2.5},
             {"rows": 1, "N": 128, "K": 32, "norm": True, "gemv_us": 4.2, "cublas_us": 4.0, "gemv_pdl_us": 3.7},
             {"rows": 1, "N": 96, "K": 32, "norm": True, "gemv_us": 4.2, "cublas_us": 4.0, "gemv_pdl_us": 3.95},
             {"rows": 1, "N": 32, "K": 64, "norm": False, "gemv_us": 4.2, "cublas_us": 4.0},
             {"rows": 1, "N": 128, "K": 32, "norm": True, "glu": "silu", "gemv_us": 4.2, "cublas_us": 4.0,
              "gemv_pdl_us": 1.0}]
    assert gemv.winners(table) == [[1, 64, 32, False]]
    assert gemv.pdl_winners(table) == [[1, 128, 32, True]]       # within 2% (96) or untimed (32) or a GLU row: no
    assert gemv.pdl_winners(table, routed=[[1, 128, 32, True]]) == []


def _tuned_run(tmp_path, run_params, table, kernels_knobs):
    """A run whose phase 5 kept the decode GEMV with kernels_knobs, its table `table`."""
    from playbook.runs import open_run
    from test_state import phase
    run = open_run(str(tmp_path / "t"), **run_params)
    result = {**phase(5, "kernels"), "knobs": kernels_knobs, "gemv_shapes": table, "compile_s": 10.0}
    run.write_phase(result)
    run.keep(result)
    return run


def test_tuning_offers_a_gemv_recipe_the_shapes_only_pdl_won_in_one_more_build(tmp_path, run_params, monkeypatch):
    """Phase 6 on a recipe whose phase 5 left a shape to cuBLAS that its table found faster with PDL: PDL + combo
    kernels first, then the same with that shape routed too (its blocks from the table), then the tuned builds."""
    import types as pytypes

    from playbook.phases import tuning
    monkeypatch.setattr(tuning, "pdl_here", lambda device: None)
    monkeypatch.setattr(tuning, "combo_here", lambda: None)
    table = [{"rows": 1, "N": 64, "K": 32, "norm": False, "gemv_us": 3.0, "cublas_us": 4.0, "gemv_pdl_us": 2.5},
             {"rows": 1, "N": 128, "K": 32, "norm": True, "gemv_us": 4.2, "cublas_us": 4.0, "gemv_pdl_us": 3.7,
              "blocks": [4, 32, 8], "blocks_us": {"4x32, 8 warps": 4.1}}]
    run = _tuned_run(tmp_path, run_params, table, {"gemv": [[1, 64, 32, False]], "gemv_residual": False})
    ctx = pytypes.SimpleNamespace(run=run, steps=run.steps_before("tuning"), device=torch.device("cuda"),
                                  pipe=pytypes.SimpleNamespace(compile=True, info={"gemv": {"linears": 8}}),
                                  budget_s=None, info={})
    out = tuning.candidates(ctx)
    assert out[0] == {"tune": ["pdl", "combo_kernels"]}
    assert out[1] == {"tune": ["pdl", "combo_kernels"], "gemv_more": [[1, 128, 32, True]],
                      "gemv_more_blocks": [{"shape": [1, 128, 32, True], "variant": "", "blocks": [4, 32, 8]}]}
    assert tuning.label(out[1]) == "PDL + combo kernels, more shapes to the GEMV" and tuning.label(out[1]) in tuning.CHOICES
    assert out[2]["projections"] == "inductor" and "combo_kernels" in out[2]["tune"]   # the first tuned build
    assert ctx.info["gemv_more"]["shapes"] == [[1, 128, 32, True]]
    assert tuning.build_estimate(out[1], run) == ("one build", 10.0)
    table[1]["gemv_pdl_us"] = 4.1                                    # PDL did not make it win: no such candidate
    run = _tuned_run(tmp_path / "b", run_params, table, {"gemv": [[1, 64, 32, False]]})
    ctx.run, ctx.steps = run, run.steps_before("tuning")
    assert not any(k.get("gemv_more") for k in tuning.candidates(ctx))


def test_tuning_routes_the_shapes_only_pdl_won_on_top_of_phase_5s_gemv():
    """apply() of the "more shapes" candidate: phase 5's routing done again with gate+up (and its norm) added and
    its blocks, the residual fold turned on where phase 5 had none; the logits are the untouched model's."""
    from playbook.phases import kernels as phase5
    from playbook.phases import tuning as phase6
    from playbook.pipeline import Pipeline
    from playbook.rewrites import gemv
    wl = _hf("llama", {"position": "3"}, fuse=True)
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs)
    found = gemv.find_sites(wl.model, wl.args, wl.kwargs)
    keys = gemv.shape_keys(found)
    gate_up = next(keys[p] for p in found["linears"] if p.endswith("mlp.gate_proj"))      # fused with up_proj
    shapes = sorted(set(keys.values()) - {gate_up})
    pipe = Pipeline(workload=wl, device=torch.device(DEVICE), dtype=torch.float32)
    phase5.apply(pipe, {"gemv": [list(s) for s in shapes], "gemv_gated": False, "gemv_residual": False})
    before = dict(pipe.info["gemv"])
    assert "post_grad_custom_post_pass" not in pipe.inductor
    layers = wl.model.model.config.num_hidden_layers
    phase6.apply(pipe, {"tune": ["pdl"], "gemv_more": [list(gate_up)],
                        "gemv_more_blocks": [{"shape": list(gate_up), "variant": "", "blocks": [8, 32, 4]}]})
    assert pipe.info["gemv"]["linears"] == before["linears"] + 2 * layers              # gate_proj and up_proj
    assert pipe.info["gemv"]["norms_folded"] == before["norms_folded"] + layers      # gate+up's norm folds now
    assert "post_grad_custom_post_pass" in pipe.inductor                             # and its residual add
    routed = [m for m in wl.model.modules() if m.__dict__.get("_playbook_blocks") == (8, 32, 4)]
    assert len(routed) == layers
    with torch.no_grad():
        torch.testing.assert_close(wl.model(*wl.args, **wl.kwargs), want, atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="no decode GEMV routed"):
        gemv.unroute(wl.model)
        phase5.reroute(pipe, [list(gate_up)])
