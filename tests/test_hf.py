"""The `hf` workload: checkpoints written by save_pretrained, model types with random weights, every step."""
import pytest
import torch

from playbook.compare import compare, snapshot
from playbook.errors import PlaybookError
from playbook.runs import resolve_params
from playbook.workloads import build_workload, hf
from playbook.workloads.base import counted_flops

CPU = torch.device("cpu")


def save_checkpoint(tmp_path, model_type, **sizes):
    """A tiny checkpoint folder the way a user has one: config.json plus safetensors, from save_pretrained."""
    cfg = hf._size_config(model_type, dict(hf.PRESETS["tiny"], **sizes))
    torch.manual_seed(3)
    model = hf.model_class(cfg, hf.kind(cfg)).from_config(cfg)
    folder = tmp_path / model_type
    model.save_pretrained(folder)
    return folder


def repeatable(wl):
    with torch.no_grad():
        first, second = snapshot(wl()), snapshot(wl())
    assert compare(second, first, torch.float32)["rel_err"] == 0.0, "two calls of the step differ"
    assert all(torch.isfinite(t).all() and t.abs().max() > 0 for t in first.values())
    return first


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_a_checkpoint_folder_loads_its_real_weights_and_decodes(tmp_path, family):
    folder = save_checkpoint(tmp_path, family)
    wl = build_workload("hf", model=str(folder), device=CPU, dtype=torch.float32, options={"position": "20"})
    saved = hf.make_model(str(folder), hf.load_config(str(folder), "", {}), "causal", CPU, torch.float32, 0)
    assert torch.equal(wl.model.model.lm_head.weight, saved.lm_head.weight)    # the checkpoint's, not a new init
    out = repeatable(wl)
    assert out["output"].shape[:2] == (1, 1)
    cfg = saved.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    assert wl.kv_bytes == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 21 * 4
    assert "checkpoint" in wl.description and "position 20" in wl.description


@pytest.mark.parametrize("family", ["qwen2", "jamba", "mamba2"])
def test_a_decode_step_matches_the_model_run_without_a_cache(family):
    """The timed decode token's logits are the last logits of the whole sequence run from scratch, on every
    call: a state-space layer's states (Jamba's, Mamba2's) are put back to the prompt's before each."""
    if family not in hf.model_types():
        pytest.skip(f"this transformers has no {family}")
    wl = build_workload("hf", "tiny", family, CPU, torch.float32, options={"position": "12"})
    step = wl.model
    assert bool(step.states) == (family != "qwen2")
    vocab = step.model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, 13), generator=torch.Generator().manual_seed(1))   # the build's, seed 0
    assert torch.equal(prompt[:, -1:], wl.args[0])
    with torch.no_grad():
        got = [step(*wl.args) for _ in range(3)]
        whole = step.model(input_ids=prompt, use_cache=False).logits[:, -1:]
    assert got[0].shape == (1, 1, vocab)
    for out in got:
        torch.testing.assert_close(out, whole, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "mistral", "jamba"])
def test_a_decode_step_leaves_its_cache_layers_counters_alone_eager_and_compiled(family):
    """Each call gives the cache layers counters of their own made from cache_position (mistral's layers are
    sliding: they keep an int counter too; jamba's state-space layers count in a counter of their own): the layers' own counters are the same tensors, unchanged, after eager
    and compiled calls, no step writes them (no in-place op on a graph input of a counter's shape in Dynamo's
    graph), and every call writes the same slot, so calls repeat."""
    wl = build_workload("hf", "tiny", family, CPU, torch.float32, options={"position": "6"})
    step = wl.model
    counters = [(layer, name, getattr(layer, name), int(getattr(layer, name))) for layer, name in step.counters]
    assert counters
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    with torch.no_grad():
        want = step(*wl.args)
        compiled = torch.compile(step, backend=keep)
        got = [compiled(*wl.args) for _ in range(2)]
    for out in got:
        torch.testing.assert_close(out, want)
    for layer, name, tensor, value in counters:
        assert getattr(layer, name) is tensor and int(tensor) == value
    (gm,) = graphs
    placeholders = {n for n in gm.graph.nodes if n.op == "placeholder"}
    written = [n for n in gm.graph.nodes if str(n.target).endswith("_") and not str(n.target).startswith("_")
               and n.args and n.args[0] in placeholders and n.args[0].meta["example_value"].dim() == 0]
    assert not written, [str(n) for n in written]


