"""The `hf` workload across model families: vision stages, audio, dual encoders, VLMs, mixtures of experts,
hybrid layer patterns, and the clear errors for what it cannot build. Tiny sizes, random weights, CPU."""
import pytest
import torch

from playbook.errors import PlaybookError
from playbook.workloads import build_workload, hf

CPU = torch.device("cpu")


def build(model, **options):
    if model not in hf.model_types():
        pytest.skip(f"this transformers has no {model}")
    return build_workload("hf", "tiny", model, CPU, torch.float32, options={k: str(v) for k, v in options.items()})


def run(wl):
    """The step's output twice: finite, not all zeros, and the same both times."""
    with torch.no_grad():
        first, second = wl.model(*wl.args, **wl.kwargs), wl.model(*wl.args, **wl.kwargs)
    assert torch.isfinite(first).all() and first.abs().max() > 0
    assert torch.equal(first, second), "two calls of the step differ"
    return first


def config(wl):
    inner = wl.model.model
    return inner.config


def test_a_staged_vision_model_keeps_its_stage_widths_and_caps_each_stage_depth():
    wl = build("swin")
    cfg = config(wl)
    from transformers import AutoConfig
    default = AutoConfig.for_model("swin")
    assert cfg.embed_dim == default.embed_dim and list(cfg.num_heads) == list(default.num_heads)
    assert list(cfg.depths) == [min(d, hf.PRESETS["tiny"]["layers"]) for d in default.depths]
    assert run(wl).shape[0] == 1
    seg = build("segformer")
    assert list(config(seg).hidden_sizes) == list(AutoConfig.for_model("segformer").hidden_sizes)
    run(seg)


def test_a_model_type_with_no_bare_model_gets_its_head_class():
    wl = build("upernet")      # UperNet is only ever a segmentation head over a backbone
    assert type(wl.model.model).__name__ == "UperNetForSemanticSegmentation"
    assert list(config(wl).backbone_config.out_features) == ["stage1", "stage2", "stage3", "stage4"]
    assert run(wl).dim() == 4


@pytest.mark.parametrize("model,key,shape,words", [
    ("whisper", "input_features", None, "log-mel frames"),
    ("wav2vec2", "input_values", (1, 16000), "16000 audio samples"),
    ("audio-spectrogram-transformer", "input_values", None, "a spectrogram"),
])
def test_speech_models_get_the_audio_input_they_take(model, key, shape, words):
    wl = build(model)
    x = wl.kwargs[key]
    cfg = config(wl)
    if model == "whisper":
        assert x.shape == (1, cfg.num_mel_bins, 2 * cfg.max_source_positions)
    elif model == "audio-spectrogram-transformer":
        assert x.shape == (1, cfg.max_length, cfg.num_mel_bins)
    else:
        assert x.shape == shape
    assert words in wl.description
    assert x.std() > 0.5                      # not zeros: random audio
    run(wl)


def test_the_waveform_length_is_an_option():
    wl = build("wav2vec2", samples=8000)
    assert wl.kwargs["input_values"].shape == (1, 8000) and "8000 audio samples" in wl.description
    with pytest.raises(PlaybookError, match="samples"):
        build("wav2vec2", samples=10)


def test_a_dual_encoder_gets_text_cut_to_its_tower_and_an_image():
    wl = build("clip")
    text = config(wl).text_config
    assert wl.kwargs["input_ids"].shape == (1, text.max_position_embeddings)      # 128 default tokens cut to 77
    assert wl.kwargs["pixel_values"].shape[-1] == config(wl).vision_config.image_size
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):      # special tokens kept inside the small vocab
        value = getattr(text, key)
        assert value is None or 0 <= value < text.vocab_size
    assert "77 tokens and one image" in wl.description
    run(wl)
    with pytest.raises(PlaybookError, match="holds 77 positions"):     # asked for more than it holds: refused
        build("clip", tokens=100)


def test_a_vision_language_model_runs_its_text_alone_with_its_rotary_sections_fitted():
    wl = build("qwen2_vl")
    assert "pixel_values" not in wl.kwargs and "text only (no image tokens)" in wl.description
    text = config(wl).get_text_config()
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    run(wl)


