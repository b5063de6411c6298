"""`pi0`: the vision-language-action policy; the timed step is one whole policy inference.

    wl = build(preset="full", device=torch.device("cuda"), dtype=torch.bfloat16, cameras=3, action_horizon=10)
    actions = wl.model(*wl.args)          # [1, action_horizon, 32]: vision, prefix, every denoise step

Hugging Face components with random weights, geometry from openpi's PyTorch port (REFERENCE.md):
SigLIP So400m/14 (`SiglipVisionModel`) per camera, projected to the LM width; a Gemma 2B prefix
(image tokens + prompt embeddings scaled by sqrt(width), all mutually visible but for padding) that
fills a KV cache once; a Gemma-geometry 300M action expert that, for each of `num_steps` Euler steps
from t=1 to 0, attends in every layer to [prefix KV ; its own K/V] and projects the action tokens to
32 dims. Suffix mask: action tokens see the prefix, the state token and each other; the state token
sees the prefix and itself.

Options (`--option name=value`): cameras (present, 1-3; the other slots are zero images with an
all-false mask, as in the source's benchmark), prompt_len (real tokens, padded to 48 with a mask),
action_horizon (50; 10 to compare with published figures), num_steps (10).
Model knob `skip_masked_cameras` (phase 4 offers it where a camera is masked): drop those cameras'
SigLIP call and tokens, which shortens the prefix; the correctness gate checks the actions agree.
Model knob `kv_in_place` (offered always): the prefix pass keeps each layer's K/V in a buffer with room
after it for the suffix, padded to a multiple of 8 slots; every denoise step writes its own K/V into that
room instead of concatenating [prefix ; suffix] anew in each layer (and grouped attention padding it again).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PlaybookError
from .base import Workload
from .hf import cache_arg

CAMERA_SLOTS = 3
MAX_PROMPT = 48
ACTION_DIM = 32


@dataclass(frozen=True)
class Pi0Preset:
    image: int                      # image side; patch 14 -> (image / 14)^2 tokens per camera
    patch: int
    vision: tuple                   # SigLIP (hidden, layers, mlp, heads)
    lm: tuple                       # Gemma prefix (hidden, mlp)
    expert: tuple                   # Gemma action expert (hidden, mlp)
    layers: int                     # shared by prefix and expert: the expert attends to every prefix layer
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


PRESETS = {
    "tiny": Pi0Preset(image=28, patch=14, vision=(64, 2, 128, 4), lm=(128, 256), expert=(64, 128),
                      layers=2, heads=2, kv_heads=1, head_dim=32, vocab=512),
    "full": Pi0Preset(image=224, patch=14, vision=(1152, 27, 4304, 16), lm=(2048, 16384), expert=(1024, 4096),
                      layers=18, heads=8, kv_heads=1, head_dim=256, vocab=257152),
}
OPTIONS = {"cameras": (1, CAMERA_SLOTS, CAMERA_SLOTS), "prompt_len": (1, MAX_PROMPT, 20),
           "action_horizon": (1, 256, 50), "num_steps": (1, 100, 10)}        # name: (min, max, default)
# Compiled one by one (compile scope "regions"): every denoise step reuses velocity's code, where a
# whole-model compile unrolls num_steps x 18 expert layers (CPU, 18 layers at small width: 372 s vs 228 s
# for the loop alone, both unrolled).
REGIONS = ("embed_prefix", "fill_cache", "denoise.velocity")
KNOBS = {"skip_masked_cameras": "drop the SigLIP call and the tokens of cameras whose mask is all false",
         "batch_cameras": "one SigLIP call on every camera the step runs, as a batch, instead of one call a camera",
         "kv_in_place": "each denoise step writes its K/V into room left after the prefix's, padded to 8 slots, "
                        "instead of concatenating and padding them in every layer"}
# NOTE: batch_cameras, because on pi0 full (H200, 2026-11-23) the vision tower ran each of 3 cameras as its own
# 256-row GEMMs (1152x1152 at 4.6 us, 21% of its floor; 324 calls a step): one batch makes them 768-row GEMMs
# and a third of the launches. SigLIP treats each image alone, so the tokens are the same.
# NOTE: kv_in_place, because on pi0 full (H200, 2026-12-01, sitting 6's verify trace) four of the 14 kernels of
# each expert layer and denoise step rotated the new K, concatenated K and V after the prefix's and padded both
# to 8 slots for grouped attention: 5.8 us a call, 1.05 ms of the 17.26 ms step. Written in place, the K/V
# need no concatenation, and 827 slots padded once to 832 need no padding either.
KV_ALIGN = 8


def check_options(options):
    """{name: int} with defaults filled in; a clear error for an unknown name or a value out of range."""
    out = {k: v[2] for k, v in OPTIONS.items()}
    for name, value in (options or {}).items():
        if name not in OPTIONS:
            raise PlaybookError(f"unknown option {name!r} for workload 'pi0'; choose from: {', '.join(OPTIONS)}")
        lo, hi, _ = OPTIONS[name]
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise PlaybookError(f"option {name}={value!r} is not a whole number") from None
        if not lo <= v <= hi or str(v) != str(value).strip():
            raise PlaybookError(f"option {name}={value!r} must be a whole number from {lo} to {hi}")
        out[name] = v
    return out


def gemma_config(p, hidden, mlp, vocab):
    from transformers import GemmaConfig
    return GemmaConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=p.layers,
                       num_attention_heads=p.heads, num_key_value_heads=p.kv_heads, head_dim=p.head_dim,
                       vocab_size=vocab, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
                       pad_token_id=None, bos_token_id=None, eos_token_id=None, attn_implementation="eager")


def siglip_config(p):
    from transformers import SiglipVisionConfig
    hidden, layers, mlp, heads = p.vision
    return SiglipVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                              num_attention_heads=heads, image_size=p.image, patch_size=p.patch,
                              vision_use_head=False, attn_implementation="eager")


def sinusoidal_time(t, width, min_period=4e-3, max_period=4.0):
    """openpi's time embedding: sin/cos of t at periods spaced geometrically. t: [B] -> [B, width]"""
    fraction = torch.linspace(0.0, 1.0, width // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class KVCache:
    """Per-layer K/V of the prefix, handed to Hugging Face attention as its cache (`cache`, or
    `past_key_values` in older transformers: workloads.hf.cache_arg).

    fill=True (the prefix pass): each layer's K/V are kept (with `room` zero slots after them, for the
    kv_in_place knob) and returned as they are.
    fill=False (a denoise step): each layer attends to [prefix K/V ; its own K/V]: concatenated, the cache
    unchanged; or, with `start` (kv_in_place), written into the kept buffer's room from slot `start` on, and
    the whole buffer returned (the mask hides the slots after the suffix)."""

    def __init__(self, fill, keys=None, values=None, room=0, start=None):
        self.fill, self.room, self.start = fill, room, start
        self.keys, self.values = (keys, values) if keys is not None else ({}, {})

    def update(self, k, v, layer_idx, *args, **kwargs):
        # k, v: [B, kv_heads, S, head_dim]
        if self.fill:
            pad = (0, 0, 0, self.room)
            self.keys[layer_idx], self.values[layer_idx] = (F.pad(k, pad), F.pad(v, pad)) if self.room else (k, v)
            return k, v
        if self.start is None:
            return torch.cat([self.keys[layer_idx], k], dim=2), torch.cat([self.values[layer_idx], v], dim=2)
        keys, values, end = self.keys[layer_idx], self.values[layer_idx], self.start + k.shape[2]
        keys[:, :, self.start:end] = k
        values[:, :, self.start:end] = v
        return keys, values

    def append_slots(self, layer_idx, tokens):
        """(keys, values, start) where a denoise step's `tokens` K/V rows go in place (kv_in_place), else None:
        what rewrites.rope_append_rows writes into itself, as update() would."""
        if self.fill or self.start is None or layer_idx not in self.keys:
            return None
        keys = self.keys[layer_idx]
        return (keys, self.values[layer_idx], self.start) if self.start + tokens <= keys.shape[2] else None


def _mask(allowed, attn_implementation, dtype):
    """allowed: [B, Q, K] bool -> the mask a Hugging Face attention wants: bool for SDPA, additive for eager."""
    allowed = allowed[:, None]
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _layer(layer, h, mask, cos_sin, cache, cache_arg):
    out = layer(h, attention_mask=mask, position_embeddings=cos_sin, **{cache_arg: cache})
    return out[0] if isinstance(out, tuple) else out


class Denoise(nn.Module):
    """The hot loop: num_steps Euler steps of the action expert against a filled prefix cache."""

    def __init__(self, expert, num_steps, horizon):
        super().__init__()
        width = expert.config.hidden_size
        self.expert = expert
        self.cache_arg = cache_arg(type(expert.layers[0]).forward)     # a constant to Dynamo: read once, here
        self.state_proj = nn.Linear(ACTION_DIM, width)
        self.action_in_proj = nn.Linear(ACTION_DIM, width)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, ACTION_DIM)
        self.num_steps, self.horizon = num_steps, horizon

    def embed_suffix(self, state, x_t, t):
        # state: [B, 32]; x_t: [B, H, 32]; t: [B] -> [B, 1 + H, width]
        time = sinusoidal_time(t, self.action_in_proj.out_features).to(x_t.dtype)
        actions = self.action_in_proj(x_t)
        time = time[:, None, :].expand_as(actions)
        fused = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([actions, time], dim=-1))))
        return torch.cat([self.state_proj(state)[:, None, :], fused], dim=1)

    def velocity(self, state, x_t, t, keys, values, mask, cos_sin, start=None):
        """One denoise step's velocity: the compile region reused by every step. start: the slot its K/V are
        written from into the prefix's buffers (kv_in_place), or None to concatenate them."""
        cache = KVCache(False, dict(enumerate(keys)), dict(enumerate(values)), start=start)
        h = self.embed_suffix(state, x_t, t)
        for layer in self.expert.layers:
            h = _layer(layer, h, mask, cos_sin, cache, self.cache_arg)
        h = self.expert.norm(h)
        return self.action_out_proj(h[:, -self.horizon:])

    def forward(self, keys, values, prefix_pad, state, noise):
        # keys, values: per layer [B, kv_heads, P, head_dim]; prefix_pad: [B, P] bool; noise: [B, H, 32]
        b, p = prefix_pad.shape
        s = 1 + self.horizon
        room = keys[0].shape[2] - p                            # kv_in_place: the suffix's slots and padding
        start = p if room else None
        suffix = torch.ones(s, s, dtype=torch.bool, device=noise.device)
        suffix[0, 1:] = False                                  # the state token does not see the actions
        parts = [prefix_pad[:, None, :].expand(b, s, p), suffix.expand(b, s, s)]
        if room > s:                                           # the padding after the suffix: never seen
            parts.append(torch.zeros(b, s, room - s, dtype=torch.bool, device=noise.device))
        allowed = torch.cat(parts, dim=2)
        mask = _mask(allowed, self.expert.config._attn_implementation, noise.dtype)
        positions = prefix_pad.sum(dim=1, keepdim=True) + torch.arange(s, device=noise.device)   # after the real tokens
        cos_sin = self.expert.rotary_emb(noise, positions)
        dt = -1.0 / self.num_steps
        x_t = noise
        for step in range(self.num_steps):                    # static control flow: unrolled when compiled
            t = torch.full((b,), 1.0 + step * dt, device=noise.device)
            x_t = x_t + dt * self.velocity(state, x_t, t, keys, values, mask, cos_sin, start)
        return x_t


