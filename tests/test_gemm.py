"""GEMM shapes recorded from a step, and aiter's tuning hand-off (ROCm; its dispatch checked here without one)."""
import csv
import importlib.util
import os

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
