"""The ladder's decisions, phase by phase, on the tiny workload (no papermill: see test_chain.py)."""
import json
from pathlib import Path

import pytest

from playbook.ladder import run_phase
from playbook.runs import open_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = open_run(str(tmp_path_factory.mktemp("runs") / "tiny"), workload="tiny", preset="tiny", device="cpu",
                   dtype="float32", target_ms=None, iters=10, warmup=2)
    run_phase("baseline", run, iters=10, warmup=2)
    return run


def test_baseline_keeps_reference_and_ceilings(tiny_run):
    b = tiny_run.phase("baseline")
    assert b["status"] == "kept" and b["p50_ms"] > 0 and b["correct"]
    assert (tiny_run.path / "reference.pt").exists()
    assert tiny_run.params["ceilings"]["copy_gbps"] > 0 and b["bandwidth_floor_ms"] > 0 and b["x_of_floor"] > 0
    assert b["x_of_floor"] == min(b["x_of_bandwidth_floor"], b["x_of_compute_floor"])    # against the higher floor


def test_cudagraph_on_cpu_measures_compile_alone(tiny_run):
    r = run_phase("cudagraph", tiny_run, iters=10, warmup=2)
    assert r["status"] in ("kept", "rejected"), r["error"]
    assert r["correct"] and r["max_abs_diff"] < 1e-3
    assert r["knobs"] == {"compile": True, "mode": "default", "scope": "model", "capture": False}
    # compile_s is the first call's time: near 0 when Dynamo reuses a graph compiled earlier in this process
    assert any("no CUDA graph" in n for n in r["notes"]) and r["compile_s"] is not None and r["compile_s"] >= 0
    assert any(Path(tiny_run.params["compile_cache"]).iterdir())    # the compile's caches, shared by runs
    assert r["previous_p50_ms"] > 0 and r["verdict"] in ("faster", "same", "slower")
    assert (r["status"] == "kept") == (r["verdict"] != "slower")
    recipe = json.loads((tiny_run.path / "recipe.json").read_text()) if r["status"] == "kept" else None
    assert recipe is None or recipe["phases"][0]["name"] == "cudagraph"


def test_attention_rewrites_tiny_and_measures_backends(tiny_run):
    r = run_phase("attention", tiny_run, iters=10, warmup=2)
    assert r["status"] in ("kept", "rejected"), r["error"]
    assert r["correct"] and r["attention_sites"]["rewritten"] == [f"layers.{i}.self_attn" for i in range(4)]
    assert r["knobs"]["route"]["rewrite"] == r["attention_sites"]["rewritten"]
    assert {"default", "math"} <= {b["backend"] for b in r["sdpa_backends"]} and r["sdpa_backend_choice"]
    assert r["gemm_launches"]["after"]["sdpa"] == 4 and r["sdpa_calls"][0]["count"] == 4


def test_gemm_records_every_shape_and_writes_the_table(tiny_run):
    import csv
    r = run_phase("gemm", tiny_run, iters=5, warmup=1)          # in ladder order: before fusion
    assert r["status"] == "skipped" and "one GEMM backend on a CPU" in r["skip_reason"]
    assert r["gemm_per_step"] == 29 and r["gemm_shapes"] == 5
    rows = list(csv.DictReader(open(tiny_run.path / "gemm_tuning.csv")))
    assert len(rows) == 5 and all(float(row["us"]) > 0 and row["best"] == "True" for row in rows)
    assert {(row["M"], row["N"], row["K"]) for row in rows} >= {("1", "256", "256"), ("1", "1024", "256")}


def test_fusion_saves_three_gemms_per_layer(tiny_run):
    r = run_phase("fusion", tiny_run, iters=10, warmup=2)
    assert r["status"] in ("kept", "rejected"), r["error"]
    assert r["correct"] and r["gemm_launches"]["saved"] == 4 * 3
    assert r["weight_bytes"]["after"] == r["weight_bytes"]["before"] and len(r["knobs"]["groups"]) == 8


def test_nested_candidates_stop_at_the_first_correct_one(tiny_run, monkeypatch):
    """fusion's candidates are nested (the one with the workload's knobs holds the fusion alone): once one is
    correct, the ones it holds are not built, and the JSON says so."""
    from playbook.phases import fusion
    offered = fusion.candidates

    def with_a_superset(ctx):
        (fused,) = offered(ctx)
        return [dict(fused, model_knobs={}), fused]        # no knob to set, so both are correct
    monkeypatch.setattr(fusion, "candidates", with_a_superset)
    r = run_phase("fusion", tiny_run, iters=5, warmup=1)
    assert r["status"] in ("kept", "rejected"), r["error"]
    assert len(r["candidates"]) == 1 and "model_knobs" in r["candidates"][0]["knobs"]
    assert r["not_built"]["labels"] == ["fuse projections"] and "nested" in r["not_built"]["why"]


