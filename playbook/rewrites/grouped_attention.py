"""Phase 2's grouped attention: a Hugging Face model's eager GQA attention with the query heads of one K/V
head folded into its rows, so each K/V head is read once by one matrix product instead of copied per head.

    sites = find_sites(model)        # [{"path", "heads", "kv_heads", "was"}]: HF models with fewer K/V heads
    route(model)                     # in place: their attention implementation becomes "playbook_grouped"

Eager attention in Hugging Face models (`eager_attention_forward`) first copies each K/V head once per
query head of its group (`repeat_kv`), then runs a batched product per head. On a decode-like step
(pi0's action expert: 11 queries against an 827-slot cache, 8 query heads over one K/V head) that is a
batched matrix-vector product per head: cuBLAS ran it as `gemmSN_NN` at 16.6 us a call, 2.97 ms of the
eager step (H200, 2026-11-23, 180 calls). Folding the group into the rows makes it one [g*q, d] x [d, k]
product per K/V head. SDPA would do the same with `enable_gqa`, but Hugging Face passes it only when
there is no explicit mask, and pi0's masks are explicit (padding, the state token's block).

The computation is eager attention's, in the same order: the scaled scores, the optional soft cap, the
mask (boolean "may attend" or additive), softmax in fp32, rounded to the query's dtype, times V; the K/V
length is padded to a multiple of ALIGN slots that the mask hides (a padded slot gets weight 0). It
takes what the model passes (scaling, dropout, softcap, a mask with one head or all of them) and is
registered with transformers' AttentionInterface, so any HF model can switch to it by its own setting.

    route(model, few_query=True)     # "playbook_few_query": the same, a few queries' calls in one launch

A call of 1 to 16 queries over more K/V slots (pi0's denoise steps) can instead go to
kernels.few_query_attention, which reads K/V in place and does the scores, mask, softmax and values'
product in two launches (the chunks, their combine), where the compiled grouped math is three to five
kernels (the padding, two products, the softmax, a copy). Phase 5 times the two at the step's own calls and
routes the models where the kernel wins (rewrites.few_query); a recipe can ask for it (attention
{"few_query": true}).
"""
import torch
import torch.nn.functional as F

NAME = "playbook_grouped"
FEW_QUERY = "playbook_few_query"     # the same, with a few queries' calls in one Triton launch
# NOTE: the rows are query-major (query i's heads of a group together). With pi0's one K/V head the
# projection's [b, q, h, d] layout is then the grouped rows as they are, and the output is [b, q, h, d] with
# no copy: head-major rows cost a transpose kernel after each call (H200, 2026-12-01, pi0 full's verify
# trace: 1.2 us on each of the 180 denoise calls, 3.1 us on each of the 17 prefix calls).
# NOTE: the K/V length is padded to a multiple of 8 (16 bytes of bf16), the padding masked out. On pi0 full
# (H200, 2026-11-23) the grouped products over 838 slots ran on cuBLAS's unaligned sm75 kernels
# (`cutlass_75_tensorop_s1688gemm_bf16_64x64_*_align1`, about 5 us a call, 1.76 ms a step) because 838 rows
# of 2 bytes break the 16-byte alignment that the Hopper kernels need.
ALIGN = 8
# NOTE: a long call (pi0's prefix: 816 queries, 8 heads over one K/V head, head 256) as one SDPA call with the mask
# laid out as the folded rows ([1, 1, 6528, 816], additive) lost to this math on pi0 full (H200, 2026-12-03,
# benchmarks/results/pi0-vision/): torch picked cuDNN, 78.6 us a layer against about 25 us for the math's three
# kernels (16.85 against 15.86 ms a step); memory-efficient attention forced, 16.81 ms. So it is not offered.


def grouped_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                              softcap=None, **kwargs):
    """query [b, h, q, d]; key, value [b, kvh, k, d] with h a multiple of kvh; returns ([b, q, h, d], None)."""
    b, h, q_len, d = query.shape
    kvh, k_len = key.shape[1], key.shape[2]
    if h % kvh:
        raise ValueError(f"grouped attention: {h} query heads are not a multiple of {kvh} K/V heads")
    g = h // kvh
    scale = scaling if scaling is not None else d ** -0.5
    # Row (i, j) is query i of head kvh_i * g + j, which reads K/V head kvh_i (repeat_kv's order). Query-major:
    # with one K/V head, the projection's [b, q, h, d] layout is these rows as they are, in and out.
    q = query.transpose(1, 2).reshape(b, q_len, kvh, g, d).transpose(1, 2).reshape(b, kvh, q_len * g, d)
    pad = -k_len % ALIGN                           # K/V padded to ALIGN slots, the padding masked out
    if pad:
        key, value = F.pad(key, (0, 0, 0, pad)), F.pad(value, (0, 0, 0, pad))
    scores = torch.matmul(q, key.transpose(2, 3))[..., :k_len] * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = _grouped_mask(attention_mask[..., :k_len], kvh, g, q_len, k_len)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    if pad:         # -inf: no weight even in a row whose every real slot is masked (eager gives those a uniform one)
        scores = F.pad(scores, (0, pad), value=float("-inf"))
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=getattr(module, "training", False))
    out = torch.matmul(probs, value)                                    # [b, kvh, q * g, d]
    return out.reshape(b, kvh, q_len, g, d).transpose(1, 2).reshape(b, q_len, h, d), None


