"""Where a step's time goes: a torch.profiler trace of the timed step, and its analysis.

    summary = profile_step(step, device, run.path / "traces" / "01-cudagraph.json.gz")
    summary["kernel_count"], summary["gpu_busy_ms"], summary["launch_overhead_ms"], summary["category_ms"]
    step = read_step(trace_path)        # the analysed step's events, for the timeline plot
    diff = trace_diff(before_result, after_result)      # phase results holding those fields

Capture: CPU (and CUDA) activities, shapes recorded, `ProfilerStep#N` markers from prof.step() so
Holistic Trace Analysis can read the file, each call wrapped in a `playbook_step` annotation and followed
by a stream sync. Never inside the timed iterations: the caller profiles after timing.

Analysis of one step (the median of the profiled steps by wall span), from the Chrome trace alone.
kernel_count counts compute kernels; copies and sets (a graph runs its copy nodes as memcpy kernels)
are in gpu_op_count and the memcpy category. launch_overhead_ms is the CPU time inside launch calls as
traced; the profiler (CUPTI) makes a cudaGraphLaunch of N nodes far slower than it is untraced (0.5 ms
for 328 nodes on the H200), so the phase also records host_bound_ms = untraced p50 - GPU busy time.

a kernel belongs to the step whose `playbook_step` window holds the runtime call that launched it
(matched by correlation id). A CUDA graph replay launches all its kernels from one `cudaGraphLaunch`:
they carry that call's correlation id and no shapes, so counts and categories still add up and the
CPU op they belong to is the graph launch. On a CPU there are no kernels: the step's CPU ops are
counted, and their self times categorised, instead; the summary says so.
"""
import bisect
import gzip
import json
import re
import statistics
import tempfile
from pathlib import Path

import torch

from . import stderr_filter

STEP_MARK = "playbook_step"
CATEGORIES = ("gemm", "attention", "norm", "elementwise", "memcpy", "other")
# Kernel names by category, first match wins. CUDA: cuBLAS/cuBLASLt (gemv, gemmSN, nvjet, sm90_xmma),
# CUTLASS, Triton GEMM templates (triton_tem_*mm), flash/fmha/cuDNN attention; ROCm: Tensile (Cijk_),
# hipBLASLt, skinny GEMM (wvSplitK), aiter and CK kernels.
KERNEL_PATTERNS = (
    ("memcpy", r"^(memcpy|memset)\d+_"),         # a graph's copy nodes run as kernels (memcpy32_post)
    ("other", r"nccl|rccl"),                     # collectives: not this step's arithmetic
    ("attention", r"flash|fmha|attn|attention|mha_|sdpa|softmax|paged_att|^_decode_|^_combine$|^_few_query_"),   # ours: playbook/kernels/
    ("gemm", r"gemm|gemv|nvjet|xmma|cutlass|cublas|Cijk_|wvSplitK|triton_tem_\w*mm|splitKreduce|_mm_|bmm|matmul"),
    ("norm", r"rms|norm|rsqrt"),
    ("elementwise", r"elementwise|vectorized|unrolled|triton_|silu|gelu|_and_mul|copy|cat|index|fill|reduce|"
                    r"act_|mul|add|where|embedding|aiter|ck_|^_rope_append"),
)
CPU_OP_PATTERNS = (
    ("attention", r"scaled_dot_product|softmax|attention"),
    ("gemm", r"aten::(mm|addmm|bmm|linear|matmul|baddbmm)$"),
    ("norm", r"norm|rsqrt|rms"),
    ("memcpy", r"aten::(copy_|to|_to_copy|clone|contiguous)$"),
    ("elementwise", r"aten::"),
)
LAUNCH = re.compile(r"Launch|MemcpyAsync|MemsetAsync")
SYNC = re.compile(r"Synchronize")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def categorize(name, patterns=KERNEL_PATTERNS):
    for cat, pat in patterns:
        if re.search(pat, name, re.IGNORECASE):
            return cat
    return "other"


