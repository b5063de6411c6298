"""A decode step's projections: y = W @ x for a handful of rows, with the norm before it and the add after it.

    y = gemv(x, weight)                                        # F.linear(x, weight) for x of 1 to 16 rows
    y = gemv(x, weight, norm_weight=w, eps=1e-6)               # F.linear(rms_norm(x, w, eps), weight)
    y = gemv(x, weight, bias=b, residual=r)                    # F.linear(x, weight, b) + r
    h = gemv(x, gate_up_weight, glu="gelu_tanh")               # gelu(gate) * up of a fused gate+up projection
    ref = reference.gemv(x, weight, ...)

A batch-1 decode step reads every weight once and does two FLOPs per weight: its projections are
matrix-vector products, bound by the bytes of W. One program owns BLOCK_N rows of W and walks K in
BLOCK_K chunks, so W streams through once in wide coalesced loads and x (a few KB) comes from L2. The
norm is folded into the prologue: rms_norm(x) @ W.T = rstd * ((x * w) @ W.T), and the sum of squares
that gives rstd is gathered from the same x chunks, so the norm costs no kernel and no pass of its own.
The bias and a residual add go into the epilogue, before the one rounding to x's dtype.

Two to MAX_ROWS rows (pi0's action expert: 11 suffix tokens a denoise step; a short prompt; a few
speculated tokens) are still bound by W's bytes, at 2 * rows FLOPs a weight: one program then takes every
row at once, so W is read once, not once a row. It multiplies a [16, BLOCK_K] tile of x by its
[BLOCK_N, BLOCK_K] tile of W on the tensor cores (tl.dot), and a projection with too few columns to fill
the SMs splits K: each split writes its partial sums (and its part of the rows' sums of squares), and the
last split of a column block to finish adds them up and applies the epilogue, in the same launch, through
one int32 counter a column block that it sets back to zero (`rows_blocks` chooses). A 16-bit W is
multiplied in its own dtype, as cuBLAS does, and in fp32 in Triton's interpreter (whose bf16 tl.dot gives
garbage: Triton 3.9).

`pdl=True` (an sm_90+ GPU, `_triton.pdl_here`) launches either kernel with Programmatic Dependent Launch: each
program loads its first chunk of W, which no kernel writes, then waits (`gdc_wait`) for the kernel before it
to finish before it reads x, the residual or its counters, and lets the next kernel launch once its reads
are done. A latency-bound projection (pi0's denoise steps: 5-7 us against a 1.2-4.6 us floor) then streams W
while the kernel before it finishes. Phase 6's `pdl` knob turns it on (rewrites.pdl); on pi0 full it was kept at
14.770 against 15.078 ms, with Inductor's PDL and the rotary and few-query kernels' (H200, 2026-12-04). The first
chunk is taken before the K loop, which is then the plain kernel's loop (see the NOTE on pipelining below).

A gated MLP's fused gate+up projection can write what its down projection reads, act(gate) * up (`glu`): each
program takes matching rows of the gate half and the up half of W (two tiles a chunk, two products), so the
activation's kernel and the round trip of the [rows, 2 x I] output go. The rows of W are left as they are.

`blocks(n, k, device)` gives each program two rows of W in K chunks of 1024 (one row where two would
leave fewer than two programs per SM: a 512-row K/V projection must still spread over 132 SMs). It is
the torch custom op `playbook::gemv`, opaque to Inductor and capturable in a CUDA graph. On a CPU it
runs only under TRITON_INTERPRET=1 (the tests); elsewhere use reference.gemv.
"""
import torch

import triton
import triton.language as tl

from ._triton import INTERPRET, check_device, next_pow2, pdl_launch, sm_count, zero_counters
from ._triton import rows as row_view