def test_prefill_and_forward_steps(tmp_path):
    wl = build_workload("hf", "tiny", "qwen2", CPU, torch.float32, options={"step": "prefill", "tokens": "24"})
    assert repeatable(wl)["output"].shape[:2] == (1, 1)          # the last token's logits
    enc = build_workload("hf", "tiny", "bert", CPU, torch.float32, options={"tokens": "16"})
    assert repeatable(enc)["output"].shape == (1, 16, 256)
    vit = build_workload("hf", "tiny", "vit", CPU, torch.float32, options={"image": "64"})
    assert repeatable(vit)["output"].shape[0] == 1
    t5 = build_workload("hf", "tiny", "t5", CPU, torch.float32, options={"tokens": "16"})
    assert repeatable(t5)["output"].shape[:2] == (1, 1)           # one decoder token's logits
    assert "encoder and one decoder token" in t5.description


def test_flops_are_counted_on_the_real_step():
    wl = build_workload("hf", "tiny", "qwen2", CPU, torch.float32, options={"step": "prefill", "tokens": "8"})
    flops, how = counted_flops(wl)
    lm = wl.model.model
    layers = sum(m.weight.numel() for m in lm.model.layers.modules() if isinstance(m, torch.nn.Linear))
    cfg, tokens = lm.config, 8
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    # the layers' projections for 8 tokens, one lm_head row (logits_to_keep=1), and attention's two
    # matmuls (q k^T and p v) over 8 x 8 positions in every head of every layer
    attention = cfg.num_hidden_layers * 2 * 2 * cfg.num_attention_heads * tokens * tokens * head_dim
    assert how == "FlopCounterMode on the step"
    assert flops == 2 * layers * tokens + 2 * lm.lm_head.weight.numel() + attention


def test_the_cache_goes_by_the_name_this_transformers_gives_it():
    """Recent transformers call a forward's cache `cache` (`past_key_values` deprecated, to be removed in 5.40),
    older ones `past_key_values`: the decode step and pi0 pass it by the name the installed one takes."""
    def old(input_ids=None, past_key_values=None, use_cache=None):
        pass

    def new(input_ids=None, cache=None, use_cache=None, **kwargs):
        pass
    assert hf.cache_arg(old) == "past_key_values" and hf.cache_arg(new) == "cache"
    assert hf.cache_arg(len) == "past_key_values"                  # no signature to read: the older name
    wl = build_workload("hf", "tiny", "llama", CPU, torch.float32, options={"position": "4"})
    assert wl.model.cache_arg == hf.cache_arg(type(wl.model.model).forward)


def test_llama_is_a_preset_of_the_same_decode_step():
    from playbook.workloads.hf import DecodeStep
    wl = build_workload("llama", "tiny", "", CPU, torch.float32)
    assert isinstance(wl.model, DecodeStep) and wl.kv_bytes > 0


@pytest.mark.parametrize("model,options,preset,message", [
    ("qwen3000", {}, "", "unknown model type"),
    ("qwen2", {"step": "think"}, "", "unknown step"),
    ("qwen2", {"speed": "3"}, "", "unknown option 'speed'"),
    ("qwen2", {"position": "-1"}, "", "whole number from 1"),
    ("bert", {"step": "decode"}, "", "step=forward"),
    ("qwen2", {"position": "300", "cache": "256"}, "", "raise option cache"),
    ("qwen2", {}, "huge", "preset for workload 'hf'"),
    ("", {}, "", "needs --model"),
])
def test_bad_hf_input_is_refused_by_name(model, options, preset, message):
    with pytest.raises(PlaybookError, match=message):
        build_workload("hf", preset, model, CPU, torch.float32, options=options)


def test_a_folder_without_config_and_sizes_on_a_checkpoint_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlaybookError, match="no config.json"):
        resolve_params(workload="hf", model=str(tmp_path / "empty"), device="cpu")
    folder = save_checkpoint(tmp_path, "qwen2")
    with pytest.raises(PlaybookError, match="own sizes"):
        build_workload("hf", "", str(folder), CPU, torch.float32, options={"layers": "4"})
    with pytest.raises(PlaybookError, match="leave --preset out"):
        resolve_params(workload="hf", model=str(folder), preset="small", device="cpu")


