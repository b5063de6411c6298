"""Attention of a few queries (1 to 16) over a long K/V with any mask, in two launches: a denoise or verify step.

    out = few_query_attention(q, k, v, mask=None, scale=None, softcap=None)    # [B, Lq, H, D]
    ref = reference.few_query_attention(q, k, v, mask, scale, softcap)

q: [B, H, Lq, D]; k, v: [B, KVH, Lk, D] with H a multiple of KVH (grouped-query attention: no K/V head is
copied per query head); mask: None, or [B or 1, H or 1, Lq, Lk], boolean "may attend" or additive (as
Hugging Face's SDPA and eager masks are). Returns [B, Lq, H, D], the layout a Hugging Face attention
function hands back. pi0's action expert is the case it is for: 11 suffix tokens, 8 query heads over one
K/V head, 827 slots of prefix and suffix K/V, an explicit mask (padding, the state token's block), 180
times a step. Under torch.compile eager attention's math became five kernels there (the K/V padded to an
aligned length, the scores' product, the softmax, the values' product, a copy), 11 us a call on the H200,
for 0.85 MB of K/V.

The rows of a K/V head are every (query head, query) pair that reads it: GROUP x Lq of them (88 for pi0),
packed into tiles of BLOCK_M rows, so each K/V slot is read once a tile and the products are as tall as
the tensor cores want (a query head's own 11 rows would fill a sixteenth of a 16-row tile's work each).
The first launch's programs each take one row tile and one chunk of the K/V length (CHUNK_BLOCKS blocks of
BLOCK_N slots, unrolled, so every load of a chunk can be in flight at once): they score the slots on the
tensor cores (tl.dot), apply the soft cap and the mask, and keep an online softmax (the running max and
sum) as flash-decoding does, then write the chunk's normalised output and log-sum-exp. The second launch
spreads the combine over every SM: a program a tile of rows x head dims reads each chunk's log-sum-exp and
partial output (unrolled: all in flight together), weighs them and writes the output. Or (combine="last")
no second launch: each program counts its chunk done on its tile's counter, and the tile's last one reads
every chunk's partials and writes the output (one int32 a tile, kept per device, set back to zero). A K/V
that fits one chunk needs no combine: the first launch writes the output. A row every slot of which is
masked gets zeros (SDPA gives NaN, eager a uniform weight). Scores and softmax are fp32; the probabilities
are rounded to V's dtype for their product, as eager attention rounds them; in Triton's interpreter the
products are fp32 (its 16-bit tl.dot is wrong: Triton 3.9).

It is the torch custom op `playbook::few_query_attention`, opaque to Inductor and capturable in a CUDA
graph. On a CPU it runs only under TRITON_INTERPRET=1 (the tests); elsewhere use the reference.
"""
import math
from typing import Optional

import torch

import triton
import triton.language as tl

from ._triton import INTERPRET, check_device, next_pow2, pdl_launch, zero_counters

MAX_QUERIES = 16        # a denoise suffix or a verify window; more queries are a prefill, SDPA's case
MAX_HEAD_DIM = 256      # a [BLOCK_M, D] fp32 accumulator a program; larger heads are left to SDPA
MAX_SPLITS = 64         # chunks a row tile at most (the combine unrolls over them); a longer K/V gets longer chunks
BLOCK_N = 64            # K/V slots a block
CHUNK_BLOCKS = 1        # blocks a chunk: one, so each program issues all its loads at once
BLOCK_M = 16            # (query head, query) rows a tile: see the NOTE below
COMBINE = "launch"      # the chunks combined by a second launch, or by the "last" program of each tile to finish
COMBINES = ("launch", "last")
COMBINE_ROWS = 16       # rows x COMBINE_DIMS head dims a combine program
COMBINE_DIMS = 64
# NOTE: an earlier design (before 2026-12-03) had a program per (query head, chunk) with a 16-row query tile
# and the last program of a head combining its chunks behind an atomic counter: on the H200 (2026-12-01, torch
# 2.11, pi0's shape, benchmarks/results/few-query-attention/) its best launch was 12.6 us a call, slower than
# the compiled grouped math (11.0 us): each head read the K/V again, and the combine was one program's chain of
# dependent L2 round trips. This design (H200, 2026-12-03, torch 2.11, the same benchmark): 7.73 us with tiles of
# 16 rows, chunks of 64 slots, 4 warps (78 programs), against 10.8-11.1 us for the math; tiles of 32 rows 9.4-9.9,
# of 64 10.6-11.3, of 128 13.0-13.4 us; chunks of two blocks were slower (12.3-17.0). Inside pi0's step (tiles of
# 64, 8 warps) the two launches took 8.06 + 3.08 us against 3.65 + 3.02 + 1.80 for the math's three kernels.
# combine="last" (no second launch) measured slower: 8.83 us at best (8 warps) against 7.88 for the two launches,
# 11.1 with 4 warps, 20.9 with tiles of 32 rows (call5-last-program-combine.json): one program reading every
# chunk's [16, D] partials is a longer chain than a launch whose programs each read a share. It stays an option.


