"""Phase 3 `gemm`: every GEMM shape of the step on every backend, then the best choice per shape or globally.

The step's GEMMs (M, N, K, dtype, bias, count) are recorded and each shape is timed on the BLAS
libraries (playbook/gemm.py), into gemm_tuning.csv in the run. The phase decides before it builds:
- each shape's floor (its bytes at the copy bandwidth, its FLOPs at the matmul rate) bounds what any
  backend can save. When the step's GEMMs are within 2% of the kept recipe's p50 of their floors, no
  backend can win beyond noise: the phase says so and compiles nothing;
- otherwise Inductor's Triton templates are autotuned on the shapes with the most headroom first,
  within the phase's time budget (the table says which were left out); under a chain budget whose share
  for it cannot cover one shape's autotuning (FIRST_SHAPE_S), not at all;
- a candidate is built only when the table predicts it saves 2% of the kept recipe's p50:
  per shape, Inductor autotuning between ATen (BLAS) and its Triton templates (`max_autotune_gemm`,
  backends "ATEN,TRITON"); globally, the BLAS library torch prefers (cuBLASLt instead of cuBLAS;
  hipBLASLt instead of rocBLAS on ROCm).
"""
import time

from ..bench import MIN_NOISE
from ..gemm import aiter_tune, backends_here, headroom, mark_best, measure, record_gemms, saving, step_total, write_csv
from . import Skip

NUMBER = 3
NAME = "gemm"
WHAT = "every GEMM shape timed on every backend; the fastest chosen per shape (Inductor) or globally (BLAS)"
KEEP_IF = "not_slower"
BUDGET_S = 120          # building candidates; Triton's per-shape autotuning gets the same budget
HEADROOM_SHARE = 0.9    # autotune Triton on the shapes that hold this share of the step's GEMM headroom
TRITON_SHARE = 0.4      # under a chain budget, the share of the phase's budget Triton's per-shape timing may use
# NOTE: Triton's timing is not started when its time limit is under FIRST_SHAPE_S: its first shape alone costs the
# autotuning of every template config. On pi0 full (H200) the first shape took 46.1 s (2026-12-01, limit 31.8 s)
# and 61.4 s (2026-12-01, limit 51.0 s, 14 s of it waiting for warm-ups), each time the only shape timed and no
# saving; four shapes took 63.8 s (2026-11-23). No pi0 run on an H100 or H200 has kept a Triton GEMM template.
FIRST_SHAPE_S = 30
# NOTE: one-row shapes (a decode step's projections) are not timed on Triton's templates: on llama 1b they lost
# to cuBLAS on every shape timed (H200, 2026-11-23: 6.49 vs 5.37, 6.95 vs 5.08, 21.35 vs 11.33 us; H100,
# 2026-11-22: 0.0025 ms saved a step against a 0.036 ms bar), and timing them cost 10-13 s of every run.
# Inductor decomposes such products into its own reductions anyway, which tuning's coordinate descent tunes.


CHOICES = {"blas library": "prefer the BLAS library measured faster on this step's shapes (cuBLASLt)",
           "inductor gemm autotune": "let Inductor choose ATen or a Triton template per GEMM shape"}


def label(knobs):
    return "blas library" if knobs.get("blas") else "inductor gemm autotune"


ONE_BACKEND = ("one GEMM backend on a CPU (ATen's): nothing to choose. Backend choice needs a GPU (cuBLAS/cuBLASLt "
               "and Triton on CUDA, rocBLAS/hipBLASLt/aiter on ROCm)")


def skip_before_start(params):
    """Why the chain can skip this phase without starting its kernel (known from the run's parameters).
    Run notebooks/03-gemm.ipynb by hand to see a CPU's per-shape GEMM table all the same."""
    if params["device"] == "cpu":
        return ONE_BACKEND + "; run notebooks/03-gemm.ipynb by hand for this CPU's per-shape GEMM table"
    return None


def _ms(us):
    return round(us / 1e3, 4)


