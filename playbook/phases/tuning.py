"""Phase 6 `tuning`: Inductor's autotuning knobs, each measured against the kept recipe, kept only if faster.

coordinate_descent_tuning (block sizes and warps per Triton kernel), max_autotune (GEMM templates
autotuned, with phase 3's backend choice when it was kept) and benchmark_kernel: each alone where it
is worth a compile, and all together; PDL and combo kernels with the first, and alone as one build (first
for a recipe routed through the decode GEMV, then again with the shapes only PDL made win routed too).
Compile time is the cost: every candidate records compile_s beside its gain, and a build that would overrun
BUDGET_S is left out (build_estimate says what each kind costs; the JSON's "budget" names what was left
out). Inductor's FX-graph and autotune caches live in the run directory (TORCHINDUCTOR_CACHE_DIR), so a
re-run or --resume does not pay it again.
"""
import torch

from . import Skip

NUMBER = 6
NAME = "tuning"
WHAT = "Inductor autotuning (coordinate descent, max-autotune, benchmark_kernel), kept only if faster"
KEEP_IF = "faster"
# NOTE: a time budget for building candidates (seconds), tried in the order of what they gained on llama 1b
# (H200, 2026-11-22, each about 46 s to compile): coordinate descent alone 1.208 ms (kept), all three
# 1.235, max-autotune alone 2.113 (slower than the recipe before it, 1.323). So coordinate descent goes
# first, and the budget holds it and the kept recipe's rebuild; what it leaves out, the JSON says.
BUDGET_S = 75
# NOTE: what a coordinate-descent build costs against the kept recipe's compile: llama 1b 34-44 s against
# 10.5-13 s (3.3x), pi0 full 151 s against 75.5 s (2.0x, H200, 2026-11-23, where it spent 190 s of a 75 s
# budget and was rejected). The lower ratio decides: a phase whose one build cannot fit is skipped unbuilt.
COST_X = 2.0

# NOTE: triton.multi_kernel is not offered. On the H200 (torch 2.11, Triton 3.6, 2026-11-22) a llama 1b
# graph compiled with it was kept by this phase, then could not be reloaded from Inductor's FX graph
# cache in verify (TypeError in MultiKernelCall.load_cache: a cached Triton kernel has no hash lock),
# and a recipe that cannot be rebuilt is no recipe. With batch-1 static shapes it has no size to pick for.
KNOBS = {
    "coordinate_descent_tuning": {"coordinate_descent_tuning": True},
    "max_autotune": {"max_autotune": True},
    "benchmark_kernel": {"benchmark_kernel": True},
    "pdl": {"triton.enable_pdl": True},
    "combo_kernels": {"combo_kernels": True},
}
# NOTE: PDL (Programmatic Dependent Launch, Inductor's triton.enable_pdl): each Triton kernel launches while
# the one before it finishes and waits only before its first load of that kernel's output, so a decode step's
# weight reads start early and the gaps between its short kernels shrink. llama 1b's kept recipe on the H200
# (torch 2.11, 2026-11-23, benchmarks/pdl_check.py): 1.088 -> 0.980 ms and 1.057 -> 1.002 ms, correct; pi0
# full's, whose time is cuBLAS's GEMMs (no PDL), 17.64 -> 17.70 ms. It goes with coordinate descent in the
# first candidate, so it costs no build of its own; coordinate descent alone comes next, where the budget
# holds it.
# NOTE: a recipe routed through kernels.gemv is offered PDL with combo kernels first, before any tuned build. On
# the H200 (llama 1b, 2026-12-04, benchmarks/results/ladder-time/session16-2026-12-04/) this phase, with PDL alone
# offered last, built coordinate descent with the projections given back to Inductor (49.6 s to compile, 55 s of
# its 75 s budget spent), measured it the same as the kept recipe (1.032 against 1.033 ms) and left out the rest,
# PDL alone too, though its one build (the kept recipe's 10 s compile) would have fitted. The gemv recipe never ran
# with PDL there, and in its step the gaps between kernels were 0.058 ms (PDL's recipe of sitting 5: 0.003). The
# ladder now leaves out only what would overrun the budget and goes on to cheaper builds (build_estimate).
# NOTE: PDL alone (no tuning) costs one build, the kept recipe's compile, where a tuned one costs COST_X times it.
# It is offered alone, last (first for a GEMV recipe: the NOTE above), and first where the budget holds no tuned
# build (pi0 full: a 64 s compile against a 75 s budget). Its apply also gives our kernels PDL (rewrites.pdl: the GEMV, the few-token rotary, the
# few-query attention), which pi0's denoise loop runs eight of ten kernels a layer on.
# NOTE: combo kernels (Inductor's combo_kernels): kernels that do not depend on each other become one launch,
# such as a decode layer's rotary embedding of q, of k with its cache write, and v's cache write. llama 1b's
# kept recipe on the H200 (torch 2.11, 2026-11-23, `gpu_session.sh combo`, one process per pair): 212 -> 153
# kernels a step, 1.138 -> 1.126 ms and 1.031 -> 0.989 ms, correct. PDL already hides most of a small kernel's
# launch, so the gain is a few percent. It goes with the first candidate too: no build of its own.


