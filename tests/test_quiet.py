"""The quiet lock: a timed section waits for the warm-up step under way, and no warm-up step runs inside it."""
import subprocess
import sys
import time

from playbook import clock, quiet

WARMER = """
import sys, time
from playbook.quiet import warming
for i in range(8):
    with warming():
        print("start", time.time(), flush=True)
        time.sleep(0.4)
        print("end", time.time(), flush=True)
"""


def test_timing_and_warm_ups_never_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv(quiet.LOCK_ENV, str(tmp_path / "quiet.lock"))
    clock.reset()
    warmer = subprocess.Popen([sys.executable, "-c", WARMER], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    first = warmer.stdout.readline()                   # a warm-up step is under way
    assert first.startswith("start") and time.time() < deadline
    with quiet.quiet():
        t0 = time.time()
        time.sleep(1.0)
        t1 = time.time()
    out, _ = warmer.communicate(timeout=60)
    steps = [first] + out.splitlines()
    spans = list(zip([float(s.split()[1]) for s in steps if s.startswith("start")],
                     [float(s.split()[1]) for s in steps if s.startswith("end")]))
    assert len(spans) == 8
    assert all(end <= t0 or start >= t1 for start, end in spans), (t0, t1, spans)
    assert any(start >= t1 for start, _ in spans)          # the warm-ups went on after the timed section
    waited = clock.time_s()["wait_ahead"]
    assert 0.0 < waited < 1.0                              # for the one step under way, not for all eight


def test_without_the_chain_there_is_nothing_to_wait_for(monkeypatch, tmp_path):
    monkeypatch.delenv(quiet.LOCK_ENV, raising=False)
    with quiet.warming(), quiet.quiet():               # no lock named: both are no-ops, never a deadlock
        pass
    monkeypatch.setenv(quiet.LOCK_ENV, str(tmp_path / "gone" / "quiet.lock"))
    with quiet.quiet():                                # a run folder that no longer exists: no lock
        pass


def test_a_table_of_timings_waits_for_a_warm_up_once(tmp_path, monkeypatch):
    """quiet() inside quiet() (phase 5's shape table, phase 3's GEMMs: a timing a row) takes the lock once, and no
    warm-up step starts between the inner sections."""
    monkeypatch.setenv(quiet.LOCK_ENV, str(tmp_path / "quiet.lock"))
    clock.reset()
    warmer = subprocess.Popen([sys.executable, "-c", WARMER], stdout=subprocess.PIPE, text=True)
    assert warmer.stdout.readline().startswith("start")
    with quiet.quiet():
        t0 = time.time()
        for _ in range(4):
            with quiet.quiet():                     # an inner section: no second wait, no deadlock on our own lock
                time.sleep(0.3)
        t1 = time.time()
    out, _ = warmer.communicate(timeout=60)
    starts = [float(s.split()[1]) for s in out.splitlines() if s.startswith("start")]
    assert not any(t0 < s < t1 for s in starts), (t0, t1, starts)
    assert 0.0 < clock.time_s()["wait_ahead"] < 1.0
    assert quiet._depth[0] == 0