def test_kernels_tries_triton_and_inductor_fusion(tiny_run, monkeypatch):
    from playbook.phases import kernels
    monkeypatch.setattr(kernels, "BUDGET_S", None)         # every candidate, however slow this machine builds
    r = run_phase("kernels", tiny_run, iters=5, warmup=1)
    assert r["status"] in ("kept", "rejected"), r["error"]
    tried = [c["knobs"] for c in r["candidates"]]
    compiled = any(s["name"] == "cudagraph" and s["knobs"].get("compile") for s in tiny_run.recipe()["phases"])
    # the interpreter is on in tests (conftest); a compiled recipe gets the swap with Inductor's fusion only
    assert ({"swap": "triton", "inductor_fusion": True} if compiled else {"swap": "triton"}) in tried
    assert sum(1 for k in tried if k.get("swap")) == 1, tried
    assert all(c["correct"] for c in r["candidates"]), r["candidates"]
    assert r["kernel_sites"]["norms"] == 9 and r["kernel_sites"]["mlps"] == 4
    swap = next(c for c in r["candidates"] if c["knobs"].get("swap") == "triton")
    assert swap["info"]["swapped"] == {"norms": 9, "mlps": 4, "layers": 4}
    assert swap["verdict"] == "slower"                          # interpreted Triton is not a speed
    assert r["status"] != "kept" or not r["knobs"].get("swap")     # interpreted Triton is never what is kept


def test_tuning_says_why_it_is_skipped_on_a_cpu(tiny_run):
    r = run_phase("tuning", tiny_run, iters=5, warmup=1)
    assert r["status"] == "skipped" and r["skip_reason"]


def test_tuning_offers_pdl_and_combo_kernels_with_coordinate_descent_first_where_the_gpu_has_them(monkeypatch):
    from types import SimpleNamespace

    import torch

    from playbook.phases import tuning
    ctx = SimpleNamespace(run=None, pipe=SimpleNamespace(compile=True, info={}), device=torch.device("cuda"),
                          budget_s=None, info={})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    out = tuning.candidates(ctx)
    assert out[0] == {"tune": ["coordinate_descent_tuning", "pdl", "combo_kernels"]}
    assert out[1] == {"tune": ["coordinate_descent_tuning"]}
    assert out[-1] == {"tune": ["pdl"]} and tuning.label(out[-1]) == "PDL"          # PDL alone, last: one build
    assert tuning.label(out[0]) == "coordinate descent + PDL + combo kernels" and "pdl" not in ctx.info
    assert "combo_kernels" not in ctx.info
    both = {"tune": ["coordinate_descent_tuning", "pdl"], "projections": "inductor"}   # a recipe recorded before
    assert tuning.label(both) == "coordinate descent + PDL, projections to Inductor" and tuning.label(both) in tuning.CHOICES
    for knobs in out:
        assert tuning.label(knobs) in tuning.CHOICES
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    out = tuning.candidates(ctx)
    assert out[0] == {"tune": ["coordinate_descent_tuning", "combo_kernels"]} and "sm_80" in ctx.info["pdl"]
    assert all("pdl" not in knobs["tune"] for knobs in out)
    pipe = SimpleNamespace(inductor={}, notes=[], info={}, workload=SimpleNamespace(model=torch.nn.Linear(2, 2)))
    tuning.apply(pipe, {"tune": ["coordinate_descent_tuning", "pdl", "combo_kernels"]})
    assert pipe.inductor == {"coordinate_descent_tuning": True, "triton.enable_pdl": True, "combo_kernels": True}
    assert pipe.info["pdl"] == {"gemv": 0, "rope_append_rows": 0, "few_query": 0}     # nothing of ours routed