# NOTE: a recipe that routes its decode projections through kernels.gemv (phase 5) leaves coordinate descent
# little to tune: the projections are our opaque op. On the H200 (llama 1b, 2026-11-23) phase 5 kept the GEMV
# at 1.165 ms against Inductor's fusion at 1.182, and coordinate descent then gained nothing (1.166); on a
# ladder that had kept Inductor's fusion instead, coordinate descent went from 1.183 to 1.067 ms. So such a
# recipe is also offered coordinate descent with the projections given back to Inductor, first (kept at
# 1.021 ms on the next H200 run).
_BASE = {"coordinate descent": "coordinate_descent_tuning: tune each Triton kernel's launch settings",
         "coordinate descent + PDL": "coordinate descent, and Programmatic Dependent Launch for Inductor's Triton "
                                     "kernels (Hopper and newer): each starts before the one it depends on ends"}
_COMBO = ", and combo kernels (kernels that do not depend on each other launched as one)"
_GIVEN_BACK = "phase 5's decode GEMV undone (Inductor fuses and tunes the projections itself), then "
CHOICES = {**{name + combo + proj: (_GIVEN_BACK if proj else "") + what + (_COMBO if combo else "")
              for name, what in _BASE.items() for combo in ("", " + combo kernels")
              for proj in ("", ", projections to Inductor")},
           "PDL": "Programmatic Dependent Launch alone (no tuning: one build) for Inductor's Triton kernels and ours "
                  "(the GEMV, the few-token rotary, the few-query attention): each starts before the one before ends",
           "PDL + combo kernels": "PDL as above" + _COMBO + " (no tuning: one build)",
           **{f"PDL{combo}, more shapes to the GEMV": "PDL as above" + (_COMBO if combo else "") + ", and phase 5's "
              "decode GEMV given the projection shapes its table found faster than cuBLAS with PDL only "
              "(gemv_pdl_us; one build)" for combo in ("", " + combo kernels")},
           "max-autotune": "max_autotune: benchmark GEMM templates and kernel configs at build time",
           "max-autotune + coordinate descent": "max_autotune and coordinate descent together"}


def label(knobs):
    tune = set(knobs.get("tune") or [])
    if {"max_autotune", "coordinate_descent_tuning"} <= tune:
        return "max-autotune + coordinate descent"
    if "max_autotune" in tune:
        return "max-autotune"
    if "coordinate_descent_tuning" not in tune:
        return ("PDL" + (" + combo kernels" if "combo_kernels" in tune else "")
                + (", more shapes to the GEMV" if knobs.get("gemv_more") else ""))
    return ("coordinate descent" + (" + PDL" if "pdl" in tune else "")
            + (" + combo kernels" if "combo_kernels" in tune else "")
            + (", projections to Inductor" if knobs.get("projections") == "inductor" else ""))


NO_TRITON = ("Inductor's tuning knobs tune Triton kernels, which a CPU build does not generate (it emits C++); "
             "nothing to tune here")


def skip_before_start(params):
    """Why the chain can skip this phase without starting its kernel (known from the run's parameters)."""
    return NO_TRITON if params["device"] != "cuda" else None


def candidates(ctx):
    if not ctx.pipe.compile:
        raise Skip("the kept recipe does not compile: Inductor's tuning knobs do not apply")
    if ctx.device.type != "cuda":
        raise Skip(NO_TRITON)
    compile_s = _kept_compile_s(ctx.run) if ctx.budget_s else None
    pdl_why = pdl_here(ctx.device)
    if compile_s and COST_X * compile_s > ctx.budget_s:
        over = (f"a tuned build costs about {COST_X:g}x the kept recipe's compile ({compile_s:.0f} s here), over "
                f"this phase's {ctx.budget_s:.0f} s budget")
        if pdl_why is None and compile_s <= ctx.budget_s:
            ctx.info["budget"] = f"decided before building: {over}; PDL alone (one build) offered"
            return [{"tune": ["pdl"]}]
        raise Skip(f"decided before building: {over}; nothing compiled"
                   + (f" (PDL alone not offered: {pdl_why})" if pdl_why else ""))
    out = [{"tune": ["coordinate_descent_tuning"]},
           {"tune": ["coordinate_descent_tuning", "max_autotune", "benchmark_kernel"]},
           {"tune": ["max_autotune"]}]
    routed = bool((ctx.pipe.info.get("gemv") or {}).get("linears"))
    if routed:
        out.insert(0, {"tune": ["coordinate_descent_tuning"], "projections": "inductor"})
    if pdl_why:
        ctx.info["pdl"] = f"not offered: {pdl_why}"
    else:
        out.insert(0, dict(out[0], tune=out[0]["tune"] + ["pdl"]))
        if routed:                  # one build, first (see the NOTE above)
            more = _more_gemv(ctx)
            out[:0] = [{"tune": ["pdl"]}] + ([{"tune": ["pdl"], **more}] if more else [])
        else:
            out.append({"tune": ["pdl"]})
    why = combo_here()
    if why:
        ctx.info["combo_kernels"] = f"not offered: {why}"
    else:
        first_tuned = next(i for i, knobs in enumerate(out) if "coordinate_descent_tuning" in knobs["tune"])
        for i, knobs in enumerate(out):     # the first tuned candidate, and PDL's one build where it goes first
            if i == first_tuned or (routed and knobs["tune"] == ["pdl"]):
                out[i] = dict(knobs, tune=knobs["tune"] + ["combo_kernels"])
    return out


