"""Warm the GPU's L2 cache with tensors a later kernel will read: one launch, nothing written.

    l2_prefetch(w_o, w_gate_up, w_down)                  # up to MAX_TENSORS tensors, any dtype, contiguous
    l2_prefetch(w, mode="bulk", programs=66, stride=4096)

What it is for (issue 19, the memory wall): a few-row step's projections are latency-bound. In pi0's
denoise loop a layer's o, gate+up and down projections read 29 MB of weights at a fraction of HBM's
bandwidth (about 17 us a layer-step for a 6 us floor, H200, 2026-12-03), while the rotary, attention and
combine kernels before them (about 10 us) read under 1 MB. Asked for during those kernels, the weights
could be in L2 (50 MB on H100/H200) when the projections read them. Whether that pays is measured by
`benchmarks/l2_prefetch.py`; no phase offers it until it has (not a custom op yet: the benchmark calls it
in a CUDA graph of its own).

Modes (each program takes every `programs`-th block of addresses of every tensor):
- "line": one `prefetch.global.L2::evict_last` a `stride` bytes (128: an L2 line). NVIDIA, sm_80+.
- "bulk": one `cp.async.bulk.prefetch.L2.global` of `stride` bytes (a multiple of 16) a thread. sm_90+.
- "load": a one-byte load a `stride` bytes, summed into a value no one reads: what any GPU has (ROCm), and
  what Triton's interpreter runs (the CPU tests). It also counts the addresses it touched into `counter`
  (the tests hold it to the tensors' sizes).
None of them waits for the data: a prefetch is fire-and-forget, so the launch can end before its bytes
arrive, which is the point (the kernels after it run while HBM fills L2). "load" does wait.
"""
import torch

import triton
import triton.language as tl

from ._triton import INTERPRET, check_device, sm_count

MAX_TENSORS = 4
MODES = ("line", "bulk", "load")
LINE = 128              # bytes of an L2 line on NVIDIA GPUs
BLOCK = 256             # addresses a program asks for at a time (one per thread at 8 warps)


