"""A few tokens' rotary embedding, with their keys and values written into a cache, in one launch.

    q_rot = rope_append_rows(q, k, v, cos, sin, k_cache, v_cache, start)    # q_rot: [L, H, D]
    ref = reference.rope_append_rows(q, k, v, cos, sin, k_cache, v_cache, start)

q: [L, H, D], k and v: [L, KVH, D] (views of the projections' outputs, any token and head strides; D
contiguous); cos, sin: [L, D] (rotate-half convention, as Llama-family models pair the halves); k_cache,
v_cache: [1, KVH, N, D]. Token t's rotated key and its value go to slot start + t of each cache, and the
rotated queries come back as [L, H, D] (contiguous: [1, L, H, D] is the query-major layout a grouped
attention reads as it is). One program a (token, head): L * (H + KVH) programs, each one row of D.

A denoise step of pi0's action expert is the case it is for: 11 suffix tokens, 8 query heads and one K/V
head, written after the prefix's 816 slots (the kv_in_place knob), 180 times a step. Compiled, the rotary
of q, the rotary of k with its write and the write of v were four kernels a layer there (1.0-1.2 us each
and a gap before each, H200, 2026-12-02): pointwise work on 25 KB, bound by launches, not bytes.

Rotary and the writes are fp32 math with one rounding to each output's dtype (the unfused model rounds
q * cos and rotate_half(q) * sin before their sum: one rounding more). It is the torch custom op
`playbook::rope_append_rows`, which mutates the two caches; opaque to Inductor and capturable in a CUDA
graph. On a CPU it runs only under TRITON_INTERPRET=1 (the tests); elsewhere use the reference.
"""
import torch

import triton
import triton.language as tl

from ._triton import check_device, next_pow2, pdl_launch


@triton.jit
def _rope_append(Q, K, V, Cos, Sin, KC, VC, QO, start,
                 sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, sc_t, ss_t, skc_h, skc_n, svc_h, svc_n, sqo_t, sqo_h,
                 H: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    t, j = tl.program_id(0), tl.program_id(1)           # token t; j < H: query head j, else K/V head j - H
    if PDL:             # q, k, v are the projection's output: wait for it, then let the next kernel launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    d = tl.arange(0, BLOCK)
    inside = d < HALF
    c1 = tl.load(Cos + t * sc_t + d, mask=inside, other=0.0).to(tl.float32)
    c2 = tl.load(Cos + t * sc_t + HALF + d, mask=inside, other=0.0).to(tl.float32)
    s1 = tl.load(Sin + t * ss_t + d, mask=inside, other=0.0).to(tl.float32)
    s2 = tl.load(Sin + t * ss_t + HALF + d, mask=inside, other=0.0).to(tl.float32)
    if j < H:
        src = Q + t * sq_t + j * sq_h
        x1 = tl.load(src + d, mask=inside, other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF + d, mask=inside, other=0.0).to(tl.float32)
        dst = QO + t * sqo_t + j * sqo_h
        tl.store(dst + d, (x1 * c1 - x2 * s1).to(QO.dtype.element_ty), mask=inside)
        tl.store(dst + HALF + d, (x2 * c2 + x1 * s2).to(QO.dtype.element_ty), mask=inside)
    else:
        kv = j - H
        src = K + t * sk_t + kv * sk_h
        x1 = tl.load(src + d, mask=inside, other=0.0).to(tl.float32)
        x2 = tl.load(src + HALF + d, mask=inside, other=0.0).to(tl.float32)
        dst = KC + kv * skc_h + (start + t) * skc_n
        tl.store(dst + d, (x1 * c1 - x2 * s1).to(KC.dtype.element_ty), mask=inside)
        tl.store(dst + HALF + d, (x2 * c2 + x1 * s2).to(KC.dtype.element_ty), mask=inside)
        vsrc = V + t * sv_t + kv * sv_h
        vdst = VC + kv * svc_h + (start + t) * svc_n
        tl.store(vdst + d, tl.load(vsrc + d, mask=inside, other=0.0).to(VC.dtype.element_ty), mask=inside)
        tl.store(vdst + HALF + d, tl.load(vsrc + HALF + d, mask=inside, other=0.0).to(VC.dtype.element_ty),
                 mask=inside)


def _check(q, k, v, cos, sin, k_cache, v_cache, start):
    check_device("rope_append_rows", q, k, v, cos, sin, k_cache, v_cache)
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise ValueError(f"playbook.kernels.rope_append_rows: q [L, H, D] and k, v [L, KVH, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    tokens, heads, d = q.shape
    if d % 2 or cos.shape != (tokens, d) or sin.shape != (tokens, d):
        raise ValueError(f"playbook.kernels.rope_append_rows: cos and sin must be [{tokens}, {d}] (an even head size), got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}")
    kvh = k.shape[1]
    if (k_cache.dim() != 4 or k_cache.shape[0] != 1 or k_cache.shape[1] != kvh or k_cache.shape[3] != d
            or v_cache.shape != k_cache.shape):
        raise ValueError(f"playbook.kernels.rope_append_rows: caches must be [1, {kvh}, N, {d}] alike, got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if not 0 <= start <= k_cache.shape[2] - tokens:
        raise ValueError(f"playbook.kernels.rope_append_rows: {tokens} tokens from slot {start} do not fit a "
                         f"{k_cache.shape[2]}-slot cache")
    if any(t.stride(-1) != 1 for t in (q, k, v, cos, sin, k_cache, v_cache)):
        raise ValueError("playbook.kernels.rope_append_rows: every operand needs a unit stride along D")
    return tokens, heads, kvh, d


def rope_append_rows(q, k, v, cos, sin, k_cache, v_cache, start, pdl=False):
    """Rotate q and k (rotate-half), write rotated k and v into the caches from slot `start` (an int), and
    return the rotated q as [L, H, D]. The caches are written in place. pdl: launch with Programmatic Dependent
    Launch (`_triton.pdl_here`; ignored where it cannot run): wait for the kernel before at the start, and let
    the next one launch at once."""
    return torch.ops.playbook.rope_append_rows(q, k, v, cos, sin, k_cache, v_cache, int(start), bool(pdl))


@torch.library.custom_op("playbook::rope_append_rows", mutates_args=("k_cache", "v_cache"))
def _rope_append_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, start: int, pdl: bool) -> torch.Tensor:
    tokens, heads, kvh, d = _check(q, k, v, cos, sin, k_cache, v_cache, start)
    out = torch.empty(tokens, heads, d, device=q.device, dtype=q.dtype)
    if tokens == 0:
        return out
    half = d // 2
    _rope_append[(tokens, heads + kvh)](
        q, k, v, cos, sin, k_cache, v_cache, out, start,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos.stride(0), sin.stride(0),
        k_cache.stride(1), k_cache.stride(2), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        H=heads, HALF=half, BLOCK=next_pow2(half), num_warps=1 if half <= 64 else 2, **pdl_launch(pdl, q.device))
    return out


@_rope_append_op.register_fake
def _(q, k, v, cos, sin, k_cache, v_cache, start, pdl):
    return q.new_empty(q.shape)