def _more_gemv(ctx):
    """{"gemv_more": shapes, "gemv_more_blocks": blocks} for the one-build PDL candidate of a recipe routed
    through kernels.gemv: the shapes phase 5's table found faster than cuBLAS with PDL only (rewrites.gemv's
    pdl_winners; their blocks from the same table), or {} where there are none."""
    from ..rewrites import gemv
    kernels = ctx.run.phase("kernels") if ctx.run is not None else None
    step = next((s for s in ctx.steps if s["name"] == "kernels"), None) if getattr(ctx, "steps", None) else None
    if not kernels or not step or step["knobs"].get("gemv") in (None, True):
        return {}
    table = kernels.get("gemv_shapes") or []
    more = gemv.pdl_winners(table, step["knobs"]["gemv"])
    if not more:
        return {}
    ctx.info["gemv_more"] = {"shapes": more, "why": "faster than cuBLAS with PDL only, in phase 5's table"}
    blocks = [b for b in gemv.tuned_blocks(table) if b["shape"] in more and b["variant"] == ""]
    return {"gemv_more": more, **({"gemv_more_blocks": blocks} if blocks else {})}


def build_estimate(knobs, run):
    """(kind, seconds) of one candidate's build, for the ladder's budget: "one build" (no tuning: PDL, combo
    kernels) costs about the kept recipe's compile, "tuned" COST_X times it (None where nothing compiled yet).
    The ladder replaces either by the longest build of its kind measured in this phase."""
    compile_s = _kept_compile_s(run)
    tuned = bool({"coordinate_descent_tuning", "max_autotune"} & set(knobs.get("tune") or []))
    if tuned:
        return "tuned", COST_X * compile_s if compile_s else None
    return "one build", compile_s


def combo_here():
    """None when this torch's Inductor can build combo kernels, else the reason."""
    import torch._inductor.config as inductor_config
    return None if hasattr(inductor_config, "combo_kernels") else f"torch {torch.__version__}'s Inductor has no combo_kernels"


def pdl_here(device):
    """None when Inductor can give its Triton kernels Programmatic Dependent Launch here, else the reason."""
    import torch._inductor.config as inductor_config
    if not hasattr(inductor_config.triton, "enable_pdl"):
        return f"torch {torch.__version__}'s Inductor has no triton.enable_pdl"
    if device.type != "cuda" or torch.version.hip or not torch.cuda.is_available():
        return "PDL is an NVIDIA launch feature (Hopper and newer)"
    major, minor = torch.cuda.get_device_capability(device)
    return None if major >= 9 else f"this GPU is sm_{major}{minor}; PDL needs Hopper (sm_90) or newer"


def build_cost_s(run):
    """What this phase's cheapest build is expected to cost here, or None: the kept recipe's compile for PDL
    alone where the run's GPU has PDL (run.json's device_info), else COST_X times it (a tuned build)."""
    compile_s = _kept_compile_s(run)
    if not compile_s:
        return None
    info = run.params.get("device_info") or {}
    major = int(str(info.get("capability") or "0").split(".")[0] or 0)
    return compile_s if info.get("vendor") == "cuda" and major >= 9 else COST_X * compile_s


def _kept_compile_s(run):
    """The compile time of the kept recipe's latest build (the last kept phase that compiled), or None."""
    kept = [p for p in run.phases() if p["status"] == "kept" and p.get("compile_s")]
    return kept[-1]["compile_s"] if kept else None


def apply(pipe, knobs):
    import torch._inductor.config as inductor_config
    if knobs.get("projections") == "inductor":
        from ..rewrites import gemv
        pipe.info["gemv"] = {"linears": 0, "given_back": gemv.unroute(pipe.workload.model)}
    if knobs.get("gemv_more"):
        from . import kernels
        pipe.info["gemv"] = kernels.reroute(pipe, knobs["gemv_more"], knobs.get("gemv_more_blocks"),
                                            pdl="pdl" in knobs["tune"])
    if "pdl" in knobs["tune"]:
        from ..rewrites import pdl
        pipe.info["pdl"] = pdl.mark(pipe.workload.model)      # our kernels too (each ignores it where it cannot run)
    for name in knobs["tune"]:
        for key, value in KNOBS[name].items():
            head, _, tail = key.partition(".")
            if not hasattr(inductor_config, head) or (tail and not hasattr(getattr(inductor_config, head), tail)):
                pipe.notes.append(f"{key} is not an Inductor setting in torch {torch.__version__}: skipped")
                continue
            pipe.inductor[key] = value
    if "max_autotune" in knobs["tune"] and "max_autotune_gemm_backends" not in pipe.inductor:
        pipe.inductor["max_autotune_gemm_backends"] = "ATEN,TRITON"