def capture(step, device, path, steps=5, warmup=2):
    """Write a Chrome trace (.json.gz) of `steps` calls after `warmup` unrecorded ones."""
    from torch.profiler import ProfilerActivity, profile, record_function, schedule
    from .devices import sync
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with stderr_filter.filtered(), torch.no_grad(), profile(activities=activities, record_shapes=True,
                                  schedule=schedule(wait=0, warmup=warmup, active=steps, repeat=1),
                                  on_trace_ready=lambda p: p.export_chrome_trace(str(path))) as prof:
        for _ in range(warmup + steps):
            with record_function(STEP_MARK):
                step()
            sync(device)
            prof.step()
    return path


def load(path):
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        return json.load(f)["traceEvents"]


def _union_ms(intervals):
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total / 1e3


def _steps(events):
    """Per profiled step: its window and the events inside it."""
    marks = sorted((e for e in events if e.get("name") == STEP_MARK and e.get("cat") == "user_annotation"
                    and e.get("ph") == "X"), key=lambda e: e["ts"])     # not its gpu_user_annotation twin
    runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and e.get("ph") == "X"]
    gpu = [e for e in events if e.get("cat") in GPU_CATS and e.get("ph") == "X"]
    ops = sorted((e for e in events if e.get("cat") == "cpu_op" and e.get("ph") == "X"), key=lambda e: e["ts"])
    by_corr = {}
    for g in gpu:
        by_corr.setdefault(g.get("args", {}).get("correlation"), []).append(g)
    starts = [m["ts"] for m in marks]
    out = [{"mark": m, "runtime": [], "gpu": [], "ops": []} for m in marks]

    def owner(ts):
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= marks[i]["ts"] + marks[i]["dur"]:
            return out[i]
        return None
    for r in runtime:
        s = owner(r["ts"])
        if s is not None:
            s["runtime"].append(r)
            s["gpu"] += by_corr.get(r.get("args", {}).get("correlation"), [])
    for o in ops:
        s = owner(o["ts"])
        if s is not None:
            s["ops"].append(o)
    return out


def _top_level(ops):
    """Ops not nested inside another op of the same thread (a step's outermost calls)."""
    out, ends = [], {}
    for o in ops:
        tid = o.get("tid")
        if o["ts"] >= ends.get(tid, float("-inf")):
            out.append(o)
            ends[tid] = o["ts"] + o["dur"]
    return out


def _self_ms(ops):
    """[(op, self time in ms)]: each op's duration less that of the ops nested directly inside it."""
    selfs, stacks = {}, {}
    for i, o in enumerate(ops):
        stack = stacks.setdefault(o.get("tid"), [])
        while stack and o["ts"] >= ops[stack[-1]]["ts"] + ops[stack[-1]]["dur"]:
            stack.pop()
        selfs[i] = o["dur"]
        if stack:
            selfs[stack[-1]] -= o["dur"]
        stack.append(i)
    return [(o, max(selfs[i], 0.0) / 1e3) for i, o in enumerate(ops)]


def _launch_owners(launches, ops):
    """{correlation id: (CPU op, its input shapes)} for each launch call: the innermost op running
    around it on its thread (ops sorted by start); a CUDA graph replay has no op of its own. One sweep
    per thread with a stack of open ops: a step of 25k launches among 100k ops (eager pi0) costs a
    fraction of a second, where a scan per launch cost minutes."""
    by_tid = {}
    for o in ops:
        by_tid.setdefault(o.get("tid"), []).append(o)
    out = {}
    for tid, own in by_tid.items():
        mine = sorted((r for r in launches if r.get("tid") == tid), key=lambda r: r["ts"])
        stack, i = [], 0
        for r in mine:
            while i < len(own) and own[i]["ts"] <= r["ts"]:
                while stack and stack[-1]["ts"] + stack[-1]["dur"] < own[i]["ts"]:
                    stack.pop()                       # ended before the next op starts: not around it
                stack.append(own[i])
                i += 1
            while stack and stack[-1]["ts"] + stack[-1]["dur"] < r["ts"]:
                stack.pop()
            out[r.get("args", {}).get("correlation")] = _label(r, stack[-1] if stack else None)
    for r in launches:                                # a launch on a thread that ran no op
        out.setdefault(r.get("args", {}).get("correlation"), _label(r, None))
    return out


def _label(launch, op):
    if "Graph" in launch["name"]:
        return "CUDA graph replay", None
    return (op["name"], op.get("args", {}).get("Input Dims")) if op else ("(no CPU op)", None)