TILE = 4096          # fp32 elements of a program's accumulator tile (BLOCK_N x BLOCK_K), at most
# NOTE: two rows of W a program, K in chunks of 1024, 4 warps: on the H200 (benchmarks/results/gemv/gemv.json,
# 2026-11-23, graph-timed, a sweep of 60 block and warp choices) the fastest or within 7% of it on each of
# llama 1b's seven decode shapes, and faster than cuBLAS on all seven (1.04x on the 16384- and 8192-row
# gate/up shapes to 2.0x on the 512-row K/V projection). The earlier choice (up to 8 rows, chunks of 512)
# was 1.2 to 1.7x slower than this one on the five shapes of 8 MB or more.
ROWS, CHUNK = 2, 1024
MAX_ROWS = 16        # rows one program of the few-row kernel takes (tl.dot's smallest M); more fall to F.linear
# NOTE: the GLU epilogue's blocks. A few-row GLU program takes ROWS_BLOCK_N output columns, so twice as many rows
# of W (each half's), and half as many programs as the plain kernel over the same W. At pi0's gate+up (11 rows,
# W [8192, 1024], the norm folded in, tanh GELU; H200, 2026-12-04, benchmarks/results/glu/, a sweep of 24 choices)
# that took 7.91 us against 9.29 for the plain gemv then the activation's kernel (7.71 for the gemv alone); with
# 16 columns a program (as many rows of W as the plain kernel, twice the programs) it took 10.1 us, and phase 5's
# table then rejected it (10.08 against 9.23). 8 warps, chunks of 128 and two pipeline stages were all slower.
# The one-row GLU halves the plain kernel's rows a program instead: at llama 1b's gate+up (16384 x 2048, the norm
# folded in) it took 21.96 us against 22.77 for the gemv then the activation (H200, 2026-12-04, phase 5's table
# in benchmarks/results/ladder-time/session16-2026-12-04/); the gate+up gemv itself lost to cuBLAS there, so the
# GLU was not used.
# NOTE: pipelining under PDL. The PDL variant once chose the first chunk of W inside the K loop (`w = first if
# start == lo else load`). Triton then did not pipeline that loop's loads of W (no async copies into shared
# memory for them: tests/test_triton_compile.py counts them), and a program that walks several chunks waited on each
# load in turn. In pi0 full's step (H200, 2026-12-04, q/k/v and gate+up routed with their norms, four chunks a
# program) the gate+up projection took 13.8 us a call with PDL against 7.3 without, q/k/v 9.3 against 4.9, and
# phase 6 rejected PDL (15.778 against 14.479 ms). o and down (one or two chunks a split) had hidden it. The first
# chunk is now summed before the loop, and the loop is the plain one.


@triton.jit
def _w_tile(W, n, n_in, k, k_in, stride_w):
    """W's [BLOCK_N, BLOCK_K] tile at rows n, columns k (zero outside N and K)."""
    return tl.load(W + n[:, None] * stride_w + k[None, :], mask=n_in[:, None] & k_in[None, :], other=0.0)


@triton.jit
def _act(x, ACT: tl.constexpr):
    """SiLU (ACT 1) or tanh GELU (ACT 2, written through the sigmoid as kernels.activations does) of fp32 x."""
    if ACT == 1:
        return x / (1.0 + tl.exp(-x))
    return x / (1.0 + tl.exp(-1.5957691216057308 * (x + 0.044715 * x * x * x)))


@triton.jit
def _gated(x, U, offs, mask, ACT: tl.constexpr):
    """x, or act(x) * up where ACT is 1 (SiLU) or 2 (tanh GELU): the down projection's input computed as it
    is loaded."""
    if ACT == 0:
        return x
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    return _act(x, ACT) * u


@triton.jit
def _glu(g, u, dtype: tl.constexpr, GLU: tl.constexpr):
    """act(gate) * up from the two halves' fp32 sums, each rounded to the output dtype first, as the unfused
    model rounds the gate+up projection's output before its activation kernel reads it."""
    return _act(g.to(dtype).to(tl.float32), GLU) * u.to(dtype).to(tl.float32)


@triton.jit
def _up_tile(W, w, n, n_in, k, k_in, stride_w, N_OUT, GLU: tl.constexpr):
    """The up half's tile beside the gate half's w (rows n + N_OUT), where the output is a GLU; else w."""
    if GLU != 0:
        return _w_tile(W, n + N_OUT, n_in, k, k_in, stride_w)
    return w


