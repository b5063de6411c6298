"""Keep coordinate descent's tuned launch settings when a recipe is rebuilt from Inductor's caches.

    from playbook import autotune_cache
    autotune_cache.install()      # before torch.compile; does nothing where torch already does this

A recipe tuned with coordinate descent (phase 6) is rebuilt in verify from Inductor's FX graph cache.
Its Triton kernels then come back as saved autotuners, and torch re-reads each one's best config from
the autotune cache (`CachingAutotuner.recheck_autotune_cache`). Up to torch 2.12 that re-read dropped
the config's `found_by_coordesc` mark where the config was among the compiled ones, and skipped kernels
with a single config altogether, so every such kernel ran coordinate descent again on its first call.
NOTE: on the H200 (llama 1b, torch 2.11, 2026-12-01) verify hit the FX graph cache and still spent 14.4 s
in `CachingAutotuner.coordinate_descent_tuning` (19.5 s on 2026-11-23); torch 2.13 keeps the mark.
install() replaces the re-read with one that keeps it, on a torch whose own does not.
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
    if not _needs_fix(recheck):
        _installed["why"] = "not needed: this torch keeps the coordinate-descent mark on a cache hit"
    else:
        autotuner.recheck_autotune_cache = recheck_keeping_mark
        _installed["why"] = "installed: a cached coordinate-descent config is not tuned again"
    return _installed["why"]
