"""`hf`: a Hugging Face model, from a checkpoint folder on disk or an architecture transformers ships.

    python -m playbook run --workload hf --model ./my-qwen                      # save_pretrained's folder
    python -m playbook run --workload hf --model qwen2 --preset small           # random weights, a size preset
    python -m playbook run --workload hf --model mistral --option step=prefill --option tokens=256
    python -m playbook run --workload hf --model bert                           # an encoder: AutoModel's forward

    wl = build("qwen2", preset="tiny", device=torch.device("cpu"), dtype=torch.float32, options={})

--model is a folder holding config.json (weights loaded with local files only, nothing is downloaded)
or a model type from transformers' config classes (llama, qwen2, mistral, gemma, gemma2, phi3, gpt2,
bert, vit, t5, ...) built with random weights at a preset's sizes, overridden by the size options.
A preset sizes every config inside the model's too (CLIP's towers, a VLM's language model), keeps each
kind of layer a pattern has (Gemma 3's sliding and full, Jamba's attention and Mamba, Nemotron-H's four),
shrinks a mixture of experts to `experts` experts of `expert_mlp`, and leaves a staged vision model's
stage widths alone (Swin, SegFormer), capping each stage's depth at `layers`.

The step a run times:
- `decode` (causal LMs, the default): one token at `position` (128, or half a shorter sliding window)
  against a StaticCache of `cache` slots. The prompt is prefilled when the workload is built; every call
  writes the same slot (each call hands the cache layers counters of their own) and a state-space layer's
  states are put back to the prompt's first, so calls are repeatable and a captured graph replays them.
  A model transformers will not prefill into a StaticCache falls back to `prefill`, and says why.
- `prefill` (causal LMs): `tokens` tokens in one forward, no cache, the last token's logits.
- `forward` (everything else): the model's forward on its main input, built from its config: `tokens`
  tokens (128, cut to what the model holds), one image, `samples` audio samples (16000) or log-mel frames
  (Whisper, Speech2Text); a dual encoder (CLIP, SigLIP) gets text and an image, a vision-language model
  runs its text alone; an encoder-decoder runs its encoder and one decoder token. The output judged is the
  logits, else the last hidden state, else the first floating-point tensor the forward returns.
Each step runs once when it is built: a model whose config, sizes or inputs this workload cannot build is
refused then with a PlaybookError that names what to do (other sizes, a checkpoint, --workload custom).

Floors: the bytes one step must read are the weights (lookup tables excepted unless tied to a
projection) plus, for decode, the filled part of the KV cache and any state-space layer's states;
the baseline phase counts FLOPs with torch.utils.flop_counter.FlopCounterMode on the real step.
"""
import math
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import PlaybookError, choose
from .base import Workload, count_weight_bytes

STEPS = ("decode", "prefill", "forward")

# Sizes by the names a user gives, and the config attributes each one sets (every one the config has).
SIZE_KEYS = {
    "hidden": ("hidden_size", "d_model", "n_embd", "embed_dim", "emb_dim", "dim"),
    "layers": ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers", "encoder_layers",
               "decoder_layers", "depth"),
    "heads": ("num_attention_heads", "num_heads", "n_head", "n_heads", "encoder_attention_heads",
              "decoder_attention_heads"),
    "kv_heads": ("num_key_value_heads",),
    "mlp": ("intermediate_size", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim"),
    "vocab": ("vocab_size",),
    "head_dim": ("head_dim", "d_kv"),
    "image": ("image_size",),
    "experts": (),            # a mixture of experts' count: the first of EXPERT_KEYS its config stores
    "expert_mlp": ("moe_intermediate_size",),
}
EXPERT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts")
MROPE_SECTION = (16, 24, 24)  # Qwen2-VL's rotary sections (time, height, width) when its config names none
HEAD_DIM_KEYS = SIZE_KEYS["head_dim"]

PRESETS = {   # sizes for --model ARCH (a checkpoint has its own)
    "tiny": dict(hidden=256, layers=2, heads=4, kv_heads=2, mlp=512, vocab=2048, experts=8, expert_mlp=256),
    "small": dict(hidden=1024, layers=8, heads=16, kv_heads=4, mlp=4096, vocab=32000, experts=16, expert_mlp=1024),
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, mlp=8192, vocab=128256),
}
CHECKPOINT = "checkpoint"     # the preset recorded for a checkpoint folder

