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
