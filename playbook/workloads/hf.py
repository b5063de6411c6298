"""`hf`: a Hugging Face model, from a checkpoint folder on disk or an architecture transformers ships.

    python -m playbook run --workload hf --model ./my-qwen                      # save_pretrained's folder
    python -m playbook run --workload hf --model qwen2 --preset small           # random weights, a size preset
    python -m playbook run --workload hf --model mistral --option step=prefill --option tokens=256
    python -m playbook run --workload hf --model bert                           # an encoder: AutoModel's forward

    wl = build("qwen2", preset="tiny", device=torch.device("cpu"), dtype=torch.float32, options={})

--model is a folder holding config.json (weights loaded with local files only, nothing is downloaded)
or a model type from transformers' config classes (llama, qwen2, mistral, gemma, gemma2, phi3, gpt2,
bert, vit, t5, ...) built with random weights at a preset's sizes, overridden by the size options.

The step a run times:
- `decode` (causal LMs, the default): one token at `position` against a StaticCache of `cache` slots.
  The prompt is prefilled when the workload is built; every call writes the same slot (the cache's
  counters are pinned), so calls are repeatable and a captured graph replays them.
- `prefill` (causal LMs): `tokens` tokens in one forward, no cache, the last token's logits.
- `forward` (everything else): AutoModel's forward on `tokens` tokens or one image (vision models);
  an encoder-decoder runs its encoder and one decoder token.

Floors: the bytes one step must read are the weights (lookup tables excepted unless tied to a
projection) plus, for decode, the filled part of the KV cache; the baseline phase counts FLOPs with
torch.utils.flop_counter.FlopCounterMode on the real step.
"""
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import PlaybookError, choose
from .base import Workload, count_weight_bytes

STEPS = ("decode", "prefill", "forward")

# Sizes by the names a user gives, and the config attributes each one sets (every one the config has).
SIZE_KEYS = {
    "hidden": ("hidden_size", "d_model", "n_embd"),
    "layers": ("num_hidden_layers", "num_layers", "n_layer", "num_decoder_layers", "encoder_layers",
               "decoder_layers"),
    "heads": ("num_attention_heads", "num_heads", "n_head", "encoder_attention_heads", "decoder_attention_heads"),
    "kv_heads": ("num_key_value_heads",),
    "mlp": ("intermediate_size", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim"),
    "vocab": ("vocab_size",),
    "head_dim": ("head_dim", "d_kv"),
    "image": ("image_size",),
}
HEAD_DIM_KEYS = SIZE_KEYS["head_dim"]

PRESETS = {   # sizes for --model ARCH (a checkpoint has its own)
    "tiny": dict(hidden=256, layers=2, heads=4, kv_heads=2, mlp=512, vocab=2048),
    "small": dict(hidden=1024, layers=8, heads=16, kv_heads=4, mlp=4096, vocab=32000),
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, mlp=8192, vocab=128256),
}
CHECKPOINT = "checkpoint"     # the preset recorded for a checkpoint folder

OPTIONS = {   # name: (lowest, highest, default); None: chosen from the model
    "position": (1, 1 << 20, 128), "tokens": (1, 1 << 20, 128), "cache": (2, 1 << 21, None),
    **{k: (1, 1 << 20, None) for k in SIZE_KEYS},
}


def is_checkpoint(model):
    return bool(model) and (Path(model).is_dir() or "/" in model or model.startswith("."))


def model_types():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    return sorted(CONFIG_MAPPING_NAMES)


def check_model(model):
    """Refuse a --model that is neither a checkpoint folder nor a model type transformers knows."""
    if not model:
        raise PlaybookError("workload 'hf' needs --model: a checkpoint folder (what save_pretrained wrote) or a "
                            "model type such as llama, qwen2, mistral, gemma, phi3, gpt2, bert, vit, t5")
    if is_checkpoint(model):
        if not (Path(model) / "config.json").is_file():
            raise PlaybookError(f"--model {model!r}: no config.json there; give the folder save_pretrained wrote "
                                "(nothing is downloaded), or a model type such as qwen2")
        return
    types = model_types()
    if model not in types:
        import difflib
        near = difflib.get_close_matches(model, types, n=5) or ["llama", "qwen2", "mistral", "bert", "vit", "t5"]
        raise PlaybookError(f"unknown model type {model!r} for workload 'hf' (and no folder of that name): "
                            f"did you mean {', '.join(near)}? Give one of the {len(types)} model types transformers knows "
                            "or a checkpoint folder")