def test_a_run_records_the_checkpoint_as_an_absolute_path(tmp_path, monkeypatch):
    folder = save_checkpoint(tmp_path, "qwen2")
    monkeypatch.chdir(tmp_path)
    p = resolve_params(workload="hf", model="./qwen2", device="cpu")
    assert p["model"] == str(folder.resolve()) and p["preset"] == "checkpoint"
    assert resolve_params(workload="hf", model="gpt2", device="cpu")["preset"] == "tiny"


@pytest.mark.chain
def test_a_checkpoint_goes_down_the_ladder_headless(tmp_path):
    """papermill runs the phases on a save_pretrained folder; each one is kept, rejected or skipped with a
    reason, never failed, and verify is correct against the checkpoint's own untouched outputs.
    (The whole ladder of two checkpoint families, decode and prefill, and four more model types ran on this CPU:
    benchmarks/results/user-models-cpu/summary.json, from benchmarks/user_models.py --device cpu --sizes tiny.)"""
    import json
    import subprocess
    import sys
    folder = save_checkpoint(tmp_path, "qwen2")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "playbook", "run", "--workload", "hf", "--model", str(folder),
                           "--option", "position=24", "--device", "cpu", "--iters", "10", "--warmup", "2",
                           "--phases", "baseline,attention,fusion,verify", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    phases = {p.stem[3:]: json.loads(p.read_text()) for p in (out / "phases").glob("*.json")}
    assert set(phases) == {"baseline", "attention", "fusion", "verify"}
    for name, p in phases.items():
        assert p["status"] in ("kept", "rejected", "skipped"), (name, p["error"])
        assert p["status"] != "skipped" or p["notes"], name          # a skip says why
    fusion = phases["fusion"]                                        # Qwen2's q/k/v and gate/up fused, and correct
    assert fusion["gemm_launches"]["saved"] > 0 and fusion["correct"] is True, fusion   # (kept or not: a CPU timing)
    assert phases["verify"]["correct"] is True
    info = json.loads((out / "run.json").read_text())["workload_info"]
    assert info["kv_bytes"] > 0 and info["flops_by"] == "FlopCounterMode on the step"


@pytest.mark.parametrize("family,options", [("qwen2", {"position": "70", "cache": "256"}),
                                            ("llama", {"position": "5", "heads": "8", "kv_heads": "2"})])
def test_the_decode_kernel_reads_the_filled_cache_and_matches_sdpa(family, options):
    """The HF decode step routed to kernels.decode_attention_filled gives SDPA's logits, eager and compiled,
    and the slots past the position are never read (filled with NaN here)."""
    import copy

    from playbook.rewrites import attention, decode_kernel
    wl = build_workload("hf", "tiny", family, CPU, torch.float32, options=options)
    attention.route_hf(wl.model)
    calls = attention.record_sdpa_calls(wl.model, wl.args, wl.kwargs)
    assert decode_kernel.decode_sites(wl.model, calls) == ["model"]
    with torch.no_grad():
        want = wl.model(*wl.args)
    routed = copy.deepcopy(wl.model)
    assert decode_kernel.route(routed) == ["model"]
    position = int(options["position"])
    for layer in routed.cache.layers:
        layer.keys[:, :, position + 1:] = float("nan")
        layer.values[:, :, position + 1:] = float("nan")
    with torch.no_grad():
        got = routed(*wl.args)
        compiled = torch.compile(routed)(*wl.args)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family,options", [("llama", {"position": "5", "heads": "8", "kv_heads": "2"}),
                                            ("qwen2", {"position": "70", "cache": "256"}),
                                            ("gemma", {"position": "9"})])
def test_the_one_launch_decode_rotates_writes_and_attends_as_the_model_does(family, options):
    """Llama-form attention modules hand rotary, cache write and attention to one kernel: the logits and the
    written cache slot match the model's own, eager and compiled; the slots past the position are never read;
    the cache layers' counters move as their own update() moves them."""
    import copy

    from playbook.rewrites import attention, decode_kernel
    wl = build_workload("hf", "tiny", family, CPU, torch.float32, options=options)
    attention.route_hf(wl.model)
    routed, compiled = copy.deepcopy(wl.model), copy.deepcopy(wl.model)
    with torch.no_grad():
        want = wl.model.model(input_ids=wl.args[0], position_ids=wl.args[1][None], cache_position=wl.args[1],
                              use_cache=True, **{wl.model.cache_arg: wl.model.cache}).logits
    sites = decode_kernel.rope_append_sites(routed)
    assert sites and all(p.endswith("self_attn") for p in sites)
    position = int(options["position"])
    for model in (routed, compiled):
        assert decode_kernel.route_rope_append(model) == sites
        for layer in model.cache.layers:
            layer.keys[:, :, position:] = float("nan")
            layer.values[:, :, position:] = float("nan")
            layer.cumulative_length.fill_(position)
    with torch.no_grad():
        got = routed.model(input_ids=wl.args[0], position_ids=wl.args[1][None], cache_position=wl.args[1],
                           use_cache=True, **{routed.cache_arg: routed.cache}).logits
        step = torch.compile(routed.__class__.forward)
        twice = [step(compiled, *wl.args) for _ in range(2)]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for out in twice:
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    for mine, theirs in zip(routed.cache.layers, wl.model.cache.layers):
        assert int(mine.cumulative_length) == int(theirs.cumulative_length) == position + 1
        torch.testing.assert_close(mine.keys[:, :, position], theirs.keys[:, :, position], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine.values[:, :, position], theirs.values[:, :, position])
        assert mine.keys[:, :, position + 1:].isnan().all()