def few_query_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """grouped_attention_forward, with a call of a few queries (a denoise step's suffix, a decode token) in one
    launch of kernels.few_query_attention: the K/V read in place, no padding, one kernel for the scores, the
    mask, the softmax and the values' product. Any other call (a prefix of many tokens, dropout while
    training, a head over 256) takes the grouped math above."""
    mask = None if attention_mask is None else attention_mask[..., :key.shape[2]]
    if _kernel_takes(module, query, key, mask, dropout):
        from playbook.kernels.few_query_attention import few_query_attention
        return few_query_attention(query, key, value, mask, scale=scaling, softcap=softcap,
                                   pdl=getattr(module, "_playbook_pdl", False)), None
    return grouped_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                     softcap=softcap, **kwargs)


def few_query_rope_forward(module, q, k, v, cos, sin, keys, values, start, attention_mask, scaling=None,
                           dropout=0.0, softcap=None, **kwargs):
    """A few tokens' rotary, cache writes and attention in the few-query kernel's launches
    (kernels.rope_few_query_attention): q [L, H, D], k, v [L, KVH, D] as the projections give them, cos and sin
    [L, D], the caches [1, KVH, N, D] and the new tokens' first slot. Returns [1, L, H, D], or None where the
    kernel cannot take the call (the caller then rotates, writes and attends as before)."""
    from playbook.kernels.few_query_attention import rope_takes
    mask = None if attention_mask is None else attention_mask[..., :keys.shape[2]]
    if not _kernel_takes(module, q.unsqueeze(0).transpose(1, 2), keys, mask, dropout) or \
            rope_takes(q, k, v, cos, sin, keys, values, start, mask) is not None:
        return None
    from playbook.kernels.few_query_attention import rope_few_query_attention
    return rope_few_query_attention(q, k, v, cos, sin, keys, values, start, mask, scale=scaling, softcap=softcap,
                                    pdl=getattr(module, "_playbook_pdl", False))


def _kernel_takes(module, query, key, mask, dropout):
    from playbook.kernels._triton import INTERPRET
    from playbook.kernels.few_query_attention import takes
    if query.device.type != "cuda" and not (INTERPRET and query.device.type == "cpu"):
        return False
    if dropout and getattr(module, "training", False):
        return False
    return query.dtype in (torch.float32, torch.bfloat16, torch.float16) and takes(query, key, mask) is None


def _grouped_mask(mask, kvh, g, q_len, k_len):
    """A [mb, 1 or h, q, k] mask laid out as the grouped scores' rows (query-major): [mb, kvh, q * g, k]."""
    mb, mh = mask.shape[0], mask.shape[1]
    if mask.dim() != 4 or mh not in (1, kvh * g):
        raise ValueError(f"grouped attention: a mask of shape {tuple(mask.shape)} is not [batch, 1 or heads, q, k]")
    mq = mask.shape[2]
    if mh == 1:
        mask = mask[:, :, :, None].expand(mb, kvh, mq, g, k_len)
    else:
        mask = mask.reshape(mb, kvh, g, mq, k_len).transpose(2, 3)
    return mask.expand(mb, kvh, q_len, g, k_len).reshape(mb, kvh, q_len * g, k_len)


def register():
    """Make NAME and FEW_QUERY attention implementations transformers knows (and give them eager's additive
    masks where a model builds its own); idempotent."""
    from transformers import AttentionInterface
    AttentionInterface.register(NAME, grouped_attention_forward)
    AttentionInterface.register(FEW_QUERY, few_query_forward)
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask
    except ImportError:
        return
    for name in (NAME, FEW_QUERY):
        if name not in ALL_MASK_ATTENTION_FUNCTIONS:
            AttentionMaskInterface.register(name, eager_mask)


def few_query_calls(calls):
    """The recorded SDPA calls of a few queries over more K/V slots (kernels.few_query_attention's case)."""
    from playbook.kernels.few_query_attention import MAX_QUERIES
    return [c for c in calls if c[0][0].dim() == 4 and c[0][0].shape[2] <= MAX_QUERIES < c[0][1].shape[2]]


def find_sites(model):
    """HF models inside model whose attention has fewer K/V heads than query heads and is not already
    through SDPA or a fused kernel: [{path, heads, kv_heads, was}]."""
    from .attention import hf_models
    out = []
    for path, m in hf_models(model):
        cfg = m.config
        heads = getattr(cfg, "num_attention_heads", None)
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        was = cfg._attn_implementation
        if heads and kv_heads and kv_heads < heads and was in ("eager", NAME, FEW_QUERY):
            out.append({"path": path, "heads": heads, "kv_heads": kv_heads, "was": was})
    return out


def route(model, paths=None, few_query=False):
    """Switch the found models (or those at paths) to NAME, or to FEW_QUERY; returns the sites switched."""
    from .attention import set_attn_implementation
    register()
    mods = dict(model.named_modules())
    done = []
    for site in find_sites(model):
        if paths is not None and site["path"] not in paths:
            continue
        set_attn_implementation(mods[site["path"]], FEW_QUERY if few_query else NAME)
        done.append(site)
    return done
