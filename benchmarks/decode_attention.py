"""kernels.decode_attention_rope_append's launch settings at llama 1b's decode shapes, on one GPU.

    python benchmarks/decode_attention.py --json out.json

Query heads 32 over 8 KV heads of 64, a 1024-slot bf16 cache, positions 128, 511 and 1023. For each
(chunk, block_n, num_warps) and position, 16 calls (one a layer, each with its own cache) are captured in one
CUDA graph and the graph is replayed; the median over samples of CUDA-event time, divided by 16, is the time
of one call. Writes {device, date, torch, rows: [{chunk, block_n, num_warps, position, us}]}.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_timing import per_call_us  # noqa: E402
from playbook.kernels import decode_attention as da  # noqa: E402

LAYERS, H, KVH, N, D = 16, 32, 8, 1024, 64


def time_us(chunk, block_n, warps, position, samples=30):
    dev, dt = torch.device("cuda"), torch.bfloat16
    q, k, v = (torch.randn(n, D, device=dev, dtype=dt) for n in (H, KVH, KVH))
    cos, sin = torch.randn(D, device=dev, dtype=dt), torch.randn(D, device=dev, dtype=dt)
    caches = [(torch.randn(1, KVH, N, D, device=dev, dtype=dt), torch.randn(1, KVH, N, D, device=dev, dtype=dt))
              for _ in range(LAYERS)]
    pos = torch.tensor([position], device=dev)

    def step():
        for kc, vc in caches:
            da.decode_attention_rope_append(q, k, v, cos, sin, kc, vc, pos, chunk=chunk, block_n=block_n,
                                            num_warps=warps)
    return per_call_us(step, calls=LAYERS, samples=samples, warmup=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    rows = []
    for chunk, block_n, warps in [(64, 64, 4), (128, 64, 4), (128, 128, 4), (256, 64, 4), (256, 128, 4),
                                  (256, 128, 8), (512, 128, 4), (1024, 128, 4)]:
        for position in (128, 511, 1023):
            us = time_us(chunk, block_n, warps, position)
            rows.append({"chunk": chunk, "block_n": block_n, "num_warps": warps, "position": position, "us": us})
            print(json.dumps(rows[-1]), flush=True)
    out = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "pdl": da.launch_pdl(torch.device("cuda", torch.cuda.current_device())), "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