def check_options(options):
    """{name: value}: the given options, position and tokens defaulted (the rest are chosen from the model
    when absent); a clear error for an unknown name or a bad value."""
    out = {k: v[2] for k, v in OPTIONS.items() if v[2] is not None}
    for name, value in (options or {}).items():
        if value is None:
            continue
        if name == "step":
            choose("step (option step=)", str(value), list(STEPS))
            out[name] = str(value)
            continue
        if name not in OPTIONS:
            raise PlaybookError(f"unknown option {name!r} for workload 'hf'; choose from: step, {', '.join(OPTIONS)}")
        lo, hi, _ = OPTIONS[name]
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise PlaybookError(f"option {name}={value!r} is not a whole number") from None
        if not lo <= v <= hi or str(v) != str(value).strip():
            raise PlaybookError(f"option {name}={value!r} must be a whole number from {lo} to {hi}")
        out[name] = v
    return out


def default_preset(model, device_type):
    if is_checkpoint(model):
        return CHECKPOINT
    return "tiny" if device_type != "cuda" else "small"


def check_preset(model, preset):
    if is_checkpoint(model):
        if preset not in ("", CHECKPOINT):
            raise PlaybookError(f"--preset {preset!r} sets sizes for --model ARCH; the checkpoint {model!r} has its "
                                "own (leave --preset out)")
    elif preset:
        choose("preset for workload 'hf'", preset, list(PRESETS))


# ---- the config and the model -------------------------------------------------------------------------

def _size_config(model_type, sizes):
    """A config of model_type with the given sizes set on every attribute that holds them."""
    from transformers import AutoConfig
    default = AutoConfig.for_model(model_type)
    have = set(vars(default))
    kw = {}
    for name, value in sizes.items():
        keys = [k for k in SIZE_KEYS[name] if k in have]
        if not keys:
            continue
        kw.update({k: value for k in keys})
    if "head_dim" not in sizes and "hidden" in sizes and "heads" in sizes:
        kw.update({k: sizes["hidden"] // sizes["heads"] for k in HEAD_DIM_KEYS if k in have})
    if "kv_heads" in sizes and "heads" in sizes and "num_key_value_heads" in kw:
        kw["num_key_value_heads"] = min(sizes["kv_heads"], sizes["heads"])
    vocab = kw.get("vocab_size", getattr(default, "vocab_size", None))
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        value = getattr(default, key, None)   # special tokens of the full-size vocabulary, outside a smaller one
        if isinstance(vocab, int) and isinstance(value, int) and value >= vocab:
            kw[key] = 0 if key == "decoder_start_token_id" else None
    return AutoConfig.for_model(model_type, **kw)


def _explicit_sizes(options):
    return {k: options[k] for k in SIZE_KEYS if options.get(k) is not None}


def load_config(model, preset, options):
    from transformers import AutoConfig
    if is_checkpoint(model):
        if _explicit_sizes(options):
            raise PlaybookError(f"size options ({', '.join(_explicit_sizes(options))}) are for --model ARCH; the "
                                f"checkpoint {model!r} has its own sizes")
        return AutoConfig.from_pretrained(model, local_files_only=True)
    sizes = dict(PRESETS[preset or "tiny"], **_explicit_sizes(options))
    return _size_config(model, sizes)


def _mapping(name):
    import transformers.models.auto.modeling_auto as auto
    return getattr(auto, name)


def kind(cfg):
    """'causal' (decoder-only LM), 'seq2seq' (encoder-decoder) or 'base' (AutoModel: encoders, vision)."""
    arch = (getattr(cfg, "architectures", None) or [""])[0]
    if getattr(cfg, "is_encoder_decoder", False):
        return "seq2seq"
    if arch:
        return "causal" if arch.endswith(("ForCausalLM", "LMHeadModel")) else "base"
    causal = cfg.model_type in _mapping("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    masked = cfg.model_type in _mapping("MODEL_FOR_MASKED_LM_MAPPING_NAMES")
    return "causal" if causal and not masked else "base"


def model_class(cfg, k):
    import transformers
    arch = (getattr(cfg, "architectures", None) or [None])[0]
    if arch and hasattr(transformers, arch):
        return getattr(transformers, arch)
    if k == "causal":
        return transformers.AutoModelForCausalLM
    if k == "seq2seq" and cfg.model_type in _mapping("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"):
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModel


def make_model(model, cfg, k, device, dtype, seed):
    """The model in dtype on device: a checkpoint's weights, or random weights made on the device."""
    cls = model_class(cfg, k)
    torch.manual_seed(seed)
    if is_checkpoint(model):
        m = cls.from_pretrained(model, local_files_only=True, dtype=dtype)
        return m.to(device)
    with torch.device(device):
        m = cls.from_config(cfg) if hasattr(cls, "from_config") else cls._from_config(cfg)
    return m.to(dtype)


def lookup_tables(model):
    """Names of embedding weights a step reads one row of (not a tied projection's weight)."""
    linear = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Linear)}
    return tuple(f"{n}.weight" for n, m in model.named_modules()
                 if isinstance(m, nn.Embedding) and m.weight.data_ptr() not in linear)


# ---- the steps --------------------------------------------------------------------------------------

def _cache_counters(cache):
    """The cache layers that write at their own counter (a tensor `cumulative_length`; sliding layers also
    keep a Python int one): the layers DecodeStep gives a counter of their own each call."""
    return [layer for layer in getattr(cache, "layers", ())
            if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)]


