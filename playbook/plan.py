"""Planning a chain within a time budget, from what this run has measured so far.

    share, why = share(run, "kernels", ["kernels", "tuning", "verify"], seconds_left)

`python -m playbook run --budget-min 5` gives the chain five minutes. Before each optimization phase
the chain estimates what the phases left will cost, in units of this run's own phase 1 (`cudagraph`:
one compile of the model and one capture), holds back what verify and the more valuable phases still
to come will need, and gives the phase the rest as a time budget for building candidates (run.json
"budgets", read by playbook/ladder.py).
A phase whose part cannot cover its fixed cost (a kernel's start, the kept recipe's build) is skipped,
and its JSON says why. baseline, cudagraph and verify always run.
"""
import statistics

# NOTE: relative cost of each phase in units of phase 1's wall time. First from the llama 1b ladder on the
# H200 (2026-11-22: cudagraph 114 s; attention 52, gemm 170, fusion 105, kernels 180, tuning 216, verify 86 s).
# Re-measured on the H200 once the compile caches served rebuilds (2026-12-01; 2026-11-23 for pi0's attention):
# attention 0.76 (llama 1b) and 1.0 (pi0 full, two candidates); gemm 0.06 (llama, one-row shapes untimed on
# Triton), 0.46 and 0.81 (pi0); fusion 0.89 (llama), 1.06 and 1.1 (pi0 with both candidates built, before they
# were nested); kernels 1.14 (llama); tuning 2.23 (llama, held to its own 75 s); verify 0.37 and 0.39 (pi0),
# 1.16 (llama, 18 s of it coordinate descent tuning again). On pi0 full the old weights held 394 s for gemm,
# fusion and verify, which took 261, and skipped attention. gemm and tuning count what they may spend.
# Again on the H200 (2026-12-01): verify 0.37 (pi0 full) and 0.26 (llama 1b, whose tuning was rejected that run:
# nothing to tune again; a tuned llama recipe rebuilt in a new process, benchmarks/autotune_cache_check.py, took
# 9.3 s to its first call against 60.3 s cold, with no coordinate descent); gemm 0.51 (pi0, 61 s of Triton timing
# for one shape and no saving). With verify and gemm at 0.6 the plan held 311 s for gemm, fusion and verify, which
# took 222, skipped attention by 2 s and ended 146 s inside its 9.2 minutes, at 21.05 ms (attention had been worth
# about 3 ms on pi0). Under a chain budget gemm now leaves Triton's timing out where its share is under one shape's
# cost (phases/gemm.py FIRST_SHAPE_S): its BLAS table alone took about 5 s of pi0's 68.
WEIGHT = {"cudagraph": 1.0, "attention": 0.8, "gemm": 0.3, "fusion": 0.8, "kernels": 1.3, "tuning": 1.6,
          "verify": 0.4}
ALWAYS = ("baseline", "cudagraph", "verify")    # phase 1 is the ladder's largest step, and the unit
# NOTE: what a short budget keeps first, by what each phase gained over the recipe before it (H200,
# 2026-11-22): fusion 1.19x (llama 1b) and 1.18x (pi0 full), tuning 1.09x (llama), gemm 1.05x (pi0),
# kernels 1.0x (llama), attention rejected on pi0 and nothing to change on llama.
PRIORITY = ("fusion", "tuning", "gemm", "kernels", "attention")
# NOTE: after fusion, the rest are ranked by the GPU time each can act on in phase 1's trace (`reach`), where
# there is one. On pi0 full (H200, 2026-11-23, --budget-min 9.2) the fixed order held time for tuning, which
# spent 153 s and gained nothing (22.79 -> 23.02 ms, rejected): pi0's GEMMs are cuBLAS's (18.9 of phase 1's
# 24.3 GPU ms), out of coordinate descent's reach (Inductor's Triton kernels: 4.3 ms), while gemm, skipped
# to make room, had taken the GEMMs from 17.6 to 12.1 ms together with fusion on the run before.
REACH = {"gemm": "GEMM kernels a library runs (cuBLAS, hipBLASLt: what gemm's backend choice acts on)",
         "tuning": "Inductor's Triton kernels (what coordinate descent and max-autotune tune)",
         "kernels": "norm and elementwise kernels (what our kernels and Inductor's fusion settings replace)",
         "attention": "attention kernels, and the batched products of the eager step (aten::bmm: eager attention's "
                      "scores and values, which SDPA or grouped attention replace)"}
# NOTE: the batched products count for attention because on pi0 full (H200, 2026-11-23) eager attention's
# per-head products were 4.5 ms of the eager step, all under the "gemm" category, while the attention kernels
# were 1.06 ms of phase 1's: the fixed ranking put attention last and the chain skipped it.
ATTENTION_OPS = ("aten::bmm", "aten::baddbmm")


