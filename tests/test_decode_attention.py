"""playbook/kernels/decode_attention.py (the lab's worked example) against its reference, and the lab's gates."""
import json
import os
import subprocess
import sys

import pytest
import torch

from playbook.kernels import decode_attention as da
from playbook.kernels import reference as ref
from playbook import lab

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def inputs(heads, kv_heads, n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(*s, generator=g) * 2).to(device=DEVICE, dtype=dtype)
                 for s in ((1, heads, d), (1, kv_heads, n, d), (1, kv_heads, n, d)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,n,d", [(4, 4, 1, 16), (8, 2, 123, 32), (6, 1, 300, 64)])
@pytest.mark.parametrize("splits", [None, 1, 3, 7])
def test_both_versions_match_the_reference_on_odd_lengths(heads, kv_heads, n, d, dtype, splits):
    q, k, v = inputs(heads, kv_heads, n, d, dtype)
    want = ref.decode_attention(q, k, v).float()
    for got in (da.decode_attention_v1(q, k, v, block_n=32), da.decode_attention_split(q, k, v, splits=splits, block_n=32)):
        assert got.shape == q.shape and torch.isfinite(got).all()
        assert (got.float() - want).abs().max() <= TOL[dtype] * max(1.0, want.abs().max())


def test_program_counts_v1_per_head_and_split_for_four_waves():
    q, k, _ = inputs(32, 8, 4096, 128, torch.float32)
    assert da.programs("v1", q, k) == 32
    assert da.programs("split", q, k, splits=17) == 32 * 17
    assert da.default_splits(1, 32, 4096, 64, torch.device("cpu"), waves=4) == 1      # 4 nominal SMs on a CPU
    assert da.default_splits(1, 32, 64, 64, torch.device("cpu"), waves=100) == 1      # never a chunk under a block


def test_bad_shapes_are_refused():
    q, k, v = inputs(6, 4, 10, 16, torch.float32)                                     # 6 heads over 4 KV heads
    with pytest.raises(ValueError, match="H a multiple of KVH"):
        da.decode_attention_v1(q, k, v)


def test_gates_stop_on_a_wrong_kernel_and_revert_a_wrong_change():
    lb = lab.Lab("cpu", say=lambda *_: None)
    x = inputs(4, 2, 50, 16, torch.float32)
    assert lb.correctness("ok", da.decode_attention_v1, ref.decode_attention, x)["ok"]
    assert not lb.correctness("wrong", lambda q, k, v: da.decode_attention_v1(q, k, v) * 1.01,
                              ref.decode_attention, x)["ok"]
    assert not lb.correctness("nan", lambda q, k, v: da.decode_attention_v1(q, k, v) * float("nan"),
                              ref.decode_attention, x)["ok"]
    lb.change("start", da.decode_attention_v1, x, ref.decode_attention)
    assert lb.change("broken", lambda q, k, v: q * 0, x, ref.decode_attention)["verdict"] == "reverted: wrong"
    assert "| broken | - | reverted: wrong |" in lb.summary()


def test_change_reverts_a_regression_over_two_percent():
    lb = lab.Lab("cpu", say=lambda *_: None)
    times = iter([100.0, 101.5, 110.0])                 # start; +1.5% slower: kept; 8% slower: reverted
    lb.time_us = lambda fn, inputs: next(times)
    x = inputs(4, 2, 8, 16, torch.float32)
    assert lb.change("a", da.decode_attention_v1, x)["verdict"] == "start"
    assert lb.change("b", da.decode_attention_v1, x)["verdict"].startswith("kept")
    assert lb.change("c", da.decode_attention_v1, x)["verdict"].startswith("reverted: slower by 7.7%")
    assert lb.best["change"] == "b"


def test_parallelism_gate_on_a_gpu_like_device_and_the_decision_tree():
    lb = lab.Lab("cpu", say=lambda *_: None)
    lb.sms = 132
    assert not lb.parallelism("v1", 32)["ok"] and lb.parallelism("split", 544)["ok"]
    assert "bank conflicts" in lab.decide({"bank_conflicts": 4, "dram_pct": 50, "occupancy_pct": 60})
    assert "occupancy" in lab.decide({"bank_conflicts": 2e6, "dram_pct": 11, "occupancy_pct": 23})
    assert "memory-bound" in lab.decide({"dram_pct": 85, "occupancy_pct": 50})
    assert "occupancy" in lab.decide({"dram_pct": 20, "occupancy_pct": 10})
    csv = ('"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"\n'
           '"0","_decode_split","dram__throughput.avg.pct_of_peak_sustained_elapsed","%","81.5"\n'
           '"0","_decode_split","gpu__time_duration.sum","nsecond","12,480"\n')
    assert lab.parse_ncu(csv) == {"dram_pct": 81.5, "duration_us": 12.48}


def test_the_lab_notebook_runs_headless_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, "-m", "papermill", "notebooks/lab-custom-kernel.ipynb",
                           str(tmp_path / "lab.ipynb"), "-p", "device", "cpu", "-p", "out_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRITON_INTERPRET": "1"})   # a CPU run, on a GPU machine too
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "lab.json").read_text())
    gates = {g["gate"] for g in result["gates"]}
    assert {"preflight", "build", "correctness", "parallelism", "performance", "profile", "sanitize"} <= gates
    assert all(g["ok"] for g in result["gates"]) and len(result["history"]) == 5
    assert all(r["v1_ok"] and r["split_ok"] for r in result["sweep"])


