"""The cumulative pipeline: a fresh workload, every kept phase applied in ladder order, then built.

    pipe = Pipeline.from_recipe(run.params, recipe["phases"])   # model rewrites happen here
    runner = pipe.build()                                       # compile, warm up, capture
    runner.step()                                               # the timed call

A phase changes a pipeline in one of three ways: it rewrites the model (attention, fusion, kernels),
it sets Inductor options (kernels, tuning), or it chooses how the step runs (cudagraph: compile the
whole model or the workload's regions, capture the whole step or its hot loop). Building applies
them all at once, so any recipe can be rebuilt in a fresh process.

The untouched workload is built once per process and each pipeline gets its own copy of it (a copy on
the device, not a second random init): a phase builds the kept recipe and several candidates, and
the weights are the same for all. Time goes to the clock's "build" and "compile" sections.
"""
import copy
import json
import time
from dataclasses import dataclass, field

import torch

from . import autotune_cache, capture, clock, stderr_filter
from .devices import resolve_device, resolve_dtype, sync, vendor
from .phases import get_phase
from .workloads import build_workload

_pristine = {}      # {workload key: the untouched workload}, built once per process, copied for each pipeline

for _name in ("recompile_limit", "cache_size_limit"):   # every build compiles anew: allow many entries
    if hasattr(torch._dynamo.config, _name):
        setattr(torch._dynamo.config, _name, 64)


@dataclass
class Pipeline:
    workload: object
    device: torch.device
    dtype: torch.dtype
    compile: bool = False
    compile_scope: str = "model"                      # "model": one torch.compile; "regions": the workload's regions
    inductor: dict = field(default_factory=dict)     # Inductor options, passed to torch.compile
    capture: object = False                           # False | True (the whole step) | "loop" (the hot loop alone)
    rng_patch: bool = False
    sdpa_backend: str = None                          # force one SDPA backend (phase 2), None: torch picks
    blas: str = None                                  # preferred BLAS library (phase 3), None: torch's default
    notes: list = field(default_factory=list)
    info: dict = field(default_factory=dict)          # what a phase's apply() found, for its JSON

    @classmethod
    def fresh(cls, params, precise=False):
        """The untouched workload; precise=True builds it in fp32 on weights rounded to the run's dtype."""
        device = resolve_device(params["device"])
        dtype = resolve_dtype(params["dtype"], device)
        build_dtype, via = (torch.float32, dtype) if precise else (dtype, None)

        def build():
            return build_workload(params["workload"], params.get("preset") or "", params.get("model") or "",
                                  device, build_dtype, seed=params.get("seed", 0), weights_via=via,
                                  options=params.get("options"))
        with clock.section("build"):
            # The fp32 twin is built once a run (by the baseline): it is not kept for copying.
            wl = build() if precise else untouched_copy(params, build)
        return cls(workload=wl, device=device, dtype=build_dtype)

    @classmethod
    def from_recipe(cls, params, steps, extra=None):
        """steps: the recipe's kept phases; extra: (name, knobs) of the phase being tried."""
        pipe = cls.fresh(params)
        with clock.section("build"):
            for step in steps:
                get_phase(step["name"]).apply(pipe, step["knobs"])
            if extra:
                pipe.notes = []                 # the notes of the phase being tried, not of the recipe
                get_phase(extra[0]).apply(pipe, extra[1])
        return pipe

    @property
    def vendor(self):
        return vendor(self.device)

    def build(self, warmup=3):
        with clock.section("compile"):          # compile, warm up, capture
            return Runner(self, warmup)


def prebuild(params):
    """Build the untouched workload now, so this process's pipelines start from a copy of it (the chain
    calls it in a kernel it starts ahead of its phase). A failure is left for the phase to meet."""
    t0 = time.perf_counter()
    try:
        Pipeline.fresh(params)
    except Exception:  # noqa: BLE001  (the phase builds it again and records the error where it belongs)
        _pristine.clear()
    clock.ahead("build_ahead", time.perf_counter() - t0)


def warm_compiler(device):
    """Compile and run a two-op function on the device once, so that this process's first real compile
    does not also pay for loading the compiler stack (Dynamo, AOTAutograd, Inductor's code generation
    and, on a CPU, its C++ toolchain checks; Triton's on a GPU). The chain calls it in a kernel started
    ahead of its phase. On this project's 2-core CPU a cache-hit build of the tiny recipe took 8.8 s cold
    and 5.0 s after it. A failure is left for the phase's real compile to meet and record."""
    t0 = time.perf_counter()
    try:
        fn = torch.compile(lambda x: torch.nn.functional.gelu(x) * 2.0 + 1.0, dynamic=False)
        with torch.no_grad():
            fn(torch.randn(8, device=device))
        sync(torch.device(device))
    except Exception:  # noqa: BLE001  (the phase's own compile meets the same problem and records it)
        pass
    clock.ahead("compile_ahead", time.perf_counter() - t0)