def test_the_one_launch_decode_leaves_sliding_window_and_other_forms_alone():
    from playbook.rewrites import decode_kernel
    for family in ("mistral", "gemma2", "phi3", "qwen3"):      # sliding cache layers; soft-capping; qkv_proj; q/k norm
        wl = build_workload("hf", "tiny", family, CPU, torch.float32, options={"position": "3"})
        assert decode_kernel.rope_append_sites(wl.model) == [], family


def test_a_prompt_is_not_taken_by_the_decode_kernel():
    from playbook.rewrites import attention, decode_kernel
    wl = build_workload("hf", "tiny", "qwen2", CPU, torch.float32, options={"step": "prefill", "tokens": "9"})
    attention.route_hf(wl.model)
    assert decode_kernel.decode_sites(wl.model, attention.record_sdpa_calls(wl.model, wl.args, wl.kwargs)) == []


@pytest.mark.parametrize("kv_heads", [2, 4])     # grouped attention takes GQA; with as many K/V heads, nothing does
def test_phase_2_leaves_a_soft_capped_model_on_eager_attention(kv_heads):
    """Gemma 2 soft-caps its attention logits, which SDPA cannot do: transformers refuses SDPA for it
    (_supports_sdpa = False), and a forced switch raised in phase 2's first step. The phase now names why it stays
    on eager, and offers grouped attention (which applies the softcap) where the model is GQA."""
    from types import SimpleNamespace

    from playbook.phases import Skip
    from playbook.phases import attention as phase2
    from playbook.rewrites import attention
    opts = {"position": "5", "kv_heads": str(kv_heads)}
    wl = build_workload("hf", "tiny", "gemma2", CPU, torch.float32, options=opts)
    (path, hf), = attention.hf_models(wl.model)
    assert "_supports_sdpa = False" in attention.sdpa_refusal(hf)
    assert hf.config.attn_logit_softcapping

    def cap(model, value):         # a cap the tiny model's logits reach, so a forgotten softcap shows
        for m in model.modules():
            if hasattr(m, "attn_logit_softcapping"):
                m.attn_logit_softcapping = value
        return model
    uncapped = cap(build_workload("hf", "tiny", "gemma2", CPU, torch.float32, options=opts).model, None)
    want = cap(wl.model, 0.05)(*wl.args, **wl.kwargs)
    assert (uncapped(*wl.args, **wl.kwargs) - want).abs().max() > 1e-2
    pipe = SimpleNamespace(workload=wl, device=CPU, info={}, notes=[], inductor={})
    ctx = SimpleNamespace(fresh_pipeline=lambda: pipe, vendor="cpu", info={})
    if kv_heads == 4:
        with pytest.raises(Skip, match="stays on eager attention"):
            phase2.candidates(ctx)
        return
    got = phase2.candidates(ctx)
    assert got[0] == {"route": {"hf": [], "rewrite": []}, "sdpa_backend": None, "grouped": [path]}, got
    assert "stays on eager" in ctx.info["sdpa_refused"][0]
    wl2 = build_workload("hf", "tiny", "gemma2", CPU, torch.float32, options={"position": "5", "kv_heads": "2"})
    cap(wl2.model, 0.05)
    phase2.apply(SimpleNamespace(workload=wl2, info={}, notes=[], inductor={}), got[0])
    torch.testing.assert_close(wl2.model(*wl2.args, **wl2.kwargs), want, atol=1e-4, rtol=1e-4)