def test_tuning_offers_a_gemv_recipe_pdl_and_combo_kernels_first_in_one_build(tmp_path, run_params, monkeypatch):
    """llama 1b on the H200 (sitting 16): the budget held one tuned build and left out PDL alone, offered last, so
    the GEMV recipe never ran with PDL. A recipe routed through kernels.gemv gets PDL + combo kernels first."""
    from types import SimpleNamespace

    import torch

    from playbook.phases import tuning
    from test_state import phase
    monkeypatch.setattr(tuning, "pdl_here", lambda device: None)
    monkeypatch.setattr(tuning, "combo_here", lambda: None)
    routed = SimpleNamespace(compile=True, info={"gemv": {"linears": 49}})
    ctx = SimpleNamespace(run=None, pipe=routed, device=torch.device("cuda"), budget_s=None, info={})
    out = tuning.candidates(ctx)
    assert out[0] == {"tune": ["pdl", "combo_kernels"]} and tuning.label(out[0]) == "PDL + combo kernels"
    assert out[1] == {"tune": ["coordinate_descent_tuning", "pdl", "combo_kernels"], "projections": "inductor"}
    assert out[2] == {"tune": ["coordinate_descent_tuning"], "projections": "inductor"}
    assert {"tune": ["pdl"]} not in out and all(tuning.label(k) in tuning.CHOICES for k in out)
    monkeypatch.setattr(tuning, "pdl_here", lambda device: "a GPU before Hopper")       # no PDL: no one-build candidate
    out = tuning.candidates(ctx)
    assert out[0] == {"tune": ["coordinate_descent_tuning", "combo_kernels"], "projections": "inductor"}
    assert all("pdl" not in k["tune"] for k in out)
    run = open_run(str(tmp_path / "t"), **run_params)
    assert tuning.build_estimate({"tune": ["pdl"]}, run) == ("one build", None)          # nothing compiled yet
    run.write_phase({**phase(5, "kernels"), "compile_s": 10.0})
    assert tuning.build_estimate({"tune": ["pdl", "combo_kernels"]}, run) == ("one build", 10.0)
    assert tuning.build_estimate({"tune": ["coordinate_descent_tuning", "pdl"]}, run) == ("tuned", tuning.COST_X * 10)
    assert tuning.build_estimate({"tune": ["max_autotune"]}, run)[0] == "tuned"


def test_a_build_that_would_overrun_the_budget_is_left_out_and_a_cheaper_one_after_it_is_built(monkeypatch, run_params,
                                                                                               tmp_path):
    """The kept recipe's rebuild took 5 s and the budget is 80 s: the first candidate (one build, 12 s) is built;
    the first tuned one (estimated 20 s, takes 50) fits and is built; the next tuned one, now expected at 50 s,
    would overrun and is left out; the one build after it (12 s, as measured) still fits."""
    from types import SimpleNamespace

    from playbook import ladder
    now = [0.0]
    monkeypatch.setattr(ladder.time, "perf_counter", lambda: now[0])

    class Built:
        compile_s = 1.0

        def outputs(self):
            return None

    class Pipe:
        notes, info, dtype = [], {}, None

        def __init__(self, knobs):
            self.knobs = knobs

        def build(self):
            now[0] += self.knobs["takes"]
            return Built()

    monkeypatch.setattr(ladder.Pipeline, "from_recipe", staticmethod(lambda params, steps, extra: Pipe(extra[1])))
    monkeypatch.setattr(ladder, "compare", lambda outputs, dtype, **judges: {"correct": True})
    mod = SimpleNamespace(NAME="fake", label=lambda k: k["name"],
                          build_estimate=lambda k, run: (k["kind"], k["estimate"]))
    cands = [{"name": "pdl", "kind": "one build", "estimate": 10.0, "takes": 12.0},
             {"name": "tuned a", "kind": "tuned", "estimate": 20.0, "takes": 50.0},
             {"name": "tuned b", "kind": "tuned", "estimate": 20.0, "takes": 45.0},
             {"name": "pdl late", "kind": "one build", "estimate": 10.0, "takes": 12.0}]
    run = open_run(str(tmp_path / "t"), **run_params)
    runners, records, left_out = ladder._build_candidates(mod, run, [], cands, {}, 80.0, 5.0, {"notes": []})
    assert [r["label"] for r in records] == ["pdl", "tuned a", "pdl late"] and left_out == ["tuned b"]
    assert sorted(runners) == [0, 1, 2]                          # by record: timings map back to these records
    assert [r["build_s"] for r in records] == [12.0, 50.0, 12.0]
    no_hook = SimpleNamespace(NAME="plain", label=lambda k: k["name"])          # no estimates: the longest so far
    assert ladder.build_need(no_hook, cands[3], run, {}, 50.0) == ("build", 50.0)
    assert ladder.build_need(mod, cands[2], run, {"tuned": 50.0}, 12.0) == ("tuned", 50.0)
    assert ladder.build_need(mod, cands[2], run, {}, 12.0) == ("tuned", 20.0)
    assert ladder.build_need(mod, dict(cands[2], estimate=None), run, {}, 12.0) == ("tuned", 12.0)


