"""Every Triton kernel of playbook/kernels/ compiles for Hopper (sm_90) here, on a machine without a GPU.

Triton's interpreter (how the other kernel tests run on a CPU) runs a kernel's Python and misses what only
the compiler checks: a variable an `if` gives another shape is fine in the interpreter and a
CompilationError on the GPU (a try at playbook/kernels/few_query_attention.py's combine, H200, 2026-12-01). Triton
compiles to PTX and a cubin without a device, with the ptxas it ships. So each launcher is called here on
small CPU tensors with Triton's launch replaced by a compile for sm_90 of exactly what it would launch (its
arguments' types, its constexprs, its warps): the launchers' own choices, at the sizes given (the few-row
GEMV and the decode kernels at the GPU's block sizes, passed explicitly). In a child process: the
interpreter is on in this one (tests/conftest.py), and a kernel imported under it cannot be compiled.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, traceback
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

import playbook.kernels._triton
playbook.kernels._triton.INTERPRET = True          # the launchers' device check takes CPU tensors; the kernels stay compiled
from playbook.kernels import act_and_mul, fused_add_rms_norm, gelu_tanh_and_mul, rms_norm, silu_and_mul
from playbook.kernels import decode_attention as da
from playbook.kernels.few_query_attention import few_query_attention, rope_few_query_attention
from playbook.kernels.rope_append_rows import rope_append_rows
import playbook.kernels.gemv
from playbook.kernels.gemv import gemv
playbook.kernels._triton.pdl_here = lambda device: True   # a CPU tensor here: what an H100/H200 would launch

TARGET = GPUTarget("cuda", 90, 32)
DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32",
          torch.int64: "i64", torch.uint8: "u8", torch.bool: "i1"}
compiled, current = [], {"label": None}


def kind(value):
    if isinstance(value, torch.Tensor):
        return "*" + DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"an argument of type {type(value).__name__}")


def compile_instead(self, *args, grid, warmup, **kwargs):
    names = [p.name for p in self.params]
    values = dict(zip(names, args))
    values.update({k: v for k, v in kwargs.items() if k in names})
    sig, const, attrs = {}, {}, {}
    for i, p in enumerate(self.params):
        v = values.get(p.name, p.default)
        if p.is_constexpr or v is None:
            sig[p.name], const[(i,)] = "constexpr", v
        else:
            sig[p.name] = kind(v)
            if aligned(v):          # as Triton's JIT specializes them: what lets it vectorize and pipeline loads
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = {k: kwargs[k] for k in ("num_warps", "num_stages", "launch_pdl") if k in kwargs}
    asm = triton.compile(ASTSource(fn=self, signature=sig, constexprs=const, attrs=attrs), target=TARGET,
                         options=options).asm
    ptx = asm.get("ptx", "")
    compiled.append((current["label"], self.__name__, "cubin" in asm, "griddepcontrol.wait" in ptx,
                     asm.get("ttgir", "").count("async_copy_global_to_local")))


def aligned(value):
    if isinstance(value, torch.Tensor):
        return value.data_ptr() % 16 == 0
    return isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0


JITFunction.run = compile_instead
bf = torch.bfloat16
x, r, w = torch.randn(3, 1000, dtype=bf), torch.randn(3, 1000, dtype=bf), torch.randn(1000, dtype=bf)
gu = torch.randn(3, 2 * 700, dtype=bf)
q1 = torch.randn(1, 8, 64, dtype=bf)
kc, vc = torch.randn(1, 2, 300, 64, dtype=bf), torch.randn(1, 2, 300, 64, dtype=bf)
cases = {
    "rms_norm": lambda: rms_norm(x, w, 1e-6),
    "rms_norm, Gemma's offset, long rows": lambda: rms_norm(torch.randn(2, 20000, dtype=bf),
                                                            torch.randn(20000, dtype=bf), 1e-6, offset=1.0),
    "fused_add_rms_norm": lambda: fused_add_rms_norm(x, r, w, 1e-6),
    "silu_and_mul": lambda: silu_and_mul(gu),
    "gelu_tanh_and_mul": lambda: gelu_tanh_and_mul(gu),
    "act_and_mul, two tensors": lambda: act_and_mul(gu[:, :700], gu[:, 700:], "silu"),
    "gemv, one row, norm + bias + residual": lambda: gemv(
        torch.randn(1, 1000, dtype=bf), torch.randn(300, 1000, dtype=bf), bias=torch.randn(300, dtype=bf),
        residual=torch.randn(1, 300, dtype=bf), norm_weight=w, block_n=2, block_k=1024),
    "gemv, 11 rows, norm, split K": lambda: gemv(
        torch.randn(11, 2048, dtype=bf), torch.randn(1024, 2048, dtype=bf), norm_weight=torch.randn(2048, dtype=bf),
        block_n=32, block_k=256, splits=8),
    "gemv, 11 rows, residual, unsplit": lambda: gemv(
        torch.randn(11, 1024, dtype=bf), torch.randn(2560, 1024, dtype=bf), residual=torch.randn(11, 2560, dtype=bf),
        block_n=32, block_k=256, splits=1),
    "gemv, one row, two chunks of K, PDL": lambda: gemv(
        torch.randn(1, 2048, dtype=bf), torch.randn(300, 2048, dtype=bf), residual=torch.randn(1, 300, dtype=bf),
        norm_weight=torch.randn(2048, dtype=bf), block_n=2, block_k=1024, pdl=True),
    "gemv, 11 rows, split K, PDL": lambda: gemv(
        torch.randn(11, 2048, dtype=bf), torch.randn(1024, 2048, dtype=bf), block_n=32, block_k=256, splits=8,
        pdl=True),
    "gemv, 11 rows, norm, GLU (tanh GELU) epilogue": lambda: gemv(
        torch.randn(11, 1024, dtype=bf), torch.randn(8192, 1024, dtype=bf), norm_weight=torch.randn(1024, dtype=bf),
        glu="gelu_tanh", block_n=32, block_k=256, splits=1),
    "gemv, 11 rows, GLU (SiLU) epilogue, split K, PDL": lambda: gemv(
        torch.randn(11, 2048, dtype=bf), torch.randn(2048, 2048, dtype=bf), glu="silu", block_n=16, block_k=256,
        splits=4, pdl=True),
    "gemv, one row, norm, GLU (SiLU) epilogue, PDL": lambda: gemv(
        torch.randn(1, 2048, dtype=bf), torch.randn(600, 2048, dtype=bf), norm_weight=torch.randn(2048, dtype=bf),
        glu="silu", block_n=1, block_k=1024, pdl=True),
    "gemv, 11 rows, norm, four chunks of K a program": lambda: gemv(
        torch.randn(11, 1024, dtype=bf), torch.randn(8192, 1024, dtype=bf), norm_weight=torch.randn(1024, dtype=bf),
        block_n=32, block_k=256, splits=1),
    "gemv, 11 rows, norm, four chunks of K a program, PDL": lambda: gemv(
        torch.randn(11, 1024, dtype=bf), torch.randn(8192, 1024, dtype=bf), norm_weight=torch.randn(1024, dtype=bf),
        block_n=32, block_k=256, splits=1, pdl=True),
    "decode attention v1": lambda: da.decode_attention_v1(q1, kc, vc),
    "decode attention split": lambda: da.decode_attention_split(q1, kc, vc, splits=5),
    "decode attention filled": lambda: da.decode_attention_filled(q1, kc, vc, torch.tensor([123], dtype=torch.int32)),
    "decode attention rope append": lambda: rope_append(False),
    "decode attention rope append, PDL": lambda: rope_append(True),
}


def rope_append(pdl):      # the one-launch decode attention as a Hopper launches it (pdl), or as others do
    real, da.launch_pdl = da.launch_pdl, lambda device: pdl
    try:
        return da.decode_attention_rope_append(
            torch.randn(8, 64, dtype=bf), torch.randn(2, 64, dtype=bf), torch.randn(2, 64, dtype=bf),
            torch.randn(64, dtype=bf), torch.randn(64, dtype=bf), kc.clone(), vc.clone(), torch.tensor([77]),
            chunk=128)
    finally:
        da.launch_pdl = real
q = torch.randn(1, 8, 11, 256, dtype=bf)
k, v = torch.randn(1, 1, 827, 256, dtype=bf), torch.randn(1, 1, 827, 256, dtype=bf)
allowed = torch.ones(1, 1, 11, 827, dtype=torch.bool)
cases.update({
    "few-query attention, pi0's boolean mask": lambda: few_query_attention(q, k, v, allowed),
    "few-query attention, the last program combines": lambda: few_query_attention(q, k, v, allowed, combine="last"),
    "few-query attention, pi0's boolean mask, PDL": lambda: few_query_attention(q, k, v, allowed, pdl=True),
    "few-query attention, the last program combines, PDL": lambda: few_query_attention(q, k, v, allowed,
                                                                                      combine="last", pdl=True),
    "few-query attention, additive mask, soft cap": lambda: few_query_attention(
        q, k, v, torch.zeros(1, 8, 11, 827, dtype=bf), softcap=50.0),
    "few-query attention, no mask, fp32, head of 24": lambda: few_query_attention(
        torch.randn(1, 4, 3, 24), torch.randn(1, 2, 90, 24), torch.randn(1, 2, 90, 24), chunk_blocks=1, block_n=32),
})
qkv = torch.randn(11, 10 * 256, dtype=bf)
rope_args = lambda: (qkv[:, :2048].view(11, 8, 256), qkv[:, 2048:2304].view(11, 1, 256), qkv[:, 2304:].view(11, 1, 256),
                     torch.randn(11, 256, dtype=bf), torch.randn(11, 256, dtype=bf),
                     torch.randn(1, 1, 827, 256, dtype=bf), torch.randn(1, 1, 827, 256, dtype=bf), 816)
cases.update({
    "rope append rows, pi0's denoise step": lambda: rope_append_rows(*rope_args()),
    "rope append rows, pi0's denoise step, PDL": lambda: rope_append_rows(*rope_args(), pdl=True),
    "rope + few-query attention, pi0's denoise step": lambda: rope_few_query_attention(*rope_args(), allowed),
    "rope + few-query attention, pi0's denoise step, PDL": lambda: rope_few_query_attention(*rope_args(), allowed,
                                                                                           pdl=True),
})
failed = {}
for label, call in cases.items():
    current["label"] = label
    try:
        call()
    except Exception as e:
        failed[label] = f"{type(e).__name__}: {e}"[:2000]
print(json.dumps({"compiled": compiled, "failed": failed, "cases": list(cases)}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="Triton ships its compiler for Linux")
def test_every_kernel_compiles_for_sm90_as_its_launchers_launch_it():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=900, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["failed"] == {}, got["failed"]
    by_case, copies = {}, {}
    for label, kernel, cubin, waits, async_copies in got["compiled"]:
        assert cubin, f"{label}: {kernel} gave no cubin"
        assert waits == label.endswith("PDL"), f"{label}: {kernel} waits for the kernel before: {waits}"
        by_case.setdefault(label, set()).add(kernel)
        copies[label] = async_copies
    assert set(by_case) == set(got["cases"])                   # every launcher reached a compile
    assert {"_gemv", "_gemv_rows", "_decode_rope_append", "_few_query_part", "_few_query_combine", "_combine",
            "_rope_append"} <= set().union(*by_case.values())
    # PDL's few-row GEMV reads its first chunk of W before it waits, and walks the rest in the plain kernel's loop:
    # Triton still pipelines that loop's loads (async copies into shared memory), as in the kernel without PDL. With
    # the first chunk chosen inside the loop, it did not (H200, 2026-12-04: pi0's gate+up 13.8 us a call with PDL
    # against 7.3 without; see the NOTE in playbook/kernels/gemv.py).
    plain = copies["gemv, 11 rows, norm, four chunks of K a program"]
    assert plain > 0 and copies["gemv, 11 rows, norm, four chunks of K a program, PDL"] == plain, copies

