"""playbook/autotune_cache.py: a saved autotuner re-read from the autotune cache keeps its config's
coordinate-descent mark, so verify's rebuild of a tuned recipe does not tune again."""
from types import SimpleNamespace

import pytest

th = pytest.importorskip("torch._inductor.runtime.triton_heuristics")

from playbook import autotune_cache  # noqa: E402


def _config(block, warps=4):
    return SimpleNamespace(kwargs={"XBLOCK": block}, num_warps=warps, num_stages=1)


def _autotuner(configs):
    tuner = SimpleNamespace(compile_results=[SimpleNamespace(config=c) for c in configs], filename="k.py",
                            inductor_meta={"coordinate_descent_tuning": True}, fn=SimpleNamespace(fn=object()))
    tuner._precompile_config = lambda cfg: SimpleNamespace(config=cfg, precompiled=True)
    return tuner


def _cache_says(monkeypatch, best, state="hit"):
    monkeypatch.setattr(th, "check_autotune_cache",
                        lambda configs, filename, meta: ([best] if best else configs, None,
                                                         {"autotune_cache_state": state}))


@pytest.mark.parametrize("configs", [[_config(64)], [_config(32), _config(64), _config(128)]],
                         ids=["one config", "three configs"])
def test_a_tuned_config_among_the_compiled_ones_keeps_its_mark(monkeypatch, configs):
    best = _config(64)
    best.found_by_coordesc = True
    _cache_says(monkeypatch, best)
    tuner = _autotuner(configs)
    autotune_cache.recheck_keeping_mark(tuner, reload_kernel_from_src=None)
    (only,) = tuner.compile_results
    assert only.config.kwargs == {"XBLOCK": 64} and only.config.found_by_coordesc is True
    assert not getattr(only, "precompiled", False)


def test_a_tuned_config_not_compiled_yet_is_compiled_alone(monkeypatch):
    best = _config(256, warps=8)
    best.found_by_coordesc = True
    _cache_says(monkeypatch, best)
    tuner = _autotuner([_config(32), _config(64)])
    autotune_cache.recheck_keeping_mark(tuner, reload_kernel_from_src=None)
    (only,) = tuner.compile_results
    assert only.precompiled and only.config is best


def test_a_miss_leaves_every_config_to_autotuning(monkeypatch):
    _cache_says(monkeypatch, None, state="miss")
    tuner = _autotuner([_config(32), _config(64)])
    autotune_cache.recheck_keeping_mark(tuner, reload_kernel_from_src=None)
    assert len(tuner.compile_results) == 2
    assert not any(getattr(r.config, "found_by_coordesc", False) for r in tuner.compile_results)


def test_install_says_what_it_did():
    why = autotune_cache.install()
    assert why.startswith(("installed", "not needed"))
    scale = th.CachingAutotuner._dynamic_scale_rblock
    assert not autotune_cache._scales_on_a_hit(scale) or getattr(scale, "__wrapped__", None)
    assert autotune_cache.install() == why              # once a process
    source_keeps_mark = not autotune_cache._needs_fix(th.CachingAutotuner.recheck_autotune_cache) \
        or th.CachingAutotuner.recheck_autotune_cache is autotune_cache.recheck_keeping_mark
    assert source_keeps_mark


def test_a_reread_that_drops_the_mark_is_recognised():
    def reread_of_torch_2_11(self, reload_kernel_from_src):     # narrows, but leaves the config unmarked
        for compile_result in self.compile_results:
            self.compile_results = [compile_result]
            return

    def reread_of_torch_2_13(self, reload_kernel_from_src):
        for compile_result in self.compile_results:
            compile_result.config.found_by_coordesc = True
            return
    assert autotune_cache._needs_fix(reread_of_torch_2_11)
    assert not autotune_cache._needs_fix(reread_of_torch_2_13)


