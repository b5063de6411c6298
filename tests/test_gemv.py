"""kernels/gemv.py against its reference: odd shapes, every dtype, the norm prologue, bias and residual."""
import pytest
import torch

from kernels import gemv as gv
from kernels import reference as ref

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead,n,k", [((1,), 1, 1), ((1, 1), 37, 123), ((3,), 130, 257), ((1, 2), 64, 1000)])
@pytest.mark.parametrize("parts", ["plain", "norm", "bias+residual", "norm+bias+residual", "gemma norm"])
def test_matches_the_reference_on_odd_shapes(lead, n, k, dtype, parts):
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
    close(gv.gemv(x, w, **kw), ref.gemv(x, w, **kw), dtype, k)


@pytest.mark.parametrize("block_n,block_k", [(1, 16), (4, 64), (16, 32)])
def test_any_block_choice_gives_the_same_answer(block_n, block_k):
    x, w = tensors((1, 200), torch.float32, 0), tensors((45, 200), torch.float32, 1)
    nw = tensors((200,), torch.float32, 2)
    close(gv.gemv(x, w, norm_weight=nw, block_n=block_n, block_k=block_k), ref.gemv(x, w, norm_weight=nw),
          torch.float32, 200)


def test_the_norm_folded_in_is_the_norm_then_the_projection():
    """rms_norm(x) @ W.T with the norm's own rounding left out: the unfused pair agrees within bf16's bar."""
    x, w = tensors((1, 96), torch.float32, 0, 3.0), tensors((40, 96), torch.float32, 1)
    nw = tensors((96,), torch.float32, 2)
    unfused = torch.nn.functional.linear(ref.rms_norm(x, nw, 1e-6), w)
    torch.testing.assert_close(gv.gemv(x, w, norm_weight=nw, eps=1e-6), unfused, rtol=1e-4, atol=1e-4)


def test_blocks_spread_a_small_projection_over_the_sms_and_keep_the_tile():
    assert gv.blocks(2048, 2048, "cpu") == (8, 512)          # 4 nominal SMs on a CPU: 256 programs anyway
    bn, bk = gv.blocks(512, 2048, "cpu", waves=64)            # 256 programs wanted for 512 rows: 2 rows each
    assert (bn, bk) == (2, 512)
    assert gv.blocks(7, 3, "cpu") == (1, 4)                  # tiny K: one block of 4
    for n, k in ((1, 1), (3072, 2048), (2048, 8192), (128256, 2048)):
        bn, bk = gv.blocks(n, k, "cpu")
        assert bn * bk <= gv.TILE and bk >= min(k, 512) and bn & (bn - 1) == 0


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
    torch.library.opcheck(torch.ops.playbook.gemv.default, (x, w, None, r, nw, 1e-6, 0.0, 0, 0, 4),
                          test_utils=("test_schema", "test_faketensor"))
    fn = torch.compile(lambda x: gv.gemv(x, w, residual=r, norm_weight=nw), fullgraph=True)
    close(fn(x), ref.gemv(x, w, residual=r, norm_weight=nw), torch.float32, 64)