def analyse_step(s):
    """The summary of one step (see the module docstring)."""
    mark = s["mark"]
    t0, cpu_end = mark["ts"], mark["ts"] + mark["dur"]
    if not s["gpu"]:
        cats = dict.fromkeys(CATEGORIES, 0.0)
        per_op = {}
        for o, ms in _self_ms(s["ops"]):
            cat = categorize(o["name"], CPU_OP_PATTERNS)
            cats[cat] += ms
            e = per_op.setdefault(o["name"], {"name": o["name"], "category": cat, "count": 0, "ms": 0.0})
            e["count"] += 1
            e["ms"] += ms
        table = sorted(per_op.values(), key=lambda k: -k["ms"])
        return {"unit": "cpu_op", "kernel_count": None, "cpu_op_count": len(s["ops"]),
                "step_span_ms": round(mark["dur"] / 1e3, 4),
                "cpu_busy_ms": round(sum(o["dur"] for o in _top_level(s["ops"])) / 1e3, 4),
                "gpu_busy_ms": None, "idle_fraction": None, "launch_overhead_ms": None, "launches": 0,
                "syncs": 0, "sync_ms": 0.0, "category_ms": {k: round(v, 4) for k, v in cats.items()},
                "kernel_table": _rounded(table), "gpu_ms_by_op": [],
                "note": "CPU: no GPU kernels; the step's CPU ops are counted and their self times (an op's "
                        "time less the ops inside it) categorised instead; code Inductor generated runs "
                        "unrecorded inside the op that calls it"}
    gpu = sorted(s["gpu"], key=lambda g: g["ts"])
    span_end = max(cpu_end, max(g["ts"] + g["dur"] for g in gpu))
    busy = _union_ms([(g["ts"], g["ts"] + g["dur"]) for g in gpu])
    launches = [r for r in s["runtime"] if LAUNCH.search(r["name"])]
    syncs = [r for r in s["runtime"] if SYNC.search(r["name"])]
    launch_at = {r.get("args", {}).get("correlation"): r for r in launches}
    owners = _launch_owners(launches, s["ops"])
    delays, labels = [], {}                 # labels: correlation id -> (CPU op, shapes), once per launch
    cats = dict.fromkeys(CATEGORIES, 0.0)
    per_kernel, per_op, kernel_count = {}, {}, 0
    for g in gpu:
        corr = g.get("args", {}).get("correlation")
        cat = "memcpy" if g.get("cat") != "kernel" else categorize(g["name"])
        kernel_count += g.get("cat") == "kernel" and cat != "memcpy"
        ms = g["dur"] / 1e3
        cats[cat] += ms
        k = per_kernel.setdefault(g["name"], {"name": g["name"][:160], "category": cat, "count": 0, "ms": 0.0})
        k["count"] += 1
        k["ms"] += ms
        if corr not in labels:              # the first kernel of a launch: its delay, and the op that launched it
            r = launch_at.get(corr)
            if r is not None:
                delays.append((g["ts"] - r["ts"]) / 1e3)
            labels[corr] = owners.get(corr, ("(no CPU op)", None))
        label, shapes = labels[corr]
        e = per_op.setdefault((label, json.dumps(shapes)), {"op": label, "shapes": shapes, "kernels": 0, "ms": 0.0})
        e["kernels"] += 1
        e["ms"] += ms
    table = sorted(per_kernel.values(), key=lambda k: -k["ms"])
    return {"unit": "kernel", "kernel_count": kernel_count, "launch_table": launch_table(gpu),
            "gpu_op_count": len(gpu), "step_span_ms": round((span_end - t0) / 1e3, 4),
            "gpu_busy_ms": round(busy, 4), "idle_fraction": round(1 - busy * 1e3 / (span_end - t0), 4),
            "launch_overhead_ms": round(sum(r["dur"] for r in launches) / 1e3, 4), "launches": len(launches),
            "launch_to_kernel_ms": round(statistics.median(delays), 4) if delays else None,
            "syncs": len(syncs), "sync_ms": round(sum(r["dur"] for r in syncs) / 1e3, 4),
            "category_ms": {k: round(v, 4) for k, v in cats.items()},
            "kernel_table": _rounded(table),
            "gpu_ms_by_op": _rounded(sorted(per_op.values(), key=lambda e: -e["ms"])[:25])}


LAUNCH_ROWS = 25