@triton.jit
def _attend(q, k, v, ok, mask_at, m_i, l_i, acc, scale, softcap, MASK_KIND: tl.constexpr, SOFTCAP: tl.constexpr,
            FP32_DOT: tl.constexpr):
    """One block of slots into the online softmax: q [M, D] against k, v [N, D], `ok` [M, N] the pairs that may
    attend before the mask; returns the running max, sum and output."""
    if MASK_KIND == 1:      # boolean: True may attend
        ok = ok & (tl.load(mask_at, mask=ok, other=0) != 0)
    if FP32_DOT:
        s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    s = s * scale
    if SOFTCAP:
        e = tl.exp(-2.0 * tl.abs(s) / softcap)             # tanh(x) = sign(x) (1 - e^-2|x|) / (1 + e^-2|x|)
        t = (1.0 - e) / (1.0 + e)
        s = softcap * tl.where(s < 0, -t, t)
    if MASK_KIND == 2:      # additive
        s += tl.load(mask_at, mask=ok, other=0.0).to(tl.float32)
    s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet adds nothing
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if FP32_DOT:
        pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc * alpha[:, None] + pv


@triton.jit
def _chunk(q, K, V, Mask, b, kv, h, qi, r_in, d, d_in, lo, LK, START, NT, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
           sm_b, sm_h, sm_q, m_i, l_i, acc, scale, softcap, BLOCK_N: tl.constexpr, CHUNK_BLOCKS: tl.constexpr,
           MASK_KIND: tl.constexpr, SOFTCAP: tl.constexpr, FP32_DOT: tl.constexpr, SKIP_NEW: tl.constexpr):
    """A chunk of the K/V from slot lo into the online softmax, CHUNK_BLOCKS blocks of BLOCK_N slots (unrolled:
    the chunk's loads need not wait on each other); SKIP_NEW: slots START..START+NT left out."""
    for j in tl.static_range(CHUNK_BLOCKS):
        n = lo + j * BLOCK_N + tl.arange(0, BLOCK_N)
        n_in = n < LK
        if SKIP_NEW:
            n_in = n_in & ((n < START) | (n >= START + NT))
        kv_in = n_in[:, None] & d_in[None, :]
        k = tl.load(K + b * sk_b + kv * sk_h + n[:, None] * sk_n + d[None, :], mask=kv_in, other=0.0)
        v = tl.load(V + b * sv_b + kv * sv_h + n[:, None] * sv_n + d[None, :], mask=kv_in, other=0.0)
        m_i, l_i, acc = _attend(q, k, v, r_in[:, None] & n_in[None, :],
                                Mask + b * sm_b + h[:, None] * sm_h + qi[:, None] * sm_q + n[None, :],
                                m_i, l_i, acc, scale, softcap, MASK_KIND, SOFTCAP, FP32_DOT)
    return m_i, l_i, acc


