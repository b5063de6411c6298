"""One call's GPU time, from a CUDA graph of `calls` back-to-back calls: what the kernel benchmarks share.

    from graph_timing import per_call_us
    us = per_call_us(step, calls=18)     # step() makes the 18 calls (one a layer, each on its own data)

step() runs a few times first (compiles, autotunes, allocations), is captured once, the graph replayed a
few times more, then `samples` replays are timed with CUDA events; the median replay over `calls` is the
time of one call, launch gaps inside the graph included, Python's dispatch not.
"""
import statistics

import torch


def per_call_us(step, calls, samples=50, warmup=3):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(5):
        graph.replay()
    out = []
    for _ in range(samples):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) * 1000 / calls)
    return round(statistics.median(out), 2)