@triton.jit
def _row_chunk(acc, acc_u, squares, X, U, NW, w, wu, row, k, k_in, stride_x, stride_u, offset,
               HAS_NORM: tl.constexpr, ACT: tl.constexpr, GLU: tl.constexpr):
    """The one-row kernel's step over one chunk k of K: x's chunk (gated, normed) times W's tile w (and the up
    half's wu for a GLU), summed in."""
    x = _gated(tl.load(X + row * stride_x + k, mask=k_in, other=0.0).to(tl.float32), U, row * stride_u + k, k_in, ACT)
    if HAS_NORM:
        squares += x * x
        x = x * (tl.load(NW + k, mask=k_in, other=0.0).to(tl.float32) + offset)
    acc += w.to(tl.float32) * x[None, :]
    if GLU != 0:
        acc_u += wu.to(tl.float32) * x[None, :]
    return acc, acc_u, squares


@triton.jit
def _dot(acc, x, w, FP32_DOT: tl.constexpr):
    if FP32_DOT:
        return acc + tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
    return acc + tl.dot(x.to(w.dtype), tl.trans(w))


@triton.jit
def _rows_chunk(acc, acc_u, squares, X, U, NW, w, wu, m, m_in, k, k_in, stride_x, stride_u, offset,
                HAS_NORM: tl.constexpr, ACT: tl.constexpr, GLU: tl.constexpr, FP32_DOT: tl.constexpr):
    """The few-row kernel's step over one chunk k of K: every row's chunk of x (gated, normed) times W's tile w
    (and the up half's wu for a GLU) on the tensor cores, summed in."""
    x = tl.load(X + m[:, None] * stride_x + k[None, :], mask=m_in[:, None] & k_in[None, :], other=0.0)
    if ACT != 0:
        x = _gated(x.to(tl.float32), U, m[:, None] * stride_u + k[None, :], m_in[:, None] & k_in[None, :], ACT)
    if HAS_NORM:
        x = x.to(tl.float32)
        squares += tl.sum(x * x, 1)
        x = x * (tl.load(NW + k, mask=k_in, other=0.0).to(tl.float32) + offset)[None, :]
    acc = _dot(acc, x, w, FP32_DOT)
    if GLU != 0:
        acc_u = _dot(acc_u, x, wu, FP32_DOT)
    return acc, acc_u, squares