@triton.jit
def _new_slots(q, K, V, Mask, KN, VN, Cos, Sin, b, kv, h, qi, r_in, d, d_in, dp, sign, START, NT, sk_b, sk_h, sk_n,
               sv_b, sv_h, sv_n, sm_b, sm_h, sm_q, skn_t, skn_h, svn_t, svn_h, sc_t, ss_t, write, m_i, l_i, acc,
               scale, softcap, BLOCK_T: tl.constexpr, MASK_KIND: tl.constexpr, SOFTCAP: tl.constexpr,
               FP32_DOT: tl.constexpr):
    """The NT new tokens' slots from START into the online softmax, one block of BLOCK_T: their keys rotated from
    the projection's (rotate-half: dp the partner dims, sign their signs), their values as they are; `write`: the
    rotated keys and the values stored into the caches too."""
    tn = tl.arange(0, BLOCK_T)
    t_in = tn < NT
    tw = t_in[:, None] & d_in[None, :]
    kn = tl.load(KN + tn[:, None] * skn_t + kv * skn_h + d[None, :], mask=tw, other=0.0).to(tl.float32)
    knp = tl.load(KN + tn[:, None] * skn_t + kv * skn_h + dp[None, :], mask=tw, other=0.0).to(tl.float32)
    ck = tl.load(Cos + tn[:, None] * sc_t + d[None, :], mask=tw, other=0.0).to(tl.float32)
    sk = tl.load(Sin + tn[:, None] * ss_t + d[None, :], mask=tw, other=0.0).to(tl.float32)
    k = (kn * ck + sign[None, :] * knp * sk).to(K.dtype.element_ty)
    v = tl.load(VN + tn[:, None] * svn_t + kv * svn_h + d[None, :], mask=tw, other=0.0).to(V.dtype.element_ty)
    n = START + tn
    if write:
        tl.store(K + b * sk_b + kv * sk_h + n[:, None] * sk_n + d[None, :], k, mask=tw)
        tl.store(V + b * sv_b + kv * sv_h + n[:, None] * sv_n + d[None, :], v, mask=tw)
    return _attend(q, k, v, r_in[:, None] & t_in[None, :], Mask + b * sm_b + h[:, None] * sm_h + qi[:, None] * sm_q
                   + n[None, :], m_i, l_i, acc, scale, softcap, MASK_KIND, SOFTCAP, FP32_DOT)