# NOTE: each call hands every cache layer a counter of its own made from cache_position, and puts the layer's
# counter back after: every call writes the same slot, and the layers' own counters are not written by the step.
# Until 2026-12-04 the counters themselves were pinned to the position before and after each call. A compiled step
# then ended in one kernel a layer writing the position back into its counter, which Inductor did not fuse on the
# GPU: llama 1b's traces on the H200 end each step in 16 launches of `triton_poi_fused_add_copy__select_17` (eager
# + graph, benchmarks/results/llama-1b-profile/traces/01-cudagraph.json.gz) or `triton_poi_fused_copy__select_7`
# (sitting 16's verify, 0.016 ms of kernel time and a gap before each). A harness cost, paid by every phase and by
# every torch.compile mode measured beside them. With counters made in the step, the step's increments of them are
# dead and Inductor drops them: on a CPU the compiled graph of the tiny llama lost its one counter kernel, and the
# one-launch decode attention reads cache_position itself. Not yet measured on a GPU.
class DecodeStep(nn.Module):
    """One decode token: a Hugging Face causal LM plus its StaticCache, called with tensors only.

    Recent transformers write at each layer's own counter, not at cache_position: each call gives every such
    layer a fresh counter holding cache_position, and gives the layer its own back after (the NOTE above), so
    every call writes the same slot."""

    def __init__(self, model, cache, position):
        super().__init__()
        self.model = model
        self.cache = cache
        self.position = position
        self.layers = _cache_counters(cache)
        self.cache_arg = cache_arg(model.forward)        # a constant to Dynamo: read once, here

    def forward(self, input_ids, cache_position):
        # input_ids: [1, 1]; cache_position: [1]
        own = [layer.cumulative_length for layer in self.layers]
        for layer in self.layers:
            layer.cumulative_length = cache_position[0].clone()
            if hasattr(layer, "cumulative_length_int"):
                layer.cumulative_length_int = self.position
        try:
            out = self.model(input_ids=input_ids, position_ids=cache_position[None], cache_position=cache_position,
                             use_cache=True, **{self.cache_arg: self.cache})
        finally:
            for layer, counter in zip(self.layers, own):
                layer.cumulative_length = counter
        return out.logits


class PrefillStep(nn.Module):
    """A prompt's forward with no cache: the last token's logits (what generation needs from a prefill)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        import inspect
        self.last_only = "logits_to_keep" in inspect.signature(model.forward).parameters

    def forward(self, input_ids):
        extra = {"logits_to_keep": 1} if self.last_only else {}
        return self.model(input_ids=input_ids, use_cache=False, **extra).logits[:, -1:]


class ForwardStep(nn.Module):
    """AutoModel's forward (or an encoder-decoder's encoder plus one decoder token); the main output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs, **({"use_cache": False} if "decoder_input_ids" in kwargs else {}))
        for key in ("logits", "last_hidden_state"):
            if getattr(out, key, None) is not None:
                return getattr(out, key)
        return out[0] if isinstance(out, (tuple, list)) else out