class Pi0(nn.Module):
    """One policy inference: images -> prefix KV cache -> num_steps denoise steps -> actions."""

    def __init__(self, p, num_steps, horizon):
        super().__init__()
        from transformers import GemmaModel, SiglipVisionModel
        self.vision = SiglipVisionModel(siglip_config(p))
        self.projector = nn.Linear(p.vision[0], p.lm[0])
        self.lm = GemmaModel(gemma_config(p, *p.lm, p.vocab))
        expert = GemmaModel(gemma_config(p, *p.expert, vocab=1))
        expert.embed_tokens = None                             # the expert embeds actions, not tokens
        self.denoise = Denoise(expert, num_steps, horizon)
        self.cache_arg = cache_arg(type(self.lm.layers[0]).forward)
        self.skipped_cameras = ()                              # the knob: camera slots whose work is dropped
        self.batch_cameras = False                             # the knob: one vision call for all of them
        self.kv_in_place = False                               # the knob: denoise K/V written after the prefix's

    def embed_prefix(self, images, image_masks, prompt, prompt_mask):
        # images: [cameras, 3, H, W]; image_masks: [cameras] bool; prompt, prompt_mask: [1, L]
        tokens, pads = [], []
        run = [i for i in range(images.shape[0]) if i not in self.skipped_cameras]
        if self.batch_cameras and len(run) > 1:                # [n, patches, width] -> one row of n * patches
            batch = images[run[0]:run[-1] + 1] if run == list(range(run[0], run[-1] + 1)) else images[run]
            img = self.projector(self.vision(pixel_values=batch).last_hidden_state)
            tokens.append(img.reshape(1, -1, img.shape[-1]))
            pads.append(image_masks[run][:, None].expand(len(run), img.shape[1]).reshape(1, -1))
            run = []
        for i in run:
            img = self.projector(self.vision(pixel_values=images[i:i + 1]).last_hidden_state)
            tokens.append(img)
            pads.append(image_masks[i:i + 1, None].expand(1, img.shape[1]))
        width = self.lm.config.hidden_size
        text = F.embedding(prompt, self.lm.embed_tokens.weight) * math.sqrt(width)
        return torch.cat(tokens + [text.to(tokens[0].dtype)], dim=1), torch.cat(pads + [prompt_mask], dim=1)

    def fill_cache(self, h, pad):
        """The prefix through every Gemma layer once; returns each layer's keys and values."""
        b, p, _ = h.shape
        s = 1 + self.denoise.horizon                           # kv_in_place: room for the suffix, 8-slot aligned
        cache = KVCache(True, room=s + (-(p + s) % KV_ALIGN) if self.kv_in_place else 0)
        allowed = pad[:, None, :].expand(b, p, p)              # every token sees every real token
        mask = _mask(allowed, self.lm.config._attn_implementation, h.dtype)
        positions = (torch.cumsum(pad.long(), dim=1) - 1).clamp(min=0)
        cos_sin = self.lm.rotary_emb(h, positions)
        for layer in self.lm.layers:
            h = _layer(layer, h, mask, cos_sin, cache, self.cache_arg)
        layers = range(len(self.lm.layers))
        return [cache.keys[i] for i in layers], [cache.values[i] for i in layers]

    def forward(self, images, image_masks, prompt, prompt_mask, state, noise):
        h, pad = self.embed_prefix(images, image_masks, prompt, prompt_mask)
        keys, values = self.fill_cache(h, pad)
        return self.denoise(keys, values, pad, state, noise)