@triton.jit
def _few_query_part(Q, K, V, Mask, Part, Lse, Count, O, LQ, LK, ROWS, CHUNK, ROW_TILES, scale, softcap,
                    sq_b, sq_h, sq_q, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sm_b, sm_h, sm_q, so_b, so_q, so_h,
                    H: tl.constexpr, KVH: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    CHUNK_BLOCKS: tl.constexpr, MASK_KIND: tl.constexpr, SOFTCAP: tl.constexpr,
                    FP32_DOT: tl.constexpr, SPLITS: tl.constexpr, LAST_COMBINES: tl.constexpr,
                    PDL: tl.constexpr = False, KN=None, VN=None, Cos=None, Sin=None, START=0, NT=0, skn_t=0,
                    skn_h=0, svn_t=0, svn_h=0, sc_t=0, ss_t=0, ROPE: tl.constexpr = False,
                    BLOCK_T: tl.constexpr = 16):
    tile, split = tl.program_id(0), tl.program_id(1)   # one (batch, K/V head, row tile) x one chunk of the K/V
    if PDL:             # q and the K/V are the kernels before's outputs: wait for them, then let the next launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    bkv = tile // ROW_TILES
    b = bkv // KVH
    kv = bkv % KVH
    r = (tile % ROW_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
    r_in = r < GROUP * LQ
    h = kv * GROUP + r // LQ                            # row r: query head h's query qi
    qi = r % LQ
    d = tl.arange(0, BLOCK_D)
    d_in = d < D
    rd_in = r_in[:, None] & d_in[None, :]
    q = tl.load(Q + b * sq_b + h[:, None] * sq_h + qi[:, None] * sq_q + d[None, :], mask=rd_in, other=0.0)
    if ROPE:            # q is the projection's: rotate it here (fp32, one rounding), as rope_append_rows does
        half = D // 2
        dp = tl.where(d < half, d + half, d - half)     # rotate-half's partner of each head dim
        sign = tl.where(d < half, -1.0, 1.0)
        qp = tl.load(Q + b * sq_b + h[:, None] * sq_h + qi[:, None] * sq_q + dp[None, :], mask=rd_in, other=0.0)
        cq = tl.load(Cos + qi[:, None] * sc_t + d[None, :], mask=rd_in, other=0.0).to(tl.float32)
        sq = tl.load(Sin + qi[:, None] * ss_t + d[None, :], mask=rd_in, other=0.0).to(tl.float32)
        q = (q.to(tl.float32) * cq + sign[None, :] * qp.to(tl.float32) * sq).to(Q.dtype.element_ty)
    if FP32_DOT:
        q = q.to(tl.float32)
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo = split * CHUNK
    if ROPE:
        if lo < LK:     # a chunk of the caches, the new tokens' slots left out
            m_i, l_i, acc = _chunk(q, K, V, Mask, b, kv, h, qi, r_in, d, d_in, lo, LK, START, NT, sk_b, sk_h, sk_n,
                                   sv_b, sv_h, sv_n, sm_b, sm_h, sm_q, m_i, l_i, acc, scale, softcap, BLOCK_N,
                                   CHUNK_BLOCKS, MASK_KIND, SOFTCAP, FP32_DOT, True)
        else:           # the launch's last chunk is the new tokens' slots, a block their size, rotated here
            m_i, l_i, acc = _new_slots(q, K, V, Mask, KN, VN, Cos, Sin, b, kv, h, qi, r_in, d, d_in, dp, sign, START,
                                       NT, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sm_b, sm_h, sm_q, skn_t, skn_h, svn_t,
                                       svn_h, sc_t, ss_t, tile % ROW_TILES == 0, m_i, l_i, acc, scale, softcap,
                                       BLOCK_T, MASK_KIND, SOFTCAP, FP32_DOT)
    else:
        m_i, l_i, acc = _chunk(q, K, V, Mask, b, kv, h, qi, r_in, d, d_in, lo, LK, START, NT, sk_b, sk_h, sk_n,
                               sv_b, sv_h, sv_n, sm_b, sm_h, sm_q, m_i, l_i, acc, scale, softcap, BLOCK_N,
                               CHUNK_BLOCKS, MASK_KIND, SOFTCAP, FP32_DOT, False)
    out = acc / tl.maximum(l_i, 1e-30)[:, None]
    if SPLITS == 1:
        tl.store(O + b * so_b + h[:, None] * so_h + qi[:, None] * so_q + d[None, :], out.to(O.dtype.element_ty),
                 mask=rd_in)
    else:
        g = (b * H + h) * LQ + qi                       # the row's place among all ROWS = B x H x Lq rows
        tl.store(Part + (split * ROWS + g[:, None]) * D + d[None, :], out, mask=rd_in)
        lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1e-30)), float("-inf"))
        tl.store(Lse + split * ROWS + g, lse, mask=r_in)
        if LAST_COMBINES:   # the tile's last chunk to finish combines them all, in this launch
            done = tl.atomic_add(Count + tile, 1, sem="acq_rel")
            if done == SPLITS - 1:
                top = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
                total = tl.zeros([BLOCK_M], dtype=tl.float32)
                res = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
                for c in tl.static_range(SPLITS):       # unrolled: the chunks' loads need not wait on each other
                    lse_c = tl.load(Lse + c * ROWS + g, mask=r_in, other=float("-inf"), cache_modifier=".cg")
                    part = tl.load(Part + (c * ROWS + g[:, None]) * D + d[None, :], mask=rd_in, other=0.0,
                                   cache_modifier=".cg")
                    new_top = tl.maximum(top, lse_c)
                    safe = tl.where(new_top == float("-inf"), 0.0, new_top)
                    keep, w = tl.exp(top - safe), tl.exp(lse_c - safe)
                    res = res * keep[:, None] + w[:, None] * part
                    total = total * keep + w
                    top = new_top
                tl.store(O + b * so_b + h[:, None] * so_h + qi[:, None] * so_q + d[None, :],
                         (res / tl.maximum(total, 1e-30)[:, None]).to(O.dtype.element_ty), mask=rd_in)
                tl.atomic_xchg(Count + tile, 0)             # ready for the next call


