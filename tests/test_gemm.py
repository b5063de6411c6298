"""GEMM shapes recorded from a step, and aiter's tuning hand-off (ROCm; its dispatch checked here without one)."""
import csv
import importlib.util
import os

import pytest
import torch

from playbook import gemm


def test_aiter_untuned_csv_and_the_tuner_hand_off(tmp_path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 64, bias=False))
    shapes = gemm.record_gemms(model, (torch.randn(1, 64),))
    assert {(s["M"], s["N"], s["K"], s["bias"]) for s in shapes} == {(1, 128, 64, True), (1, 64, 128, False)}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradlib" else real_find_spec(name, *a))
    monkeypatch.delenv("AITER_CONFIG_GEMM_BF16", raising=False)
    tuned, note = gemm.aiter_tune(shapes, tmp_path)
    assert tuned is None and "gradlib" in note and "AITER_CONFIG_GEMM_BF16" in note
    assert "AITER_CONFIG_GEMM_BF16" not in os.environ
    rows = list(csv.DictReader(open(tmp_path / "aiter_untuned_gemm.csv")))
    assert list(rows[0]) == gemm.AITER_UNTUNED and rows[0]["dtype"] == "torch.float32"
    assert {(r["M"], r["N"], r["K"], r["bias"]) for r in rows} == {("1", "128", "64", "True"), ("1", "64", "128", "False")}


def _row(n, backend, us, count=2, floor=1.0):
    return {"M": 1, "N": n, "K": 64, "dtype": "bfloat16", "bias": False, "count": count, "backend": backend,
            "us": us, "floor_us": floor}


def test_headroom_bounds_what_any_backend_can_save_and_saving_is_per_shape():
    rows = [_row(64, "cublas", 3.0), _row(64, "triton", 2.0), _row(128, "cublas", 1.5, count=4),
            _row(128, "triton", 4.0, count=4), _row(256, "cublas", None)]
    room = gemm.headroom(rows, "cublas")
    assert [round(us, 3) for _, us in room] == [4.0, 2.0]          # (3-1)*2 and (1.5-1)*4, largest first
    assert gemm.saving(rows, "cublas", "triton") == 2.0            # only where triton wins: (3-2)*2
    gemm.mark_best(rows)
    assert [r["best"] for r in rows] == [False, True, True, False, False]


def _phase3_candidates(monkeypatch, tmp_path, m):
    """Phase 3's candidates() on a faked CUDA step of one shape with m rows, far above its floor on cuBLAS;
    returns (the backends measure() was asked for, the prediction recorded, the candidates or the skip)."""
    from types import SimpleNamespace

    from playbook.phases import Skip
    from playbook.phases import gemm as phase3
    asked = []

    def measure(shapes, device, ceilings, backends):
        asked.append(list(backends))
        return [{**s, "backend": b, "us": 50.0 if b == "cublas" else 51.0 if b == "cublaslt" else 10.0,
                 "floor_us": 5.0} for s in shapes for b in backends]
    shape = {"M": m, "N": 4096, "K": 1024, "dtype": "bfloat16", "bias": False, "count": 10}
    monkeypatch.setattr(phase3, "record_gemms", lambda *a: [shape])
    monkeypatch.setattr(phase3, "backends_here", lambda device: ["cublas", "cublaslt", "triton"])
    monkeypatch.setattr(phase3, "measure", measure)
    pipe = SimpleNamespace(workload=SimpleNamespace(model=None, args=(), kwargs={}), device=torch.device("cuda"),
                           compile=True)
    ctx = SimpleNamespace(fresh_pipeline=lambda: pipe, pipe=pipe, run=SimpleNamespace(path=tmp_path, params={}),
                          kept_p50_ms=1.0, budget_s=None, info={})
    try:
        got = phase3.candidates(ctx)
    except Skip as why:
        got = str(why)
    return asked, ctx.info["gemm_prediction"], got


def test_gemm_does_not_time_triton_templates_on_one_row_shapes(monkeypatch, tmp_path):
    asked, prediction, got = _phase3_candidates(monkeypatch, tmp_path, m=1)     # a decode step's projection
    assert asked == [["cublas", "cublaslt"]] and prediction["triton_not_timed"] == ["1x4096x1024"]
    assert isinstance(got, str) and "no backend is predicted" in got
    asked, prediction, got = _phase3_candidates(monkeypatch, tmp_path, m=11)    # pi0's expert: timed, and wins
    assert asked == [["cublas", "cublaslt"], ["triton"]] and "triton_not_timed" not in prediction
    assert got == [{"gemm_autotune": "ATEN,TRITON"}]


def test_triton_timing_does_not_start_a_shape_its_limit_cannot_hold(monkeypatch):
    """pi0 full on the H200: about 16 s a shape; with a 48 s limit the fourth shape is not started (it was,
    and the timing took 64 s)."""
    from types import SimpleNamespace

    from playbook.phases import gemm as phase3
    clock = {"now": 0.0}

    def measure(shapes, device, ceilings, backends):
        clock["now"] += 16.0
        return [dict(shapes[0], backend="triton", us=1.0)]
    monkeypatch.setattr(phase3, "measure", measure)
    monkeypatch.setattr(phase3, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    room = [({**_row(n, "cublas", 10.0), "M": 11}, 100.0) for n in (64, 128, 256, 512, 1024)]
    prediction = {}
    rows = phase3._triton_rows(room, torch.device("cpu"), {}, prediction, limit_s=48.0)
    assert len(rows) == 3 and prediction["triton_autotune_s"] == 48.0       # a fourth would end at 64 s: over
    assert prediction["triton_shapes_left_out"] == ["11x512x64", "11x1024x64"]


def test_triton_timing_stops_once_the_shapes_left_cannot_reach_a_win(monkeypatch):
    """Triton saves nothing on the shape with the most headroom; the headroom left (50 us) is under the 60 us a
    win needs, so the rest is not timed. Under a 5 us bar every shape is timed."""
    from playbook.phases import gemm as phase3
    monkeypatch.setattr(phase3, "measure", lambda shapes, device, ceilings, backends: [
        dict(shapes[0], backend="triton", us=11.0)])                  # cuBLAS takes 10 us on every shape
    room = [({**_row(n, "cublas", 10.0), "M": 11}, us) for n, us in ((64, 50.0), (128, 30.0), (256, 20.0))]
    prediction = {}
    rows = phase3._triton_rows(room, torch.device("cpu"), {}, prediction, limit_s=480.0, bar_us=60.0)
    assert len(rows) == 1 and prediction["triton_shapes_left_out"] == ["11x128x64", "11x256x64"]
    assert "cannot reach" in prediction["triton_stopped"]
    prediction = {}
    assert len(phase3._triton_rows(room, torch.device("cpu"), {}, prediction, limit_s=480.0, bar_us=5.0)) == 3
    assert "triton_stopped" not in prediction


def test_triton_timing_starts_only_with_time_for_its_first_shape():
    from playbook.phases import gemm as phase3
    assert phase3.triton_limit(None) == (phase3.BUDGET_S, None)            # no chain budget: the whole table
    limit, why = phase3.triton_limit(63.6)                                 # pi0 full's share under --budget-min 9.2
    assert limit == pytest.approx(phase3.TRITON_SHARE * 63.6) and "under the 30 s" in why
    assert phase3.triton_limit(200.0)[1] is None
