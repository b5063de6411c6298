"""playbook/stderr_filter.py: lines torch writes straight to fd 2 that say nothing to a user are dropped,
every other line is kept. A child process writes to fd 2 as C++ would (os.write), inside filtered()."""
import subprocess
import sys

CHILD = r'''
import os
from playbook import stderr_filter
with stderr_filter.filtered():
    os.write(2, b"USDT:   ProfilerStart SyncActivityProfilerHandler ok\n")
    os.write(2, b"[W1201 21:43:23.358274932 Context.cpp:541] Warning: torch.backends.cuda.preferred_blas_library is an "
                b"experimental feature. If you see any error (function operator())\n")
    os.write(2, b"a real error: CUDA out of memory\n")
os.write(2, b"after\n")
'''


def test_only_the_known_noise_is_dropped():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["a real error: CUDA out of memory", "after"]


def test_prefer_blas_returns_the_library_before():
    import torch

    from playbook import stderr_filter
    before = torch.backends.cuda.preferred_blas_library()
    assert stderr_filter.prefer_blas(before) == before
    assert torch.backends.cuda.preferred_blas_library() == before


def test_only_a_switch_c10_warns_about_uses_up_the_filter(monkeypatch):
    """c10 warns on the first switch to cuBLASLt (or another non-default library), not to cuBLAS: phase 3 sets
    cuBLAS first, and its cuBLASLt switch must still be filtered."""
    import contextlib

    import torch

    from playbook import stderr_filter
    state, filtered_sets = {"lib": "cublas"}, []
    inside = {"on": False}

    def fake(library=None):
        if library is not None:
            if inside["on"]:
                filtered_sets.append(library)
            state["lib"] = library
        return state["lib"]

    @contextlib.contextmanager
    def fake_filtered():
        inside["on"] = True
        try:
            yield
        finally:
            inside["on"] = False

    monkeypatch.setattr(torch.backends.cuda, "preferred_blas_library", fake)
    monkeypatch.setattr(stderr_filter, "filtered", fake_filtered)
    monkeypatch.setitem(stderr_filter._blas, "warned", False)
    assert stderr_filter.prefer_blas("cublas") == "cublas" and filtered_sets == []
    assert stderr_filter.prefer_blas("cublaslt") == "cublas" and filtered_sets == ["cublaslt"]
    stderr_filter.prefer_blas("cublas")
    stderr_filter.prefer_blas("cublaslt")                     # once a process: no filter needed again
    assert filtered_sets == ["cublaslt"]
