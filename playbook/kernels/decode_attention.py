"""Decode attention (one query token, long KV, batch 1) in Triton: the custom-kernel lab's worked example.

    out = decode_attention_v1(q, k, v)                    # one program per (batch, head): few programs
    out = decode_attention_split(q, k, v, splits=None)    # flash-decoding: KV split across programs + reduce
    out = decode_attention_filled(q, k, v, length)        # split, reading only the first `length` slots
    out = decode_attention_rope_append(q, k, v, cos, sin, k_cache, v_cache, position)   # one launch a layer
    ref = reference.decode_attention(q, k, v)

q: [B, H, D]; k, v: [B, KVH, N, D] with H a multiple of KVH (grouped-query attention); out: [B, H, D].
Version 1 walks the whole KV length in one program per (batch, head): 32 heads give 32 programs on a
132-SM H100, and most of the GPU idles. The split version gives each program one chunk of the KV
length (partial output and log-sum-exp), then a second kernel combines the chunks; `splits` defaults
to enough programs for 4x the SM count (`programs()` says how many each version launches).

A static KV cache holds `max_cache` slots of which a decode step at position P has filled P + 1.
`decode_attention_filled` takes that count as a tensor on the device (`length`, int32 [1]): the grid is
sized by the whole cache, so one captured CUDA graph replays for every position, and each program reads
the count and loads only the filled slots of its chunk (a chunk past the count exits at once). It is
the torch custom op `playbook::decode_attention`, opaque to Inductor and capturable.

`decode_attention_rope_append` is a decode layer's whole attention in one launch, at batch 1 (as
FlashAttention's `flash_attn_with_kvcache` does with rotary_cos/sin and k, v): it takes the projections'
raw q [H, D], k and v [KVH, D], the rotary cos/sin [D] (rotate-half convention), the caches [1, KVH, N, D]
and the position as a tensor. Each program rotates its query head; the program of each KV head's first
query head, in the chunk that holds the position, rotates k and writes k and v into the caches there;
programs of the same KV head that read that slot use the new k and v from registers (the write may not
have landed). The chunks are combined in the same launch: each program adds one to its head's counter
after writing its partial result, and the one that finds every other chunk done reads them all, writes
the output and sets the counter back to zero for the next call (one int32 per head, kept per device).
A program walks `chunk` slots (64 by default), and only the chunks that hold filled slots do anything (a
decode at position 128 of a 1024-slot cache: 3 of 16); where one chunk holds them all, it writes the
output itself, with no combine. On
Hopper it takes part in Programmatic Dependent Launch as Inductor's kernels do: it may launch before the
kernel that writes q, k and v ends, reads the position and its first block of the cache meanwhile, waits for
that kernel before it reads q, k and v, and lets the next one launch once its reads are done. The rotary
embedding, the two cache writes, the length and the combine were five more launches a layer. It is the custom op `playbook::decode_attention_rope_append`, which mutates the caches.
"""
import functools
import math

import torch

import triton
import triton.language as tl

from ._triton import check_device, next_pow2, sm_count, zero_counters