def launch_table(gpu):
    """The top LAUNCH_ROWS (kernel, grid, block, registers, shared memory) by GPU time: count, ms, us a launch,
    and the median idle gap before it (its start less the previous GPU op's end, in us). One kernel name with
    several grids or builds is told apart here: our Triton kernels (`_gemv_rows` at q/k/v, o, gate+up and
    down; o and down share a grid, and differ in their build where down has the gated prologue) carry no shape
    in their name, so a projection slower inside the step than alone shows only in this table."""
    rows, prev_end = {}, None
    for g in gpu:
        args = g.get("args", {})
        if g.get("cat") == "kernel":
            regs, smem = args.get("registers per thread"), args.get("shared memory")
            key = (g["name"], json.dumps(args.get("grid")), json.dumps(args.get("block")), regs, smem)
            r = rows.setdefault(key, {"name": g["name"][:160], "grid": args.get("grid"), "block": args.get("block"),
                                      "registers": regs, "shared_memory": smem, "count": 0, "ms": 0.0, "gaps": []})
            r["count"] += 1
            r["ms"] += g["dur"] / 1e3
            if prev_end is not None:
                r["gaps"].append(max(0.0, g["ts"] - prev_end))
        prev_end = g["ts"] + g["dur"] if prev_end is None else max(prev_end, g["ts"] + g["dur"])
    out = []
    for r in sorted(rows.values(), key=lambda r: -r["ms"])[:LAUNCH_ROWS]:
        gaps = r.pop("gaps")
        out.append({**r, "ms": round(r["ms"], 4), "us_each": round(r["ms"] * 1e3 / r["count"], 2),
                    "gap_us": round(statistics.median(gaps), 2) if gaps else None})
    return out