def candidates(ctx):
    pipe = ctx.fresh_pipeline()
    wl = pipe.workload
    shapes = record_gemms(wl.model, wl.args, wl.kwargs)
    if not shapes:
        raise Skip("the step runs no GEMM (no mm/addmm dispatched)")
    names = backends_here(pipe.device)
    if "aiter" in names:       # ROCm with amd-aiter: its configs for these shapes first
        ctx.info["aiter_gemm_config"] = aiter_tune(shapes, ctx.run.path)[1] + " (unverified on hardware here)"
    blas = [n for n in names if n != "triton"]
    ceilings = ctx.run.params.get("ceilings")
    rows = measure(shapes, pipe.device, ceilings, backends=blas)
    default = names[0]
    kept_ms = ctx.kept_p50_ms
    bar_us = MIN_NOISE * kept_ms * 1e3 if kept_ms else 0.0      # a saving under this is noise
    room = headroom(rows, min(blas, key=lambda n: step_total(rows, n) or float("inf")))
    room_us = sum(us for _, us in room)
    prediction = {"kept_p50_ms": kept_ms, "win_needed_ms": _ms(bar_us), "headroom_ms": _ms(room_us)}
    triton_room = [(r, us) for r, us in room if r["M"] != 1]       # one-row shapes: see the NOTE above
    if "triton" in names and len(triton_room) < len(room):
        prediction["triton_not_timed"] = [f"{r['M']}x{r['N']}x{r['K']}" for r, _ in room if r["M"] == 1]
    if "triton" in names and triton_room and sum(us for _, us in triton_room) >= bar_us:
        # Triton's per-shape autotuning is part of the phase's time: under a chain budget it gets a share
        # of it (TRITON_SHARE), the rest is for building the candidate.
        limit, why_not = triton_limit(ctx.budget_s)
        if why_not:
            prediction["triton_not_started"] = why_not
        else:
            rows += _triton_rows(triton_room, pipe.device, ceilings, prediction, limit, bar_us)
    mark_best(rows)
    write_csv(rows, ctx.run.path / "gemm_tuning.csv")
    totals = {n: step_total(rows, n) for n in blas}   # Triton is timed on the shapes with headroom only
    ctx.info.update(gemm_shapes=len(shapes), gemm_per_step=sum(s["count"] for s in shapes),
                    gemm_table="gemm_tuning.csv",
                    gemm_totals_us={n: (round(t, 2) if t is not None else None) for n, t in totals.items()},
                    gemm_best={f"{r['M']}x{r['N']}x{r['K']}": r["backend"] for r in rows if r["best"]},
                    gemm_prediction=prediction)
    if pipe.device.type != "cuda":
        raise Skip(ONE_BACKEND + "; the table is in gemm_tuning.csv")
    if room and room_us < bar_us:
        raise Skip(f"no backend can win: the step's GEMMs are {_ms(room_us)} ms above their floors on the best "
                   f"BLAS library, under the {_ms(bar_us)} ms (2% of the kept recipe's {kept_ms} ms) a win needs; "
                   "nothing compiled")
    out = []
    lt = names[1] if len(names) > 1 and names[1] in ("cublaslt", "hipblaslt") else None
    if lt and totals.get(lt) and totals.get(default):
        prediction["blas_library_saves_ms"] = _ms(totals[default] - totals[lt])
        if totals[default] - totals[lt] >= max(bar_us, MIN_NOISE * totals[default]):
            out.append({"blas": "cublaslt"})
    if "triton" in names and any(r["backend"] == "triton" and r["us"] is not None for r in rows):
        best_blas = lt if lt and totals.get(lt) and totals[lt] < (totals.get(default) or 0) else default
        saves = saving(rows, best_blas, "triton")
        prediction["triton_per_shape_saves_ms"] = _ms(saves)
        if saves >= bar_us:
            if ctx.pipe.compile:
                out.append({"gemm_autotune": "ATEN,TRITON"})
            else:
                ctx.info["gemm_note"] = "a Triton template wins shapes, but the kept recipe does not compile"
    if "aiter" in names:
        ctx.info["gemm_note_rocm"] = ("aiter's tuned GEMM was timed per shape; routing the model's GEMMs "
                                      "through it is not offered as a candidate yet (unverified on hardware)")
    if not out:
        raise Skip(f"no backend is predicted to save the {_ms(bar_us)} ms a win needs over the kept recipe "
                   f"({kept_ms} ms): {prediction}; the default ({default}) stays. Table in gemm_tuning.csv")
    return out


def triton_limit(budget_s):
    """(seconds Triton's per-shape timing may take, why it is not started or None). budget_s: the phase's share
    of a chain budget, None without one."""
    limit = BUDGET_S if budget_s is None else min(BUDGET_S, TRITON_SHARE * budget_s)
    if limit < FIRST_SHAPE_S:
        return limit, (f"{limit:.0f} s of this phase's budget for Triton's per-shape autotuning, under the "
                       f"{FIRST_SHAPE_S} s its first shape takes: not started")
    return limit, None


def _triton_rows(room, device, ceilings, prediction, limit_s, bar_us=0.0):
    """Triton's autotuned time for the shapes with the most headroom, within limit_s seconds. Timing stops
    once what Triton saved so far plus every untimed shape's whole headroom is under bar_us: no outcome of
    the shapes left could then predict a win."""
    total, covered, t0, rows, left, timed = sum(us for _, us in room), 0.0, time.perf_counter(), [], [], 0
    saved, untimed = 0.0, total
    for row, us in room:
        spent = time.perf_counter() - t0
        if timed and saved + untimed < bar_us:
            left.append(f"{row['M']}x{row['N']}x{row['K']}")
            prediction["triton_stopped"] = (f"after {timed} shape(s): {_ms(saved)} ms saved plus {_ms(untimed)} ms "
                                            f"of headroom left cannot reach the {_ms(bar_us)} ms a win needs")
            continue
        # NOTE: a shape is not started when the mean shape so far would take the timing past its limit: on pi0
        # full (H200, 2026-11-23) each shape's autotuning took about 16 s, and the fourth began at 48 s of 48.
        if covered >= HEADROOM_SHARE * total or spent + (spent / timed if timed else 0.0) > limit_s:
            left.append(f"{row['M']}x{row['N']}x{row['K']}")
            continue
        shape = {k: row[k] for k in ("M", "N", "K", "dtype", "bias", "count")}
        got = measure([shape], device, ceilings, backends=["triton"])
        rows += got
        saved += sum(row["count"] * max(0.0, row["us"] - g["us"]) for g in got if g["us"] is not None)
        covered, timed, untimed = covered + us, timed + 1, untimed - us
    prediction["triton_shapes_left_out"] = left
    prediction["triton_autotune_s"] = round(time.perf_counter() - t0, 1)
    prediction["triton_autotune_limit_s"] = round(limit_s, 1)
    return rows


def apply(pipe, knobs):
    if knobs.get("blas"):
        pipe.blas = knobs["blas"]
    if knobs.get("gemm_autotune"):
        pipe.inductor.update(max_autotune_gemm=True, max_autotune_gemm_backends=knobs["gemm_autotune"])
