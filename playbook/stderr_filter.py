"""Lines torch writes straight to the process's stderr (fd 2, past Python's warnings) that tell a user
nothing, kept out of the terminal and the notebooks; every other line is passed on.

    from playbook import stderr_filter
    with stderr_filter.filtered():                  # around a profiled section: Kineto's start/stop lines
        ...
    prev = stderr_filter.prefer_blas("cublaslt")    # torch.backends.cuda.preferred_blas_library, without its warning
    torch.backends.cuda.preferred_blas_library(prev)   # restoring needs no filter: c10 warns once a process

The lines: Kineto's `USDT:... SyncActivityProfilerHandler` at each profiler start and stop, and c10's
once-a-process "preferred_blas_library is an experimental feature" when phase 3 (or a recipe that kept
its choice) switches the BLAS library.
"""
import os
import re
import sys
import tempfile
from contextlib import contextmanager

import torch

NOISE = re.compile(r"^(USDT|STAGE):.*SyncActivityProfilerHandler"
                   r"|^\[W\d+ [\d:.]+ \S+\] Warning: torch\.backends\.cuda\.preferred_blas_library is an experimental")

_blas = {"warned": False}
# NOTE: c10 warns on the first switch to a library other than these (Context::setBlasPreferredBackend). Phase 3
# switched to cuBLAS first, which marked the warning as seen, and its switch to cuBLASLt then printed it (H200,
# 2026-12-01, both ladders).
QUIET_LIBRARIES = ("cublas", "default")


@contextmanager
def filtered():
    """Hold fd 2 in a file meanwhile, then write back every line of it that NOISE does not match."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(True) if not NOISE.match(ln)]
            if kept:
                sys.stderr.write("".join(kept))


def prefer_blas(library):
    """Set torch's preferred BLAS library; returns the one before. Its first switch in a process to a library
    c10 warns about (any but cuBLAS and the default) runs inside filtered(); later ones cost nothing extra (a
    recipe's step may call it)."""
    prev = torch.backends.cuda.preferred_blas_library()
    if _blas["warned"] or library in QUIET_LIBRARIES:
        torch.backends.cuda.preferred_blas_library(library)
        return prev
    with filtered():
        torch.backends.cuda.preferred_blas_library(library)
    _blas["warned"] = True
    return prev
