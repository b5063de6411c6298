"""Decode attention (one query token, long KV, batch 1) in Triton: the custom-kernel lab's worked example.

    out = decode_attention_v1(q, k, v)                    # one program per (batch, head): few programs
    out = decode_attention_split(q, k, v, splits=None)    # flash-decoding: KV split across programs + reduce
    out = decode_attention_filled(q, k, v, length)        # split, reading only the first `length` slots
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
"""
import math

import torch

import triton
import triton.language as tl

from ._triton import check_device, next_pow2


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


def _check(q, k, v):
    check_device("decode_attention", q, k, v)
    b, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or h % k.shape[1] or k.shape[3] != d or d & (d - 1):
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: want q [B, H, D], "
                         "k and v [B, KVH, N, D], H a multiple of KVH, D a power of two")
    return b, h, d, k.shape[1], k.shape[2]


def sm_count(device):
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None


def default_splits(b, h, n, block_n, device, waves=4):
    """Enough chunks for `waves` x the SM count of programs, no chunk shorter than one block."""
    sms = sm_count(device) or 4
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
