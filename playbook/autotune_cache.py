"""Keep coordinate descent's tuned launch settings when a recipe is rebuilt from Inductor's caches.

    from playbook import autotune_cache
    autotune_cache.install()      # before torch.compile; does nothing where torch already does this

A recipe tuned with coordinate descent (phase 6) is rebuilt in verify from Inductor's FX graph cache.
Its Triton kernels then come back with their best configs from the autotune cache. Torch 2.11 (the GPU
machine's) then loses the tuning in three places, the first two mended in torch 2.13:
- the re-read of a saved autotuner (`CachingAutotuner.recheck_autotune_cache`) drops the config's
  `found_by_coordesc` mark where the config is among the compiled ones, and skips kernels with a single
  config, so each such kernel runs coordinate descent again on its first call;
- a reduction kernel then adds smaller-RBLOCK configs for occupancy (`_dynamic_scale_rblock`) even on a
  cache hit, so it has several launchers: it benchmarks them, saves the winner *without* the mark over the
  tuned config, and runs coordinate descent again; the next process misses on it;
- and the mark is an attribute torch sets on a `triton.Config`, whose unpickling keeps only its own fields:
  a kernel compiled in a worker process, or loaded from a saved bundle, comes back unmarked whatever the
  cache said, and is tuned again. So coordinate descent itself first reads the kernel's autotune-cache
  entry: a config recorded there as found by coordinate descent is used as it is.
NOTE: on the H200 (llama 1b, torch 2.11) verify hit the FX graph cache and still spent 14.4 s (2026-12-01),
19.5 s (2026-11-23) and, with the re-read mended alone, 13.8 s (2026-12-01) in
`CachingAutotuner.coordinate_descent_tuning`.
install() puts a mended version of each in place, on a torch whose own lacks the mend.
"""
import inspect

_installed = {"done": False, "why": None, "not_retuned": 0}


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


def cached_as_tuned(autotuner, config):
    """True when the kernel's autotune-cache entry records this very config as found by coordinate descent."""
    cache = getattr(getattr(autotuner, "save_cache_hook", None), "__self__", None)
    read = getattr(cache, "_read", None)
    if read is None:
        return False
    try:
        best = read()
    except Exception:  # noqa: BLE001  (an unreadable entry means tuning as torch would)
        return False
    if not isinstance(best, dict) or not best.get("found_by_coordesc"):
        return False
    if best.get("configs_hash") != getattr(cache, "configs_hash", None):
        return False
    return (all(best.get(k) == v for k, v in config.kwargs.items())
            and best.get("num_warps") == config.num_warps and best.get("num_stages") == config.num_stages)


def tuning_unless_cached(tune):
    """torch's coordinate_descent_tuning, skipped for a launcher whose config the cache records as tuned."""
    def tune_unless_cached(self, launcher, *args, **kwargs):
        if cached_as_tuned(self, launcher.config):
            launcher.config.found_by_coordesc = True
            _installed["not_retuned"] += 1
            return launcher
        return tune(self, launcher, *args, **kwargs)
    tune_unless_cached.__wrapped__ = tune
    return tune_unless_cached


def not_retuned():
    """How many kernels this process did not tune again, their tuned config read from the cache."""
    return _installed["not_retuned"]


def hold_off(why):
    """Leave this torch as it is for the rest of the process (a comparison run): install() does nothing."""
    _installed.update(done=True, why=why)


def install():
    """Put the mended re-read, RBLOCK scaling and coordinate descent in place where this torch needs them;
    returns what it did, for the phase JSON."""
    if _installed["done"]:
        return _installed["why"]
    _installed["done"] = True
    try:
        from torch._inductor.runtime import triton_heuristics as th
        autotuner = th.CachingAutotuner
    except (ImportError, AttributeError) as e:
        _installed["why"] = f"not needed: this torch's Inductor has no Triton autotuner ({e})"
        return _installed["why"]
    done = []
    recheck = getattr(autotuner, "recheck_autotune_cache", None)
    if recheck is not None and _needs_fix(recheck):
        autotuner.recheck_autotune_cache = recheck_keeping_mark
        done.append("the re-read keeps the coordinate-descent mark")
    scale = getattr(autotuner, "_dynamic_scale_rblock", None)
    if scale is not None and _scales_on_a_hit(scale):
        autotuner._dynamic_scale_rblock = no_rblock_scaling_on_a_hit(scale)
        done.append("no RBLOCK scaling on a cache hit")
    tune = getattr(autotuner, "coordinate_descent_tuning", None)
    if tune is not None and not hasattr(tune, "__wrapped__"):
        autotuner.coordinate_descent_tuning = tuning_unless_cached(tune)
        done.append("a config the cache records as tuned is used as it is")
    _installed["why"] = (f"installed: {', '.join(done)}, so a cached coordinate-descent config is not tuned "
                         "again" if done else "not needed: this torch keeps a cached coordinate-descent config")
    return _installed["why"]