@triton.jit
def _gemv(X, U, W, B, R, NW, Y, N_OUT, K, stride_x, stride_u, stride_w, stride_r, stride_y, eps, offset,
          HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_NORM: tl.constexpr, ACT: tl.constexpr,
          GLU: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr = False):
    pid, row = tl.program_id(0), tl.program_id(1)     # BLOCK_N outputs of one row of x
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_in = n < N_OUT
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)     # a GLU's up half (unused otherwise)
    squares = tl.zeros([BLOCK_K], dtype=tl.float32)
    start0 = 0
    if PDL:             # W is no kernel's output: its first chunk is read while the kernel before finishes
        k = tl.arange(0, BLOCK_K)
        first = _w_tile(W, n, n_in, k, k < K, stride_w)
        first_u = _up_tile(W, first, n, n_in, k, k < K, stride_w, N_OUT, GLU)
        tl.extra.cuda.gdc_wait()                      # x, the residual: written by the kernels before
        acc, acc_u, squares = _row_chunk(acc, acc_u, squares, X, U, NW, first, first_u, row, k, k < K, stride_x,
                                         stride_u, offset, HAS_NORM, ACT, GLU)
        start0 = BLOCK_K  # the loop below is the plain one, so Triton still pipelines its loads of W (see the NOTE)
    for start in range(start0, K, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        k_in = k < K
        w = _w_tile(W, n, n_in, k, k_in, stride_w)
        acc, acc_u, squares = _row_chunk(acc, acc_u, squares, X, U, NW, w,
                                         _up_tile(W, w, n, n_in, k, k_in, stride_w, N_OUT, GLU), row, k, k_in,
                                         stride_x, stride_u, offset, HAS_NORM, ACT, GLU)
    if PDL:             # every read of what the kernels before wrote is done: the next one may launch
        tl.extra.cuda.gdc_launch_dependents()
    y = tl.sum(acc, 1)
    y_u = tl.sum(acc_u, 1)
    if HAS_NORM:
        rms = tl.sqrt(tl.sum(squares, 0) / K + eps)
        y = y / rms
        y_u = y_u / rms
    if HAS_BIAS:
        y += tl.load(B + n, mask=n_in, other=0.0).to(tl.float32)
        if GLU != 0:
            y_u += tl.load(B + N_OUT + n, mask=n_in, other=0.0).to(tl.float32)
    if GLU != 0:
        y = _glu(y, y_u, Y.dtype.element_ty, GLU)
    if HAS_RES:
        y += tl.load(R + row * stride_r + n, mask=n_in, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + n, y.to(Y.dtype.element_ty), mask=n_in)


@triton.jit
def _gemv_rows(X, U, W, B, R, NW, Y, Part, Sq, Count, M, N_OUT, K, K_SPLIT, stride_x, stride_u, stride_w, stride_r,
               stride_y, eps, offset, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_NORM: tl.constexpr,
               ACT: tl.constexpr, GLU: tl.constexpr,
               SPLITS: tl.constexpr, FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, PDL: tl.constexpr = False):
    pid, split = tl.program_id(0), tl.program_id(1)     # BLOCK_N outputs of every row, over one split of K
    m = tl.arange(0, BLOCK_M)
    m_in = m < M
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_in = n < N_OUT
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)     # a GLU's up half (unused otherwise)
    squares = tl.zeros([BLOCK_M], dtype=tl.float32)
    lo = split * K_SPLIT
    hi = tl.minimum(lo + K_SPLIT, K)
    start0 = lo
    if PDL:             # this split's first chunk of W, read while the kernel before finishes (as in _gemv)
        k = lo + tl.arange(0, BLOCK_K)
        first = _w_tile(W, n, n_in, k, k < hi, stride_w)
        first_u = _up_tile(W, first, n, n_in, k, k < hi, stride_w, N_OUT, GLU)
        tl.extra.cuda.gdc_wait()                      # x, the residual and the counters: after the kernels before
        acc, acc_u, squares = _rows_chunk(acc, acc_u, squares, X, U, NW, first, first_u, m, m_in, k, k < hi,
                                          stride_x, stride_u, offset, HAS_NORM, ACT, GLU, FP32_DOT)
        start0 = lo + BLOCK_K
    for start in range(start0, hi, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        k_in = k < hi
        w = _w_tile(W, n, n_in, k, k_in, stride_w)
        acc, acc_u, squares = _rows_chunk(acc, acc_u, squares, X, U, NW, w,
                                          _up_tile(W, w, n, n_in, k, k_in, stride_w, N_OUT, GLU), m, m_in, k, k_in,
                                          stride_x, stride_u, offset, HAS_NORM, ACT, GLU, FP32_DOT)
    if PDL:             # x is read: the next kernel may launch (it waits for this one's stores itself)
        tl.extra.cuda.gdc_launch_dependents()
    if SPLITS > 1:      # park this split's sums; the last split of this column block to finish adds them up
        width = N_OUT * (2 if GLU != 0 else 1)          # a GLU parks its up half's sums beside the gate half's
        tl.store(Part + (split * BLOCK_M + m[:, None]) * width + n[None, :], acc, mask=n_in[None, :])
        if GLU != 0:
            tl.store(Part + (split * BLOCK_M + m[:, None]) * width + N_OUT + n[None, :], acc_u, mask=n_in[None, :])
        tl.store(Sq + (split * tl.num_programs(0) + pid) * BLOCK_M + m, squares)
        done = tl.atomic_add(Count + pid, 1, sem="acq_rel")
        if done == SPLITS - 1:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            squares = tl.zeros([BLOCK_M], dtype=tl.float32)
            for s in range(SPLITS):
                acc += tl.load(Part + (s * BLOCK_M + m[:, None]) * width + n[None, :], mask=n_in[None, :], other=0.0,
                               cache_modifier=".cg")
                if GLU != 0:
                    acc_u += tl.load(Part + (s * BLOCK_M + m[:, None]) * width + N_OUT + n[None, :],
                                     mask=n_in[None, :], other=0.0, cache_modifier=".cg")
                squares += tl.load(Sq + (s * tl.num_programs(0) + pid) * BLOCK_M + m, cache_modifier=".cg")
            _rows_epilogue(acc, acc_u, squares, B, R, Y, m, m_in, n, n_in, N_OUT, K, stride_r, stride_y, eps,
                           HAS_BIAS, HAS_RES, HAS_NORM, GLU)
            tl.atomic_xchg(Count + pid, 0)              # ready for the next call
    else:
        _rows_epilogue(acc, acc_u, squares, B, R, Y, m, m_in, n, n_in, N_OUT, K, stride_r, stride_y, eps, HAS_BIAS,
                       HAS_RES, HAS_NORM, GLU)


@triton.jit
def _rows_epilogue(acc, acc_u, squares, B, R, Y, m, m_in, n, n_in, N_OUT, K, stride_r, stride_y, eps,
                   HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_NORM: tl.constexpr, GLU: tl.constexpr):
    y = acc
    y_u = acc_u
    if HAS_NORM:
        rms = tl.sqrt(squares / K + eps)[:, None]
        y = y / rms
        y_u = y_u / rms
    if HAS_BIAS:
        y += tl.load(B + n, mask=n_in, other=0.0).to(tl.float32)[None, :]
        if GLU != 0:
            y_u += tl.load(B + N_OUT + n, mask=n_in, other=0.0).to(tl.float32)[None, :]
    if GLU != 0:
        y = _glu(y, y_u, Y.dtype.element_ty, GLU)
    both = m_in[:, None] & n_in[None, :]
    if HAS_RES:
        y += tl.load(R + m[:, None] * stride_r + n[None, :], mask=both, other=0.0).to(tl.float32)
    tl.store(Y + m[:, None] * stride_y + n[None, :], y.to(Y.dtype.element_ty), mask=both)


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


# NOTE: the few-row kernel's blocks (2 to 16 rows): 32 columns of W a program in K chunks of 256, 4 warps; K is split
# only where the column blocks cannot cover half the SMs, and then until they cover them twice. On the H200
# (benchmarks/results/gemv/gemv-pi0-11rows.json, 2026-12-01, pi0's 11-row projections, a sweep of 24 choices) that
# was the fastest or within 2% of it on all five shapes: unsplit on the 80- and 256-block q/k/v and gate+up (4.88 and
# 6.98 us, against 5.99 and 8.86 us split 4 and 2 ways), 8 splits on the 32-block o and down (5.47 and 6.60 us).
ROWS_BLOCK_N, ROWS_BLOCK_K = 32, 256


def rows_blocks(n, k, device, waves=2):
    """(BLOCK_N, BLOCK_K, splits) of the few-row kernel. On a GPU: ROWS_BLOCK_N columns a program in K chunks of
    ROWS_BLOCK_K; where the column blocks cover fewer than half the SMs, K split into as many parts as it takes
    to give every SM `waves` programs (each part at least one chunk). On a CPU (the interpreter) one large
    program a column block, K unsplit."""
    device = torch.device(device)
    block_k = max(16, min(ROWS_BLOCK_K, next_pow2(k)))
    if device.type == "cpu":
        return max(16, min(64, next_pow2(n))), max(16, min(128, next_pow2(k))), 1
    return rows_gpu_blocks(n, k, sm_count(device), waves, ROWS_BLOCK_N, block_k)


def rows_gpu_blocks(n, k, sms, waves=2, block_n=ROWS_BLOCK_N, block_k=ROWS_BLOCK_K):
    tiles = -(-n // block_n)
    chunks = -(-k // block_k)
    splits = 1 if 2 * tiles >= sms else max(1, min(chunks, -(-waves * sms // tiles)))
    return block_n, block_k, -(-chunks // -(-chunks // splits))     # no split left without a chunk


_counters = {}      # (device, column blocks) -> int32 zeros: the split-K combine's counters, zero between calls


ACTS = {"": 0, "silu": 1, "gelu_tanh": 2}     # the gated prologue's activations (kernels.activations.ACTS)


def _check(x, weight, bias, residual, norm_weight, up=None, act="", glu=""):
    check_device("gemv", *(t for t in (x, weight, bias, residual, norm_weight, up) if t is not None))
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"playbook.kernels.gemv: x [..., K] and weight [N, K], got {tuple(x.shape)} and {tuple(weight.shape)}")
    n, k = weight.shape
    n_out = n // 2 if glu else n
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"playbook.kernels.gemv: bias must be [{n}], got {tuple(bias.shape)}")
    if norm_weight is not None and norm_weight.shape != (k,):
        raise ValueError(f"playbook.kernels.gemv: norm_weight must be [{k}], got {tuple(norm_weight.shape)}")
    if residual is not None and residual.shape != (*x.shape[:-1], n_out):
        raise ValueError(f"playbook.kernels.gemv: residual must be {(*x.shape[:-1], n_out)}, got {tuple(residual.shape)}")
    for name, a in (("act", act), ("glu", glu)):
        if a not in ACTS:
            raise ValueError(f"playbook.kernels.gemv: {name} {a!r} is not one of {sorted(a for a in ACTS if a)} (or '' "
                             f"for none)")
    if (up is None) != (act == ""):
        raise ValueError("playbook.kernels.gemv: a gated input takes both up and act (act(x) * up), or neither")
    if up is not None and (up.shape != x.shape or norm_weight is not None):
        raise ValueError(f"playbook.kernels.gemv: up must be x's shape {tuple(x.shape)}, got {tuple(up.shape)}, and a gated "
                         f"input takes no norm")
    if glu and (n % 2 or act):
        raise ValueError(f"playbook.kernels.gemv: a GLU output (glu={glu!r}) takes a weight of gate rows then as many up "
                         f"rows (an even N, got {n}) and no gated input")
    return n_out, k


def gemv(x, weight, bias=None, residual=None, norm_weight=None, eps=1e-6, offset=0.0, block_n=0, block_k=0,
         num_warps=4, splits=0, pdl=False, up=None, act="", glu=""):
    """F.linear(rms_norm(x) if norm_weight is given else x, weight, bias) + residual, in fp32 with one
    rounding to x's dtype. x: [..., K] (decode: one row; up to MAX_ROWS rows in one program, any number
    in blocks of MAX_ROWS), rows of any stride; weight [N, K]; residual [..., N]. up and act ("silu",
    "gelu_tanh"): a gated MLP's down projection, F.linear(act(x) * up, weight) with x the gate (its
    activation and product computed as x is loaded; the product rounded to x's dtype on the few-row
    kernel's tensor cores, as the unfused model rounds it). glu ("silu", "gelu_tanh"): a fused gate+up
    projection's output as its MLP's activation reads it, act(gate) * up, [..., N / 2], where weight's first
    N / 2 rows are the gate's and the rest the up projection's (each program takes matching rows of both;
    each half rounded to x's dtype before the activation, as the unfused model rounds them). block_n,
    block_k, splits: 0 for the defaults (splits: the few-row kernel's split of K; block_n: output columns).
    pdl: launch with Programmatic Dependent Launch (CUDA, compute capability 9+): the first chunk of W is read
    before waiting for the kernel before (`_triton.pdl_here` says where it can; elsewhere it is ignored)."""
    return torch.ops.playbook.gemv(x, weight, bias, residual, norm_weight, float(eps), float(offset),
                                   int(block_n), int(block_k), int(num_warps), int(splits), bool(pdl), up, str(act),
                                   str(glu))


# NOTE: every argument of the op is required. A defaulted one is left out of the traced graph when it has its
# default, so Inductor's FX-graph cache key of a graph compiled by this version matched one compiled before the
# argument existed, and the cached code called the op with one argument more than that version's schema had
# (a CI clone beside a newer checkout sharing one compile cache, 2026-12-02).
@torch.library.custom_op("playbook::gemv", mutates_args=())
def _gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
             norm_weight: torch.Tensor | None, eps: float, offset: float, block_n: int, block_k: int,
             num_warps: int, splits: int, pdl: bool, up: torch.Tensor | None, act: str, glu: str) -> torch.Tensor:
    n_out, k = _check(x, weight, bias, residual, norm_weight, up, act, glu)
    launch = pdl_launch(pdl, x.device)
    lead = x.shape[:-1]
    x2 = row_view(x, k)                         # a fused gate+up's half keeps its row stride: no copy
    u2 = row_view(up, k) if up is not None else x2
    rows = x2.shape[0]
    w = weight if weight.stride(-1) == 1 else weight.contiguous()
    y = torch.empty(rows, n_out, device=x.device, dtype=x.dtype)
    if rows == 0:
        return y.reshape(*lead, n_out)
    r = residual.reshape(rows, n_out).contiguous() if residual is not None else y
    if rows > 1:
        for lo in range(0, rows, MAX_ROWS):       # MAX_ROWS rows a launch, W read once for them
            hi = min(rows, lo + MAX_ROWS)
            _launch_rows(x2[lo:hi], u2[lo:hi], ACTS[act], w, bias, r[lo:hi], residual is not None, norm_weight,
                         y[lo:hi], eps, offset, block_n, block_k, num_warps, splits, launch, ACTS[glu])
        return y.reshape(*lead, n_out)
    auto_n, auto_k = blocks(w.shape[0], k, x.device)
    block_n = block_n or (max(1, auto_n // 2) if glu else auto_n)     # a GLU's program reads both halves' rows
    block_k = block_k or auto_k
    _gemv[(triton.cdiv(n_out, block_n), rows)](
        x2, u2, w, bias if bias is not None else y, r, norm_weight if norm_weight is not None else y, y, n_out, k,
        x2.stride(0), u2.stride(0), w.stride(0), r.stride(0), y.stride(0), eps, offset,
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, HAS_NORM=norm_weight is not None, ACT=ACTS[act],
        GLU=ACTS[glu], BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, **launch)
    return y.reshape(*lead, n_out)


def _launch_rows(x, u, act, w, bias, r, has_res, norm_weight, y, eps, offset, block_n, block_k, num_warps, splits,
                 launch=None, glu=0):
    rows, k = x.shape
    n_out = y.shape[1]
    auto_n, auto_k, auto_splits = rows_blocks(w.shape[0], k, x.device)     # a GLU: that many columns of each half
    block_n, block_k = max(16, block_n or auto_n), max(16, block_k or auto_k)
    splits = min(splits or auto_splits, -(-k // block_k))
    k_split = -(-k // (splits * block_k)) * block_k
    splits = -(-k // k_split)
    tiles = triton.cdiv(n_out, block_n)
    part = torch.empty(splits * MAX_ROWS, w.shape[0], device=x.device, dtype=torch.float32) if splits > 1 else y
    sq = torch.empty(splits * tiles * MAX_ROWS, device=x.device, dtype=torch.float32) if splits > 1 else y
    _gemv_rows[(tiles, splits)](
        x, u, w, bias if bias is not None else y, r, norm_weight if norm_weight is not None else y, y, part, sq,
        zero_counters(_counters, x.device, tiles), rows, n_out, k, k_split, x.stride(0), u.stride(0), w.stride(0),
        r.stride(0), y.stride(0), eps, offset, HAS_BIAS=bias is not None, HAS_RES=has_res,
        HAS_NORM=norm_weight is not None, ACT=act, GLU=glu, SPLITS=splits,
        FP32_DOT=w.dtype == torch.float32 or INTERPRET, BLOCK_M=MAX_ROWS, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=num_warps, **(launch or {}))


@_gemv_op.register_fake
def _(x, weight, bias, residual, norm_weight, eps, offset, block_n, block_k, num_warps, splits, pdl, up, act, glu):
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])
