"""Attention of a few queries (2 to 16) over a long K/V with any mask, in one launch: a denoise or verify step.

    out = few_query_attention(q, k, v, mask=None, scale=None, softcap=None)    # [B, Lq, H, D]
    ref = reference.few_query_attention(q, k, v, mask, scale, softcap)

q: [B, H, Lq, D]; k, v: [B, KVH, Lk, D] with H a multiple of KVH (grouped-query attention: no K/V head is
copied per query head); mask: None, or [B or 1, H or 1, Lq, Lk], boolean "may attend" or additive (as
Hugging Face's SDPA and eager masks are). Returns [B, Lq, H, D], the layout a Hugging Face attention
function hands back. pi0's action expert is the case it is for: 11 suffix tokens, 8 query heads over one
K/V head, 827 slots of prefix and suffix K/V, an explicit mask (padding, the state token's block), 180
times a step. Under torch.compile eager attention's math became five kernels there (the K/V padded to an
aligned length, the scores' product, the softmax, the values' product, a copy), 11 us a call on the
H200, for 0.85 MB of K/V. This kernel was measured at 12.6 us there: slower (see the NOTE below).

Each program takes one query head's queries (a [16, D] tile) and one chunk of the K/V length; it walks
the chunk in BLOCK_N slots, scores them on the tensor cores (tl.dot), applies the soft cap and the mask,
and keeps an online softmax (the running max and sum), as flash-decoding does. The chunks of a head are
combined in the same launch: each program writes its partial output and log-sum-exp, adds one to its
head's counter, and the one that finds every other chunk done reads them all, writes the output and sets
the counter back to zero (one int32 a (batch, head), kept per device). A row every slot of which is
masked gets zeros (SDPA gives NaN, eager a uniform weight). Scores and softmax are fp32; the
probabilities are rounded to V's dtype for their product, as eager attention rounds them; in Triton's
interpreter the products are fp32 (its 16-bit tl.dot is wrong: Triton 3.9).

It is the torch custom op `playbook::few_query_attention`, opaque to Inductor and capturable in a CUDA
graph. On a CPU it runs only under TRITON_INTERPRET=1 (the tests); elsewhere use the reference.
"""
import math
from typing import Optional

import torch

import triton
import triton.language as tl

from ._triton import INTERPRET, check_device, next_pow2, zero_counters

MAX_QUERIES = 16        # one program's query tile (tl.dot's smallest M); more queries are not "few"
MAX_HEAD_DIM = 256      # a [16, D] fp32 accumulator a program; larger heads are left to SDPA
BLOCK_N = 64            # K/V slots a step of a program's walk
# NOTE: two blocks (128 slots) a program by default, so pi0's 827 slots give 7 chunks a head (56 programs for 8
# heads) and the last program of a head reads 7 partial tiles, not 13. On the H200 (2026-12-01, torch 2.11,
# benchmarks/results/few-query-attention/, pi0's shape, 18 calls a graph) that was 12.6 us a call, the best of
# a sweep of 1 to 13 blocks of 32 or 64 slots (12.9 to 35.7 us), and SLOWER than the compiled grouped math it
# would replace (11.0 us, five kernels). A combine loading every chunk's partials as one [splits, queries, 32]
# tile a step was slower still (21 to 64 us). So phase 2 does not offer it; it stays as a tested kernel and a
# recipe knob (attention {"few_query": true}). The cost is the chain of dependent L2 round trips of the last
# program of each head (its statistics and partials, chunk by chunk), not the K/V reads. Since 2026-12-03 the number
# of chunks is a constexpr and the combine's loops are unrolled, so those loads can be in flight together, where a
# loop over a runtime count made each one a round trip: not yet measured (gpu_session.sh few-query).
CHUNK_BLOCKS = 2


