import time

import torch

from playbook import bench


def test_summarize_percentiles_and_spread():
    t = bench.summarize([float(x) for x in range(1, 101)])
    assert t.p50_ms == 50.5
    assert t.p95_ms == 95.0
    assert t.min_ms == 1.0 and t.max_ms == 100.0 and t.iters == 100
    assert abs(t.mean_ms - 50.5) < 1e-9 and t.std_ms > 28


def test_time_step_measures_a_known_sleep():
    t = bench.time_step(lambda: time.sleep(0.002), torch.device("cpu"), iters=20, warmup=2)
    assert 1.9 <= t.p50_ms <= 6.0
    assert t.min_ms <= t.p50_ms <= t.p95_ms <= t.max_ms


def test_side_by_side_and_verdict_tell_slower_from_noise():
    steps = {"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.004),
             "fast_again": lambda: time.sleep(0.001)}
    ts = bench.time_side_by_side(steps, torch.device("cpu"), iters=30, warmup=2, rounds=3)
    assert len(ts["fast"].round_p50_ms) == 3
    assert bench.verdict(ts["slow"], ts["fast"]) == "slower"
    assert bench.verdict(ts["fast"], ts["slow"]) == "faster"
    assert bench.verdict(ts["fast_again"], ts["fast"]) == "same"


def test_noise_is_never_below_two_percent():
    a = bench.summarize([1.0] * 10, [1.0, 1.0])
    b = bench.summarize([1.01] * 10, [1.01, 1.01])
    assert bench.noise(b, a) == bench.MIN_NOISE
    assert bench.verdict(b, a) == "same"


def test_the_garbage_collector_is_off_while_samples_are_taken_and_restored_after():
    import gc
    seen = []
    step = lambda: seen.append(gc.isenabled())                    # noqa: E731
    assert gc.isenabled()
    bench.time_step(step, torch.device("cpu"), iters=3, warmup=2)
    bench.time_side_by_side({"a": step, "b": step}, torch.device("cpu"), iters=4, warmup=1, rounds=2)
    assert seen[:2] == [True, True]                               # warm-up runs as the program does
    assert seen[2:5] == [False] * 3 and seen[-4:] == [False] * 4  # every sample with the collector off
    assert gc.isenabled()


def test_a_slow_step_gets_fewer_samples_and_a_fast_one_all_of_them(monkeypatch):
    monkeypatch.setattr(bench, "SAMPLE_S", 1.0)
    monkeypatch.setattr(bench, "MIN_SAMPLES", 5)
    assert bench.capped(100, 0.001) == 100 and bench.capped(100, None) == 100
    assert bench.capped(100, 0.05) == 20 and bench.capped(100, 1.0) == 5
    # a loaded 2-core machine may stretch a 1 ms sleep, but not to the 20 ms it would take to be capped
    ts = bench.time_side_by_side({"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.1)},
                                 torch.device("cpu"), iters=50, warmup=2, rounds=5)
    assert ts["fast"].iters == 50 and 5 <= ts["slow"].iters <= 10
    assert len(ts["slow"].round_p50_ms) == 5                      # still in every round, beside the others
    first = []

    def compiles_on_its_first_call():                            # a step still capturing: not what it costs
        time.sleep(0.5 if not first else 0.001)
        first.append(1)
    assert bench.time_step(compiles_on_its_first_call, torch.device("cpu"), iters=40, warmup=3).iters == 40


def test_the_ladder_keeps_the_fastest_unless_one_offered_before_it_is_within_a_tie_of_it():
    from playbook.bench import Timing
    from playbook.ladder import TIE, pick

    def t(ms):
        return Timing(ms, ms, ms, 0.0, ms, ms, 10)
    assert pick({0: t(10.0), 1: t(9.0), 2: t(9.5)}) == 1                       # clearly faster: the fastest
    assert pick({0: t(22.570), 1: t(22.566)}) == 0                            # pi0's phase 2: a tie, offered first
    assert pick({0: t(10.0 * (1 + 2 * TIE)), 1: t(10.0)}) == 1                # beyond the tie: the fastest
    assert pick({1: t(10.0), 3: t(10.0 * (1 + TIE / 2)), 4: t(9.99)}) == 1    # indices as offered, gaps and all