def reach(run):
    """{phase: GPU ms of phase 1's traced step that the phase can act on (REACH)}, or None without a GPU trace."""
    p1 = next((p for p in run.phases() if p["name"] == "cudagraph"), None)
    profile = (p1 or {}).get("profile") or {}
    table = profile.get("kernel_table") or []
    if profile.get("unit") != "kernel" or not table:
        return None
    triton = [k for k in table if k["name"].startswith("triton")]
    ms = lambda rows: round(sum(k["ms"] for k in rows), 4)      # noqa: E731
    return {"gemm": ms(k for k in table if k["category"] == "gemm" and not k["name"].startswith("triton")),
            "tuning": ms(triton),
            "kernels": ms(k for k in table if k["category"] in ("norm", "elementwise")),
            "attention": round(ms(k for k in table if k["category"] == "attention") + _eager_bmm_ms(run), 4)}


def _eager_bmm_ms(run):
    """GPU ms of the baseline's (eager) batched matrix products (ATTENTION_OPS), from its trace; 0 without one."""
    p0 = next((p for p in run.phases() if p["name"] == "baseline"), None)
    rows = ((p0 or {}).get("profile") or {}).get("gpu_ms_by_op") or []
    return sum(r.get("ms") or 0.0 for r in rows if r.get("op") in ATTENTION_OPS)


def priority(run, got=None):
    """The order a short budget keeps phases in: fusion, then the others by reach() (largest first, `got`
    when the caller has it), or PRIORITY where phase 1 left no GPU trace."""
    got = reach(run) if got is None else got
    if got is None:
        return PRIORITY
    return ("fusion",) + tuple(sorted(got, key=lambda n: -got[n]))


def _will_skip(run, name):
    """True when a later phase will skip itself unbuilt whatever it is given: tuning, when one tuned build
    costs more than the most share() would give it (one and a half times its estimate, less the fixed
    cost); no time is held for it then."""
    if name != "tuning":
        return False
    from .phases import tuning
    cost, unit = tuning.build_cost_s(run), unit_s(run)
    return bool(cost and unit and cost > 1.5 * cost_s(run, name, unit) - fixed_s(run))


def _totals(run):
    return {p["name"]: (p.get("time_s") or {}).get("total") for p in run.phases() if (p.get("time_s") or {}).get("total")}


def unit_s(run):
    """Seconds of one unit: this run's phase 1 wall time (None before it ran)."""
    return _totals(run).get("cudagraph")


def fixed_s(run):
    """A phase's cost before it builds anything: the kernel's start, papermill and rendering (median)."""
    fixed = [sum((p.get("time_s") or {}).get(k, 0.0) for k in ("start", "papermill", "render"))
             for p in run.phases() if (p.get("time_s") or {}).get("start") is not None]
    return statistics.median(fixed) if fixed else 10.0


def cost_s(run, name, unit):
    return fixed_s(run) + WEIGHT.get(name, 1.0) * unit


def share(run, name, later, seconds_left):
    """(seconds this phase may spend building candidates or None for no limit, None) or (None, why it is
    skipped). later: the names of this phase and those after it that the chain will run. Time is held
    back for verify and for the phases still to come that rank higher (priority(): fusion, then by the GPU
    time of phase 1's trace each can act on); this phase gets what is left, up to one and a half times its
    estimate."""
    if name in ALWAYS:
        return None, None
    unit = unit_s(run)
    if unit is None:
        return None, None
    got = reach(run)
    order = priority(run, got)
    rank = order.index(name) if name in order else len(order)
    held = [n for n in later if n == "verify" or (n in order and order.index(n) < rank and not _will_skip(run, n))]
    reserve = sum(cost_s(run, n, unit) for n in held)
    avail = seconds_left - reserve
    fixed = fixed_s(run)
    need = fixed + 0.5 * WEIGHT.get(name, 1.0) * unit        # start, and the kept recipe's build at least
    if avail < need:
        return None, (f"time budget: {max(seconds_left, 0):.0f} s left, {max(reserve, 0):.0f} s held for "
                      f"{', '.join(held) or 'nothing'}, under the {need:.0f} s this phase needs at least "
                      f"(estimated from this run's phase 1: {unit:.0f} s){_order_why(got, order)}")
    return round(min(avail, 1.5 * cost_s(run, name, unit)) - fixed, 1), None


def _order_why(got, order):
    if got is None:
        return ""
    return ("; after fusion, phases rank by the GPU ms of phase 1's step each can act on: "
            + ", ".join(f"{n} {got[n]:.3g}" for n in order[1:]))