@triton.jit
def _few_query(Q, K, V, Mask, Part, Lse, Count, O, LQ, LK, CHUNK, scale, softcap,
               sq_b, sq_h, sq_q, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sm_b, sm_h, sm_q, so_b, so_q, so_h,
               H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, SOFTCAP: tl.constexpr,
               FP32_DOT: tl.constexpr, SPLITS: tl.constexpr):
    bh, split = tl.program_id(0), tl.program_id(1)      # one (batch, query head) x one chunk of the K/V length
    b = bh // H
    h = bh % H
    kv = h // GROUP
    qi = tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_in = qi < LQ
    d_in = d < D
    q = tl.load(Q + b * sq_b + h * sq_h + qi[:, None] * sq_q + d[None, :], mask=q_in[:, None] & d_in[None, :],
                other=0.0)
    if FP32_DOT:
        q = q.to(tl.float32)
    m_i = tl.zeros([BLOCK_Q], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, LK)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_in = n < hi
        kv_in = n_in[:, None] & d_in[None, :]
        k = tl.load(K + b * sk_b + kv * sk_h + n[:, None] * sk_n + d[None, :], mask=kv_in, other=0.0)
        if FP32_DOT:
            s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * scale
        if SOFTCAP:
            e = tl.exp(-2.0 * tl.abs(s) / softcap)             # tanh(x) = sign(x) (1 - e^-2|x|) / (1 + e^-2|x|)
            t = (1.0 - e) / (1.0 + e)
            s = softcap * tl.where(s < 0, -t, t)
        ok = q_in[:, None] & n_in[None, :]
        if MASK_KIND == 1:      # boolean: True may attend
            allowed = tl.load(Mask + b * sm_b + h * sm_h + qi[:, None] * sm_q + n[None, :], mask=ok, other=0)
            ok = ok & (allowed != 0)
        if MASK_KIND == 2:      # additive
            s += tl.load(Mask + b * sm_b + h * sm_h + qi[:, None] * sm_q + n[None, :], mask=ok,
                         other=0.0).to(tl.float32)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet adds nothing
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + b * sv_b + kv * sv_h + n[:, None] * sv_n + d[None, :], mask=kv_in, other=0.0)
        if FP32_DOT:
            pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out_ptr = O + b * so_b + h * so_h + qi[:, None] * so_q + d[None, :]
    both = q_in[:, None] & d_in[None, :]
    if SPLITS == 1:
        tl.store(out_ptr, (acc / tl.maximum(l_i, 1e-30)[:, None]).to(O.dtype.element_ty), mask=both)
    else:
        row = bh * SPLITS + split
        tl.store(Part + (row * BLOCK_Q + qi[:, None]) * BLOCK_D + d[None, :], acc / tl.maximum(l_i, 1e-30)[:, None],
                 mask=both)
        lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1e-30)), float("-inf"))
        tl.store(Lse + row * BLOCK_Q + qi, lse, mask=q_in)
        done = tl.atomic_add(Count + bh, 1, sem="acq_rel")     # release this chunk; the last one combines
        if done == SPLITS - 1:
            top = tl.zeros([BLOCK_Q], dtype=tl.float32) - float("inf")
            for s_i in tl.static_range(SPLITS):         # unrolled: every chunk's loads in flight together
                top = tl.maximum(top, tl.load(Lse + (bh * SPLITS + s_i) * BLOCK_Q + qi, mask=q_in,
                                              other=float("-inf"), cache_modifier=".cg"))
            top = tl.where(top == float("-inf"), 0.0, top)
            total = tl.zeros([BLOCK_Q], dtype=tl.float32)
            out = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
            for s_i in tl.static_range(SPLITS):
                r = bh * SPLITS + s_i
                w = tl.exp(tl.load(Lse + r * BLOCK_Q + qi, mask=q_in, other=float("-inf"), cache_modifier=".cg")
                           - top)
                part = tl.load(Part + (r * BLOCK_Q + qi[:, None]) * BLOCK_D + d[None, :], mask=both, other=0.0,
                               cache_modifier=".cg")
                out += w[:, None] * part
                total += w
            tl.store(out_ptr, (out / tl.maximum(total, 1e-30)[:, None]).to(O.dtype.element_ty), mask=both)
            tl.atomic_xchg(Count + bh, 0)                       # ready for the next call