def cache_arg(forward):
    """The name the installed transformers gives forward's KV-cache argument: `cache` in recent ones (5.24 on
    this project's CPU, where `past_key_values` still works, with a warning, until 5.40), `past_key_values` in
    older ones (5.17 on the GPU machine)."""
    import inspect
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def default_cache(position):
    """Slots a decode step's StaticCache holds: room to generate as many tokens again, in 256s."""
    return max(256, -(-2 * (position + 1) // 256) * 256)


def kv_bytes(cache, position):
    """Bytes of the filled KV cache one decode token must read (a sliding layer holds its window)."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or keys.dim() != 4:
            continue
        filled = min(position + 1, keys.shape[2])
        for t in (keys, values):
            total += t.shape[0] * t.shape[1] * filled * t.shape[3] * t.element_size()
    return total


def decode_step(model, cfg, position, slots, device, seed):
    """(DecodeStep, args, kv_bytes): the prompt prefilled into a StaticCache, one token at `position`."""
    from transformers import StaticCache
    window = getattr(cfg.get_text_config(decoder=True), "sliding_window", None)
    if window and position + 1 > window and _has_sliding_layers(cfg):
        raise PlaybookError(f"option position={position} is past the model's sliding window ({window}): a decode "
                            f"step there shifts the cache on every call and cannot repeat; use position < {window}")
    if position + 1 > slots:
        raise PlaybookError(f"option position={position} does not fit a {slots}-slot cache; raise option cache")
    cache = StaticCache(config=cfg, max_cache_len=slots)
    vocab = cfg.get_text_config(decoder=True).vocab_size
    gen = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, vocab, (1, position + 1), generator=gen).to(device)
    with torch.no_grad():
        model(input_ids=prompt[:, :-1], cache_position=torch.arange(position, device=device), use_cache=True,
              **{cache_arg(model.forward): cache})
    step = DecodeStep(model, cache, position).eval()
    return step, (prompt[:, -1:], torch.tensor([position], device=device)), kv_bytes(cache, position)


def _has_sliding_layers(cfg):
    text = cfg.get_text_config(decoder=True)
    types = getattr(text, "layer_types", None)
    if types:
        return any("sliding" in str(t) for t in types)
    return bool(getattr(text, "sliding_window", None)) and getattr(text, "use_sliding_window", True) is not False


def _image_size(cfg):
    size = getattr(cfg, "image_size", None)
    if size is None and hasattr(cfg, "vision_config"):
        size = getattr(cfg.vision_config, "image_size", None)
    size = size or 224
    return size[0] if isinstance(size, (list, tuple)) else int(size)


def forward_inputs(model, cfg, k, options, device, dtype, seed):
    """(args, kwargs) of one forward: token ids or an image, by the model's main input."""
    gen = torch.Generator().manual_seed(seed + 1)
    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        channels = getattr(cfg, "num_channels", 3)
        size = _image_size(cfg)
        return {"pixel_values": torch.randn(1, channels, size, size, generator=gen).to(device, dtype)}
    if name != "input_ids":
        raise PlaybookError(f"workload 'hf': {type(model).__name__} takes {name!r} as its main input, which this "
                            "workload does not build; wrap it as --workload custom with your own example inputs")
    vocab = getattr(cfg, "vocab_size", None) or cfg.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (1, options["tokens"]), generator=gen).to(device)
    kw = {"input_ids": ids}
    if k == "seq2seq":
        start = getattr(cfg, "decoder_start_token_id", None)
        kw["decoder_input_ids"] = torch.full((1, 1), 0 if start is None else start, dtype=torch.long, device=device)
    return kw


def build(preset, device, dtype, seed=0, weights_via=None, options=None, model=""):
    options = check_options(options)
    cfg = load_config(model, "" if preset == CHECKPOINT else preset, options)
    k = kind(cfg)
    step_name = options.get("step") or ("decode" if k == "causal" else "forward")
    if step_name in ("decode", "prefill") and k != "causal":
        raise PlaybookError(f"option step={step_name} is for causal language models; {cfg.model_type} is "
                            f"{'an encoder-decoder' if k == 'seq2seq' else 'not one'}: use step=forward")
    for key in ("max_position_embeddings", "n_positions"):
        need = options["position"] + 1 if step_name == "decode" else options["tokens"]
        if isinstance(getattr(cfg, key, None), int) and getattr(cfg, key) < need:
            raise PlaybookError(f"{cfg.model_type} holds {getattr(cfg, key)} positions ({key}); this step needs "
                                f"{need}: lower option position/tokens")
    hf = make_model(model, cfg, k, device, weights_via or dtype, seed).to(dtype).eval()
    kv = 0
    if step_name == "decode":
        slots = options.get("cache") or default_cache(options["position"])
        step, args, kv = decode_step(hf, cfg, options["position"], slots, device, seed)
        kwargs = {}
        what = f"one decode token at position {options['position']} of a {slots}-slot StaticCache"
    elif step_name == "prefill":
        step, kwargs = PrefillStep(hf).eval(), {}
        gen = torch.Generator().manual_seed(seed + 1)
        args = (torch.randint(0, cfg.get_text_config(decoder=True).vocab_size, (1, options["tokens"]),
                              generator=gen).to(device),)
        what = f"a {options['tokens']}-token prefill (no cache, last token's logits)"
    else:
        step, args = ForwardStep(hf).eval(), ()
        kwargs = forward_inputs(hf, cfg, k, options, device, dtype, seed)
        what = ("one image" if "pixel_values" in kwargs else f"{options['tokens']} tokens") + \
               (" through the encoder and one decoder token" if k == "seq2seq" else "")
    source = f"checkpoint {model}" if is_checkpoint(model) else f"{model} {preset} sizes, random weights"
    return Workload(
        name="hf", preset=preset, model=step, args=args, kwargs=kwargs,
        weight_bytes=count_weight_bytes(hf, skip=lookup_tables(hf)), kv_bytes=kv,
        description=f"{type(hf).__name__} ({source}; {cfg.model_type}), {what}, "
                    f"attention '{hf.config._attn_implementation}'")
