"""RMSNorm and fused residual-add + RMSNorm in one pass over each row, as torch custom ops.

    y = rms_norm(x, weight, eps, offset=0.0)                    # offset=1.0: Gemma's (1 + w)
    y, new_residual = fused_add_rms_norm(x, residual, weight, eps, offset=0.0)

Memory-bound: each row is read once (twice for rows longer than MAX_BLOCK, the second read from L2) and
written once, accumulating in fp32. Several short rows share a program so small hidden sizes still
fill the GPU. Registered as `torch.ops.playbook.rms_norm` / `fused_add_rms_norm` with fake
implementations, so torch.compile traces through them and CUDA graphs capture them.
"""
import torch
import triton
import triton.language as tl

from ._triton import check_device, next_pow2, rows, warps_for

MAX_BLOCK = 16384          # longest row held in registers at once; longer rows loop over chunks
ROW_BLOCK = 4096           # elements per program when several short rows share one


@triton.jit
def _rms_norm_kernel(X, R, W, Y, RO, n_rows, n_cols, stride_x, stride_r, stride_y, stride_ro, eps, offset,
                     HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     SINGLE: tl.constexpr):
    pid = tl.program_id(0)
    r = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = r < n_rows
    if SINGLE:
        c = tl.arange(0, BLOCK_N)
        cmask = c < n_cols
        mask = rmask[:, None] & cmask[None, :]
        x = tl.load(X + r[:, None] * stride_x + c[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            res = tl.load(R + r[:, None] * stride_r + c[None, :], mask=mask, other=0.0).to(tl.float32)
            s = (x + res).to(RO.dtype.element_ty)
            tl.store(RO + r[:, None] * stride_ro + c[None, :], s, mask=mask)
            x = s.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32) + offset
        y = x * rstd[:, None] * w[None, :]
        tl.store(Y + r[:, None] * stride_y + c[None, :], y.to(Y.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + tl.arange(0, BLOCK_N)
            mask = rmask[:, None] & (c < n_cols)[None, :]
            x = tl.load(X + r[:, None] * stride_x + c[None, :], mask=mask, other=0.0).to(tl.float32)
            if HAS_RESIDUAL:
                res = tl.load(R + r[:, None] * stride_r + c[None, :], mask=mask, other=0.0).to(tl.float32)
                s = (x + res).to(RO.dtype.element_ty)
                tl.store(RO + r[:, None] * stride_ro + c[None, :], s, mask=mask)
                x = s.to(tl.float32)
            acc += tl.sum(x * x, axis=1)
        rstd = 1.0 / tl.sqrt(acc / n_cols + eps)
        for start in range(0, n_cols, BLOCK_N):
            c = start + tl.arange(0, BLOCK_N)
            cmask = c < n_cols
            mask = rmask[:, None] & cmask[None, :]
            if HAS_RESIDUAL:
                x = tl.load(RO + r[:, None] * stride_ro + c[None, :], mask=mask, other=0.0).to(tl.float32)
            else:
                x = tl.load(X + r[:, None] * stride_x + c[None, :], mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32) + offset
            y = x * rstd[:, None] * w[None, :]
            tl.store(Y + r[:, None] * stride_y + c[None, :], y.to(Y.dtype.element_ty), mask=mask)


def config(m, n):
    """Block shape and warps for m rows of n: short rows share a program, long rows loop."""
    block_n = min(next_pow2(n), MAX_BLOCK)
    single = block_n >= n
    block_m = max(1, min(next_pow2(m), ROW_BLOCK // block_n)) if single else 1
    return {"block_m": block_m, "block_n": block_n, "num_warps": warps_for(block_m * block_n)}


def _launch(x, residual, weight, eps, offset, out=None, residual_out=None, cfg=None):
    """Run the kernel; out / residual_out: preallocated contiguous outputs (tests poison them first);
    cfg: a config() override (benchmarks/kernels_sweep.py)."""
    n = x.shape[-1]
    if weight.shape != (n,):
        raise ValueError(f"rms_norm: weight has shape {tuple(weight.shape)}, expected ({n},)")
    x2 = rows(x, n)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    y2 = y.view(-1, n)
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"fused_add_rms_norm: residual {tuple(residual.shape)} != x {tuple(x.shape)}")
        r2 = rows(residual, n)
        ro = torch.empty(x.shape, dtype=x.dtype, device=x.device) if residual_out is None else residual_out
        ro2 = ro.view(-1, n)
    else:
        r2 = ro2 = ro = None
    m = x2.shape[0]
    if m == 0:
        return y, ro
    cfg = cfg or config(m, n)
    block_m, block_n = cfg["block_m"], cfg["block_n"]
    single = block_n >= n
    grid = (triton.cdiv(m, block_m),)
    _rms_norm_kernel[grid](
        x2, r2 if r2 is not None else x2, weight, y2, ro2 if ro2 is not None else y2, m, n,
        x2.stride(0), r2.stride(0) if r2 is not None else 0, y2.stride(0), ro2.stride(0) if ro2 is not None else 0,
        float(eps), float(offset), HAS_RESIDUAL=residual is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        SINGLE=single, num_warps=cfg["num_warps"])
    return y, ro


@torch.library.custom_op("playbook::rms_norm", mutates_args=())
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float) -> torch.Tensor:
    check_device("rms_norm", x, weight)
    return _launch(x, None, weight, eps, offset)[0]


@_rms_norm_op.register_fake
def _(x, weight, eps, offset):
    return x.new_empty(x.shape)


@torch.library.custom_op("playbook::fused_add_rms_norm", mutates_args=())
def _fused_add_rms_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                           offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_device("fused_add_rms_norm", x, residual, weight)
    y, ro = _launch(x, residual, weight, eps, offset)
    return y, ro


@_fused_add_rms_norm_op.register_fake
def _(x, residual, weight, eps, offset):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def rms_norm(x, weight, eps=1e-6, offset=0.0):
    """x * rsqrt(mean(x^2) + eps) * (offset + weight), over the last dimension; output in x's dtype."""
    return torch.ops.playbook.rms_norm(x, weight, float(eps), float(offset))


def fused_add_rms_norm(x, residual, weight, eps=1e-6, offset=0.0):
    """(rms_norm(x + residual), x + residual) in one pass; the sum is rounded to x's dtype first."""
    return torch.ops.playbook.fused_add_rms_norm(x, residual, weight, float(eps), float(offset))