def untouched_copy(params, build):
    """A copy of the untouched workload, built on the first call in this process and copied after that
    (a device-to-device copy of the weights and inputs). A workload that cannot be deep-copied (a user's
    module holding something uncopyable) is built anew each time."""
    key = json.dumps({k: params.get(k) for k in ("workload", "preset", "model", "options", "device", "dtype",
                                                  "seed")}, sort_keys=True, default=str)
    if key not in _pristine:
        _pristine.clear()                   # one workload per process: a new run's replaces the old one
        _pristine[key] = build()
    if _pristine[key] is None:
        return build()
    try:
        return copy.deepcopy(_pristine[key])
    except Exception as e:  # noqa: BLE001  (the copy is a shortcut; building anew is always right)
        print(f"the untouched workload cannot be copied ({type(e).__name__}: {e}); building it anew each time",
              flush=True)
        _pristine[key] = None
        return build()


def _with_sdpa_backend(model, backend):
    from .rewrites.attention import sdpa_context

    def call(*args, **kwargs):
        with sdpa_context(backend, fallback=True):     # calls the backend cannot take run on the next one
            return model(*args, **kwargs)
    return call


def _with_blas(fn, library):
    """Prefer this BLAS library during each call (baked in when captured), then restore the global choice."""
    def call(*args, **kwargs):
        prev = stderr_filter.prefer_blas(library)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.backends.cuda.preferred_blas_library(prev)
    return call


class Runner:
    """The built step. step() runs it on the workload's example inputs (a graph replay when captured);
    outputs() runs it once and returns the outputs; runner(*args, **kwargs) runs it on new inputs of the
    same shapes (copied into the graph's buffers when captured: its outputs are overwritten by the next call)."""

    def __init__(self, pipe: Pipeline, warmup=3):
        self.pipe = pipe
        wl = pipe.workload
        if pipe.rng_patch:
            capture.patch_dynamo_rng()
        fn = wl.model
        if pipe.sdpa_backend:
            fn = _with_sdpa_backend(fn, pipe.sdpa_backend)
        self.compile_s = None
        options = {"triton.cudagraphs": False, **pipe.inductor}
        # NOTE: dynamic=False. A phase compiles the kept recipe and then each candidate in one process; where a
        # candidate changes a compiled function's input shapes, Dynamo's automatic dynamic shapes compiled it
        # again with those sizes symbolic: a graph unlike the one the recipe later runs, measured in its place,
        # and a miss for the FX-graph cache when a later phase rebuilt the recipe (pi0 full, H200, 2026-12-02:
        # kv_in_place lengthens the denoise K/V from 816 to 832 slots; one region missed, 25-37 s again).
        static = {"dynamic": False, "options": options}
        if pipe.compile and options.get("coordinate_descent_tuning"):
            pipe.info["autotune_cache"] = autotune_cache.install()
        if pipe.compile and pipe.compile_scope == "regions":
            for region in wl.regions:     # each compiled once; repeated calls (denoise steps) reuse its code
                path, _, method = region.rpartition(".")
                owner = wl.model.get_submodule(path) if path else wl.model
                setattr(owner, method, torch.compile(getattr(owner, method), **static))
        loop = wl.model.get_submodule(wl.hot_loop) if pipe.capture == "loop" else None
        if pipe.compile and pipe.compile_scope == "model":
            if loop is not None:          # Step A: the hot loop alone, compiled and captured; the rest eager
                loop.forward = torch.compile(loop.forward, **static)
            else:
                fn = torch.compile(fn, **static)
        if loop is not None:
            loop.forward = capture.LazyGraph(loop.forward, warmup=warmup)
        if pipe.blas:                     # outside the compiled region: a global switch, not traceable
            fn = _with_blas(fn, pipe.blas)
        if pipe.compile or loop is not None:
            t0 = time.perf_counter()
            with torch.no_grad():
                fn(*wl.args, **wl.kwargs)
            sync(pipe.device)
            self.compile_s = round(time.perf_counter() - t0, 2) if pipe.compile else None
        whole = pipe.capture is True
        self.call = capture.GraphStep(fn, wl.args, wl.kwargs, warmup=warmup) if whole else fn
        if whole:
            self.step = self.call.bind(wl.args, wl.kwargs)
        else:
            self.step = lambda: fn(*wl.args, **wl.kwargs)

    def __call__(self, *args, **kwargs):
        with torch.no_grad():
            return self.call(*args, **kwargs)

    def outputs(self):
        with torch.no_grad():
            out = self.step()
        sync(self.pipe.device)
        return out