def example_inputs(p, o, device, dtype, seed):
    """Camera images (the absent ones zero, masked), a padded prompt, a state and the initial noise."""
    gen = torch.Generator().manual_seed(seed + 1)
    images = torch.rand(CAMERA_SLOTS, 3, p.image, p.image, generator=gen) * 2 - 1
    image_masks = torch.arange(CAMERA_SLOTS) < o["cameras"]
    images[~image_masks] = 0.0
    prompt = torch.randint(1, p.vocab, (1, MAX_PROMPT), generator=gen)
    prompt_mask = (torch.arange(MAX_PROMPT) < o["prompt_len"])[None]
    prompt[~prompt_mask] = 0
    state = torch.randn(1, ACTION_DIM, generator=gen)
    noise = torch.randn(1, o["action_horizon"], ACTION_DIM, generator=gen)
    return tuple(x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
                 for x in (images, image_masks, prompt, prompt_mask, state, noise))


def _params(module):
    return sum(w.numel() for w in module.parameters())


def floors(model, p, o, dtype):
    """Weight bytes one inference reads: vision and prefix once, the expert once per denoise step (its
    weights are re-read each step). The embedding table is a lookup (48 rows read), left out. FLOPs are
    counted by FlopCounterMode in the baseline phase."""
    size = torch.finfo(dtype).bits // 8
    vision = _params(model.vision) + _params(model.projector)
    lm = _params(model.lm) - model.lm.embed_tokens.weight.numel()
    expert = _params(model.denoise)
    return (vision + lm + expert * o["num_steps"]) * size


