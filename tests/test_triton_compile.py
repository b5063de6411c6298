"""Our Triton kernels compile for Hopper (sm_90) here, on a machine without a GPU.

Triton's interpreter (how the other kernel tests run on a CPU) runs a kernel's Python and misses what only
the compiler checks: a variable an `if` gives another shape is fine in the interpreter and a
CompilationError on the GPU (a try at kernels/few_query_attention.py's combine, H200, 2026-12-01). Triton compiles
to PTX and a cubin without a device, with the ptxas it ships, so each kernel is compiled here for sm_90 with
the constexpr choices its launchers make. In a child process: the interpreter is on in this one
(tests/conftest.py), and a kernel imported under it cannot be compiled.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels import few_query_attention as fq

def compile_for(fn, types, const, target=GPUTarget("cuda", 90, 32)):
    names = fn.arg_names
    sig = {n: ("constexpr" if n in const else types.get(n, "i32")) for n in names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()})
    return sorted(triton.compile(src, target=target).asm)

few = dict(Q="*bf16", K="*bf16", V="*bf16", Mask="*u8", Part="*fp32", Lse="*fp32", Count="*i32", O="*bf16",
           scale="fp32", softcap="fp32")
base = dict(H=8, GROUP=8, D=256, BLOCK_D=256, BLOCK_Q=16, BLOCK_N=64, MASK_KIND=1, SOFTCAP=False, FP32_DOT=False)
out = {}
for name, change in [("pi0: boolean mask, 16-bit products", {}),
                     ("additive mask, soft cap", {"MASK_KIND": 2, "SOFTCAP": True}),
                     ("no mask, fp32 products, head of 24", {"MASK_KIND": 0, "FP32_DOT": True, "D": 24, "BLOCK_D": 32,
                                                            "BLOCK_N": 32})]:
    types = dict(few, Mask="*bf16") if change.get("MASK_KIND") == 2 else few
    if change.get("FP32_DOT"):
        types = {k: ("*fp32" if k in ("Q", "K", "V", "O") else v) for k, v in types.items()}
    try:
        out[name] = compile_for(fq._few_query, types, dict(base, **change))
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="Triton ships its compiler for Linux")
def test_few_query_attention_compiles_for_sm90_in_each_of_its_variants():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name, stages in got.items():
        assert isinstance(stages, list) and "cubin" in stages and "ptx" in stages, f"{name}: {stages}"
