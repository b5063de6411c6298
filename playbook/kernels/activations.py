"""Gated activations: act(gate) * up in one pass, as torch custom ops.

    y = silu_and_mul(x)           # x: [..., 2N], gate first -> [..., N]
    y = gelu_tanh_and_mul(x)      # GELU with the tanh approximation (Gemma, pi0)

The op underneath takes gate and up as two tensors (`torch.ops.playbook.act_and_mul(gate, up, act)`), so
an MLP whose gate and up projections are separate GEMMs feeds it without a concatenation, and a fused
gate+up GEMM (phase 4) feeds it two views of one buffer. tanh is written through the sigmoid
(0.5 * (1 + tanh(z)) = sigmoid(2z)), which needs no vendor math library.
"""
import torch
import triton
import triton.language as tl

from ._triton import check_device, next_pow2, rows

ACTS = ("silu", "gelu_tanh")
BLOCK = 1024               # elements of output per program
BLOCK_LARGE, LARGE = 4096, 1 << 24
WARPS = 4


@triton.jit
def _act_and_mul_kernel(G, U, Y, n_rows, n_cols, stride_g, stride_u, stride_y,
                        ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (r < n_rows)[:, None] & (c < n_cols)[None, :]
    g = tl.load(G + r[:, None] * stride_g + c[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + r[:, None] * stride_u + c[None, :], mask=mask, other=0.0).to(tl.float32)
    if ACT == 0:      # silu
        a = g / (1.0 + tl.exp(-g))
    else:             # gelu, tanh approximation: g * sigmoid(2 * sqrt(2/pi) * (g + 0.044715 g^3))
        z = 1.5957691216057308 * (g + 0.044715 * g * g * g)
        a = g / (1.0 + tl.exp(-z))
    tl.store(Y + r[:, None] * stride_y + c[None, :], (a * u).to(Y.dtype.element_ty), mask=mask)


def config(m, n):
    """Block shape and warps for an [m, n] output: 1024-element programs, 4096 for large tensors
    (benchmarks/kernels_sweep.py on an H200: 93.8% against 92.9% of copy bandwidth at 32768 x 4096),
    where decode shapes (one row) keep more programs in flight with the small block."""
    block = BLOCK_LARGE if m * n >= LARGE else BLOCK
    block_n = min(next_pow2(n), block)
    block_m = max(1, min(next_pow2(m), block // block_n))
    return {"block_m": block_m, "block_n": block_n, "num_warps": WARPS}


def _launch(gate, up, act, out=None, cfg=None):
    """Run the kernel; out: a preallocated contiguous output (tests poison it first); cfg: a config()
    override (benchmarks/kernels_sweep.py)."""
    if act not in ACTS:
        raise ValueError(f"act_and_mul: act {act!r} is not one of {ACTS}")
    if gate.shape != up.shape:
        raise ValueError(f"act_and_mul: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
    n = gate.shape[-1]
    y = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device) if out is None else out
    g2, u2, y2 = rows(gate, n), rows(up, n), y.view(-1, n)
    m = g2.shape[0]
    if m == 0 or n == 0:
        return y
    cfg = cfg or config(m, n)
    block_m, block_n = cfg["block_m"], cfg["block_n"]
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _act_and_mul_kernel[grid](g2, u2, y2, m, n, g2.stride(0), u2.stride(0), y2.stride(0),
                              ACT=ACTS.index(act), BLOCK_M=block_m, BLOCK_N=block_n,
                              num_warps=cfg["num_warps"])
    return y


@torch.library.custom_op("playbook::act_and_mul", mutates_args=())
def _act_and_mul_op(gate: torch.Tensor, up: torch.Tensor, act: str) -> torch.Tensor:
    check_device(f"{act}_and_mul", gate, up)
    return _launch(gate, up, act)


@_act_and_mul_op.register_fake
def _(gate, up, act):
    return gate.new_empty(gate.shape)


def act_and_mul(gate, up, act):
    """act(gate) * up for two tensors of one shape; act is "silu" or "gelu_tanh"."""
    return torch.ops.playbook.act_and_mul(gate, up, act)


def _split(x, name):
    if x.shape[-1] % 2:
        raise ValueError(f"{name}: the last dimension ({x.shape[-1]}) must be even: [..., 2N], gate first")
    n = x.shape[-1] // 2
    return x[..., :n], x[..., n:]


def silu_and_mul(x):
    """x: [..., 2N], gate first -> silu(gate) * up: [..., N]."""
    return act_and_mul(*_split(x, "silu_and_mul"), "silu")


def gelu_tanh_and_mul(x):
    """x: [..., 2N], gate first -> gelu_tanh(gate) * up: [..., N]."""
    return act_and_mul(*_split(x, "gelu_tanh_and_mul"), "gelu_tanh")