@triton.jit
def _prefetch_block(base, nbytes, start, STRIDE: tl.constexpr, BLOCK: tl.constexpr, MODE: tl.constexpr):
    """Ask for the BLOCK addresses of one tensor from byte `start` on, STRIDE bytes apart; returns (addresses
    inside the tensor, their bytes' sum) for "load", zeros otherwise. The asm has no mask: an address past
    the end asks for the tensor's first byte again instead."""
    off = start + tl.arange(0, BLOCK).to(tl.int64) * STRIDE
    inside = off < nbytes
    ptr = base + tl.where(inside, off, 0)
    n = 0
    s = 0
    if MODE == 0:       # line
        tl.inline_asm_elementwise("prefetch.global.L2::evict_last [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptr],
                                  dtype=tl.int32, is_pure=False, pack=1)
    elif MODE == 1:     # bulk: STRIDE bytes from each address, cut at the tensor's end (down to 16)
        size = tl.where(inside, tl.minimum(nbytes - off, STRIDE) // 16 * 16, 0).to(tl.int32)
        tl.inline_asm_elementwise("{\n\t.reg .pred p;\n\tsetp.ne.s32 p, $2, 0;\n\t"
                                  "@p cp.async.bulk.prefetch.L2.global [$1], $2;\n\tmov.u32 $0, 0;\n\t}",
                                  "=r,l,r", [ptr, size], dtype=tl.int32, is_pure=False, pack=1)
    else:               # load
        x = tl.load(ptr, mask=inside, other=0)
        n = tl.sum(inside.to(tl.int32), 0)
        s = tl.sum(x.to(tl.int32), 0)
    return n, s


@triton.jit
def _l2_prefetch(T0, T1, T2, T3, N0, N1, N2, N3, Counter, never, programs,
                 COUNT: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr, MODE: tl.constexpr):
    pid = tl.program_id(0)
    step = programs.to(tl.int64) * BLOCK * STRIDE      # bytes between one program's blocks
    lines = tl.full([], 0, tl.int32)
    check = tl.full([], 0, tl.int32)
    for i in tl.static_range(COUNT):
        if i == 0:
            base, nbytes = T0, N0
        elif i == 1:
            base, nbytes = T1, N1
        elif i == 2:
            base, nbytes = T2, N2
        else:
            base, nbytes = T3, N3
        start = pid.to(tl.int64) * BLOCK * STRIDE
        while start < nbytes:
            n, s = _prefetch_block(base, nbytes, start, STRIDE, BLOCK, MODE)
            lines += n
            check += s
            start += step
    if MODE == 2:
        tl.atomic_add(Counter, lines)
        if check == never:                              # never true (the sum is at least 0): keeps the loads
            tl.store(Counter + 1, check)


def default_mode(device):
    """"line" on an NVIDIA GPU, "load" in the interpreter and on ROCm (no PTX there)."""
    if INTERPRET or device.type != "cuda" or torch.version.hip:
        return "load"
    return "line"


def l2_prefetch(*tensors, mode="", programs=0, stride=0, num_warps=8, counter=None):
    """Ask the GPU to bring the tensors' bytes into L2; writes nothing they hold. mode: one of MODES ("":
    default_mode); programs: the grid (0: the SM count); stride: bytes between addresses (0: LINE, or 4096
    for "bulk"); counter: an int32 [2] on the tensors' device that "load" adds the addresses it touched to
    (for tests). Returns counter (None if not given)."""
    if not 1 <= len(tensors) <= MAX_TENSORS:
        raise ValueError(f"playbook.kernels.l2_prefetch: 1 to {MAX_TENSORS} tensors, got {len(tensors)}")
    device = tensors[0].device
    mode = mode or default_mode(device)
    if mode not in MODES:
        raise ValueError(f"playbook.kernels.l2_prefetch: mode {mode!r} is not one of {MODES}")
    if mode != "load" and (device.type != "cuda" or torch.version.hip):
        raise ValueError(f"playbook.kernels.l2_prefetch: mode {mode!r} is NVIDIA PTX; here only 'load' runs")
    stride = int(stride or (4096 if mode == "bulk" else LINE))
    if stride <= 0 or (mode == "bulk" and stride % 16):
        raise ValueError(f"playbook.kernels.l2_prefetch: stride {stride} must be positive (a multiple of 16 "
                         f"for 'bulk')")
    for t in tensors:
        if mode == "bulk" and t.data_ptr() % 16:
            raise ValueError("playbook.kernels.l2_prefetch: 'bulk' needs 16-byte aligned tensors")
        if t.device != device or not t.is_contiguous():
            raise ValueError("playbook.kernels.l2_prefetch: contiguous tensors on one device, got "
                             f"{[(tuple(t.shape), str(t.device), t.is_contiguous()) for t in tensors]}")
    check_device("l2_prefetch", *tensors)
    if counter is None and mode == "load":
        counter_arg = torch.zeros(2, dtype=torch.int32, device=device)
    else:
        counter_arg = counter
    launch(tensors, counter_arg, int(programs or sm_count(device)), stride, mode, num_warps)
    return counter


def launch(tensors, counter, programs, stride, mode, num_warps=8):
    """The launch itself, no checks (l2_prefetch checks; the sm_90 compile test calls this with CPU tensors)."""
    flat = [t.reshape(-1).view(torch.uint8) for t in tensors]
    pad = MAX_TENSORS - len(flat)
    _l2_prefetch[(programs,)](*flat, *[flat[0]] * pad, *[f.numel() for f in flat], *[0] * pad,
                              counter if counter is not None else flat[0], -1, programs,
                              COUNT=len(flat), STRIDE=stride, BLOCK=BLOCK, MODE=MODES.index(mode),
                              num_warps=num_warps)


def lines(tensors, stride=LINE):
    """The addresses l2_prefetch asks for: each tensor's bytes over stride, rounded up."""
    return sum(-(-t.numel() * t.element_size() // stride) for t in tensors)