@triton.jit
def _few_query_combine(Part, Lse, O, ROWS, LQ, so_b, so_q, so_h, H: tl.constexpr, D: tl.constexpr,
                       SPLITS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr = False):
    if PDL:             # the partials are the first launch's: wait for it, then let the next kernel launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    g = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)     # rows x head dims: every SM takes a share
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    g_in = g < ROWS
    both = g_in[:, None] & (d < D)[None, :]
    top = tl.zeros([BLOCK_R], dtype=tl.float32) - float("inf")
    for s in tl.static_range(SPLITS):                   # unrolled: every chunk's loads in flight together
        top = tl.maximum(top, tl.load(Lse + s * ROWS + g, mask=g_in, other=float("-inf")))
    top = tl.where(top == float("-inf"), 0.0, top)      # a row no chunk saw anything of: weights 0, output 0
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    out = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for s in tl.static_range(SPLITS):
        w = tl.exp(tl.load(Lse + s * ROWS + g, mask=g_in, other=float("-inf")) - top)
        out += w[:, None] * tl.load(Part + (s * ROWS + g[:, None]) * D + d[None, :], mask=both, other=0.0)
        total += w
    b = g // (H * LQ)
    h = (g // LQ) % H
    qi = g % LQ
    tl.store(O + b[:, None] * so_b + qi[:, None] * so_q + h[:, None] * so_h + d[None, :],
             (out / tl.maximum(total, 1e-30)[:, None]).to(O.dtype.element_ty), mask=both)


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


def launch(rows, lk, d, block_m=0, block_n=0, chunk_blocks=0, num_warps=0):
    """The first launch's settings for `rows` (query head, query) rows a K/V head over lk slots of head size d:
    {block_m, block_n, chunk_blocks, chunk, splits, row_tiles, num_warps} (0: the defaults above; a K/V
    longer than MAX_SPLITS chunks gets longer chunks)."""
    block_n = block_n or BLOCK_N
    chunk_blocks = max(1, int(chunk_blocks or CHUNK_BLOCKS))
    while math.ceil(lk / (block_n * chunk_blocks)) > MAX_SPLITS:
        chunk_blocks *= 2
    chunk = block_n * chunk_blocks
    block_m = block_m or min(BLOCK_M, max(16, next_pow2(rows)))
    block_d = max(16, next_pow2(d))
    return {"block_m": block_m, "block_n": block_n, "chunk_blocks": chunk_blocks, "chunk": chunk,
            "splits": max(1, math.ceil(lk / chunk)), "row_tiles": math.ceil(rows / block_m),
            "num_warps": num_warps or (4 if block_m * block_d <= 4096 else 8)}


_counters = {}      # (device, tiles) -> int32 zeros: the last-program combine's counters, zero between calls


def few_query_attention(q, k, v, mask=None, scale=None, softcap=None, chunk_blocks=0, block_n=0, num_warps=0,
                        block_m=0, combine="", pdl=False):
    """softmax(q k^T * scale [soft-capped] [+ mask]) v for each query head over its K/V head; [B, Lq, H, D].
    chunk_blocks, block_n, num_warps, block_m: the first launch's settings (0: launch()'s defaults); combine:
    one of COMBINES ("": COMBINE). For benchmarks. pdl: both launches with Programmatic Dependent Launch
    (`_triton.pdl_here`; ignored where it cannot run): each waits for the kernel before it at its start and
    lets the next one launch at once, so the launches' latency overlaps the kernel before."""
    combine = combine or COMBINE
    if combine not in COMBINES:
        raise ValueError(f"playbook.kernels.few_query_attention: combine {combine!r} is not one of {COMBINES}")
    return torch.ops.playbook.few_query_attention(q, k, v, mask, float(scale or 0.0), float(softcap or 0.0),
                                                  int(chunk_blocks), int(block_n), int(num_warps), int(block_m),
                                                  combine == "last", bool(pdl))


@torch.library.custom_op("playbook::few_query_attention", mutates_args=())
def _few_query_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], scale: float,
                  softcap: float, chunk_blocks: int, block_n: int, num_warps: int, block_m: int,
                  last_combines: bool, pdl: bool) -> torch.Tensor:
    check_device("few_query_attention", *(t for t in (q, k, v, mask) if t is not None))
    why = takes(q, k, mask)
    if why is None and v.shape != k.shape:
        why = f"v {tuple(v.shape)} must match k {tuple(k.shape)}"
    if why:
        raise ValueError(f"playbook.kernels.few_query_attention: {why}")
    return _run(q, k, v, mask, scale, softcap, chunk_blocks, block_n, num_warps, block_m, last_combines, pdl)


