"""On the GPU machine: capture, replay and the decode workload on CUDA (skipped without a GPU)."""
import pytest
import torch

from playbook.capture import GraphStep
from playbook.compare import compare, snapshot
from playbook.pipeline import Pipeline

pytestmark = pytest.mark.gpu


def test_graph_replay_matches_eager_and_takes_new_inputs():
    lin = torch.nn.Linear(64, 64, device="cuda")
    x = torch.randn(4, 64, device="cuda")
    g = GraphStep(lin, (x,), {})
    with torch.no_grad():
        assert torch.allclose(g(x), lin(x))
        y = torch.randn(4, 64, device="cuda")
        assert torch.allclose(g(y).clone(), lin(y))


@pytest.mark.parametrize("workload", ["tiny", "llama"])
@pytest.mark.parametrize("compile_", [False, True])
def test_captured_decode_step_is_correct(workload, compile_):
    params = {"workload": workload, "preset": "tiny", "device": "cuda", "dtype": "bfloat16"}
    ref = snapshot(Pipeline.fresh(params).build().outputs())
    precise = snapshot(Pipeline.fresh(params, precise=True).build().outputs())
    base_err = compare(ref, precise, torch.float32)["rel_err"]
    pipe = Pipeline.fresh(params)
    pipe.compile, pipe.capture = compile_, True
    runner = pipe.build()
    first = snapshot(runner.outputs())
    v = compare(runner.outputs(), ref, torch.bfloat16, precise=precise, baseline_err=base_err)
    assert v["correct"], v["problems"]
    assert compare(runner.outputs(), first, torch.bfloat16)["rel_err"] == 0.0     # replays are repeatable


@pytest.mark.parametrize("workload", ["tiny", "llama"])
def test_every_rewrite_compiled_and_captured_is_correct(workload):
    """Phases 2, 4 and 5 stacked (SDPA, fused projections, our kernels), compiled with Inductor's fusion
    settings and captured in one CUDA graph: the step still matches the untouched model."""
    from playbook.phases import attention, fusion, kernels
    from playbook.rewrites import fusion as fusion_rw
    params = {"workload": workload, "preset": "tiny", "device": "cuda", "dtype": "bfloat16"}
    ref = snapshot(Pipeline.fresh(params).build().outputs())
    precise = snapshot(Pipeline.fresh(params, precise=True).build().outputs())
    base_err = compare(ref, precise, torch.float32)["rel_err"]
    pipe = Pipeline.fresh(params)
    wl = pipe.workload
    attention.apply(pipe, {"route": {"hf": [], "rewrite": [] if workload == "llama" else
                                     [f"layers.{i}.self_attn" for i in range(4)]}, "sdpa_backend": "efficient"})
    groups = fusion_rw.find_siblings(wl.model, wl.args)
    fusion.apply(pipe, {"groups": [g.as_dict() for g in groups]})
    kernels.apply(pipe, {"swap": "triton", "inductor_fusion": True})
    assert pipe.info["swapped"]["norms"] > 0 and pipe.info["swapped"]["mlps"] > 0
    pipe.compile, pipe.capture = True, True
    runner = pipe.build()
    v = compare(runner.outputs(), ref, torch.bfloat16, precise=precise, baseline_err=base_err)
    assert v["correct"], v["problems"]


def test_kernels_inside_inductor_and_a_cuda_graph():
    from playbook import kernels
    from playbook.kernels import reference
    x = torch.randn(3, 2048, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(2048, device="cuda", dtype=torch.bfloat16)

    def f(x):
        y, r = kernels.fused_add_rms_norm(x, x * 0.5, w, 1e-6)
        return kernels.gelu_tanh_and_mul(torch.cat([y, r], -1))
    compiled = torch.compile(f, fullgraph=True)
    g = GraphStep(compiled, (x,), {})
    want = reference.gelu_tanh_and_mul(torch.cat(reference.fused_add_rms_norm(x, x * 0.5, w, 1e-6), -1))
    torch.testing.assert_close(g(x).float(), want.float(), **reference.TOLERANCES[torch.bfloat16])


def test_gemm_backends_are_all_measured_for_a_decode_shape():
    from playbook import gemm
    shape = {"M": 1, "N": 3072, "K": 2048, "dtype": "bfloat16", "bias": False, "count": 16}
    before = torch.backends.cuda.preferred_blas_library()
    rows = gemm.measure([shape], torch.device("cuda"), {"copy_gbps": 4000, "matmul_tflops": 800}, progress=lambda m: None)
    assert torch.backends.cuda.preferred_blas_library() == before          # global switch restored
    assert {r["backend"] for r in rows} == {"cublas", "cublaslt", "triton"}
    assert all(r["us"] and r["us"] > 0 and r["pct_of_floor"] > 0 for r in rows), rows
    assert sum(r["best"] for r in rows) == 1


def test_a_graph_replay_traces_the_same_kernels_as_eager_with_one_launch(tmp_path):
    from playbook import profile
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256)).cuda()
    x = torch.randn(1, 256, device="cuda")
    eager = profile.profile_step(lambda: model(x), torch.device("cuda"), tmp_path / "eager.json.gz")
    g = GraphStep(model, (x,), {}).bind((x,), {})
    graph = profile.profile_step(g, torch.device("cuda"), tmp_path / "graph.json.gz")
    assert eager["unit"] == graph["unit"] == "kernel"
    assert eager["kernel_count"] == graph["kernel_count"] >= 3 and eager["launches"] >= 3
    assert graph["launches"] <= 2                      # the replay, and the copy of the input into the graph's buffer
    assert graph["gpu_ms_by_op"][0]["op"] == "CUDA graph replay"
    for s in (eager, graph):
        assert sum(s["category_ms"].values()) == pytest.approx(s["gpu_busy_ms"], rel=0.05)
        assert s["category_ms"]["gemm"] > 0


def test_phase_5_times_each_projection_shape_before_it_builds():
    """rewrites.gemv.time_shapes on a real step: one row per distinct shape (rows, N, K, norm), both ways timed in
    graphs; the winners are shapes of that table, and a routed step with only them still gives the same logits."""
    from playbook.rewrites import gemv
    from playbook.workloads import build_workload
    wl = build_workload("hf", "tiny", "qwen2", torch.device("cuda"), torch.bfloat16, options={"position": "9"})
    with torch.no_grad():
        want = wl.model(*wl.args, **wl.kwargs).float()
    found = gemv.find_sites(wl.model, wl.args, wl.kwargs)
    table = gemv.time_shapes(found, torch.device("cuda"), torch.bfloat16)
    assert len(table) == len(set(gemv.shape_keys(found).values()))
    assert all(r["gemv_us"] > 0 and r["cublas_us"] > 0 for r in table)
    shapes = gemv.winners(table)
    assert all(any([r["rows"], r["N"], r["K"], r["norm"]] == s for r in table) for s in shapes)
    gemv.route(wl.model, gemv.select(found, shapes))
    with torch.no_grad():
        got = wl.model(*wl.args, **wl.kwargs).float()
    assert (got - want).abs().max().item() < 0.05 * want.abs().max().item()
