"""kernels.few_query_attention against the compiled attention it replaces, at pi0 full's denoise shapes, on one GPU.

    python benchmarks/few_query_attention.py --json out.json

pi0's action expert: 11 queries (the state and 10 actions), 8 query heads of 256 over one K/V head, 827 slots
(816 of prefix, 11 of suffix), the suffix mask, bf16. Contenders: the grouped eager math the recipe runs
today (playbook/rewrites/grouped_attention.py) compiled by Inductor, with its boolean and its additive mask;
Hugging Face's SDPA path (K/V copied per head, the boolean mask) compiled; and the kernel over a sweep of
its launch settings. For each, 18 calls (one a layer, each with its own K/V) are captured in one CUDA graph
and the graph is replayed; the median over samples of CUDA-event time, divided by 18, is one call's time.
Every contender's output is checked against kernels.reference.few_query_attention first. Then the few tokens'
rotary and cache writes with it: kernels.rope_append_rows before the kernel (two launches and the combine), and
kernels.rope_few_query_attention (the rotary in the attention's first launch), each checked against the
reference rotary and attention. Writes {device, date, torch, shape, rows: [{name, us, max_abs_err}]}.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_timing import per_call_us  # noqa: E402
from playbook.kernels import few_query_attention as fq  # noqa: E402
from playbook.kernels import reference  # noqa: E402
from playbook.kernels.rope_append_rows import rope_append_rows  # noqa: E402
from playbook.rewrites.grouped_attention import grouped_attention_forward  # noqa: E402

LAYERS, H, KVH, LQ, PREFIX, PAD, D = 18, 8, 1, 11, 816, 28, 256
# (block_m, block_n, chunk_blocks, num_warps, combine): pi0's 88 rows in 1 to 6 tiles, 7 to 26 chunks
SWEEP = [(16, 64, 1, 4, "launch"), (16, 64, 1, 8, "launch"), (32, 64, 1, 4, "launch"), (16, 128, 1, 8, "launch"),
         (64, 64, 1, 8, "launch"), (16, 64, 1, 4, "last"), (16, 64, 1, 8, "last"), (32, 64, 1, 4, "last"),
         (16, 128, 1, 8, "last"), (16, 64, 2, 4, "last")]
COMBINES = [(16, 64), (8, 64)]    # (rows, head dims) a combine program, at the default launch


def inputs(dev, dt):
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, H, LQ, D, device=dev, dtype=dt, generator=g)
    kvs = [(torch.randn(1, KVH, PREFIX + LQ, D, device=dev, dtype=dt, generator=g),
            torch.randn(1, KVH, PREFIX + LQ, D, device=dev, dtype=dt, generator=g)) for _ in range(LAYERS)]
    allowed = torch.ones(1, 1, LQ, PREFIX + LQ, dtype=torch.bool, device=dev)
    allowed[..., PREFIX - PAD:PREFIX] = False             # the prompt's padding
    allowed[0, 0, 0, PREFIX + 1:] = False                 # the state token does not see the actions
    additive = torch.zeros(allowed.shape, device=dev, dtype=dt).masked_fill(~allowed, torch.finfo(dt).min)
    return q, kvs, allowed, additive


def sdpa_hf(q, k, v, mask):
    """transformers' sdpa_attention_forward with an explicit mask: K/V repeated per query head."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=D ** -0.5).transpose(1, 2)


def combined(rows, dims, call):
    """call() with the combine launch's program tile set to rows x dims (module settings, read at each call)."""
    was = fq.COMBINE_ROWS, fq.COMBINE_DIMS
    fq.COMBINE_ROWS, fq.COMBINE_DIMS = rows, dims
    try:
        return call()
    finally:
        fq.COMBINE_ROWS, fq.COMBINE_DIMS = was