@triton.jit
def _decode_v1(Q, K, V, O, N, scale, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    pid = tl.program_id(0)                     # one (batch, head); its KV head is pid // GROUP
    kv = pid // GROUP
    d = tl.arange(0, D)
    q = tl.load(Q + pid * D + d).to(tl.float32)
    m = tl.zeros([1], dtype=tl.float32) - float("inf")
    l_sum = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        inside = n < N
        k = tl.load(K + kv * N * D + n[:, None] * D + d[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        s = tl.where(inside, tl.sum(k * q[None, :], 1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        v = tl.load(V + kv * N * D + n[:, None] * D + d[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        l_sum = l_sum * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m = m_new
    tl.store(O + pid * D + d, (acc / l_sum).to(O.dtype.element_ty))


@triton.jit
def _decode_split(Q, K, V, Part, Lse, N, CHUNK, SPLITS, scale, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                  D: tl.constexpr):
    pid, split = tl.program_id(0), tl.program_id(1)     # one (batch, head) x one chunk of the KV length
    kv = pid // GROUP
    d = tl.arange(0, D)
    q = tl.load(Q + pid * D + d).to(tl.float32)
    m = tl.zeros([1], dtype=tl.float32) - float("inf")
    l_sum = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, N)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        inside = n < hi
        k = tl.load(K + kv * N * D + n[:, None] * D + d[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        s = tl.where(inside, tl.sum(k * q[None, :], 1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        v = tl.load(V + kv * N * D + n[:, None] * D + d[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        l_sum = l_sum * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m = m_new
    row = pid * SPLITS + split
    tl.store(Part + row * D + d, acc / tl.maximum(l_sum, 1e-30))
    tl.store(Lse + row + tl.arange(0, 1), m + tl.log(tl.maximum(l_sum, 1e-30)))


@triton.jit
def _decode_filled(Q, K, V, Part, Lse, Len, N, CHUNK, SPLITS, scale, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                   D: tl.constexpr):
    pid, split = tl.program_id(0), tl.program_id(1)     # one (batch, head) x one chunk of the cache
    kv = pid // GROUP
    d = tl.arange(0, D)
    q = tl.load(Q + pid * D + d).to(tl.float32)
    m = tl.zeros([1], dtype=tl.float32) - float("inf")
    l_sum = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    filled = tl.minimum(tl.load(Len), N)                # slots written so far: read these, not the cache
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, filled)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        inside = n < hi
        k = tl.load(K + kv * N * D + n[:, None] * D + d[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        s = tl.where(inside, tl.sum(k * q[None, :], 1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        v = tl.load(V + kv * N * D + n[:, None] * D + d[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        l_sum = l_sum * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m = m_new
    row = pid * SPLITS + split
    tl.store(Part + row * D + d, acc / tl.maximum(l_sum, 1e-30))     # an empty chunk: 0 with weight exp(-inf)
    tl.store(Lse + row + tl.arange(0, 1), m + tl.log(tl.maximum(l_sum, 1e-30)))


@triton.jit
def _combine(Part, Lse, O, SPLITS, S_POW2: tl.constexpr, D: tl.constexpr):
    pid = tl.program_id(0)
    s = tl.arange(0, S_POW2)
    d = tl.arange(0, D)
    inside = s < SPLITS
    lse = tl.load(Lse + pid * SPLITS + s, mask=inside, other=float("-inf"))
    w = tl.exp(lse - tl.max(lse, 0))
    w = w / tl.sum(w, 0)
    part = tl.load(Part + (pid * SPLITS + s[:, None]) * D + d[None, :], mask=inside[:, None], other=0.0)
    tl.store(O + pid * D + d, tl.sum(w[:, None] * part, 0).to(O.dtype.element_ty))


@triton.jit
def _attend_block(m, l_sum, acc, k, v, n, inside, pos, q, k_new, v_new, scale):
    """One block of cache slots n (loaded as k, v, with the slot at pos not loaded) into the online softmax:
    the slot at pos takes the new k and v from registers."""
    new = (n == pos)[:, None]
    k = tl.where(new, k_new[None, :], k).to(tl.float32)
    s = tl.where(inside, tl.sum(k * q[None, :], 1) * scale, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 0))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new)
    v = tl.where(new, v_new[None, :], v).to(tl.float32)
    return m_new, l_sum * alpha + tl.sum(p, 0), acc * alpha + tl.sum(p[:, None] * v, 0)


# NOTE: what this kernel reads before it waits, under PDL. A PDL kernel may start while the kernel just before it
# runs, and that one has itself waited for the one before it (ours and Inductor's wait before they let the next
# launch; a kernel without PDL ends before the next starts): everything older than the kernel just before is
# complete. The position (a graph input, or a cache layer's counter that the step before advanced) and the cache's
# old slots (written by earlier steps) are that old, so each program reads the position, and an active one its
# chunk's first block of K and V, before gdc_wait; q, k, v, cos and sin (the projections' and the rotary's
# outputs) after it. The loads of K and V then overlap the projection's tail instead of following it. Chunks that
# hold no filled slot do not wait at all. Not yet timed on a GPU (2026-12-04): the earlier kernel waited first,
# and took 8.0 us a layer in llama 1b's step against 5.45 alone (benchmarks/results/ladder-time/session16-*).
@triton.jit
def _decode_rope_append(Q, K, V, Cos, Sin, KC, VC, Pos, Part, Lse, Count, O, N, CHUNK, scale,
                        GROUP: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr, S_POW2: tl.constexpr,
                        PDL: tl.constexpr):
    pid, split = tl.program_id(0), tl.program_id(1)     # one query head x one chunk of the cache
    # the position and the cache's old slots are no output of the kernel just before this one (see the NOTE on
    # PDL below): read before waiting for it
    pos = tl.load(Pos).to(tl.int32)
    filled = tl.minimum(pos + 1, N)
    active = tl.cdiv(filled, CHUNK)                     # chunks holding filled slots; the rest do nothing
    lo = split * CHUNK
    if split < active:
        kv = pid // GROUP
        d = tl.arange(0, D)
        hi = tl.minimum(lo + CHUNK, filled)
        n = lo + tl.arange(0, BLOCK_N)                  # the chunk's first block of slots, loaded before the wait
        inside = n < hi
        old = (inside & (n != pos))[:, None]
        k_first = tl.load(KC + kv * N * D + n[:, None] * D + d[None, :], mask=old, other=0.0)
        v_first = tl.load(VC + kv * N * D + n[:, None] * D + d[None, :], mask=old, other=0.0)
        if PDL:     # launched before the kernel that writes q, k and v ends: wait for it here
            tl.extra.cuda.gdc_wait()
        rot = (d + D // 2) % D                          # rotate_half: [-x2, x1]
        sign = tl.where(d < D // 2, -1.0, 1.0)
        cos = tl.load(Cos + d).to(tl.float32)
        sin = tl.load(Sin + d).to(tl.float32)
        q = tl.load(Q + pid * D + d).to(tl.float32) * cos + sign * tl.load(Q + pid * D + rot).to(tl.float32) * sin
        q = q.to(Q.dtype.element_ty).to(tl.float32)     # rounded as the model's own rotary output is
        k_new = tl.load(K + kv * D + d).to(tl.float32) * cos + sign * tl.load(K + kv * D + rot).to(tl.float32) * sin
        k_new = k_new.to(KC.dtype.element_ty)
        v_new = tl.load(V + kv * D + d).to(VC.dtype.element_ty)
        if (pid % GROUP == 0) & (pos >= lo) & (pos < lo + CHUNK) & (pos < N):     # one writer per KV head
            tl.store(KC + (kv * N + pos) * D + d, k_new)
            tl.store(VC + (kv * N + pos) * D + d, v_new)
        m = tl.zeros([1], dtype=tl.float32) - float("inf")
        l_sum = tl.zeros([1], dtype=tl.float32)
        acc = tl.zeros([D], dtype=tl.float32)
        m, l_sum, acc = _attend_block(m, l_sum, acc, k_first, v_first, n, inside, pos, q, k_new, v_new, scale)
        for start in range(lo + BLOCK_N, hi, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            inside = n < hi
            old = (inside & (n != pos))[:, None]
            k = tl.load(KC + kv * N * D + n[:, None] * D + d[None, :], mask=old, other=0.0)
            v = tl.load(VC + kv * N * D + n[:, None] * D + d[None, :], mask=old, other=0.0)
            m, l_sum, acc = _attend_block(m, l_sum, acc, k, v, n, inside, pos, q, k_new, v_new, scale)
        if PDL:     # every read of the kernel before this one is done: the next kernel may start launching
            tl.extra.cuda.gdc_launch_dependents()
        if active == 1:                                 # one chunk: its result is the output
            tl.store(O + pid * D + d, (acc / tl.maximum(l_sum, 1e-30)).to(O.dtype.element_ty))
        else:
            row = pid * S_POW2 + split
            tl.store(Part + row * D + d, acc / tl.maximum(l_sum, 1e-30))
            tl.store(Lse + row + tl.arange(0, 1), m + tl.log(tl.maximum(l_sum, 1e-30)))
            done = tl.atomic_add(Count + pid, 1, sem="acq_rel")   # release this chunk; the last one combines
            if done == active - 1:
                s_idx = tl.arange(0, S_POW2)
                valid = s_idx < active
                lse = tl.load(Lse + pid * S_POW2 + s_idx, mask=valid, other=float("-inf"), cache_modifier=".cg")
                w = tl.exp(lse - tl.max(lse, 0))
                w = w / tl.sum(w, 0)
                part = tl.load(Part + (pid * S_POW2 + s_idx[:, None]) * D + d[None, :], mask=valid[:, None],
                               other=0.0, cache_modifier=".cg")
                tl.store(O + pid * D + d, tl.sum(w[:, None] * part, 0).to(O.dtype.element_ty))
                tl.atomic_xchg(Count + pid, 0)           # ready for the next call


def _check(q, k, v):
    check_device("decode_attention", q, k, v)
    b, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or h % k.shape[1] or k.shape[3] != d or d & (d - 1):
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: want q [B, H, D], "
                         "k and v [B, KVH, N, D], H a multiple of KVH, D a power of two")
    return b, h, d, k.shape[1], k.shape[2]


def default_splits(b, h, n, block_n, device, waves=4):
    """Enough chunks for `waves` x the SM count of programs, no chunk shorter than one block."""
    sms = sm_count(device)
    return max(1, min(math.ceil(waves * sms / (b * h)), math.ceil(n / block_n)))


def programs(version, q, k, splits=None, block_n=64):
    """How many programs (CTAs) a version launches for these shapes (the combine kernel's not counted)."""
    b, h, _, _, n = _check(q, k, k)
    if version == "v1":
        return b * h
    return b * h * (splits or default_splits(b, h, n, block_n, q.device))


def decode_attention_v1(q, k, v, block_n=64, num_warps=4):
    b, h, d, kvh, n = _check(q, k, v)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    return _launch_v1(q, k, v, out, n, h // kvh, block_n, d, num_warps)


def _launch_v1(q, k, v, out, n, group, block_n, d, num_warps):
    _decode_v1[(q.shape[0] * q.shape[1],)](q, k, v, out, n, 1.0 / math.sqrt(d), GROUP=group, BLOCK_N=block_n,
                                          D=d, num_warps=num_warps)
    return out


def decode_attention_split(q, k, v, splits=None, block_n=64, num_warps=4):
    b, h, d, kvh, n = _check(q, k, v)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    splits = splits or default_splits(b, h, n, block_n, q.device)
    chunk = math.ceil(math.ceil(n / splits) / block_n) * block_n
    splits = math.ceil(n / chunk)                        # no empty chunk
    part = torch.empty(b * h * splits, d, device=q.device, dtype=torch.float32)
    lse = torch.empty(b * h * splits, device=q.device, dtype=torch.float32)
    _decode_split[(b * h, splits)](q, k, v, part, lse, n, chunk, splits, 1.0 / math.sqrt(d), GROUP=h // kvh,
                                   BLOCK_N=block_n, D=d, num_warps=num_warps)
    out = torch.empty_like(q)
    _combine[(b * h,)](part, lse, out, splits, S_POW2=next_pow2(splits), D=d)
    return out


def decode_attention_filled(q, k, v, length, scale=None, splits=None, block_n=64, num_warps=4):
    """q [B, H, D], k/v [B, KVH, N, D] (a static cache), length int32 [1] on the device: attention of q over
    the first `length` slots only (the slots a decode step has filled; the rest are never read)."""
    return torch.ops.playbook.decode_attention(q, k, v, length, float(scale or 0.0), int(splits or 0),
                                               int(block_n), int(num_warps))


@torch.library.custom_op("playbook::decode_attention", mutates_args=())
def _decode_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: torch.Tensor, scale: float,
                         splits: int, block_n: int, num_warps: int) -> torch.Tensor:
    b, h, d, kvh, n = _check(q, k, v)
    check_device("decode_attention", length)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    splits = splits or default_splits(b, h, n, block_n, q.device)
    chunk = math.ceil(math.ceil(n / splits) / block_n) * block_n
    splits = math.ceil(n / chunk)
    part = torch.empty(b * h * splits, d, device=q.device, dtype=torch.float32)
    lse = torch.empty(b * h * splits, device=q.device, dtype=torch.float32)
    _decode_filled[(b * h, splits)](q, k, v, part, lse, length.to(torch.int32), n, chunk, splits,
                                    scale or 1.0 / math.sqrt(d), GROUP=h // kvh, BLOCK_N=block_n, D=d,
                                    num_warps=num_warps)
    out = torch.empty_like(q)
    _combine[(b * h,)](part, lse, out, splits, S_POW2=next_pow2(splits), D=d)
    return out


@_decode_attention_op.register_fake
def _(q, k, v, length, scale, splits, block_n, num_warps):
    return q.new_empty(q.shape)


_counters = {}      # (device, heads) -> int32 [heads] of zeros: the combine's counters, zero between calls


def _counter(device, heads):
    return zero_counters(_counters, device, heads)


def _check_rope_append(q, k, v, cos, sin, k_cache, v_cache, position):
    check_device("decode_attention_rope_append", q, k, v, cos, sin, k_cache, v_cache, position)
    if k_cache.dim() != 4 or k_cache.shape[0] != 1 or k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}: want both [1, KVH, N, D]")
    _, kvh, n, d = k_cache.shape
    if q.numel() % d or k.numel() != kvh * d or v.numel() != kvh * d or cos.numel() != d or sin.numel() != d:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, cos {tuple(cos.shape)}: want "
                         f"q H x {d} values, k and v {kvh} x {d}, cos and sin {d} (one token at batch 1)")
    h = q.numel() // d
    if h % kvh or d & (d - 1) or d < 2 or position.numel() != 1:
        raise ValueError(f"{h} query heads over {kvh} KV heads of size {d}, position {tuple(position.shape)}: want "
                         "the heads a multiple of the KV heads, D a power of two, one position")
    if not k_cache.is_contiguous() or not v_cache.is_contiguous():
        raise ValueError("k_cache and v_cache must be contiguous (the kernel writes them in place)")
    return h, kvh, n, d


# NOTE: cache slots a program walks by default. llama 1b's shapes on the H200 (2026-11-23,
# benchmarks/decode_attention.py, 16 calls in a graph): 64-slot chunks of one 64-slot block 5.45 / 6.83 / 7.71 us
# a call at positions 128 / 511 / 1023; 128 of 128: 6.22 / 6.31 / 7.94; 256 of 128 (8 warps): 5.66 / 7.91 / 9.76;
# one 1024 chunk: 6.21 / 13.82 / 30.76. Many short chunks and the in-launch combine beat one long walk.
ROPE_APPEND_CHUNK = 64


def decode_attention_rope_append(q, k, v, cos, sin, k_cache, v_cache, position, scale=None, chunk=None,
                                 block_n=64, num_warps=4):
    """One decode token's attention at batch 1, with its rotary embedding and cache write: q (H x D values),
    k and v (KVH x D) as the projections give them, before the rotary embedding; cos, sin [D]; k_cache,
    v_cache [1, KVH, N, D], written at `position` (an int tensor of one element) with the rotated k and v.
    Returns [H, D]: attention of the rotated q over slots 0..position. Each query head's program walks
    `chunk` slots (a multiple of block_n); a position past the first chunk splits the work over
    ceil((position + 1) / chunk) programs a head, combined in the same launch. On Hopper (PDL) the position and
    the caches' old slots are read before the kernel launched just before this one is waited for: that kernel
    must not write them (a decode step's projection does not; see the NOTE on PDL at the kernel)."""
    return torch.ops.playbook.decode_attention_rope_append(q, k, v, cos, sin, k_cache, v_cache, position,
                                                           float(scale or 0.0), int(chunk or 0), int(block_n),
                                                           int(num_warps))


@functools.lru_cache(maxsize=None)
def launch_pdl(device):
    """Whether our launches can take part in Programmatic Dependent Launch on this device (Hopper and newer, not
    in the interpreter, not on ROCm, and a Triton that knows the launch option); asked once a device, not at
    every call."""
    if device.type != "cuda" or torch.version.hip or not torch.cuda.is_available():
        return False
    try:
        from triton.language.extra.cuda import gdc_wait  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


@torch.library.custom_op("playbook::decode_attention_rope_append", mutates_args=("k_cache", "v_cache"))
def _rope_append_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor, scale: float, chunk: int,
                    block_n: int, num_warps: int) -> torch.Tensor:
    h, kvh, n, d = _check_rope_append(q, k, v, cos, sin, k_cache, v_cache, position)
    q, k, v = (t.reshape(-1, d).contiguous() for t in (q, k, v))
    cos, sin = cos.reshape(d).contiguous(), sin.reshape(d).contiguous()
    chunk = math.ceil((chunk or ROPE_APPEND_CHUNK) / block_n) * block_n
    splits = math.ceil(n / chunk)
    s_pow2 = next_pow2(splits)
    part = torch.empty(h * s_pow2, d, device=q.device, dtype=torch.float32)
    lse = torch.empty(h * s_pow2, device=q.device, dtype=torch.float32)
    out = torch.empty(h, d, device=q.device, dtype=q.dtype)
    pdl = launch_pdl(q.device)
    _decode_rope_append[(h, splits)](q, k, v, cos, sin, k_cache, v_cache, position.reshape(1), part, lse,
                                     _counter(q.device, h), out, n, chunk, scale or 1.0 / math.sqrt(d),
                                     GROUP=h // kvh, BLOCK_N=block_n, D=d, S_POW2=s_pow2, PDL=pdl,
                                     num_warps=num_warps, **({"launch_pdl": True} if pdl else {}))
    return out


@_rope_append_op.register_fake
def _(q, k, v, cos, sin, k_cache, v_cache, position, scale, chunk, block_n, num_warps):
    d = k_cache.shape[-1]
    return q.new_empty(q.numel() // d, d)
