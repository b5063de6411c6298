"""Phase 3 `gemm`: every GEMM shape of the step on every backend, then the best choice per shape or globally.

The step's GEMMs (M, N, K, dtype, bias, count) are recorded and each shape is timed on each backend
(playbook/gemm.py), into gemm_tuning.csv in the run. Then, measured against the kept recipe as a whole:
- per shape, where a backend allows it: Inductor autotuning between ATen (BLAS) and its Triton
  templates (`max_autotune_gemm`, backends "ATEN,TRITON"), when a Triton template won some shape;
- globally, where it does not: the BLAS library torch prefers (cuBLASLt instead of cuBLAS; hipBLASLt
  instead of rocBLAS on ROCm), when it wins the step's GEMM total.
"""
from ..gemm import aiter_tune, backends_here, measure, record_gemms, step_total, write_csv
from . import Skip

NUMBER = 3
NAME = "gemm"
WHAT = "every GEMM shape timed on every backend; the fastest chosen per shape (Inductor) or globally (BLAS)"
KEEP_IF = "not_slower"
MARGIN = 0.02


CHOICES = {"blas library": "prefer the BLAS library measured faster on this step's shapes (cuBLASLt)",
           "inductor gemm autotune": "let Inductor choose ATen or a Triton template per GEMM shape"}


def label(knobs):
    return "blas library" if knobs.get("blas") else "inductor gemm autotune"


def candidates(ctx):
    pipe = ctx.fresh_pipeline()
    wl = pipe.workload
    shapes = record_gemms(wl.model, wl.args, wl.kwargs)
    if not shapes:
        raise Skip("the step runs no GEMM (no mm/addmm dispatched)")
    if "aiter" in backends_here(pipe.device):       # ROCm with amd-aiter: its configs for these shapes first
        ctx.info["aiter_gemm_config"] = aiter_tune(shapes, ctx.run.path)[1] + " (unverified on hardware here)"
    rows = measure(shapes, pipe.device, ctx.run.params.get("ceilings"))
    write_csv(rows, ctx.run.path / "gemm_tuning.csv")
    names = backends_here(pipe.device)
    totals = {n: step_total(rows, n) for n in names}
    ctx.info.update(gemm_shapes=len(shapes), gemm_per_step=sum(s["count"] for s in shapes),
                    gemm_table="gemm_tuning.csv",
                    gemm_totals_us={n: (round(t, 2) if t is not None else None) for n, t in totals.items()},
                    gemm_best={f"{r['M']}x{r['N']}x{r['K']}": r["backend"] for r in rows if r["best"]})
    if pipe.device.type != "cuda":
        raise Skip("one GEMM backend on a CPU (ATen's); the table is in gemm_tuning.csv. Backend choice "
                   "needs a GPU (cuBLAS/cuBLASLt and Triton on CUDA, rocBLAS/hipBLASLt/aiter on ROCm)")
    out = []
    default = names[0]
    lt = names[1] if len(names) > 1 and names[1] in ("cublaslt", "hipblaslt") else None
    if lt and totals.get(lt) and totals.get(default) and totals[lt] < totals[default] * (1 - MARGIN):
        out.append({"blas": "cublaslt"})
    if any(r["best"] and r["backend"] == "triton" for r in rows):
        if ctx.pipe.compile:
            out.append({"gemm_autotune": "ATEN,TRITON"})
        else:
            ctx.info["gemm_note"] = "a Triton template won a shape, but the kept recipe does not compile"
    if "aiter" in names:
        ctx.info["gemm_note_rocm"] = ("aiter's tuned GEMM was timed per shape; routing the model's GEMMs "
                                      "through it is not offered as a candidate yet (unverified on hardware)")
    if not out:
        raise Skip(f"the default ({default}) is the fastest choice for this step's GEMMs "
                   f"(step totals in us: {ctx.info['gemm_totals_us']}); table in gemm_tuning.csv")
    return out


def apply(pipe, knobs):
    if knobs.get("blas"):
        pipe.blas = knobs["blas"]
    if knobs.get("gemm_autotune"):
        pipe.inductor.update(max_autotune_gemm=True, max_autotune_gemm_backends=knobs["gemm_autotune"])