def test_rblock_scaling_is_skipped_for_a_config_from_the_cache():
    calls = []
    scale = autotune_cache.no_rblock_scaling_on_a_hit(lambda self: calls.append(self))
    hit = SimpleNamespace(autotune_cache_info={"autotune_cache_state": "hit"})
    miss = SimpleNamespace(autotune_cache_info={"autotune_cache_state": "miss"})
    scale(hit)
    scale(miss)
    scale(SimpleNamespace(autotune_cache_info=None))
    assert calls == [miss, calls[1]] and len(calls) == 2

    def scale_of_torch_2_11(self):
        return self.compile_results

    def scale_of_torch_2_13(self):
        if self.autotune_cache_info.get("autotune_cache_state") == "hit":
            return None
    assert autotune_cache._scales_on_a_hit(scale_of_torch_2_11)
    assert not autotune_cache._scales_on_a_hit(scale_of_torch_2_13)


class _Cache:
    """Stands in for torch's AutotuneCache: one kernel's entry, as read from its .best_config file."""
    configs_hash = "h1"

    def __init__(self, entry):
        self.entry = entry

    def _read(self):
        return dict(self.entry) if self.entry is not None else None

    def save(self, *args, **kwargs):
        pass


@pytest.mark.parametrize("entry, skipped", [
    ({"XBLOCK": 64, "num_warps": 4, "num_stages": 1, "configs_hash": "h1", "found_by_coordesc": True}, True),
    ({"XBLOCK": 64, "num_warps": 4, "num_stages": 1, "configs_hash": "h1", "found_by_coordesc": False}, False),
    ({"XBLOCK": 128, "num_warps": 4, "num_stages": 1, "configs_hash": "h1", "found_by_coordesc": True}, False),
    ({"XBLOCK": 64, "num_warps": 4, "num_stages": 1, "configs_hash": "old", "found_by_coordesc": True}, False),
    (None, False)], ids=["tuned", "not tuned", "another config", "other configs", "no entry"])
def test_coordinate_descent_is_skipped_only_for_the_config_the_cache_records_as_tuned(entry, skipped):
    """The config reaching coordinate descent has lost its mark (a triton.Config unpickles without it)."""
    tuned = []
    tune = autotune_cache.tuning_unless_cached(lambda self, launcher: tuned.append(launcher) or "tuned again")
    tuner = SimpleNamespace(save_cache_hook=_Cache(entry).save)
    launcher = SimpleNamespace(config=_config(64))
    before = autotune_cache.not_retuned()
    got = tune(tuner, launcher)
    assert (got is launcher and not tuned and launcher.config.found_by_coordesc) if skipped else got == "tuned again"
    assert autotune_cache.not_retuned() - before == int(skipped)
    assert tune(SimpleNamespace(save_cache_hook=None), launcher) == "tuned again"     # no cache: torch's way



def test_torchs_own_autotune_cache_entry_survives_a_pickled_hook_and_skips_tuning(tmp_path, monkeypatch):
    """With torch's AutotuneCache (not a stand-in): coordinate descent's save, then the hook pickled as a
    compiled kernel's autotuner is between processes, then a launcher whose config lost its mark."""
    import pickle
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    from torch._inductor.runtime.autotune_cache import AutotuneCache, inductor_meta_from_config
    meta = dict(inductor_meta_from_config(), coordinate_descent_tuning=True)
    (tmp_path / "k").mkdir()
    cache = AutotuneCache.create(meta, str(tmp_path / "k" / "kernel.py"), "configs-1")
    if cache is None or not cache.local_cache:
        pytest.skip("this torch keeps no local autotune cache")
    tuned = _config(64)
    cache.save(tuned, 1_000_000, found_by_coordesc=True)
    hook = pickle.loads(pickle.dumps(cache.save))
    retuned = []
    tune = autotune_cache.tuning_unless_cached(lambda self, launcher: retuned.append(launcher) or launcher)
    unmarked = SimpleNamespace(config=_config(64))
    assert tune(SimpleNamespace(save_cache_hook=hook), unmarked) is unmarked and not retuned
    assert tune(SimpleNamespace(save_cache_hook=hook), SimpleNamespace(config=_config(128))) and len(retuned) == 1
