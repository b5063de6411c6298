"""A decode step's projections: y = W @ x for a handful of rows, with the norm before it and the add after it.

    y = gemv(x, weight)                                        # F.linear(x, weight) for x of 1 to a few rows
    y = gemv(x, weight, norm_weight=w, eps=1e-6)               # F.linear(rms_norm(x, w, eps), weight)
    y = gemv(x, weight, bias=b, residual=r)                    # F.linear(x, weight, b) + r
    ref = reference.gemv(x, weight, ...)

A batch-1 decode step reads every weight once and does two FLOPs per weight: its projections are
matrix-vector products, bound by the bytes of W. One program owns BLOCK_N rows of W and walks K in
BLOCK_K chunks, so W streams through once in wide coalesced loads and x (a few KB) comes from L2. The
norm is folded into the prologue: rms_norm(x) @ W.T = rstd * ((x * w) @ W.T), and the sum of squares
that gives rstd is gathered from the same x chunks, so the norm costs no kernel and no pass of its own.
The bias and a residual add go into the epilogue, before the one rounding to x's dtype.

`blocks(n, k, device)` gives each program two rows of W in K chunks of 1024 (one row where two would
leave fewer than two programs per SM: a 512-row K/V projection must still spread over 132 SMs). It is
the torch custom op `playbook::gemv`, opaque to Inductor and capturable in a CUDA graph. On a CPU it
runs only under TRITON_INTERPRET=1 (the tests); elsewhere use reference.gemv.
"""
import torch

import triton
import triton.language as tl

from ._triton import check_device, next_pow2

TILE = 4096          # fp32 elements of a program's accumulator tile (BLOCK_N x BLOCK_K), at most
# NOTE: two rows of W a program, K in chunks of 1024, 4 warps: on the H200 (benchmarks/results/gemv/gemv.json,
# 2026-11-23, graph-timed, a sweep of 60 block and warp choices) the fastest or within 7% of it on each of
# llama 1b's seven decode shapes, and faster than cuBLAS on all seven (1.04x on the 16384- and 8192-row
# gate/up shapes to 2.0x on the 512-row K/V projection). The earlier choice (up to 8 rows, chunks of 512)
# was 1.2 to 1.7x slower than this one on the five shapes of 8 MB or more.
ROWS, CHUNK = 2, 1024


@triton.jit
def _gemv(X, W, B, R, NW, Y, N, K, stride_x, stride_w, stride_r, stride_y, eps, offset,
          HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_NORM: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid, row = tl.program_id(0), tl.program_id(1)     # BLOCK_N outputs of one row of x
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_in = n < N
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    squares = tl.zeros([BLOCK_K], dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        k_in = k < K
        x = tl.load(X + row * stride_x + k, mask=k_in, other=0.0).to(tl.float32)
        if HAS_NORM:
            squares += x * x
            x = x * (tl.load(NW + k, mask=k_in, other=0.0).to(tl.float32) + offset)
        w = tl.load(W + n[:, None] * stride_w + k[None, :], mask=n_in[:, None] & k_in[None, :], other=0.0)
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, 1)
    if HAS_NORM:
        y = y / tl.sqrt(tl.sum(squares, 0) / K + eps)
    if HAS_BIAS:
        y += tl.load(B + n, mask=n_in, other=0.0).to(tl.float32)
    if HAS_RES:
        y += tl.load(R + row * stride_r + n, mask=n_in, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + n, y.to(Y.dtype.element_ty), mask=n_in)


def sm_count(device):
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def blocks(n, k, device, waves=2):
    """(BLOCK_N, BLOCK_K) for a GPU: ROWS rows of W a program in K chunks of up to CHUNK, one row where ROWS
    would give fewer than `waves` programs per SM. On a CPU (Triton's interpreter, for tests) it runs one
    program at a time, so a few large ones: the tile's worth of rows in chunks of 512."""
    device = torch.device(device)
    if device.type == "cpu":
        block_k = min(512, next_pow2(k))
        return max(1, TILE // block_k), block_k
    return gpu_blocks(n, k, sm_count(device), waves)


def gpu_blocks(n, k, sms, waves=2):
    block_k = min(CHUNK, next_pow2(k))
    block_n = ROWS
    while block_n > 1 and -(-n // block_n) < waves * sms:
        block_n //= 2
    return block_n, block_k


def _check(x, weight, bias, residual, norm_weight):
    check_device("gemv", *(t for t in (x, weight, bias, residual, norm_weight) if t is not None))
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"kernels.gemv: x [..., K] and weight [N, K], got {tuple(x.shape)} and {tuple(weight.shape)}")
    n, k = weight.shape
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"kernels.gemv: bias must be [{n}], got {tuple(bias.shape)}")
    if norm_weight is not None and norm_weight.shape != (k,):
        raise ValueError(f"kernels.gemv: norm_weight must be [{k}], got {tuple(norm_weight.shape)}")
    if residual is not None and residual.shape != (*x.shape[:-1], n):
        raise ValueError(f"kernels.gemv: residual must be {(*x.shape[:-1], n)}, got {tuple(residual.shape)}")
    return n, k


def gemv(x, weight, bias=None, residual=None, norm_weight=None, eps=1e-6, offset=0.0, block_n=0, block_k=0,
         num_warps=4):
    """F.linear(rms_norm(x) if norm_weight is given else x, weight, bias) + residual, in fp32 with one
    rounding to x's dtype. x: [..., K] (decode: one row); weight [N, K]; residual [..., N]."""
    return torch.ops.playbook.gemv(x, weight, bias, residual, norm_weight, float(eps), float(offset),
                                   int(block_n), int(block_k), int(num_warps))


@torch.library.custom_op("playbook::gemv", mutates_args=())
def _gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
             norm_weight: torch.Tensor | None, eps: float, offset: float, block_n: int, block_k: int,
             num_warps: int) -> torch.Tensor:
    n, k = _check(x, weight, bias, residual, norm_weight)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k).contiguous()
    rows = x2.shape[0]
    w = weight if weight.stride(-1) == 1 else weight.contiguous()
    y = torch.empty(rows, n, device=x.device, dtype=x.dtype)
    if rows == 0:
        return y.reshape(*lead, n)
    r = residual.reshape(rows, n).contiguous() if residual is not None else y
    auto_n, auto_k = blocks(n, k, x.device)
    block_n, block_k = block_n or auto_n, block_k or auto_k
    _gemv[(triton.cdiv(n, block_n), rows)](
        x2, w, bias if bias is not None else y, r, norm_weight if norm_weight is not None else y, y, n, k,
        x2.stride(0), w.stride(0), r.stride(0), y.stride(0), eps, offset,
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, HAS_NORM=norm_weight is not None,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps)
    return y.reshape(*lead, n)


@_gemv_op.register_fake
def _(x, weight, bias, residual, norm_weight, eps, offset, block_n, block_k, num_warps):
    return x.new_empty(*x.shape[:-1], weight.shape[0])