def test_tuning_decides_before_building_when_one_tuned_build_cannot_fit_its_budget(tmp_path, run_params,
                                                                                    monkeypatch):
    """pi0 full on the H200: a 75 s compile, so coordinate descent (about 2x that) cannot fit 75 s."""
    from types import SimpleNamespace

    import torch

    from playbook.phases import Skip, tuning
    from test_state import phase
    run = open_run(str(tmp_path / "t"), **run_params)
    run.write_phase({**phase(1, "cudagraph"), "compile_s": 15.0})
    run.write_phase({**phase(4, "fusion"), "compile_s": 75.5})
    monkeypatch.setattr(tuning, "pdl_here", lambda device: "a GPU before Hopper")
    monkeypatch.setattr(tuning, "combo_here", lambda: "an Inductor without combo kernels")
    ctx = SimpleNamespace(run=run, pipe=SimpleNamespace(compile=True, info={}), device=torch.device("cuda"),
                          budget_s=75.0, info={})
    with pytest.raises(Skip, match="76 s here.*75 s budget; nothing compiled"):
        tuning.candidates(ctx)
    run.write_phase({**phase(4, "fusion"), "compile_s": 11.0})       # llama 1b's: one build fits
    assert tuning.candidates(ctx)[0] == {"tune": ["coordinate_descent_tuning"]}
    ctx.budget_s = None                                               # no budget: nothing to decide on
    run.write_phase({**phase(4, "fusion"), "compile_s": 75.5})
    assert len(tuning.candidates(ctx)) == 3
    assert tuning.build_cost_s(run) == 2.0 * 75.5                     # the run's GPU is not recorded: a tuned build


def test_tuning_offers_pdl_alone_where_its_budget_holds_one_build_but_no_tuned_one(tmp_path, run_params,
                                                                                   monkeypatch):
    """pi0 full on the H200: its kept recipe compiles in about 64 s; coordinate descent (2x) cannot fit the 75 s
    budget, one build of PDL alone can."""
    from types import SimpleNamespace

    import torch

    from playbook.phases import Skip, tuning
    from test_state import phase
    run = open_run(str(tmp_path / "t"), **run_params)
    run.update(device_info={"vendor": "cuda", "capability": "9.0", "name": "NVIDIA H200"})
    run.write_phase({**phase(5, "kernels"), "compile_s": 64.0})
    monkeypatch.setattr(tuning, "pdl_here", lambda device: None)
    ctx = SimpleNamespace(run=run, pipe=SimpleNamespace(compile=True, info={}), device=torch.device("cuda"),
                          budget_s=75.0, info={})
    assert tuning.candidates(ctx) == [{"tune": ["pdl"]}]
    assert "PDL alone (one build) offered" in ctx.info["budget"] and "64 s here" in ctx.info["budget"]
    assert tuning.label({"tune": ["pdl"]}) in tuning.CHOICES
    assert tuning.build_cost_s(run) == 64.0                           # the chain's plan holds one build for it
    run.write_phase({**phase(5, "kernels"), "compile_s": 80.0})       # not even one build fits
    with pytest.raises(Skip, match="80 s here.*nothing compiled"):
        tuning.candidates(ctx)
    run.update(device_info={"vendor": "cuda", "capability": "8.0"})   # an A100: no PDL, a tuned build is the cheapest
    assert tuning.build_cost_s(run) == 160.0


def test_rewrite_phases_skip_with_the_reason_when_nothing_applies(tmp_path):
    run = open_run(str(tmp_path / "chain"), workload="custom", model="fixture_models:chain",
                   device="cpu", dtype="float32", iters=5, warmup=1)
    run_phase("baseline", run, iters=5, warmup=1)
    for name, why in (("attention", "no attention found"), ("fusion", "no sibling projections found")):
        r = run_phase(name, run, iters=5, warmup=1)
        assert r["status"] == "skipped" and why in r["skip_reason"], r


def test_verify_rebuilds_the_recipe_and_gates(tiny_run):
    tiny_run.update(target_ms=1e6)
    r = run_phase("verify", tiny_run, iters=10, warmup=2)
    assert r["status"] == "kept" and r["correct"] and r["target_met"] and r["speedup_vs_baseline"] > 0
    assert r["knobs"]["recipe"] == [s["name"] for s in tiny_run.recipe()["phases"]]
    assert r["next_action"] == "target met"