TOKENS = 128      # option tokens when not given: cut to what the model holds (CLIP's text tower 77, SigLIP's 64)
POSITION = 128    # option position when not given: half the sliding window where that is less (GPT-OSS: 64)
OPTIONS = {   # name: (lowest, highest, default); None: chosen from the model
    "position": (1, 1 << 20, None), "tokens": (1, 1 << 20, None), "cache": (2, 1 << 21, None),
    "samples": (400, 1 << 24, 16000),       # a waveform's length (one second at 16 kHz, what speech models take)
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
    """{name: value}: the given options, samples defaulted (the rest, position and tokens too, are chosen from the
    model when absent); a clear error for an unknown name or a bad value."""
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

def staged(default):
    """Whether a config sizes its model by stage (Swin, SegFormer, PVT: a tuple of heads or widths a stage)."""
    return any(isinstance(getattr(default, k, None), (list, tuple))
               for k in ("depths", "hidden_sizes", *SIZE_KEYS["heads"], *SIZE_KEYS["hidden"]))


def _layer_types(types, n):
    """n layer types in the pattern's order that keep every kind it has (Qwen3-Next's linear and full
    attention, Gemma 3's sliding and full): the first n, the last ones swapped for kinds they would drop."""
    out = list(types[:n])
    missing = [t for t in dict.fromkeys(types) if t not in out]
    for i, t in enumerate(missing[:n]):
        out[n - 1 - i] = t
    return out


def _type_fields(default):
    """The config fields that store a kind for each layer: layer_types by the name the config stores it under
    (Zamba2's layers_block_type), RecurrentGemma's repeating block_types."""
    return getattr(type(default), "attribute_map", {}).get("layer_types", "layer_types"), "block_types"


def _sized(default, sizes):
    """The config attributes that set `sizes` on `default`, one config (not the ones inside it).

    A staged config (staged()) keeps its own widths and heads, which must divide one another stage by stage:
    `layers` caps every stage's depth and the other sizes, all but `vocab` and `image`, are left as they are."""
    have = set(vars(default))
    kw = {}
    kinds = max((len(set(t)) for t in map(vars(default).get, _type_fields(default)) if isinstance(t, (list, tuple))),
                default=0)
    if "layers" in sizes and kinds > sizes["layers"]:    # Nemotron-H's four kinds of layer: one of each at least
        sizes = dict(sizes, layers=kinds)
    if staged(default):
        if "layers" in sizes and isinstance(getattr(default, "depths", None), (list, tuple)):
            kw["depths"] = [min(d, sizes["layers"]) for d in default.depths]
        sizes = {k: v for k, v in sizes.items() if k in ("layers", "vocab", "image")}
    for name, value in sizes.items():
        keys = [k for k in SIZE_KEYS[name] if k in have and not isinstance(getattr(default, k), (list, tuple))]
        kw.update({k: value for k in keys})
    if "head_dim" not in sizes and "hidden" in sizes and "heads" in sizes:
        # a state-space model's heads split the expanded width (Mamba2: hidden x expand = heads x head_dim)
        width = sizes["hidden"] * (default.expand if isinstance(getattr(default, "expand", None), int) else 1)
        kw.update({k: width // sizes["heads"] for k in HEAD_DIM_KEYS if k in have})
    if "heads" in sizes and isinstance(vars(default).get("n_groups"), int):   # Mamba2's B/C groups divide its heads
        kw["n_groups"] = math.gcd(default.n_groups, sizes["heads"])
    if "kv_heads" in sizes and "heads" in sizes and "num_key_value_heads" in kw:
        kw["num_key_value_heads"] = min(sizes["kv_heads"], sizes["heads"])
        if getattr(default, "kv_lora_rank", None):   # latent attention (DeepSeek V2/V3) expands K/V to every head
            kw["num_key_value_heads"] = sizes["heads"]
    for field in _type_fields(default):
        types = vars(default).get(field)   # a stored list (Zamba2's layers_block_type, RecurrentGemma's repeating
        if "layers" in sizes and isinstance(types, (list, tuple)) and len(types) > sizes["layers"]:   # block_types)
            kw[field] = _layer_types(types, sizes["layers"])
    experts = next((k for k in EXPERT_KEYS if isinstance(vars(default).get(k), int)), None)
    if experts and "experts" in sizes:   # a mixture of experts: as many as the size asks, as many chosen as fit
        kw[experts] = min(sizes["experts"], vars(default)[experts])
        kw["num_experts_per_tok"] = min(getattr(default, "num_experts_per_tok", None) or 2, kw[experts])
    rope = getattr(default, "rope_parameters", None)
    if isinstance(rope, dict) and ("mrope_section" in rope or "mrope_section" in
                                   getattr(default, "ignore_keys_at_rope_validation", ())):
        section = rope.get("mrope_section") or MROPE_SECTION   # Qwen2-VL's rotary sections split half the head dim
        dim = next((kw[k] for k in HEAD_DIM_KEYS if k in kw), None) or \
            (sizes["hidden"] // sizes["heads"] if "hidden" in sizes and "heads" in sizes else None)
        if dim and sum(section) != dim // 2:
            scaled = [max(1, n * (dim // 2) // sum(section)) for n in section]
            scaled[0] += dim // 2 - sum(scaled)
            kw["rope_parameters"] = dict(rope, mrope_section=scaled)
    for key in [k for k in vars(default) if k.endswith(("_layer_period", "_layer_offset"))]:
        if "layers" in sizes and isinstance(vars(default)[key], int):   # Jamba's attention every 8th layer from
            kw[key] = min(vars(default)[key], sizes["layers"] - key.endswith("_offset"))   # the 4th: one of 2 too
    vocab = kw.get("vocab_size", getattr(default, "vocab_size", None))
    for i, key in enumerate(("eos_token_id", "bos_token_id", "pad_token_id")):
        value = getattr(default, key, None)   # special tokens of the full-size vocabulary, outside a smaller one:
        if isinstance(vocab, int) and isinstance(value, int) and value >= vocab:
            kw[key] = vocab - 1 - i          # kept in range, not None (CLIP pools at its EOS token, Mllama
    start = getattr(default, "decoder_start_token_id", None)        # insists on an integer BOS)
    if isinstance(vocab, int) and isinstance(start, int) and start >= vocab:
        kw["decoder_start_token_id"] = 0
    return kw


def _size_config(model_type, sizes):
    """A config of model_type with the given sizes set on every attribute that holds them, in it and in the
    configs inside it (CLIP's text and vision towers, a VLM's language model)."""
    from transformers import AutoConfig, PretrainedConfig
    default = AutoConfig.for_model(model_type)
    kw = _sized(default, sizes)
    for name, sub in vars(default).items():
        if isinstance(sub, PretrainedConfig):   # what the outer config set in it (UperNet's backbone stages) and
            # the sizes; what the sub-config derives from them (a head dim) is derived again
            own = type(sub)().to_dict()
            kw[name] = {**{k: v for k, v in sub.to_dict().items() if k in own and own[k] != v},
                        "model_type": sub.model_type, **_sized(sub, sizes)}
    try:
        return AutoConfig.for_model(model_type, **kw)
    except Exception as e:         # a config class that validates its geometry, and sizes it does not accept
        raise PlaybookError(f"workload 'hf': transformers refuses a {model_type} config at these sizes: "
                            f"{type(e).__name__}: {_first(e)}. Give sizes that fit it (--option hidden=..., "
                            "heads=...), or a checkpoint folder") from e


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


HEAD_MAPPINGS = [f"MODEL_FOR_{name}_MAPPING_NAMES" for name in
                 ("SEMANTIC_SEGMENTATION", "IMAGE_CLASSIFICATION", "DEPTH_ESTIMATION", "OBJECT_DETECTION",
                  "UNIVERSAL_SEGMENTATION", "AUDIO_CLASSIFICATION", "CTC", "SEQUENCE_CLASSIFICATION")]


def model_class(cfg, k):
    import transformers
    arch = (getattr(cfg, "architectures", None) or [None])[0]
    if arch and hasattr(transformers, arch):
        return getattr(transformers, arch)
    if k == "causal":
        return transformers.AutoModelForCausalLM
    if k == "seq2seq" and cfg.model_type in _mapping("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"):
        return transformers.AutoModelForSeq2SeqLM
    if cfg.model_type in _mapping("MODEL_MAPPING_NAMES"):
        return transformers.AutoModel
    for mapping in HEAD_MAPPINGS:      # a type with no bare model (UperNet): the first head class it has
        if cfg.model_type in _mapping(mapping):
            return getattr(transformers, _mapping(mapping)[cfg.model_type])
    raise PlaybookError(f"workload 'hf': transformers has no model class for {cfg.model_type!r} that this workload "
                        "builds; wrap it as --workload custom with your own example inputs")


def _first(e, limit=300):
    """An exception's first non-empty line, cut to `limit` characters."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)[:limit].rstrip(".")


def make_model(model, cfg, k, device, dtype, seed):
    """The model in dtype on device: a checkpoint's weights, or random weights made on the device."""
    cls = model_class(cfg, k)
    torch.manual_seed(seed)
    try:
        if is_checkpoint(model):
            m = cls.from_pretrained(model, local_files_only=True, dtype=dtype)
            return m.to(device)
        with torch.device(device):
            m = cls.from_config(cfg) if hasattr(cls, "from_config") else cls._from_config(cfg)
    except ImportError as e:          # DiNAT needs natten, and others their own libraries
        raise PlaybookError(f"workload 'hf': {cfg.model_type} needs a library this environment lacks: {_first(e)}. "
                            "Install it, or choose another model") from e
    except (ValueError, RuntimeError, TypeError, KeyError, AttributeError, IndexError, AssertionError) as e:
        if is_checkpoint(model):
            raise
        # sizes a preset sets that the architecture's own geometry does not allow (Mimi's convolution groups), or
        # a config class whose defaults its own model cannot be built from (DBRX's in transformers 5.25)
        raise PlaybookError(f"workload 'hf': {cfg.model_type} cannot be built from this config at these sizes: "
                            f"{type(e).__name__}: {_first(e)}. Give sizes that fit it (--option hidden=..., "
                            "heads=...), or a checkpoint folder") from e
    return m.to(dtype)


def lookup_tables(model):
    """Names of embedding weights a step reads one row of (not a tied projection's weight)."""
    linear = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Linear)}
    return tuple(f"{n}.weight" for n, m in model.named_modules()
                 if isinstance(m, nn.Embedding) and m.weight.data_ptr() not in linear)


# ---- the steps --------------------------------------------------------------------------------------

COUNTERS = ("cumulative_length", "cumulative_length_linear")   # an attention layer's, a state-space layer's


def _cache_counters(cache):
    """(layer, counter name) for each counter a cache layer writes at (a tensor `cumulative_length`; sliding
    layers also keep a Python int one; a state-space layer counts its tokens in `cumulative_length_linear`):
    the counters DecodeStep gives the layer a copy of its own each call."""
    return [(layer, name) for layer in getattr(cache, "layers", ()) for name in COUNTERS
            if isinstance(getattr(layer, name, None), torch.Tensor)]


def _cache_states(cache):
    """The recurrent state tensors of a cache's state-space layers (Mamba's, Jamba's, Qwen3-Next's linear
    attention: conv_states and recurrent_states), which a decode token updates in place."""
    out = []
    for layer in getattr(cache, "layers", ()):
        for name in ("conv_states", "recurrent_states"):
            held = getattr(layer, name, None)
            held = held.values() if isinstance(held, dict) else held if isinstance(held, (list, tuple)) else ()
            out += [t for t in held if isinstance(t, torch.Tensor)]
    return out


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
    every call writes the same slot. A state-space layer's states are updated, not written at a slot: each call
    first copies back the states the prompt left (`prompt_states`), so every call decodes the same token from
    the same state."""

    def __init__(self, model, cache, position):
        super().__init__()
        self.model = model
        self.cache = cache
        self.position = position
        self.counters = _cache_counters(cache)
        self.states = _cache_states(cache)
        self.saved = tuple(f"prompt_states_{i}" for i in range(len(self.states)))
        for name, t in zip(self.saved, self.states):      # buffers, so they travel with the step's .to()
            self.register_buffer(name, t.clone(), persistent=False)
        self.cache_arg = cache_arg(model.forward)        # a constant to Dynamo: read once, here

    def forward(self, input_ids, cache_position):
        # input_ids: [1, 1]; cache_position: [1]
        for state, name in zip(self.states, self.saved):   # timed with the step: every phase and peer pays it
            state.copy_(getattr(self, name))
        own = [getattr(layer, name) for layer, name in self.counters]
        for layer, name in self.counters:
            setattr(layer, name, cache_position[0].clone())
            if name == "cumulative_length" and hasattr(layer, "cumulative_length_int"):
                layer.cumulative_length_int = self.position
        try:
            out = self.model(input_ids=input_ids, position_ids=cache_position[None], cache_position=cache_position,
                             use_cache=True, **{self.cache_arg: self.cache})
        finally:
            for (layer, name), counter in zip(self.counters, own):
                setattr(layer, name, counter)
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
        return main_output(out)


def main_output(out):
    """The tensor a forward is judged by: logits, else the last hidden state, else the first floating-point
    tensor it returns (CLIP's logits_per_image, EnCodec's audio_values; its integer codes flip on rounding)."""
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    items = out.to_tuple() if hasattr(out, "to_tuple") else out if isinstance(out, (tuple, list)) else (out,)
    tensors = [t for t in items if isinstance(t, torch.Tensor)]
    return next((t for t in tensors if t.is_floating_point()), tensors[0] if tensors else out)


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
    """Bytes of the filled KV cache one decode token must read (a sliding layer holds its window), and of the
    state-space layers' states."""
    total = sum(t.numel() * t.element_size() for t in _cache_states(cache))
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
    try:
        with torch.no_grad():
            model(input_ids=prompt[:, :-1], cache_position=torch.arange(position, device=device), use_cache=True,
                  **{cache_arg(model.forward): cache})
    except Exception as e:     # Bamba's default config: every layer a state-space one, which transformers's masks
        raise NoDecode(f"{cfg.model_type} does not prefill into a StaticCache: {type(e).__name__}: "   # refuse
                       f"{_first(e)}. Use --option step=prefill") from e
    step = DecodeStep(model, cache, position).eval()
    return step, (prompt[:, -1:], torch.tensor([position], device=device)), kv_bytes(cache, position)


class NoDecode(PlaybookError):
    """A causal model that transformers will not run against a StaticCache."""


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


def _image(cfg, gen, device, dtype):
    channels = getattr(cfg, "num_channels", None) or getattr(getattr(cfg, "vision_config", None), "num_channels", 3)
    size = _image_size(cfg)
    return torch.randn(1, channels, size, size, generator=gen).to(device, dtype)


def _audio_features(cfg, gen, device, dtype):
    """Log-mel frames the encoder takes whole: Whisper's (mel bins x twice its encoder positions, what its
    convolutions halve), or Speech2Text's (frames x features a frame); None for a config of neither kind."""
    if getattr(cfg, "num_mel_bins", None) and getattr(cfg, "max_source_positions", None):
        return torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=gen).to(device, dtype)
    per = getattr(cfg, "input_feat_per_channel", None)
    if per:
        frames = min(getattr(cfg, "max_source_positions", 600), 600)
        feats = per * getattr(cfg, "input_channels", 1)
        return torch.randn(1, frames, feats, generator=gen).to(device, dtype)
    return None


def _image_tokens(cfg):
    """Whether the model's text carries image tokens its image features replace (LLaVA, PaliGemma, Qwen2-VL)."""
    return any(getattr(cfg, key, None) is not None for key in ("image_token_id", "image_token_index"))


def forward_inputs(model, cfg, k, options, device, dtype, seed):
    """kwargs of one forward, built for the model's main input: token ids, an image, a waveform or log-mel
    frames; a model that also takes an image beside its tokens (CLIP, SigLIP) gets both."""
    import inspect
    gen = torch.Generator().manual_seed(seed + 1)
    name = getattr(model, "main_input_name", "input_ids")
    kw = {}
    if name == "pixel_values":
        kw["pixel_values"] = _image(cfg, gen, device, dtype)
    elif name == "input_values" and getattr(cfg, "num_mel_bins", None) and getattr(cfg, "max_length", None):
        # a spectrogram transformer (AST): frames x mel bins
        kw["input_values"] = torch.randn(1, cfg.max_length, cfg.num_mel_bins, generator=gen).to(device, dtype)
    elif name == "input_values":
        shape = (1, getattr(cfg, "audio_channels", 1), options["samples"]) if getattr(cfg, "audio_channels", None) \
            else (1, options["samples"])
        kw["input_values"] = torch.randn(*shape, generator=gen).to(device, dtype)
    elif name == "input_features" and (features := _audio_features(cfg, gen, device, dtype)) is not None:
        kw["input_features"] = features
    elif name == "input_ids":
        vocab = getattr(cfg, "vocab_size", None) or cfg.get_text_config().vocab_size
        kw["input_ids"] = torch.randint(0, vocab, (1, options["tokens"]), generator=gen).to(device)
        try:
            takes_image = "pixel_values" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            takes_image = False
        if takes_image and not _image_tokens(cfg) and (hasattr(cfg, "vision_config") or hasattr(cfg, "image_size")):
            # a dual encoder (CLIP, SigLIP, BLIP) or one tower over both (ViLT) takes the image beside the text;
            # a VLM places image features at its image tokens, and runs here on its text alone
            kw["pixel_values"] = _image(getattr(cfg, "vision_config", cfg), gen, device, dtype)
    else:
        raise PlaybookError(f"workload 'hf': {type(model).__name__} takes {name!r} as its main input, which this "
                            "workload does not build; wrap it as --workload custom with your own example inputs")
    if k == "seq2seq":
        start = getattr(cfg, "decoder_start_token_id", None)
        kw["decoder_input_ids"] = torch.full((1, 1), 0 if start is None else start, dtype=torch.long, device=device)
    return kw


def _what(cfg, kwargs, options, k):
    """The forward's inputs in words, for the workload's description."""
    if "input_values" in kwargs and kwargs["input_values"].dim() == 3 and getattr(cfg, "num_mel_bins", None):
        what = "a spectrogram " + "x".join(str(n) for n in kwargs["input_values"].shape[1:])
    elif "input_values" in kwargs:
        what = f"{kwargs['input_values'].shape[-1]} audio samples"
    elif "input_features" in kwargs:
        what = "log-mel frames " + "x".join(str(n) for n in kwargs["input_features"].shape[1:])
    elif "input_ids" in kwargs:
        what = f"{options['tokens']} tokens" + (" and one image" if "pixel_values" in kwargs else
                                                 ", text only (no image tokens)" if _image_tokens(cfg) else "")
    else:
        what = "one image"
    return what + (" through the encoder and one decoder token" if k == "seq2seq" else "")


VANISHING = 1e-6    # a random-weight output no larger than this everywhere judges nothing


def _trial(step, args, kwargs, hf, what):
    """The step's output once, so a model whose inputs this workload cannot build says so when it is built."""
    try:
        with torch.no_grad():
            return step(*args, **kwargs)
    except Exception as e:
        raise PlaybookError(f"workload 'hf': {type(hf).__name__}'s forward failed on the inputs this workload "
                            f"builds ({what}): {type(e).__name__}: {_first(e)}. Wrap it as --workload custom "
                            "with your own example inputs") from e


def _vanishing(out):
    return isinstance(out, torch.Tensor) and out.is_floating_point() and not out.abs().max() > VANISHING


def _revive_batch_norms(hf, forward):
    """What the description adds once a random model's batch norms no longer vanish its output ('' if they
    did not). transformers' random batch-norm scales (about 0.02) with the init's running statistics (mean 0,
    variance 1) shrink EfficientNet's activations to nothing by the last block, and a vanishing output judges
    no rewrite: the norms go to PyTorch's init (scale 1, shift 0) with statistics measured on the example
    input (`forward`, the step on it), as a trained model's would be."""
    norms = [m for m in hf.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return ""
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_parameters()
        m.momentum, m.training = None, True        # a cumulative average over the one forward
    forward()
    for m, momentum in zip(norms, momenta):
        m.momentum, m.training = momentum, False
    if _vanishing(forward()):
        return ""
    return (f" ({len(norms)} batch norms at PyTorch's init, statistics measured on it: transformers' init left "
            f"the output below {VANISHING:g})")


def build(preset, device, dtype, seed=0, weights_via=None, options=None, model=""):
    """The workload; what transformers raises on a model this workload cannot size, build or feed (a config
    that refuses per-layer attributes, a vision tower with no vocabulary) as a PlaybookError naming what to do."""
    try:
        return _build(preset, device, dtype, seed, weights_via, options, model)
    except (PlaybookError, torch.cuda.OutOfMemoryError, MemoryError):   # out of memory says so itself
        raise
    except Exception as e:
        raise PlaybookError(f"workload 'hf': {model} could not be built as a step: {type(e).__name__}: {_first(e)}. "
                            "Give a checkpoint folder or other sizes (--option ...), or wrap it as --workload custom "
                            "with your own example inputs") from e


def _build(preset, device, dtype, seed, weights_via, options, model):
    options = check_options(options)
    cfg = load_config(model, "" if preset == CHECKPOINT else preset, options)
    k = kind(cfg)
    step_name = options.get("step") or ("decode" if k == "causal" else "forward")
    if step_name in ("decode", "prefill") and k != "causal":
        raise PlaybookError(f"option step={step_name} is for causal language models; {cfg.model_type} is "
                            f"{'an encoder-decoder' if k == 'seq2seq' else 'not one'}: use step=forward")
    options = dict(options)
    auto = "tokens" not in options
    options.setdefault("tokens", TOKENS)
    window = getattr(cfg.get_text_config(decoder=True), "sliding_window", None)
    if "position" not in options:      # GPT-OSS's window is 128: the default position is kept inside it
        inside = isinstance(window, int) and 1 < window <= POSITION and _has_sliding_layers(cfg)
        options["position"] = window // 2 if inside else POSITION
    text = getattr(cfg, "text_config", None)
    for where, key in [(c, key) for c in (cfg, text) if c is not None for key in ("max_position_embeddings",
                                                                                   "n_positions")]:
        held = getattr(where, key, None)
        if auto and step_name == "forward" and isinstance(held, int) and held < options["tokens"]:
            options["tokens"] = held      # CLIP's text tower holds 77: the default prompt is cut to fit
        need = options["position"] + 1 if step_name == "decode" else options["tokens"]
        if isinstance(held, int) and held < need:
            raise PlaybookError(f"{cfg.model_type} holds {held} positions ({key}); this step needs "
                                f"{need}: lower option position/tokens")
    hf = make_model(model, cfg, k, device, weights_via or dtype, seed).to(dtype).eval()
    kv, why = 0, ""
    if step_name == "decode":
        slots = options.get("cache") or default_cache(options["position"])
        try:
            step, args, kv = decode_step(hf, cfg, options["position"], slots, device, seed)
            kwargs = {}
            what = f"one decode token at position {options['position']} of a {slots}-slot StaticCache"
        except NoDecode as e:
            if options.get("step"):
                raise
            step_name, why = "prefill", f" (the default decode step could not be built: {e})"
    if step_name == "prefill":
        step, kwargs = PrefillStep(hf).eval(), {}
        gen = torch.Generator().manual_seed(seed + 1)
        args = (torch.randint(0, cfg.get_text_config(decoder=True).vocab_size, (1, options["tokens"]),
                              generator=gen).to(device),)
        what = f"a {options['tokens']}-token prefill (no cache, last token's logits){why}"
    elif step_name != "decode":
        step, args = ForwardStep(hf).eval(), ()
        kwargs = forward_inputs(hf, cfg, k, options, device, dtype, seed)
        what = _what(cfg, kwargs, options, k)
    if step_name != "decode":
        out = _trial(step, args, kwargs, hf, what)
        if not is_checkpoint(model) and _vanishing(out):
            what += _revive_batch_norms(hf, lambda: _trial(step, args, kwargs, hf, what))
    source = f"checkpoint {model}" if is_checkpoint(model) else f"{model} {preset} sizes, random weights"
    return Workload(
        name="hf", preset=preset, model=step, args=args, kwargs=kwargs,
        weight_bytes=count_weight_bytes(hf, skip=lookup_tables(hf)), kv_bytes=kv,
        description=f"{type(hf).__name__} ({source}; {cfg.model_type}), {what}, "
                    f"attention '{hf.config._attn_implementation}'")