def _rounded(rows):
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def _median_step(steps):
    spans = sorted(steps, key=lambda s: s["mark"]["dur"])
    return spans[len(spans) // 2]


def analyse(path):
    """The summary of the median profiled step of the trace at path."""
    steps = _steps(load(path))
    if not steps:
        raise ValueError(f"{path} has no '{STEP_MARK}' annotation: capture it with playbook.profile.capture")
    summary = analyse_step(_median_step(steps))
    summary["steps_profiled"] = len(steps)
    return summary


def step_summary(step, device):
    """One profiled run of step as the ladder's traces read it (its median traced call): {unit, kernels (GPU
    operations: kernels and copies; None on a CPU), cpu_ops, gpu_busy_ms, idle_fraction, launch_table ([] on
    a CPU)}. For benchmarks that put launch tables beside their timings."""
    with tempfile.TemporaryDirectory() as tmp:
        a = analyse(capture(step, device, Path(tmp) / "step.json.gz"))
    return {"unit": a["unit"], "kernels": a.get("gpu_op_count"), "cpu_ops": a.get("cpu_op_count"),
            "gpu_busy_ms": a["gpu_busy_ms"], "idle_fraction": a["idle_fraction"],
            "launch_table": a.get("launch_table", [])}


def read_step(path):
    """(cpu lane, gpu lane) of the analysed step: [(start_ms, dur_ms, name, category)], times from its start."""
    s = _median_step(_steps(load(path)))
    t0 = s["mark"]["ts"]
    if s["gpu"]:
        cpu = [(r["ts"], r["dur"], r["name"], "launch") for r in s["runtime"]]
        gpu = [(g["ts"], g["dur"], g["name"], "memcpy" if g.get("cat") != "kernel" else categorize(g["name"]))
               for g in s["gpu"]]
    else:
        cpu = [(o["ts"], o["dur"], o["name"], categorize(o["name"], CPU_OP_PATTERNS)) for o in _top_level(s["ops"])]
        gpu = []
    lane = lambda evs: [((ts - t0) / 1e3, d / 1e3, n, c) for ts, d, n, c in evs]  # noqa: E731
    return lane(cpu), lane(gpu)


# HTA parses a trace into pandas frames: 7 s for the llama 1b eager baseline's 34k events on this project's
# CPU, and an eager pi0 step has about ten times as many (its baseline's trace section took 70 s on the
# H200). Over this many events it is skipped, with the reason; our own analysis (analyse) still runs.
HTA_MAX_EVENTS = 60_000


def hta_summary(path):
    """Holistic Trace Analysis on the trace (all profiled steps, gaps between them included): its temporal
    breakdown (idle / compute / non-compute %) and kernel-type shares. None where `hta` is not installed
    (pip install traceinsight) or the trace has no GPU kernels, which HTA needs."""
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        trace = json.load(f)
    if not any(e.get("cat") == "kernel" for e in trace["traceEvents"]):
        return None
    if len(trace["traceEvents"]) > HTA_MAX_EVENTS:
        return {"skipped": f"{len(trace['traceEvents'])} trace events, over HTA_MAX_EVENTS ({HTA_MAX_EVENTS}): "
                           "HTA's parse would take minutes; the playbook's own analysis is above"}
    try:
        from hta.trace_analysis import TraceAnalysis
    except ImportError:
        return None
    # HTA reads a copy without GPU-side annotations (our playbook_step's gpu_user_annotation twin), which
    # it would count as GPU work over the kernels. Each breakdown is asked for on its own: on the H200's
    # torch 2.11 traces its temporal breakdown fails its own check (non-compute time < 0), recorded here.
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("cat") != "gpu_user_annotation"]
    out = {}
    with tempfile.TemporaryDirectory() as d:          # HTA reads every trace in a folder as one rank each
        with gzip.open(Path(d) / Path(path).name, "wt") as f:
            json.dump(trace, f)
        analysis = TraceAnalysis(trace_dir=d)
        try:
            types, _ = analysis.get_gpu_kernel_breakdown(visualize=False)
            out["kernel_type_pct"] = {str(r["kernel_type"]): float(r["percentage"]) for _, r in types.iterrows()}
        except Exception as e:  # noqa: BLE001
            out["kernel_breakdown_error"] = f"{type(e).__name__}: {e}"
        try:
            t = analysis.get_temporal_breakdown(visualize=False).iloc[0]
            out.update(idle_pct=float(t["idle_time_pctg"]), compute_pct=float(t["compute_time_pctg"]),
                       non_compute_pct=float(t["non_compute_time_pctg"]))
        except Exception as e:  # noqa: BLE001
            out["temporal_breakdown_error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return out


def profile_step(step, device, path, steps=5, warmup=2):
    """Capture and analyse: the summary of the median step, with the trace's file name, and HTA's view
    of the whole trace where HTA can read it (its failure is recorded, never raised)."""
    capture(step, device, path, steps=steps, warmup=warmup)
    summary = analyse(path)
    summary["trace"] = str(Path(path).name)
    try:
        summary["hta"] = hta_summary(path)
    except Exception as e:  # noqa: BLE001
        summary["hta"] = {"error": f"{type(e).__name__}: {e}"}
    return summary


def trace_diff(before, after, tolerance=0.1):
    """Kernels added, removed and changed (count, or time by more than tolerance) between two phase results
    (their kernel_count / cpu_op_count and profile.kernel_table)."""
    b = {k["name"]: k for k in before["profile"]["kernel_table"]}
    a = {k["name"]: k for k in after["profile"]["kernel_table"]}
    unit = after["profile"]["unit"]
    count = "kernel_count" if unit == "kernel" else "cpu_op_count"
    n_b, n_a = before.get(count), after.get(count)
    changed = []
    for name in a.keys() & b.keys():
        if a[name]["count"] != b[name]["count"] or abs(a[name]["ms"] - b[name]["ms"]) > tolerance * max(b[name]["ms"], 1e-6):
            changed.append({"name": name, "count": [b[name]["count"], a[name]["count"]],
                            "ms": [b[name]["ms"], a[name]["ms"]]})
    changed.sort(key=lambda c: -abs(c["ms"][1] - c["ms"][0]))
    pick = lambda d, names: sorted(({"name": n, "count": d[n]["count"], "ms": d[n]["ms"]} for n in names),  # noqa: E731
                                   key=lambda k: -k["ms"])
    return {"unit": unit, "count_before": n_b, "count_after": n_a,
            "count_delta": None if n_b is None or n_a is None else n_a - n_b,
            "count_delta_pct": round(100 * (n_a - n_b) / n_b, 1) if n_b and n_a is not None else None,
            "added": pick(a, a.keys() - b.keys())[:15], "removed": pick(b, b.keys() - a.keys())[:15],
            "changed": changed[:15]}
