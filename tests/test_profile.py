"""Trace analysis: kernels per step, graph replays, categories, launch overhead, the diff; and a real CPU capture."""
import gzip
import json

import pytest
import torch

from playbook import profile


def _ev(cat, name, ts, dur, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur, "args": args}


KERNELS = [("sm90_xmma_gemm_bf16bf16_bf16f32", 30.0), ("triton_per_fused_add_mean_mul_pow_rsqrt_0", 5.0),
           ("pytorch_flash::flash_fwd_splitkv_kernel", 10.0), ("void at::native::vectorized_elementwise_kernel", 2.0)]


def _trace(path, graph, steps=3):
    """A CUDA trace of `steps` steps of KERNELS: one launch each (eager) or one cudaGraphLaunch (graph)."""
    events, t, corr = [], 0.0, 0
    for i in range(steps):
        events.append(_ev("user_annotation", f"ProfilerStep#{i}", t, 400.0))
        events.append(_ev("user_annotation", profile.STEP_MARK, t + 1, 300.0))
        gpu_t = t + 50
        if graph:
            corr += 1
            events.append(_ev("cuda_runtime", "cudaGraphLaunch", t + 10, 8.0, correlation=corr))
        for j, (name, dur) in enumerate(KERNELS):
            if not graph:
                corr += 1
                events.append(_ev("cpu_op", "aten::mm", t + 5 + 20 * j, 15.0, **{"Input Dims": [[1, 64], [64, 64]]}))
                events.append(_ev("cuda_runtime", "cudaLaunchKernel", t + 10 + 20 * j, 6.0, correlation=corr))
            events.append({**_ev("kernel", name, gpu_t, dur, correlation=corr, stream=7, device=0), "tid": 7, "pid": 0})
            gpu_t += dur + 1
        events.append(_ev("cuda_runtime", "cudaStreamSynchronize", t + 320, 60.0))
        t += 1000
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    return path


@pytest.mark.parametrize("graph", [False, True])
def test_kernels_are_counted_and_categorised_with_and_without_a_graph(tmp_path, graph):
    s = profile.analyse(_trace(tmp_path / "t.json.gz", graph))
    assert s["unit"] == "kernel" and s["kernel_count"] == len(KERNELS) and s["steps_profiled"] == 3
    assert s["gpu_busy_ms"] == pytest.approx(sum(d for _, d in KERNELS) / 1e3)
    assert sum(s["category_ms"].values()) == pytest.approx(s["gpu_busy_ms"])        # categories add up
    assert s["category_ms"] == {"gemm": 0.03, "attention": 0.01, "norm": 0.005, "elementwise": 0.002,
                                "memcpy": 0.0, "other": 0.0}
    assert s["launches"] == (1 if graph else len(KERNELS))
    assert s["launch_overhead_ms"] == pytest.approx(0.008 if graph else 0.024)
    assert s["syncs"] == 0                   # the harness's sync after the step is outside the step's window
    ops = {e["op"] for e in s["gpu_ms_by_op"]}
    assert ops == ({"CUDA graph replay"} if graph else {"aten::mm"})
    assert 0 < s["idle_fraction"] < 1


def test_the_launch_table_tells_one_kernel_apart_by_grid_with_the_gap_before_it(tmp_path):
    """`_gemv_rows` at two grids (two projection shapes) is two rows, each with its time a launch and the idle
    gap before it; a kernel with no grid in its args is one row of its own."""
    events = [_ev("user_annotation", profile.STEP_MARK, 0, 300.0),
              _ev("cuda_runtime", "cudaGraphLaunch", 5, 8.0, correlation=1)]
    t = 20.0
    for grid, dur, gap in (([80, 1, 1], 6.0, 1.0), ([32, 8, 1], 5.0, 2.0), ([80, 1, 1], 8.0, 3.0),
                           ([32, 8, 1], 5.0, 2.0), (None, 1.0, 0.5)):
        t += gap
        kw = {"grid": grid, "block": [128, 1, 1], "registers per thread": 96} if grid else {}
        events.append({**_ev("kernel", "_gemv_rows" if grid else "triton_poi_fused_add_0", t, dur, correlation=1,
                             stream=7, **kw), "tid": 7, "pid": 0})
        t += dur
    s = profile.analyse_step({"mark": events[0], "runtime": [events[1]], "ops": [], "gpu": events[2:]})
    rows = {(r["name"], json.dumps(r["grid"])): r for r in s["launch_table"]}
    qkv, o = rows[("_gemv_rows", "[80, 1, 1]")], rows[("_gemv_rows", "[32, 8, 1]")]
    assert (qkv["count"], qkv["us_each"], qkv["gap_us"]) == (2, 7.0, 3.0)      # the first kernel has no gap before it
    assert qkv["registers"] == 96
    assert (o["count"], o["us_each"], o["gap_us"]) == (2, 5.0, 2.0)
    assert rows[("triton_poi_fused_add_0", "null")]["gap_us"] == 0.5
    assert [r["ms"] for r in s["launch_table"]] == sorted((r["ms"] for r in s["launch_table"]), reverse=True)


