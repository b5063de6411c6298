"""One measurement at a time: kernels started ahead warm up while a phase runs, but never while it times.

    from playbook.quiet import one_at_a_time, quiet, warming
    with one_at_a_time(), warming():   # a step of a kernel started ahead: imports, the untouched build, ...
        ...
    with quiet():       # around a timed section (playbook/bench.py): waits for warm-ups, holds new ones off
        ...

The chain starts the next phases' notebook kernels while a phase runs (playbook/chain.py). Their
start-up is CPU work: on this project's 2-core CPU, two warm-ups beside the cudagraph phase's timing
took its p50 from 2.6 to 10.3 ms. The lock is a file the chain names in PLAYBOOK_QUIET_LOCK, which its
kernels inherit: warm-ups share it with each other, a timed section takes it alone. Without that
variable (a notebook run by hand, a test, `apply`) both are no-ops.
"""
import os
import time
from contextlib import contextmanager

try:
    import fcntl
except ImportError:          # not a POSIX system: no lock, timings may overlap a warm-up
    fcntl = None

LOCK_ENV = "PLAYBOOK_QUIET_LOCK"
QUIET_WAIT_S = 120           # a warm-up longer than this (a huge model's build) no longer holds timing back


def _open(*suffixes):
    """The lock files path + suffix named by the chain, opened; None outside a chain (or off POSIX)."""
    path = os.environ.get(LOCK_ENV)
    if not path or fcntl is None:
        return None
    try:
        return tuple(open(path + s, "a") for s in suffixes)
    except OSError:          # the run's folder is gone (a test's): nothing to share the machine with
        return None


def _lock_files():
    """(gate, lock) files, or None. A timed section closes the gate first, so warm-up steps queued behind
    it cannot keep taking the shared lock one after another and starve it."""
    return _open(".gate", "")


def _take(f, how, until):
    """flock f (how | LOCK_NB) by polling until the monotonic time until; True when taken."""
    while True:
        try:
            fcntl.flock(f, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > until:
                return False
            time.sleep(0.02)


@contextmanager
def one_at_a_time(enabled=True):
    """Kernels started ahead warm up one after another (a CPU run: with two cores, one is the phase's
    and one a warm-up's; two warm-ups at once left the next phase waiting 9.5 s for its own kernel)."""
    files = _open(".warm") if enabled else None
    if files is None:
        yield
        return
    f, = files
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


@contextmanager
def warming():
    """One warm-up step under the shared lock (it waits while a phase times a step)."""
    files = _lock_files()
    if files is None:
        yield
        return
    gate, lock = files
    try:
        fcntl.flock(gate, fcntl.LOCK_SH)          # closed while a timed section waits or runs
        fcntl.flock(lock, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        gate.close()
        lock.close()


_depth = [0]         # quiet() sections open in this process: an inner one holds what the outer one took


@contextmanager
def quiet(wait_s=QUIET_WAIT_S):
    """Hold the lock alone while timing: first wait (up to wait_s, charged to the clock's `wait_ahead`)
    for the warm-up steps under way to end; no new one starts until the timed section is over. Nested
    sections take the lock once: a table of many timings (phase 5's projection shapes) waits for a
    warm-up step once, not once a timing, while the warm-ups step on between them (five shapes
    of llama 1b waited 23 s that way, H200, 2026-12-01)."""
    from . import clock
    files = _lock_files() if not _depth[0] else None
    if files is None:
        _depth[0] += 1
        try:
            yield
        finally:
            _depth[0] -= 1
        return
    gate, lock = files
    held = []
    _depth[0] += 1
    try:
        with clock.section("wait_ahead"):
            until = time.monotonic() + wait_s
            for f in (gate, lock):
                if not _take(f, fcntl.LOCK_EX, until):
                    print(f"note: kernels started ahead were still warming up after {wait_s} s; timing "
                          "beside them", flush=True)
                    break
                held.append(f)
        yield
    finally:
        _depth[0] -= 1
        for f in reversed(held):
            fcntl.flock(f, fcntl.LOCK_UN)
        gate.close()
        lock.close()
