"""Latency of one step: CUDA events around each call after warm-up (wall clock on a CPU); p50 and spread.

    t = time_step(step, device, iters=200, warmup=20)            # Timing(p50_ms=..., p95_ms=..., ...)
    ts = time_side_by_side({"before": a, "after": b}, device)    # interleaved rounds, one process
    verdict(ts["after"], ts["before"])                           # "faster" | "slower" | "same"

Each call is followed by a stream-level sync, so a sample is the latency of one batch-1 call, launch
overhead included. Side-by-side timing alternates the contenders in rounds so that clock and thermal
drift hit both alike; the spread of the per-round ratios is the noise a decision must beat. Python's
garbage collector is off while samples are taken (`no_gc`). Timing waits for the chain's kernels
started ahead to finish warming up (playbook/quiet.py).
"""
import contextlib
import gc
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from .devices import sync
from .quiet import quiet

MIN_NOISE = 0.02   # the source's auto-revert threshold: differences under 2% are never called real
# NOTE: a slow step gets fewer samples: no more than SAMPLE_S seconds of them a contender, and never under
# MIN_SAMPLES. pi0 full's eager step (212 ms on the H200, 2026-12-01) took 12.7 s of samples a timing at
# --iters 50, in baseline, again beside phase 1's candidates and again in verify; 20 samples of a step that
# long put its median within a fraction of a percent. A step under SAMPLE_S / iters is untouched.
# SAMPLE_S went from 4 to 2 s: llama 1b's eager step (20.8 ms on the H200, 2026-12-02) took all 200 samples,
# 4.2 s a timing, in baseline, beside phase 1's candidates and in verify; 96 samples of it (2 s) still put
# the median of an eager step within its own spread, and the compiled steps (1 ms) keep all their samples.
SAMPLE_S = 2.0
MIN_SAMPLES = 20


@dataclass
class Timing:
    p50_ms: float
    p95_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    iters: int
    round_p50_ms: list = field(default_factory=list)

    def as_dict(self):
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _percentile(sorted_ms, q):
    i = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[i]


def summarize(samples_ms, round_p50_ms=()):
    s = sorted(samples_ms)
    return Timing(p50_ms=statistics.median(s), p95_ms=_percentile(s, 0.95), mean_ms=statistics.fmean(s),
                  std_ms=statistics.pstdev(s), min_ms=s[0], max_ms=s[-1], iters=len(s),
                  round_p50_ms=[round(x, 5) for x in round_p50_ms])


def _samples(step, device, iters):
    """iters latencies in ms, each one call followed by a stream-level sync."""
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        stream = torch.cuda.current_stream()
        for s, e in zip(starts, ends):
            s.record(stream)
            step()
            e.record(stream)
            stream.synchronize()
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def warm_up(step, device, warmup):
    """Run step warmup times, each synced; returns the fastest call's seconds (None without a warm-up): a
    first call that still captures or autotunes does not count."""
    fastest = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        step()
        sync(device)
        took = time.perf_counter() - t0
        fastest = took if fastest is None else min(fastest, took)
    return fastest


def capped(iters, call_s):
    """How many samples to take of a step whose call takes call_s seconds: iters, or fewer where they would
    take longer than SAMPLE_S (never under MIN_SAMPLES, never over iters)."""
    if not call_s:
        return iters
    return min(iters, max(MIN_SAMPLES, int(SAMPLE_S / call_s)))


@contextlib.contextmanager
def no_gc():
    """Python's garbage collector off while samples are taken, as timeit does: a full collection of a large
    heap (a test process, Triton's interpreter) inside one sample made a 60x slower candidate's verdict
    "same" on a 2-core CPU. No collection before: gemm and attention time dozens of calls a phase, and a
    full collection of a process holding a model and its compiled graphs would be paid before each."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def time_step(step, device, iters=100, warmup=10):
    with torch.no_grad(), quiet():
        call_s = warm_up(step, device, warmup)
        with no_gc():
            return summarize(_samples(step, device, capped(iters, call_s)))


def time_side_by_side(steps, device, iters=100, warmup=10, rounds=5):
    """Time several steps in alternating rounds; each gets iters samples in all (fewer for a slow step:
    capped())."""
    samples = {name: [] for name in steps}
    round_p50 = {name: [] for name in steps}
    with torch.no_grad(), quiet():
        per_round = {name: max(1, capped(iters, warm_up(step, device, warmup)) // rounds)
                     for name, step in steps.items()}
        with no_gc():
            for _ in range(rounds):
                for name, step in steps.items():
                    got = _samples(step, device, per_round[name])
                    samples[name] += got
                    round_p50[name].append(statistics.median(got))
    return {name: summarize(samples[name], round_p50[name]) for name in steps}


def graphs_side_by_side(sides, calls, device, iters=15, warmup=3):
    """{name: us a call}: each side (a function making `calls` calls) captured once in a CUDA graph, the
    replays timed side by side; a call's time includes the launch gaps inside the graph. GPU only."""
    from .capture import GraphStep
    graphs = {name: GraphStep(side, (), {}).graph.replay for name, side in sides.items()}
    t = time_side_by_side(graphs, device, iters=iters, warmup=warmup)
    return {name: round(t[name].p50_ms * 1e3 / calls, 2) for name in sides}


def noise(candidate: Timing, reference: Timing):
    """Relative noise of the ratio candidate/reference: half the range of per-round ratios, at least 2%."""
    ratios = [c / r for c, r in zip(candidate.round_p50_ms, reference.round_p50_ms) if r > 0]
    spread = (max(ratios) - min(ratios)) / 2 if len(ratios) > 1 else 0.0
    return max(MIN_NOISE, spread)


def verdict(candidate: Timing, reference: Timing):
    """'faster', 'slower' or 'same' (within noise) for candidate against reference."""
    ratio = candidate.p50_ms / reference.p50_ms
    n = noise(candidate, reference)
    if ratio > 1 + n:
        return "slower"
    if ratio < 1 - n:
        return "faster"
    return "same"