def rope_inputs(dev, dt):
    """The projections' q [L, H, D], k, v [L, KVH, D] and the rotary's cos, sin [L, D] of the suffix tokens."""
    g = torch.Generator(device=dev).manual_seed(1)
    q, k, v = (torch.randn(LQ, n, D, device=dev, dtype=dt, generator=g) for n in (H, KVH, KVH))
    angle = torch.arange(PREFIX, PREFIX + LQ, device=dev)[:, None] * 10000.0 ** (-torch.arange(0, D, 2, device=dev) / D)
    angle = torch.cat([angle, angle], -1)
    return q, k, v, angle.cos().to(dt), angle.sin().to(dt)


def rope_want(rq, kv, allowed):
    """The reference: rotate q and the new keys, write the new slots, attend."""
    q, k, v, cos, sin = rq
    kc, vc = (t.clone() for t in kv)
    got_q = reference.rope_append_rows(q, k, v, cos, sin, kc, vc, PREFIX)
    return reference.few_query_attention(got_q.unsqueeze(0).transpose(1, 2), kc, vc, allowed, scale=D ** -0.5).float()


def time_us(fn, kvs):
    def step():
        for k, v in kvs:
            fn(k, v)
    return per_call_us(step, calls=LAYERS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    dev, dt = torch.device("cuda"), torch.bfloat16
    q, kvs, allowed, additive = inputs(dev, dt)
    want = reference.few_query_attention(q, *kvs[0], allowed, scale=D ** -0.5).float()
    grouped = torch.compile(lambda q, k, v, m: grouped_attention_forward(None, q, k, v, m, scaling=D ** -0.5)[0])
    contenders = {"grouped math, compiled, boolean mask": lambda k, v: grouped(q, k, v, allowed),
                  "grouped math, compiled, additive mask": lambda k, v: grouped(q, k, v, additive),
                  "sdpa (K/V per head), compiled": torch.compile(lambda k, v: sdpa_hf(q, k, v, allowed))}
    for block_m, block_n, blocks, warps, combine in SWEEP:
        name = f"kernel rows {block_m}, chunk {blocks}x{block_n}, {warps} warps"
        contenders[name + (", last program combines" if combine == "last" else "")] = (
            lambda k, v, m=block_m, b=blocks, n=block_n, w=warps, c=combine: fq.few_query_attention(
                q, k, v, allowed, scale=D ** -0.5, chunk_blocks=b, block_n=n, num_warps=w, block_m=m, combine=c))
    for rows, dims in COMBINES:
        contenders[f"kernel, defaults, combine {rows}x{dims}"] = (
            lambda k, v, r=rows, c=dims: combined(r, c, lambda: fq.few_query_attention(q, k, v, allowed,
                                                                                        scale=D ** -0.5)))
    contenders["kernel, defaults, additive mask"] = lambda k, v: fq.few_query_attention(q, k, v, additive,
                                                                                        scale=D ** -0.5)
    rq = rope_inputs(dev, dt)

    def unfused(k, v):
        rot = rope_append_rows(*rq, k, v, PREFIX)
        return fq.few_query_attention(rot.unsqueeze(0).transpose(1, 2), k, v, allowed, scale=D ** -0.5)
    rope = {"rope_append_rows, then the kernel": unfused,
            "rope + kernel in one launch": lambda k, v: fq.rope_few_query_attention(*rq, k, v, PREFIX, allowed,
                                                                                    scale=D ** -0.5)}
    rope_ref = rope_want(rq, kvs[0], allowed)
    rows = []
    for name, fn in [*contenders.items(), *rope.items()]:
        row = {"name": name}
        try:
            got = fn(*kvs[0]).float()
            row["max_abs_err"] = round((got - (rope_ref if name in rope else want)).abs().max().item(), 5)
            row["us"] = time_us(fn, kvs)
        except Exception as e:  # noqa: BLE001  (recorded per contender)
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "shape": {"layers": LAYERS, "heads": H, "kv_heads": KVH, "queries": LQ,
                                                 "slots": PREFIX + LQ, "head_dim": D, "dtype": "bfloat16"},
           "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