def _run(q, k, v, mask, scale, softcap, chunk_blocks, block_n, num_warps, block_m, last_combines, pdl, rope=None):
    """Both launches for q [B, H, Lq, D] over k, v [B, KVH, Lk, D]; rope: None, or (k_new, v_new, cos, sin,
    start) for the first launch to rotate q and the new tokens' keys itself and write them into k, v."""
    b, h, lq, d = q.shape
    kvh, lk = k.shape[1], k.shape[2]
    q = q if q.stride(-1) == 1 else q.contiguous()
    if rope is None:
        k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (k, v))
    kind, sm = 0, (0, 0, 0)
    if mask is not None:
        mask = mask if mask.stride(-1) == 1 else mask.contiguous()
        if mask.dtype == torch.bool:
            mask, kind = mask.view(torch.uint8), 1
        else:
            kind = 2
        sm = tuple(0 if mask.shape[i] == 1 else mask.stride(i) for i in range(3))
    group = h // kvh
    at = launch(group * lq, lk, d, block_m, block_n, chunk_blocks, num_warps)
    splits, rows = at["splits"] + (rope is not None), b * h * lq    # rope: one more chunk, the new slots
    block_d = max(16, next_pow2(d))
    out = torch.empty(b, lq, h, d, device=q.device, dtype=q.dtype)
    part = torch.empty(splits * rows * d if splits > 1 else 1, device=q.device, dtype=torch.float32)
    lse = torch.empty(splits * rows if splits > 1 else 1, device=q.device, dtype=torch.float32)
    tiles = b * kvh * at["row_tiles"]
    last = last_combines and splits > 1
    count = zero_counters(_counters, q.device, tiles) if last else lse
    launch_opts = pdl_launch(pdl, q.device)
    if rope is None:
        new = {}
    else:
        kn, vn, cos, sin, start = rope
        new = dict(KN=kn, VN=vn, Cos=cos, Sin=sin, START=start, NT=kn.shape[0], skn_t=kn.stride(0),
                   skn_h=kn.stride(1), svn_t=vn.stride(0), svn_h=vn.stride(1), sc_t=cos.stride(0),
                   ss_t=sin.stride(0), ROPE=True, BLOCK_T=max(16, next_pow2(kn.shape[0])))
    _few_query_part[(tiles, splits)](
        q, k, v, mask if mask is not None else q, part, lse, count, out, lq, lk, rows, at["chunk"], at["row_tiles"],
        scale or 1.0 / math.sqrt(d), softcap or 1.0,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), *sm, out.stride(0), out.stride(1), out.stride(2),
        H=h, KVH=kvh, GROUP=group, D=d, BLOCK_D=block_d, BLOCK_M=at["block_m"], BLOCK_N=at["block_n"],
        CHUNK_BLOCKS=at["chunk_blocks"], MASK_KIND=kind, SOFTCAP=bool(softcap),
        FP32_DOT=INTERPRET or q.dtype == torch.float32, SPLITS=splits, LAST_COMBINES=last,
        num_warps=at["num_warps"], **new, **launch_opts)
    if splits > 1 and not last:
        block_dc = min(COMBINE_DIMS, block_d)
        _few_query_combine[(triton.cdiv(rows, COMBINE_ROWS), triton.cdiv(d, block_dc))](
            part, lse, out, rows, lq, out.stride(0), out.stride(1), out.stride(2), H=h, D=d, SPLITS=splits,
            BLOCK_R=COMBINE_ROWS, BLOCK_D=block_dc, num_warps=4, **launch_opts)
    return out