@pytest.mark.parametrize("dtype,splits", [(torch.float32, None), (torch.bfloat16, 5), (torch.float32, 1)])
@pytest.mark.parametrize("heads,kv_heads,slots,filled,d", [(4, 4, 64, 1, 16), (8, 2, 300, 129, 32),
                                                           (6, 1, 257, 257, 64), (12, 4, 1000, 77, 32)])
def test_the_filled_cache_kernel_reads_only_the_filled_slots(heads, kv_heads, slots, filled, d, dtype, splits):
    q, k, v = inputs(heads, kv_heads, slots, d, dtype, seed=filled)
    k[:, :, filled:], v[:, :, filled:] = float("nan"), float("nan")      # never written: must never be read
    length = torch.tensor([filled], dtype=torch.int32, device=DEVICE)
    want = ref.decode_attention(q, k[:, :, :filled], v[:, :, :filled]).float()
    got = da.decode_attention_filled(q, k, v, length, splits=splits, block_n=32)
    assert got.shape == q.shape and got.dtype == dtype and torch.isfinite(got).all()
    assert (got.float() - want).abs().max() <= TOL[dtype] * max(1.0, want.abs().max())


def test_the_filled_cache_kernel_follows_the_length_tensor_and_compiles():
    """One compiled step, two positions: the count travels as a tensor, so nothing recompiles or re-reads."""
    q, k, v = inputs(8, 2, 200, 32, torch.float32, seed=5)
    length = torch.tensor([40], dtype=torch.int32, device=DEVICE)
    step = torch.compile(lambda q, k, v, n: da.decode_attention_filled(q, k, v, n, scale=0.1), fullgraph=True)
    for filled in (40, 171):
        length.fill_(filled)
        scores = torch.einsum("bhd,bhnd->bhn", q, k[:, :, :filled].repeat_interleave(4, 1)) * 0.1
        want = torch.einsum("bhn,bhnd->bhd", scores.softmax(-1), v[:, :, :filled].repeat_interleave(4, 1))
        torch.testing.assert_close(step(q, k, v, length), want, atol=1e-4, rtol=1e-4)