def takes(q, k, mask=None):
    """Why this kernel cannot take the call, or None: a few queries (1 to MAX_QUERIES) over K/V, a head of at
    most MAX_HEAD_DIM, the query heads a multiple of the K/V heads, a 4-D mask of matching size."""
    if q.dim() != 4 or k.dim() != 4:
        return f"q and k must be 4-D [B, H, L, D], got {tuple(q.shape)} and {tuple(k.shape)}"
    b, h, lq, d = q.shape
    if not 1 <= lq <= MAX_QUERIES:
        return f"{lq} queries: the kernel takes 1 to {MAX_QUERIES}"
    if d > MAX_HEAD_DIM or k.shape[3] != d or k.shape[0] != b or h % k.shape[1]:
        return (f"q {tuple(q.shape)} and k {tuple(k.shape)}: want the same batch and head size (at most "
                f"{MAX_HEAD_DIM}), and query heads a multiple of K/V heads")
    if mask is not None:
        if mask.dim() != 4 or mask.shape[0] not in (1, b) or mask.shape[1] not in (1, h) or \
                mask.shape[2] not in (1, lq) or mask.shape[3] != k.shape[2]:
            return f"a mask of shape {tuple(mask.shape)} is not [B or 1, H or 1, {lq} or 1, {k.shape[2]}]"
    return None


def splits_for(lk, chunk_blocks=CHUNK_BLOCKS, block_n=BLOCK_N):
    """(chunk, splits): slots a program walks, a multiple of block_n, and chunks a head."""
    chunk = block_n * max(1, int(chunk_blocks))
    return chunk, max(1, math.ceil(lk / chunk))


_counters = {}      # (device, batch x heads) -> int32 zeros: the combine's counters, zero between calls


def few_query_attention(q, k, v, mask=None, scale=None, softcap=None, chunk_blocks=0, block_n=0, num_warps=0):
    """softmax(q k^T * scale [soft-capped] [+ mask]) v for each query head over its K/V head; [B, Lq, H, D].
    chunk_blocks, block_n, num_warps: the launch settings (0: the defaults above), for benchmarks."""
    return torch.ops.playbook.few_query_attention(q, k, v, mask, float(scale or 0.0), float(softcap or 0.0),
                                                  int(chunk_blocks), int(block_n), int(num_warps))


@torch.library.custom_op("playbook::few_query_attention", mutates_args=())
def _few_query_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], scale: float,
                  softcap: float, chunk_blocks: int, block_n: int, num_warps: int) -> torch.Tensor:
    check_device("few_query_attention", *(t for t in (q, k, v, mask) if t is not None))
    why = takes(q, k, mask)
    if why is None and v.shape != k.shape:
        why = f"v {tuple(v.shape)} must match k {tuple(k.shape)}"
    if why:
        raise ValueError(f"kernels.few_query_attention: {why}")
    b, h, lq, d = q.shape
    kvh, lk = k.shape[1], k.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    kind, sm = 0, (0, 0, 0)
    if mask is not None:
        mask = mask if mask.stride(-1) == 1 else mask.contiguous()
        if mask.dtype == torch.bool:
            mask, kind = mask.view(torch.uint8), 1
        else:
            kind = 2
        sm = tuple(0 if mask.shape[i] == 1 else mask.stride(i) for i in range(3))
    block_n = block_n or BLOCK_N
    chunk, splits = splits_for(lk, chunk_blocks or CHUNK_BLOCKS, block_n)
    block_q, block_d = max(16, next_pow2(lq)), max(16, next_pow2(d))
    out = torch.empty(b, lq, h, d, device=q.device, dtype=q.dtype)
    part = torch.empty(b * h * splits * block_q * block_d if splits > 1 else 1, device=q.device,
                       dtype=torch.float32)
    lse = torch.empty(b * h * splits * block_q if splits > 1 else 1, device=q.device, dtype=torch.float32)
    count = zero_counters(_counters, q.device, b * h)
    _few_query[(b * h, splits)](
        q, k, v, mask if mask is not None else q, part, lse, count, out, lq, lk, chunk,
        scale or 1.0 / math.sqrt(d), softcap or 1.0,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), *sm, out.stride(0), out.stride(1), out.stride(2),
        H=h, GROUP=h // kvh, D=d, BLOCK_D=block_d, BLOCK_Q=block_q, BLOCK_N=block_n, MASK_KIND=kind,
        SOFTCAP=bool(softcap), FP32_DOT=INTERPRET or q.dtype == torch.float32, SPLITS=splits,
        num_warps=num_warps or (4 if block_d <= 128 else 8))
    return out


@_few_query_op.register_fake
def _(q, k, v, mask, scale, softcap, chunk_blocks, block_n, num_warps):
    b, h, lq, d = q.shape
    return q.new_empty(b, lq, h, d)
