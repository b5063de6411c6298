"""`llama`: Hugging Face LlamaForCausalLM from a config with random weights; the step is one decode token.

    wl = build(preset="1b", device=torch.device("cuda"), dtype=torch.bfloat16)
    logits = wl.model(*wl.args)        # [1, 1, vocab]: one token at batch 1 against a StaticCache

The prompt is prefilled once when the workload is built (outside the timed region); every call then
decodes the same next token at the same cache position, so repeated calls are identical and a captured
graph can replay it. Preset `1b` is Llama-3.2-1B's geometry; `tiny` runs on a CPU.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

from .base import Workload, count_weight_bytes, matmul_flops


@dataclass(frozen=True)
class LlamaPreset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    max_cache: int
    prompt: int
    tied: bool = True


PRESETS = {
    "tiny": LlamaPreset(hidden=256, layers=2, heads=8, kv_heads=2, mlp=704, vocab=2048, max_cache=128, prompt=16),
    "1b": LlamaPreset(hidden=2048, layers=16, heads=32, kv_heads=8, mlp=8192, vocab=128256, max_cache=1024, prompt=128),
}


def config(p: LlamaPreset):
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=p.hidden, num_hidden_layers=p.layers, num_attention_heads=p.heads,
                       num_key_value_heads=p.kv_heads, intermediate_size=p.mlp, vocab_size=p.vocab,
                       tie_word_embeddings=p.tied, max_position_embeddings=max(p.max_cache, 2048),
                       rope_theta=500000.0, rms_norm_eps=1e-5)


class DecodeStep(nn.Module):
    """One decode token: the HF model plus its StaticCache, called with tensors only."""

    def __init__(self, model, cache):
        super().__init__()
        self.model = model
        self.cache = cache
        # Recent transformers write at each layer's own counter (cumulative_length), not at
        # cache_position; pin the counters so every call writes the same slot and is repeatable.
        self.counters = [layer.cumulative_length for layer in getattr(cache, "layers", ())
                         if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor)]

    def forward(self, input_ids, cache_position):
        # input_ids: [1, 1]; cache_position: [1]
        for counter in self.counters:
            counter.copy_(cache_position[0])
        out = self.model(input_ids=input_ids, position_ids=cache_position[None], cache_position=cache_position,
                         past_key_values=self.cache, use_cache=True)
        return out.logits


def build(preset, device, dtype, seed=0, weights_via=None):
    from transformers import LlamaForCausalLM, StaticCache
    p = PRESETS[preset]
    cfg = config(p)
    torch.manual_seed(seed)
    with torch.device(device):            # random init where the model lives: not gigabytes of CPU init
        model = LlamaForCausalLM(cfg)
    model = model.to(dtype=weights_via or dtype).to(dtype=dtype).eval()
    cache = StaticCache(config=cfg, max_cache_len=p.max_cache)
    gen = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, p.vocab, (1, p.prompt + 1), generator=gen).to(device)
    with torch.no_grad():
        model(input_ids=prompt[:, :-1], cache_position=torch.arange(p.prompt, device=device),
              past_key_values=cache, use_cache=True)
    step = DecodeStep(model, cache).eval()
    params = sum(w.numel() for n, w in model.named_parameters() if "embed_tokens" not in n or p.tied)
    return Workload(
        name="llama", preset=preset, model=step,
        args=(prompt[:, -1:], torch.tensor([p.prompt], device=device)),
        weight_bytes=count_weight_bytes(model, skip=() if p.tied else ("model.embed_tokens.weight",)),
        flops=matmul_flops(params, tokens=1),
        description=f"LlamaForCausalLM ({preset}: hidden {p.hidden}, {p.layers} layers, {p.heads} heads, "
                    f"{p.kv_heads} KV heads), one decode token at position {p.prompt} of a "
                    f"{p.max_cache}-slot StaticCache, attention '{model.config._attn_implementation}'")