@_few_query_op.register_fake
def _(q, k, v, mask, scale, softcap, chunk_blocks, block_n, num_warps, block_m, last_combines, pdl):
    b, h, lq, d = q.shape
    return q.new_empty(b, lq, h, d)


def rope_takes(q, k, v, cos, sin, k_cache, v_cache, start, mask=None):
    """Why rope_few_query_attention cannot take the call, or None: rope_append_rows's operands (one batch, the
    new tokens fitting the cache from `start`, unit strides along D, an even head) and a few-query call over
    the caches (`takes`)."""
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        return f"q [L, H, D] and k, v [L, KVH, D] wanted, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    tokens, heads, d = q.shape
    if d % 2 or tuple(cos.shape) != (tokens, d) or tuple(sin.shape) != (tokens, d):
        return f"cos and sin must be [{tokens}, {d}] (an even head size), got {tuple(cos.shape)}, {tuple(sin.shape)}"
    if (k_cache.dim() != 4 or k_cache.shape[0] != 1 or k_cache.shape[1] != k.shape[1] or k_cache.shape[3] != d
            or v_cache.shape != k_cache.shape):
        return f"caches must be [1, {k.shape[1]}, N, {d}] alike, got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
    if not 0 <= start <= k_cache.shape[2] - tokens:
        return f"{tokens} tokens from slot {start} do not fit a {k_cache.shape[2]}-slot cache"
    if any(t.stride(-1) != 1 for t in (q, k, v, cos, sin, k_cache, v_cache)):
        return "every operand needs a unit stride along D"
    return takes(q.unsqueeze(0).transpose(1, 2), k_cache, mask)


def rope_few_query_attention(q, k, v, cos, sin, k_cache, v_cache, start, mask=None, scale=None, softcap=None,
                             pdl=False):
    """rope_append_rows then few_query_attention, in the attention's launches: q [L, H, D], k and v [L, KVH, D]
    (the projections' outputs), cos and sin [L, D] (rotate-half), caches [1, KVH, N, D]; the new tokens' rotated
    keys and values go to slots start.. of the caches (in place) and every query, rotated, attends over the
    caches with them; [1, L, H, D]. The first launch's programs rotate their own rows of q; the new slots are
    left out of the caches' chunks and are one more chunk of the launch, a block their size whose programs
    rotate the keys from k itself, so no launch before it writes the cache (the K/V head's first row tile
    writes them there for whoever reads the cache next) and no program does more than one block's work.
    Two designs before it were slower than rope_append_rows and the kernel (pi0's step, H200, 2026-12-04,
    torch 2.11): the new keys rotated inside every [BLOCK_N, D] block under a mask (four more fp32 tiles that
    size: 255 registers, 15.3 us a call against 4.8 + 1.8 unfused), then the chunk the new slots start in
    taking them as a second block (7.1 us; 10.9 against 9.7 us unfused in benchmarks/few_query_attention.py)."""
    return torch.ops.playbook.rope_few_query_attention(q, k, v, cos, sin, k_cache, v_cache, int(start), mask,
                                                       float(scale or 0.0), float(softcap or 0.0), bool(pdl))


@torch.library.custom_op("playbook::rope_few_query_attention", mutates_args=("k_cache", "v_cache"))
def _rope_few_query_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       k_cache: torch.Tensor, v_cache: torch.Tensor, start: int, mask: Optional[torch.Tensor],
                       scale: float, softcap: float, pdl: bool) -> torch.Tensor:
    check_device("rope_few_query_attention", *(t for t in (q, k, v, cos, sin, k_cache, v_cache, mask)
                                               if t is not None))
    why = rope_takes(q, k, v, cos, sin, k_cache, v_cache, start, mask)
    if why:
        raise ValueError(f"playbook.kernels.rope_few_query_attention: {why}")
    return _run(q.unsqueeze(0).transpose(1, 2), k_cache, v_cache, mask, scale, softcap, 0, 0, 0, 0, False, pdl,
                rope=(k, v, cos, sin, start))


@_rope_few_query_op.register_fake
def _(q, k, v, cos, sin, k_cache, v_cache, start, mask, scale, softcap, pdl):
    return q.new_empty(1, q.shape[0], q.shape[1], q.shape[2])
