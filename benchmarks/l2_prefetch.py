"""Does warming a layer's weights into L2 during its attention make pi0's denoise layers faster? One GPU.

    python benchmarks/l2_prefetch.py --json out.json [--layers 18] [--iters 15] [--kernels]

The question (issue 19): in pi0 full's denoise loop a layer-step's projections take about 23 us against a
9.5 us floor (H200, 2026-12-03): each reads its weights from HBM at a fraction of its bandwidth, while the
attention before them reads under 1 MB. Here one expert layer's few-row step at pi0's geometry, the kernels
the committed recipe runs (q/k/v and gate+up on cuBLAS, playbook.kernels.few_query_attention, o and down on
playbook.kernels.gemv with the residual in its epilogue, the gated activation's kernel), over `layers`
layers of their own weights and K/V, captured in one CUDA graph a side:

- `none`: the layers as they are;
- `<mode>-before`: playbook.kernels.l2_prefetch(o, gate+up, down) in the stream before the attention;
- `<mode>-side-<programs>`: the same on a second stream, forked after q/k/v and joined before o: the
  prefetch runs beside the attention;
- `line-side-66-next-qkv`: the same with the next layer's q/k/v weight too (34.6 MB);
- `warm`: every layer reads layer 0's weights (34.6 MB, under the 50 MB L2): the ceiling L2 could give.

Each prefetching side's output is held to `none`'s bit for bit (a prefetch changes no value). Then
each mode's prefetch alone (the three weights of each layer, no other work): how long its launch lasts.
Writes {benchmark, device, date, torch, geometry, rows: [{side, us_layer, vs_none, max_abs_diff}],
prefetch_alone: {mode: us a layer}}. Norms are left out: they read no weights worth warming.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playbook import bench, profile  # noqa: E402
from playbook.capture import GraphStep  # noqa: E402
from playbook.kernels import l2_prefetch as l2  # noqa: E402
from playbook.kernels.activations import act_and_mul  # noqa: E402
from playbook.kernels.few_query_attention import few_query_attention  # noqa: E402
from playbook.kernels.gemv import gemv  # noqa: E402

# pi0 full's action expert (Gemma 300M geometry) in a denoise step: 11 suffix tokens over 827 K/V slots
GEOMETRY = {"rows": 11, "hidden": 1024, "heads": 8, "kv_heads": 1, "head_dim": 256, "mlp": 4096, "kv_len": 827}
SIDE_PROGRAMS = (33, 66, 132)
TOLERANCE = 0.0       # a prefetch changes no value, and every side runs the same kernels: bitwise equal


def make_layers(n, device, dtype, g):
    h, hd, m = GEOMETRY["hidden"], GEOMETRY["head_dim"], GEOMETRY["mlp"]
    qkv_n = (GEOMETRY["heads"] + 2 * GEOMETRY["kv_heads"]) * hd

    def w(rows, cols):
        return torch.randn(rows, cols, device=device, dtype=dtype, generator=g) * cols ** -0.5
    kv = (1, GEOMETRY["kv_heads"], GEOMETRY["kv_len"], hd)
    return [{"qkv": w(qkv_n, h), "o": w(h, GEOMETRY["heads"] * hd), "gate_up": w(2 * m, h), "down": w(h, m),
             "k": torch.randn(*kv, device=device, dtype=dtype, generator=g),
             "v": torch.randn(*kv, device=device, dtype=dtype, generator=g)} for _ in range(n)]


def layer_step(x, layer, mask, prefetch=None):
    """One expert layer's few-row step up to its attention's output; prefetch(layer) is called after q/k/v,
    before the attention."""
    rows, heads, hd = GEOMETRY["rows"], GEOMETRY["heads"], GEOMETRY["head_dim"]
    qkv = F.linear(x, layer["qkv"])
    if prefetch is not None:
        prefetch(layer)
    q = qkv[:, :heads * hd].view(rows, heads, hd).transpose(0, 1).unsqueeze(0)      # [1, H, L, D]
    return few_query_attention(q, layer["k"], layer["v"], mask)                    # [1, L, H, D]


def after_attention(x, attn, layer):
    m = GEOMETRY["mlp"]
    h = gemv(attn.reshape(GEOMETRY["rows"], -1), layer["o"], residual=x)
    gu = F.linear(h, layer["gate_up"])
    return gemv(act_and_mul(gu[:, :m], gu[:, m:], "gelu_tanh"), layer["down"], residual=h)


def weights(layer):
    return layer["o"], layer["gate_up"], layer["down"]


def run_layers(x, layers, mask, how="", mode="line", programs=0, side_stream=None, counter=None,
               next_qkv=False):
    """The layers one after another; how: "" (no prefetch), "before" (same stream) or "side". counter: the
    int32 [2] "load" adds to, made before a capture (so no side stream allocates inside one). next_qkv: the
    next layer's q/k/v weight is asked for too, with this layer's three."""
    if mode == "load" and counter is None:
        counter = torch.zeros(2, dtype=torch.int32, device=x.device)

    def weights_of(i):
        return weights(layers[i]) + ((layers[i + 1]["qkv"],) if next_qkv and i + 1 < len(layers) else ())
    for i, layer in enumerate(layers):
        if how == "before":
            attn = layer_step(x, layer, mask, lambda lay, i=i: l2.l2_prefetch(*weights_of(i), mode=mode,
                                                                                  programs=programs, counter=counter))
        elif how == "side":
            main = torch.cuda.current_stream()

            def fork(lay, main=main, i=i):
                side_stream.wait_stream(main)
                with torch.cuda.stream(side_stream):
                    l2.l2_prefetch(*weights_of(i), mode=mode, programs=programs, counter=counter)
            attn = layer_step(x, layer, mask, fork)
            main.wait_stream(side_stream)                   # joined before o reads what it warmed
        else:
            attn = layer_step(x, layer, mask)
        x = after_attention(x, attn, layer)
    return x


def sides(layers, mask, x, side_stream, modes):
    counter = torch.zeros(2, dtype=torch.int32, device=x.device)
    out = {"none": lambda: run_layers(x, layers, mask)}
    for mode in modes:
        out[f"{mode}-before"] = lambda mode=mode: run_layers(x, layers, mask, "before", mode, counter=counter)
        for p in SIDE_PROGRAMS:
            out[f"{mode}-side-{p}"] = lambda mode=mode, p=p: run_layers(x, layers, mask, "side", mode, p,
                                                                        side_stream, counter)
    out["line-side-66-next-qkv"] = lambda: run_layers(x, layers, mask, "side", "line", 66, side_stream, counter,
                                                      next_qkv=True)
    warm = [dict(layer, **{k: layers[0][k] for k in ("qkv", "o", "gate_up", "down")}) for layer in layers]
    out["warm"] = lambda: run_layers(x, warm, mask)
    return out


def prefetch_alone(layers, modes, iters):
    """{mode: us a layer}: each layer's three weights asked for, one launch a layer, nothing else."""
    counter = torch.zeros(2, dtype=torch.int32, device="cuda")
    return bench.graphs_side_by_side(
        {m: lambda m=m: [l2.l2_prefetch(*weights(lay), mode=m, counter=counter) for lay in layers] for m in modes},
        len(layers), torch.device("cuda"), iters=iters)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--kernels", action="store_true",
                    help="a launch table for none, warm and the fastest prefetching side (one profiled replay each)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or torch.version.hip:
        sys.exit("benchmarks/l2_prefetch.py needs an NVIDIA GPU (the prefetch modes are PTX)")
    dev, dt = torch.device("cuda"), torch.bfloat16
    modes = ["line", "load"] + (["bulk"] if torch.cuda.get_device_capability() >= (9, 0) else [])
    g = torch.Generator(device=dev).manual_seed(0)
    layers = make_layers(args.layers, dev, dt, g)
    x = torch.randn(GEOMETRY["rows"], GEOMETRY["hidden"], device=dev, dtype=dt, generator=g)
    mask = torch.ones(1, 1, GEOMETRY["rows"], GEOMETRY["kv_len"], dtype=torch.bool, device=dev)
    mask[..., GEOMETRY["kv_len"] - GEOMETRY["rows"] - 5:GEOMETRY["kv_len"] - GEOMETRY["rows"]] = False
    side_stream = torch.cuda.Stream()
    graphs = {name: GraphStep(fn, (), {}) for name, fn in sides(layers, mask, x, side_stream, modes).items()}
    t = bench.time_side_by_side({n: s.graph.replay for n, s in graphs.items()}, dev, iters=args.iters)
    base = graphs["none"].static_out
    rows = []
    for name, step in graphs.items():
        us = t[name].p50_ms * 1e3 / args.layers
        row = {"side": name, "us_layer": round(us, 2),
               "vs_none": round(t[name].p50_ms / t["none"].p50_ms, 3),
               "spread_us_layer": round((t[name].max_ms - t[name].min_ms) * 1e3 / args.layers, 2),
               "max_abs_diff": None if name == "warm" else (step.static_out.float() - base.float()).abs().max().item()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.kernels:
        best = min((r for r in rows if r["max_abs_diff"] is not None and r["side"] != "none"),
                   key=lambda r: r["us_layer"])["side"]
        for r in rows:
            if r["side"] in ("none", "warm", best):
                r.update(profile.step_summary(graphs[r["side"]].graph.replay, dev))
                print(r["side"], "kernels", r["kernels"], "busy ms", r["gpu_busy_ms"], flush=True)
                for k in r["launch_table"][:8]:
                    print(f"   {k['us_each']:7.2f} us x{k['count']:4d}  gap {k['gap_us']}  {k['name'][:70]} {k['grid']}")
    bad = [r["side"] for r in rows if r["max_abs_diff"] is not None and not r["max_abs_diff"] <= TOLERANCE]
    alone = prefetch_alone(layers, modes, args.iters)
    print(json.dumps({"prefetch_alone_us_layer": alone}), flush=True)
    out = {"benchmark": "l2_prefetch", "device": torch.cuda.get_device_name(),
           "date": datetime.date.today().isoformat(), "torch": torch.__version__,
           "geometry": dict(GEOMETRY, layers=args.layers,
                            prefetched_mb=round(sum(w.numel() * w.element_size()
                                                    for w in weights(layers[0])) / 1e6, 1)),
           "rows": rows, "prefetch_alone": alone, "changed_output": bad}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if bad:
        sys.exit(f"these sides changed the output (a prefetch must not): {bad}")


if __name__ == "__main__":
    main()
