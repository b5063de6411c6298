"""Keep coordinate descent's tuned launch settings when a recipe is rebuilt from Inductor's caches.

    from playbook import autotune_cache
    autotune_cache.install()      # before torch.compile; does nothing where torch already does this

A recipe tuned with coordinate descent (phase 6) is rebuilt in verify from Inductor's FX graph cache.
Its Triton kernels then come back with their best configs from the autotune cache. Torch 2.11 (the GPU
machine's) then loses the tuning in two places, both mended in torch 2.13:
- the re-read of a saved autotuner (`CachingAutotuner.recheck_autotune_cache`) drops the config's
  `found_by_coordesc` mark where the config is among the compiled ones, and skips kernels with a single
  config, so each such kernel runs coordinate descent again on its first call;
- a reduction kernel then adds smaller-RBLOCK configs for occupancy (`_dynamic_scale_rblock`) even on a
  cache hit, so it has several launchers: it benchmarks them, saves the winner *without* the mark over the
  tuned config, and runs coordinate descent again; the next process misses on it.
NOTE: on the H200 (llama 1b, torch 2.11) verify hit the FX graph cache and still spent 14.4 s (2026-12-01),
19.5 s (2026-11-23) and, with the re-read mended alone, 13.8 s (2026-12-01) in
`CachingAutotuner.coordinate_descent_tuning`.
install() puts a mended version of each in place, on a torch whose own lacks the mend.
"""
import inspect

_installed = {"done": False, "why": None}


def _needs_fix(recheck):
    """True when this torch's re-read loses the coordinate-descent mark of a config it keeps."""
    try:
        src = inspect.getsource(recheck)
    except (OSError, TypeError):
        return False
    return "compile_result.config.found_by_coordesc" not in src


def recheck_keeping_mark(self, reload_kernel_from_src):
    """Narrow a saved autotuner to its cached best config and keep that config's coordinate-descent mark."""
    from torch._inductor.runtime import triton_heuristics as th
    from torch._inductor.runtime.runtime_utils import triton_config_to_hashable

    configs = [result.config for result in self.compile_results]
    cached, _, info = th.check_autotune_cache(configs, self.filename, self.inductor_meta)
    self.autotune_cache_info = info
    if info.get("autotune_cache_state") != "hit":
        return
    best = cached[0]
    tuned = bool(getattr(best, "found_by_coordesc", False))
    key = triton_config_to_hashable(best)
    for result in self.compile_results:
        if triton_config_to_hashable(result.config) == key:
            result.config.found_by_coordesc = tuned
            self.compile_results = [result]
            return
    if tuned:       # found by coordinate descent after the autotuner was saved: compile that config alone
        with th.dynamo_timed("CachingAutotuner.slow_precompile_config"):
            if self.fn.fn is None:
                self.fn = reload_kernel_from_src().fn
            self.compile_results = [self._precompile_config(best)]


def no_rblock_scaling_on_a_hit(scale):
    """torch's _dynamic_scale_rblock, skipped when the kernel's config came from the autotune cache."""
    def scale_unless_cached(self):
        info = getattr(self, "autotune_cache_info", None) or {}
        if info.get("autotune_cache_state") == "hit":
            return None
        return scale(self)
    scale_unless_cached.__wrapped__ = scale
    return scale_unless_cached


def _scales_on_a_hit(scale):
    try:
        return "autotune_cache_state" not in inspect.getsource(scale)
    except (OSError, TypeError):
        return False


def install():
    """Put recheck_keeping_mark in place where torch needs it; returns why it did or did not (for the JSON)."""
    if _installed["done"]:
        return _installed["why"]
    _installed["done"] = True
    try:
        from torch._inductor.runtime import triton_heuristics as th
        autotuner = th.CachingAutotuner
        recheck = autotuner.recheck_autotune_cache
    except (ImportError, AttributeError) as e:
        _installed["why"] = f"not needed: this torch's Inductor has no saved-autotuner re-read ({e})"
        return _installed["why"]
    done = []
    if _needs_fix(recheck):
        autotuner.recheck_autotune_cache = recheck_keeping_mark
        done.append("the re-read keeps the coordinate-descent mark")
    scale = getattr(autotuner, "_dynamic_scale_rblock", None)
    if scale is not None and _scales_on_a_hit(scale):
        autotuner._dynamic_scale_rblock = no_rblock_scaling_on_a_hit(scale)
        done.append("no RBLOCK scaling on a cache hit")
    _installed["why"] = (f"installed: {' and '.join(done)}, so a cached coordinate-descent config is not tuned "
                         "again" if done else "not needed: this torch keeps a cached coordinate-descent config")
    return _installed["why"]