def test_a_phase_whose_every_candidate_fails_is_recorded_failed(tmp_path, monkeypatch):
    run = open_run(str(tmp_path / "c"), workload="custom", model="fixture_models:make",
                   device="cpu", dtype="float32", iters=10, warmup=2)
    run_phase("baseline", run, iters=10, warmup=2)

    def broken_compile(*a, **k):
        raise RuntimeError("this model refuses to be compiled")
    monkeypatch.setattr("playbook.pipeline.torch.compile", broken_compile)
    r = run_phase("cudagraph", run, iters=10, warmup=2)
    assert r["status"] == "failed" and "refuses to be compiled" in r["error"]
    assert r["candidates"][0]["error"].startswith("RuntimeError")
    assert run.recipe()["phases"] == []
    v = run_phase("verify", run, iters=10, warmup=2)     # the chain goes on without it
    assert v["status"] == "kept" and v["knobs"]["recipe"] == []


def test_an_exception_outside_the_candidates_is_recorded_failed(tmp_path, monkeypatch):
    run = open_run(str(tmp_path / "t"), workload="tiny", preset="tiny", device="cpu", dtype="float32",
                   iters=10, warmup=2)
    run_phase("baseline", run, iters=10, warmup=2)
    from playbook.phases import cudagraph

    def explode(ctx):
        raise RuntimeError("driver went away")
    monkeypatch.setattr(cudagraph, "candidates", explode)
    r = run_phase("cudagraph", run, iters=10, warmup=2)
    assert r["status"] == "failed" and r["error"] == "RuntimeError: driver went away" and "traceback" in r
    assert run.phase("baseline")["status"] == "kept"       # nothing already measured is lost


def test_a_forced_sdpa_backend_gets_its_own_compile_cache_entry(tmp_path, monkeypatch):
    """Inductor's FX-graph cache key does not include the SDPA backend picked while tracing: a forced
    backend must not be served the graph compiled for torch's own pick (seen on pi0 full on the H200),
    and the cache must still serve the forced graph itself the next time (the recipe's later phases)."""
    import torch
    from torch._dynamo.utils import counters
    from playbook.compare import compare, snapshot
    from playbook.pipeline import Pipeline
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    params = {"workload": "tiny", "preset": "tiny", "device": "cpu", "dtype": "float32", "seed": 0}
    reference = snapshot(Pipeline.fresh(params).build().outputs())
    steps = [{"phase": 1, "name": "cudagraph", "knobs": {"compile": True, "mode": "default", "scope": "model",
                                                         "capture": False}}]
    forced = ("attention", {"route": {"hf": [], "rewrite": []}, "sdpa_backend": "math"})

    def build(extra):
        torch._dynamo.reset()                       # Dynamo's in-process reuse would hide the cache
        counters.clear()
        pipe = Pipeline.from_recipe(params, steps, extra=extra)
        assert compare(pipe.build().outputs(), reference, pipe.dtype)["correct"]
        return pipe, counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]
    build(None)                                     # torch's own pick: compiled and cached
    pipe, hits, misses = build(forced)
    assert any(n.startswith("SDPA backend forced: math") for n in pipe.notes) and (hits, misses) == (0, 1)
    _, hits, misses = build(forced)
    assert (hits, misses) == (1, 0)
    torch._dynamo.reset()             # Dynamo would serve this graph to a later test's compile


def test_a_phase_stops_building_at_its_budget_and_says_what_it_left_out(tiny_run, monkeypatch):
    from playbook.phases import attention
    real = attention.candidates
    monkeypatch.setattr(attention, "candidates", lambda ctx: real(ctx)[:1] * 3)
    monkeypatch.setattr(attention, "BUDGET_S", 0.001, raising=False)
    r = run_phase("attention", tiny_run, iters=5, warmup=1)
    assert len(r["candidates"]) == 1 and len(r["budget"]["left_out"]) == 2, r.get("error")
    assert r["budget"]["budget_s"] == 0.0 and any("time budget" in n for n in r["notes"])
    assert r["time_s"]["total"] >= r["time_s"]["build"] > 0 and r["candidates"][0]["build_s"] > 0
    tiny_run.drop_steps(["attention"])


def test_slow_steps_are_traced_fewer_times():
    from playbook.record import trace_steps
    assert trace_steps(1.2) == {"steps": 5, "warmup": 2} and trace_steps(None)["steps"] == 5
    assert trace_steps(210.0) == {"steps": 1, "warmup": 1} and trace_steps(60.0)["steps"] == 4