def test_a_benchmarks_step_summary_reads_the_median_traced_call(tmp_path, monkeypatch):
    """profile.step_summary (benchmarks/tuning_variants.py --kernels):
    a GPU step's kernel count, busy time and launch table from the trace capture() writes; a CPU step's
    ops, with no launch table."""
    monkeypatch.setattr(profile, "capture", lambda step, device, path: _trace(path, graph=True))
    s = profile.step_summary(lambda: None, torch.device("cuda"))
    assert (s["unit"], s["kernels"]) == ("kernel", len(KERNELS))
    assert s["gpu_busy_ms"] == pytest.approx(sum(d for _, d in KERNELS) / 1e3)
    assert [r["name"] for r in s["launch_table"]] == [n for n, _ in sorted(KERNELS, key=lambda k: -k[1])]
    monkeypatch.undo()
    x = torch.randn(32, 32)
    c = profile.step_summary(lambda: x @ x, torch.device("cpu"))
    assert (c["unit"], c["kernels"], c["launch_table"], c["gpu_busy_ms"]) == ("cpu_op", None, [], None)
    assert c["cpu_ops"] >= 1


def test_trace_diff_between_phases(tmp_path):
    def as_phase(s):
        return {"kernel_count": s.pop("kernel_count"), "profile": s}
    eager = as_phase(profile.analyse(_trace(tmp_path / "a.json.gz", graph=False)))
    fewer = as_phase(profile.analyse(_trace(tmp_path / "b.json.gz", graph=True)))
    fewer["kernel_count"] -= 1
    fewer["profile"]["kernel_table"] = fewer["profile"]["kernel_table"][1:] + [
        {"name": "triton_tem_fused_mm_0", "category": "gemm", "count": 1, "ms": 0.02}]
    d = profile.trace_diff(eager, fewer)
    assert d["count_delta"] == -1 and d["count_delta_pct"] == -25.0
    assert [k["name"] for k in d["added"]] == ["triton_tem_fused_mm_0"]
    assert [k["name"] for k in d["removed"]] == [KERNELS[0][0]]


def test_rocm_and_cuda_kernel_names():
    assert profile.categorize("Cijk_Alik_Bljk_BBS_BH_MT64x16x64") == "gemm"
    assert profile.categorize("nvjet_tst_64x8_64x16_2x1_v_bz_TNT") == "gemm"
    assert profile.categorize("cudnn_generated_fused_attn_fprop") == "attention"
    assert profile.categorize("_rms_norm_kernel") == "norm"
    assert profile.categorize("triton_poi_fused_silu_mul_3") == "elementwise"
    assert profile.categorize("_few_query_part") == profile.categorize("_few_query_combine") == "attention"
    assert profile.categorize("_rope_append") == "elementwise"          # playbook/kernels/rope_append_rows.py
    assert profile.categorize("ncclKernel_AllReduce") == "other"


def test_a_real_cpu_capture_counts_ops_and_says_so(tmp_path):
    lin = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    x = torch.randn(2, 64)
    s = profile.profile_step(lambda: lin(x), torch.device("cpu"), tmp_path / "cpu.json.gz")
    assert s["unit"] == "cpu_op" and s["kernel_count"] is None and s["cpu_op_count"] >= 3
    assert "CPU" in s["note"] and s["steps_profiled"] == 5
    assert s["category_ms"]["gemm"] > 0
    assert sum(s["category_ms"].values()) == pytest.approx(s["cpu_busy_ms"], abs=4e-4)     # 4-decimal rounding
    cpu, gpu = profile.read_step(tmp_path / "cpu.json.gz")
    assert cpu and not gpu and all(start >= 0 for start, *_ in cpu)


def test_a_trace_without_the_step_mark_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(ValueError, match="playbook.profile.capture"):
        profile.analyse(path)


