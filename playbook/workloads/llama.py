"""`llama`: Hugging Face LlamaForCausalLM from a config with random weights; the step is one decode token.

    wl = build(preset="1b", device=torch.device("cuda"), dtype=torch.bfloat16)
    logits = wl.model(*wl.args)        # [1, 1, vocab]: one token at batch 1 against a StaticCache

A named preset of the `hf` workload's decode step (workloads/hf.py): the prompt is prefilled once when
the workload is built (outside the timed region); every call then decodes the same next token at the
same cache position, so repeated calls are identical and a captured graph can replay it. Preset `1b`
is Llama-3.2-1B's geometry; `tiny` runs on a CPU.
"""
from dataclasses import dataclass

import torch

from .base import Workload, count_weight_bytes
from .hf import decode_step, lookup_tables


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


def build(preset, device, dtype, seed=0, weights_via=None):
    from transformers import LlamaForCausalLM
    p = PRESETS[preset]
    cfg = config(p)
    torch.manual_seed(seed)
    with torch.device(device):            # random init where the model lives: not gigabytes of CPU init
        model = LlamaForCausalLM(cfg)
    model = model.to(dtype=weights_via or dtype).to(dtype=dtype).eval()
    step, args, kv = decode_step(model, cfg, p.prompt, p.max_cache, device, seed)
    return Workload(
        name="llama", preset=preset, model=step, args=args,
        weight_bytes=count_weight_bytes(model, skip=lookup_tables(model)), kv_bytes=kv,
        description=f"LlamaForCausalLM ({preset}: hidden {p.hidden}, {p.layers} layers, {p.heads} heads, "
                    f"{p.kv_heads} KV heads), one decode token at position {p.prompt} of a "
                    f"{p.max_cache}-slot StaticCache, attention '{model.config._attn_implementation}'")