def test_a_mixture_of_experts_is_shrunk_to_the_presets_experts():
    wl = build("deepseek_v3")
    cfg = config(wl)
    assert cfg.n_routed_experts == hf.PRESETS["tiny"]["experts"]
    assert cfg.num_experts_per_tok <= cfg.n_routed_experts
    assert cfg.num_key_value_heads == cfg.num_attention_heads      # latent attention expands K/V to every head
    assert wl.weight_bytes < 200e6
    run(wl)
    moe = build("qwen3_moe")
    assert config(moe).num_experts == hf.PRESETS["tiny"]["experts"]
    assert config(moe).moe_intermediate_size == hf.PRESETS["tiny"]["expert_mlp"]
    run(moe)


def test_layer_patterns_keep_every_kind_of_layer_they_have():
    assert hf._layer_types(["a", "a", "a", "b"], 2) == ["a", "b"]
    assert hf._layer_types(["s", "s", "s", "s", "s", "f"] * 3, 3) == ["s", "s", "f"]
    assert hf._layer_types(["x", "y"], 5) == ["x", "y"]
    gemma = build("gemma3_text")
    assert set(config(gemma).layer_types) == {"sliding_attention", "full_attention"}
    run(gemma)
    jamba = build("jamba")
    cfg = config(jamba)
    assert cfg.attn_layer_offset < cfg.num_hidden_layers and cfg.attn_layer_period <= cfg.num_hidden_layers
    assert len(set(cfg.layers_block_type)) == 2                   # attention and mamba both kept
    run(jamba)


def test_more_kinds_of_layer_than_preset_layers_get_one_layer_of_each():
    wl = build("nemotron_h")
    kinds = set(config(wl).layers_block_type)
    assert len(config(wl).layers_block_type) == len(kinds) >= 3
    run(wl)


def test_a_state_space_model_with_grouped_heads_is_sized_to_fit():
    wl = build("mamba2")
    cfg = config(wl)
    assert cfg.num_heads % cfg.n_groups == 0 and cfg.num_heads * cfg.head_dim == cfg.hidden_size * cfg.expand
    run(wl)


def test_a_short_sliding_window_moves_the_default_position_inside_it():
    wl = build("gpt_oss")
    window = config(wl).sliding_window
    assert f"position {window // 2} " in wl.description
    run(wl)
    assert "position 100 " in build("gpt_oss", position=100).description
    with pytest.raises(PlaybookError, match="sliding window"):
        build("gpt_oss", position=200)


def test_a_model_with_no_attention_layer_falls_back_to_prefill_and_says_why():
    wl = build("bamba")                   # its default config: every layer a state-space one
    assert "prefill" in wl.description and "default decode step could not be built" in wl.description
    run(wl)
    with pytest.raises(PlaybookError, match="step=prefill"):      # decode asked for by name: refused, not swapped
        build("bamba", step="decode")


def test_the_main_output_is_the_first_floating_point_tensor():
    codes, audio = torch.ones(1, 3, dtype=torch.long), torch.randn(1, 5)
    assert hf.main_output((codes, audio)) is audio
    assert hf.main_output([codes]) is codes


@pytest.mark.parametrize("model,message", [
    ("mimi", "cannot be built from this config at these sizes"),    # its convolution groups do not fit tiny sizes
    ("instructblip", "forward failed on the inputs this workload builds"),   # it needs Q-Former ids too
])
def test_what_the_workload_cannot_build_is_refused_with_what_to_do(model, message):
    with pytest.raises(PlaybookError, match=message) as e:
        build(model)
    assert "--option" in str(e.value) or "--workload custom" in str(e.value)


def test_a_config_transformers_refuses_and_a_missing_library_are_clear_errors(monkeypatch):
    with pytest.raises(PlaybookError, match="refuses a mamba2 config at these sizes"):
        build("mamba2", hidden=100, heads=3)

    class Needs:
        @classmethod
        def from_config(cls, cfg):
            raise ImportError("NatBackbone requires the natten library")
    monkeypatch.setattr(hf, "model_class", lambda cfg, k: Needs)
    with pytest.raises(PlaybookError, match="needs a library this environment lacks: NatBackbone requires"):
        build("vit")


def test_batch_norms_that_vanish_a_random_models_output_are_measured_on_its_input():
    """transformers' random batch-norm scales with the init's statistics shrink EfficientNet's activations to
    nothing: a vanishing reference would judge no rewrite, so the norms go to PyTorch's init with statistics
    measured on the example input (the description says so), and the output is of a normal size."""
    wl = build("efficientnet", image=64)
    assert "batch norms at PyTorch's init, statistics measured on it" in wl.description
    assert run(wl).abs().max() > 1e-2
    assert "measured on it" not in build("resnet", image=64).description      # a lively model is left alone