def build(preset, device, dtype, seed=0, weights_via=None, options=None):
    p, o = PRESETS[preset], check_options(options)
    torch.manual_seed(seed)
    with torch.device(device):            # random init where the model lives: seconds, not minutes, for 3.5B
        model = Pi0(p, o["num_steps"], o["action_horizon"])
    model = model.to(dtype=weights_via or dtype).to(dtype=dtype).eval()
    args = example_inputs(p, o, device, weights_via or dtype, seed)
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    weight_bytes = floors(model, p, o, dtype if weights_via is None else weights_via)
    masked = [i for i in range(CAMERA_SLOTS) if i >= o["cameras"]]
    knobs = {"skip_masked_cameras": masked} if masked else {}
    if o["cameras"] > 1:                   # the cameras left once the masked ones are skipped
        knobs["batch_cameras"] = True
    knobs["kv_in_place"] = True
    return Workload(
        name="pi0", preset=preset, model=model, args=args, weight_bytes=weight_bytes,
        hot_loop="denoise", knobs=knobs, regions=REGIONS,
        description=f"pi0 ({preset}: SigLIP {p.vision[1]} layers x {p.vision[0]}, Gemma prefix {p.layers} x "
                    f"{p.lm[0]}, expert {p.layers} x {p.expert[0]}), {o['cameras']} of {CAMERA_SLOTS} cameras, "
                    f"prompt {o['prompt_len']} of {MAX_PROMPT} tokens, action_horizon {o['action_horizon']}, "
                    f"{o['num_steps']} denoise steps, attention '{model.lm.config._attn_implementation}'")


def set_knob(model, name, value):
    """Apply a model knob this workload offered (phase 4)."""
    if name == "skip_masked_cameras":
        model.skipped_cameras = tuple(value)
    elif name == "batch_cameras":
        model.batch_cameras = bool(value)
    elif name == "kv_in_place":
        model.kv_in_place = bool(value)
    else:
        raise PlaybookError(f"unknown pi0 knob {name!r}; choose from: {', '.join(KNOBS)}")
