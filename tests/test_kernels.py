"""playbook/kernels/: every Triton kernel against its pure-torch reference, on odd shapes and every dtype.

On a machine without a GPU these run in Triton's interpreter (conftest sets TRITON_INTERPRET=1);
on the GPU machine the same tests run the compiled kernels. Outputs are poisoned with NaN before each
launch, so an element the kernel forgets to write fails the test.
"""
import pytest
import torch

from playbook import kernels
from playbook.kernels import activations as act_mod
from playbook.kernels import reference as ref
from playbook.kernels import norms as norm_mod

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (leading..., last): odd sizes, one row, many short rows, a row longer than one block (the looped path)
NORM_SHAPES = [(5, 123, 123), (1, 2048), (7, 1), (64, 96), (2, norm_mod.MAX_BLOCK + 77)]
ACT_SHAPES = [(5, 123, 2 * 123), (1, 2 * 2048), (3, 2), (9, 2 * 1000)]


def fresh(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2).to(dtype=dtype, device=DEVICE)


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def assert_close(got, want, dtype):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert not torch.isnan(got).any(), "NaN in the kernel's output (an element left unwritten?)"
    torch.testing.assert_close(got.float(), want.float(), **ref.TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
def test_rms_norm(shape, dtype, offset):
    x, w = fresh(shape, dtype, 1), fresh(shape[-1:], dtype, 2)
    want = ref.rms_norm(x, w, 1e-6, offset)
    out = poisoned(shape, dtype)
    y, _ = norm_mod._launch(x, None, w, 1e-6, offset, out=out)
    assert y is out
    assert_close(out, want, dtype)
    assert_close(kernels.rms_norm(x, w, 1e-6, offset), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
def test_fused_add_rms_norm(shape, dtype, offset):
    x, r, w = fresh(shape, dtype, 3), fresh(shape, dtype, 4), fresh(shape[-1:], dtype, 5)
    want_y, want_r = ref.fused_add_rms_norm(x, r, w, 1e-5, offset)
    out, res_out = poisoned(shape, dtype), poisoned(shape, dtype)
    norm_mod._launch(x, r, w, 1e-5, offset, out=out, residual_out=res_out)
    assert_close(out, want_y, dtype)
    assert_close(res_out, want_r, dtype)
    y, new_r = kernels.fused_add_rms_norm(x, r, w, 1e-5, offset)
    assert_close(y, want_y, dtype)
    assert_close(new_r, want_r, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ACT_SHAPES, ids=str)
@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_act_and_mul(shape, dtype, act):
    x = fresh(shape, dtype, 6)
    public, reference = {"silu": (kernels.silu_and_mul, ref.silu_and_mul),
                         "gelu_tanh": (kernels.gelu_tanh_and_mul, ref.gelu_tanh_and_mul)}[act]
    want = reference(x)
    n = shape[-1] // 2
    out = poisoned(want.shape, dtype)
    act_mod._launch(x[..., :n], x[..., n:], act, out=out)
    assert_close(out, want, dtype)
    assert_close(public(x), want, dtype)


def test_non_contiguous_inputs_and_separate_gate_up():
    x = fresh((123, 5, 64), torch.float32, 7).transpose(0, 1)          # rows not contiguous
    w = fresh((64,), torch.float32, 8)
    assert_close(kernels.rms_norm(x, w, 1e-6), ref.rms_norm(x, w, 1e-6), torch.float32)
    gate, up = fresh((4, 50), torch.bfloat16, 9), fresh((4, 50), torch.bfloat16, 10)
    assert_close(kernels.act_and_mul(gate, up, "silu"), ref.silu_and_mul(torch.cat([gate, up], -1)), torch.bfloat16)


def test_large_values_do_not_overflow_to_nan():
    x = torch.tensor([[-1e4, -80.0, 0.0, 80.0, 1e4, 3.0]], device=DEVICE).repeat(1, 2)
    for public, reference in ((kernels.silu_and_mul, ref.silu_and_mul),
                              (kernels.gelu_tanh_and_mul, ref.gelu_tanh_and_mul)):
        assert_close(public(x), reference(x), torch.float32)


@pytest.mark.parametrize("op,args", [
    ("rms_norm", lambda: (fresh((3, 37), torch.float32, 1), fresh((37,), torch.float32, 2), 1e-6, 1.0)),
    ("fused_add_rms_norm", lambda: (fresh((3, 37), torch.float32, 1), fresh((3, 37), torch.float32, 3),
                                    fresh((37,), torch.float32, 2), 1e-6, 0.0)),
    ("act_and_mul", lambda: (fresh((4, 33), torch.float32, 1), fresh((4, 33), torch.float32, 2), "gelu_tanh")),
])
def test_registered_as_custom_ops(op, args):
    """Schema, fake (meta) implementation and AOT dispatch checked by torch's own opcheck."""
    result = torch.library.opcheck(getattr(torch.ops.playbook, op), args())
    assert all(v == "SUCCESS" for v in result.values()), result


def test_compile_traces_through_without_graph_breaks():
    def block(x, r, w):
        y, r = kernels.fused_add_rms_norm(x, r, w, 1e-6)
        h = torch.cat([y, y * 2], dim=-1)
        return kernels.silu_and_mul(h) + kernels.rms_norm(r, w, 1e-6, 1.0), r
    x, r, w = fresh((2, 40), torch.float32, 1), fresh((2, 40), torch.float32, 2), fresh((40,), torch.float32, 3)
    explained = torch._dynamo.explain(block)(x, r, w)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(x, r, w), block(x, r, w)):
        assert_close(got, want, torch.float32)


def test_bad_input_says_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="must be even"):
        kernels.silu_and_mul(fresh((2, 7), torch.float32, 1))
    with pytest.raises(ValueError, match="weight has shape"):
        kernels.rms_norm(fresh((2, 8), torch.float32, 1), fresh((9,), torch.float32, 2))
    monkeypatch.setattr("playbook.kernels._triton.INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.rms_norm(torch.randn(2, 8), torch.randn(8))