def rope_inputs(heads, kv_heads, slots, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(n, d, generator=g).to(DEVICE, dtype) for n in (heads, kv_heads, kv_heads))
    angle = torch.rand(d // 2, generator=g) * 6
    cos, sin = torch.cat([angle.cos()] * 2).to(DEVICE, dtype), torch.cat([angle.sin()] * 2).to(DEVICE, dtype)
    caches = [(torch.randn(1, kv_heads, slots, d, generator=g) * 2).to(DEVICE, dtype) for _ in range(2)]
    return q, k, v, cos, sin, caches


@pytest.mark.parametrize("dtype,chunk,block_n", [(torch.float32, None, 32), (torch.bfloat16, 64, 32),
                                                 (torch.float32, 16, 16), (torch.float32, 1000, 64),
                                                 (torch.float32, 48, 32)])
@pytest.mark.parametrize("heads,kv_heads,slots,position,d", [(4, 4, 64, 0, 16), (8, 2, 300, 128, 32),
                                                             (6, 1, 257, 256, 64), (12, 4, 1000, 63, 32),
                                                             (12, 4, 1000, 64, 32), (2, 2, 33, 31, 8)])
def test_the_rope_append_kernel_rotates_writes_the_caches_and_attends(heads, kv_heads, slots, position, d, dtype,
                                                                      chunk, block_n):
    """Odd shapes, positions at a chunk's first and last slot, slot 0 and the last slot, one chunk or many (a
    chunk not a multiple of the block is rounded up to one); slots past the position hold NaN (never read) and
    the written slot starts as NaN (read only through the new k and v)."""
    q, k, v, cos, sin, (kc, vc) = rope_inputs(heads, kv_heads, slots, d, dtype, seed=position)
    kc[:, :, position:], vc[:, :, position:] = float("nan"), float("nan")
    want_kc, want_vc = kc.clone(), vc.clone()
    pos = torch.tensor([position], device=DEVICE)
    want = ref.decode_attention_rope_append(q, k, v, cos, sin, want_kc, want_vc, pos).float()
    for _ in range(2):           # twice: the combine's counters are back at zero after a call
        got = da.decode_attention_rope_append(q, k, v, cos, sin, kc, vc, pos, chunk=chunk, block_n=block_n)
        assert got.shape == (heads, d) and got.dtype == dtype and torch.isfinite(got).all()
        assert (got.float() - want).abs().max() <= TOL[dtype] * max(1.0, want.abs().max())
    assert (da._counter(q.device, heads) == 0).all()
    for got_c, want_c in ((kc, want_kc), (vc, want_vc)):
        assert (got_c[:, :, position].float() - want_c[:, :, position].float()).abs().max() <= TOL[dtype] * 4
        torch.testing.assert_close(got_c[:, :, :position], want_c[:, :, :position], equal_nan=True)
        assert got_c[:, :, position + 1:].isnan().all()


def test_the_rope_append_kernel_refuses_what_it_cannot_take():
    q, k, v, cos, sin, (kc, vc) = rope_inputs(6, 4, 10, 16, torch.float32)
    pos = torch.tensor([3], device=DEVICE)
    with pytest.raises(ValueError, match="KV heads"):
        da.decode_attention_rope_append(q, k, v, cos, sin, kc, vc, pos)        # 6 heads over 4 KV heads
    q, k, v, cos, sin, (kc, vc) = rope_inputs(4, 2, 10, 16, torch.float32)
    with pytest.raises(ValueError, match="contiguous"):
        da.decode_attention_rope_append(q, k, v, cos, sin, kc.transpose(2, 3).contiguous().transpose(2, 3), vc, pos)


def test_the_rope_append_kernel_compiles_and_follows_the_position_tensor():
    """One compiled step at two positions: the caller's caches hold the new k and v after each call."""
    q, k, v, cos, sin, (kc, vc) = rope_inputs(8, 2, 200, 32, torch.float32, seed=3)
    want_kc, want_vc = kc.clone(), vc.clone()
    pos = torch.tensor([40], device=DEVICE)
    step = torch.compile(lambda *a: da.decode_attention_rope_append(*a, scale=0.1), fullgraph=True)
    for position in (40, 171):
        pos.fill_(position)
        want = ref.decode_attention_rope_append(q, k, v, cos, sin, want_kc, want_vc, pos, scale=0.1)
        torch.testing.assert_close(step(q, k, v, cos, sin, kc, vc, pos), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(kc, want_kc, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vc, want_vc)