def test_holistic_trace_analysis_reads_our_gpu_traces_and_declines_cpu_ones(tmp_path):
    pytest.importorskip("hta")
    h = profile.hta_summary(_trace(tmp_path / "g.json.gz", graph=True))
    assert h["compute_pct"] > 0 and h["idle_pct"] + h["compute_pct"] + h["non_compute_pct"] == pytest.approx(100, abs=0.1)
    assert h["kernel_type_pct"] == {"COMPUTATION": 100.0}
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(1, 8)
    assert profile.profile_step(lambda: lin(x), torch.device("cpu"), tmp_path / "c.json.gz")["hta"] is None


def test_holistic_trace_analysis_is_skipped_on_a_huge_trace(tmp_path, monkeypatch):
    """An eager pi0 step's trace (hundreds of thousands of events) would keep HTA parsing for minutes."""
    path = _trace(tmp_path / "g.json.gz", graph=True)
    with gzip.open(path, "rt") as f:
        n = len(json.load(f)["traceEvents"])
    monkeypatch.setattr(profile, "HTA_MAX_EVENTS", n - 1)
    h = profile.hta_summary(path)
    assert h == {"skipped": h["skipped"]} and f"{n} trace events" in h["skipped"]


def test_each_launch_is_owned_by_the_innermost_op_around_it_on_its_thread():
    """Nested ops on two threads, an op that ended before its launch, and a launch with no op: the owner is
    the innermost op open at the launch on the launch's thread, checked against a scan of every op."""
    import random
    rng = random.Random(0)
    ops, launches, corr = [], [], 0
    for tid in (1, 2):
        t = 0.0
        for _ in range(300):
            depth_ends = []
            outer = _ev("cpu_op", f"outer{tid}", t, 40.0)
            ops.append({**outer, "tid": tid})
            s = t + rng.uniform(0, 5)
            for k in range(rng.randint(0, 3)):          # inner ops, some nested in the one before
                d = rng.uniform(1, 8)
                ops.append({**_ev("cpu_op", f"inner{k}", s, d, **{"Input Dims": [[k]]}), "tid": tid})
                depth_ends.append(s + d)
                s += rng.uniform(0, d + 2)
            for _ in range(rng.randint(1, 3)):
                corr += 1
                ts = t + rng.uniform(0, 50)              # some after the outer op ended
                launches.append({**_ev("cuda_runtime", "cudaLaunchKernel", ts, 1.0, correlation=corr), "tid": tid})
            t += 60
    corr += 1
    launches.append({**_ev("cuda_runtime", "cudaLaunchKernel", 5.0, 1.0, correlation=corr), "tid": 9})
    ops.sort(key=lambda o: o["ts"])

    def scan(r):                                        # the definition, one launch at a time
        best = None
        for o in ops:
            if o["ts"] <= r["ts"] <= o["ts"] + o["dur"] and o["tid"] == r["tid"]:
                best = o
        return (best["name"], best["args"].get("Input Dims")) if best else ("(no CPU op)", None)
    owners = profile._launch_owners(launches, ops)
    assert owners == {r["args"]["correlation"]: scan(r) for r in launches}
    assert {v[0] for v in owners.values()} >= {"outer1", "inner0", "(no CPU op)"}



def test_the_report_shows_a_kernel_run_at_several_grids(tmp_path):
    from playbook.report.tables import profile_details
    s = profile.analyse(_trace(tmp_path / "t.json.gz", graph=True))
    s["trace"] = "t.json.gz"
    s["launch_table"] = [{"name": "_gemv_rows", "grid": [80, 1, 1], "block": [128, 1, 1], "count": 180, "ms": 3.9,
                          "us_each": 21.7, "gap_us": 0.6},
                         {"name": "_gemv_rows", "grid": [32, 8, 1], "block": [128, 1, 1], "count": 360, "ms": 2.2,
                          "us_each": 6.1, "gap_us": 0.7},
                         {"name": "nvjet_sm90", "grid": [4, 1, 1], "block": [384, 1, 1], "count": 17, "ms": 2.3,
                          "us_each": 138.0, "gap_us": 1.0}]
    p = {"profile": s, "kernel_count": s["kernel_count"], "gpu_busy_ms": s["gpu_busy_ms"],
         "launch_overhead_ms": s["launch_overhead_ms"], "category_ms": s["category_ms"]}
    text = "\n".join(profile_details(p))
    assert "| `_gemv_rows` | [80, 1, 1] | - | 180 | 21.7 | 0.6 |" in text
    assert "| `_gemv_rows` | [32, 8, 1] | - | 360 | 6.1 | 0.7 |" in text
    assert "nvjet_sm90` | [4, 1, 1]" not in text          # one grid only: the kernel table says it already
