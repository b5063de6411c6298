"""Where a phase's wall time goes: named sections, summed into the phase JSON's `time_s`.

    from playbook import clock
    clock.reset()                          # at the start of a phase
    with clock.section("compile"):         # nested sections charge the innermost one only
        ...
    clock.time_s()                         # {"start": 4.1, "build": 2.0, "compile": 31.5, ..., "total": 52.3}

`start` is the time from the process's start (a notebook kernel's launch) to the moment the playbook
was imported (the interpreter, torch, the kernel): time a kernel then sits idle (a person reading, or
a kernel the chain started ahead) is not counted. `other` is what no section claimed. `total` is
`start` plus the time since the phase began. The compile caches' hits and misses (Inductor's FX graph cache, AOTAutograd's
cache) since reset() come from torch's own counters: `clock.cache_counts()`. Where the compile time went
inside torch (Dynamo's tracing, AOTAutograd, Inductor's code generation, waiting on Triton's compiles,
autotuning, coordinate descent) comes from its `dynamo_timed` timers: `clock.compile_stages()`.
"""
import os
import time
from contextlib import contextmanager

SECTIONS = ("start", "build", "decide", "compile", "check", "wait_ahead", "time", "trace", "render")

_state = {"t0": None, "spent": {}, "stack": [], "counters": {}, "stages": {}, "ready": None, "ahead": {},
          "bypassed": 0}


def process_start():
    """The wall-clock time this process started (a notebook kernel's launch), or now if unknown."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def mark_ready():
    """The playbook's imports are done (called once, when playbook.ladder is imported)."""
    if _state["ready"] is None:
        _state["ready"] = time.time()


def ahead(name, seconds):
    """Work this process did before its phase began, while the phase before it ran (the chain's kernel
    started ahead builds the untouched workload): shown as name, outside the total."""
    _state["ahead"][name] = _state["ahead"].get(name, 0.0) + seconds


def reset():
    """Start a phase's clock: `start` is charged from the process's start to the imports' end."""
    now = time.time()
    ready = min(_state["ready"] or now, now)
    _keep_bypass_reasons()
    _state.update(t0=now, spent={"start": max(0.0, ready - process_start())}, stack=[],
                  counters=_cache_counters(), stages=_stage_totals(), bypassed=len(_bypassed))


@contextmanager
def section(name):
    """Charge the wall time inside to name (and not to an enclosing section)."""
    if name not in SECTIONS:
        raise ValueError(f"unknown clock section {name!r}; one of {SECTIONS}")
    t = time.perf_counter()
    _state["stack"].append([name, 0.0])          # [name, time spent in nested sections]
    try:
        yield
    finally:
        _, nested = _state["stack"].pop()
        elapsed = time.perf_counter() - t
        _state["spent"][name] = _state["spent"].get(name, 0.0) + elapsed - nested
        if _state["stack"]:
            _state["stack"][-1][1] += elapsed


def time_s():
    """{section: seconds} so far, with `other` (unclaimed) and `total` (`start` plus the phase so far)."""
    if _state["t0"] is None:
        reset()
    total = time.time() - _state["t0"] + _state["spent"]["start"]
    out = {k: round(_state["spent"][k], 2) for k in SECTIONS if k in _state["spent"]}
    out["other"] = round(max(0.0, total - sum(_state["spent"].values())), 2)
    out["total"] = round(total, 2)
    out.update({k: round(v, 2) for k, v in _state["ahead"].items()})
    return out


def _cache_counters():
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    return {"fx_graph_hit": counters["inductor"]["fxgraph_cache_hit"],
            "fx_graph_miss": counters["inductor"]["fxgraph_cache_miss"],
            "fx_graph_bypass": counters["inductor"]["fxgraph_cache_bypass"],
            "aot_autograd_hit": counters["aot_autograd"]["autograd_cache_hit"],
            "aot_autograd_miss": counters["aot_autograd"]["autograd_cache_miss"],
            "aot_autograd_bypass": counters["aot_autograd"]["autograd_cache_bypass"]}


_bypassed = []      # why AOTAutograd did not use its cache, in order, as torch logged it


def _keep_bypass_reasons():
    """Collect AOTAutograd's "Bypassing autograd cache due to: ..." (an INFO line) without printing it: a
    logger filter takes the record and drops INFO and DEBUG records of that logger only."""
    import logging
    log = logging.getLogger("torch._functorch._aot_autograd.autograd_cache")
    if any(getattr(f, "_playbook", False) for f in log.filters):
        return

    def keep(record):
        if record.levelno >= logging.WARNING:
            return True
        msg = record.getMessage()
        if "Bypassing autograd cache" in msg:
            _bypassed.append(msg.split("due to:", 1)[-1].strip().splitlines()[0][:240])
        return False
    keep._playbook = True
    log.addFilter(keep)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


def cache_counts():
    """Compile-cache hits and misses since reset(): a graph served from Inductor's FX graph cache (or
    AOTAutograd's) was not compiled again."""
    now, then = _cache_counters(), _state["counters"] or {}
    out = {k: v - then.get(k, 0) for k, v in now.items()}
    why = sorted(set(_bypassed[_state["bypassed"]:]))
    if why:
        out["aot_autograd_bypass_why"] = why
    return out


def _stage_totals():
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return {}
    return {k: sum(v) for k, v in compilation_time_metrics.items()}


def compile_stages(least_s=0.3, most=14):
    """{torch's timer name: seconds since reset()}, the largest first, those of least_s or more. The
    timers nest (`_compile.compile_inner` holds Dynamo's tracing and everything under it, such as
    `OutputGraph.call_user_compiler`, which holds AOTAutograd and Inductor), so they do not add up; the
    leaves say where a compile went: `bytecode_tracing` (Dynamo), `GraphLowering.codegen` (Inductor),
    `async_compile.wait` (Triton's compiles), `CachingAutotuner.benchmark_all_configs` (autotuning),
    `CachingAutotuner.coordinate_descent_tuning`, `CachingAutotuner.slow_precompile_config` (a cached
    best config compiled again on a cache hit)."""
    then = _state["stages"] or {}
    spent = {k: v - then.get(k, 0.0) for k, v in _stage_totals().items()}
    top = sorted(((k, v) for k, v in spent.items() if v >= least_s), key=lambda kv: -kv[1])[:most]
    return {k: round(v, 2) for k, v in top}
