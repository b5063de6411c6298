"""Trying a phase: the one routine that measures a phase's candidates against the kept recipe.

    from playbook.ladder import run_phase
    result = run_phase("cudagraph", run, iters=200, warmup=20)    # writes phases/01-cudagraph.json

Rebuild the kept recipe ("previous"), build the recipe plus each candidate, check each against the
baseline's outputs, time the correct ones side by side with "previous" in one process, keep the
fastest if it is not slower beyond noise (or faster beyond noise, for KEEP_IF="faster"). A phase
decides before it builds: candidates() may skip on what is already measured, and a candidate whose build
would overrun the phase's time budget (its BUDGET_S, or the chain's share of --budget-min) is left out and
recorded, while a cheaper one after it may still be built (the phase's build_estimate says what costs
what). Any exception is recorded as a failed phase; nothing already recorded is touched. The phase JSON's
`time_s` says where the wall time went (playbook/clock.py).
"""
import gc
import json
import time
import traceback

import torch

from . import bench, clock
from .compare import compare
from .errors import PlaybookError, choose
from .phases import Skip, get_phase
from .phases.baseline import judges as baseline_judges
from .pipeline import Pipeline
from .progress import steps
from .record import fill_timing, floors, last_kept_p50, next_action, profile_into, result_template

clock.mark_ready()          # what a phase's kernel imports ends here: its clock's `start`

# NOTE: candidates within TIE of the fastest one's p50 are a tie, and the tie goes to the one the phase offers
# first: each phase orders its candidates by what they gained on the workloads measured, and a difference this
# small is no evidence against that order. On pi0 full (H200, 2026-12-04) phase 2 measured grouped attention with
# the vision tower on SDPA (offered first) at 22.570 ms and grouped attention alone at 22.566, and kept the
# latter; after phase 4 batched the cameras the SDPA tower was worth 0.42 ms (15.79 against 16.21 ms, the same
# recipe side by side), which that ladder never got.
TIE = 0.005

class Context:
    """What candidates() may look at: the run, the device, the kept pipeline (not yet built), and the
    kept recipe's measured p50 (what a candidate must beat)."""

    def __init__(self, run, pipe, steps, budget_s=None):
        self.run, self.pipe, self.steps = run, pipe, steps
        self.device, self.vendor = pipe.device, pipe.vendor
        self.info = {}              # what candidates() found (sites, tables): merged into the phase JSON
        self.kept_p50_ms = last_kept_p50(run)
        self.budget_s = budget_s    # the phase's time budget for building (phase_budget), None: no limit

    def fresh_pipeline(self):
        """A new copy of the kept pipeline to probe (rewrite, count, measure) without touching ctx.pipe."""
        return Pipeline.from_recipe(self.run.params, self.steps)


def check_knobs_to_try(name, knobs_to_try):
    """The knob sets a notebook asked for, by their names in the phase's CHOICES; [] means every one."""
    if not knobs_to_try:
        return []
    wanted = [knobs_to_try] if isinstance(knobs_to_try, str) else list(knobs_to_try)
    mod = get_phase(name)
    choices = getattr(mod, "CHOICES", {})
    if not choices:
        raise PlaybookError(f"phase {name} has no knobs to choose from: leave knobs_to_try empty")
    for want in wanted:
        choose(f"{name} knob set", want, list(choices))
    return wanted


def phase_budget(mod, run):
    """Seconds this phase's candidates may spend building: the chain's share of an overall budget (run.json
    "budgets", written by the chain from --budget-min) when the user gave one, since the user chose how long
    the chain may take and the plan divided it; otherwise the phase's own BUDGET_S (a number, or one per
    device type), the default that keeps an interactive walk short; None when neither is set."""
    share = (run.params.get("budgets") or {}).get(mod.NAME)
    if share:
        return share
    own = getattr(mod, "BUDGET_S", None)
    if isinstance(own, dict):                   # per device type: {"cuda": 65, "cpu": 45}
        own = own.get(run.params.get("device"), own.get("cpu"))
    return own or None


def run_phase(name, run, iters=100, warmup=10, knobs_to_try=None):
    """Run one phase and record it; never raises for a failure inside the phase. knobs_to_try: names
    from the phase's CHOICES to try (the others are not built); empty: every candidate it offers."""
    clock.reset()
    mod = get_phase(name)
    knobs_to_try = check_knobs_to_try(name, knobs_to_try)
    result = result_template(mod, run)
    if knobs_to_try:
        result["knobs_to_try"] = knobs_to_try
    run.use_compile_cache()
    try:
        if hasattr(mod, "run"):
            mod.run(run, result, iters=iters, warmup=warmup)
        else:
            _try(mod, run, result, iters, warmup, knobs_to_try)
    except PlaybookError:
        raise
    except Exception as e:                                        # recorded, and the chain goes on
        result.update(status="failed", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=8))
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if result["p50_ms"] is not None:
        result.update(floors(run, result["p50_ms"]))
    if name not in ("baseline", "verify"):
        if result["status"] == "kept":
            run.keep(result)
        else:
            run.drop_steps([name])   # a re-run that is not kept this time leaves no stale step behind
    result["next_action"] = next_action(run, result)
    result.update(time_s=clock.time_s(), compile_cache=clock.cache_counts(), compile_stages=clock.compile_stages())
    run.write_phase(result)
    return result


def _candidates(mod, ctx, result, knobs_to_try):
    """The phase's candidates, filtered by knobs_to_try; raises Skip when none is left."""
    with clock.section("decide"):
        candidates = mod.candidates(ctx)
    if knobs_to_try:
        left_out = sorted({mod.label(k) for k in candidates} - set(knobs_to_try))
        candidates = [k for k in candidates if mod.label(k) in knobs_to_try]
        if left_out:
            result["notes"].append(f"not tried (not in knobs_to_try): {', '.join(left_out)}")
        if not candidates:
            raise Skip(f"none of knobs_to_try ({', '.join(knobs_to_try)}) is offered here"
                       + (f"; offered: {', '.join(left_out)}" if left_out else ""))
    return candidates


def _label(mod, knobs):
    return mod.label(knobs) if hasattr(mod, "label") else json.dumps(knobs)[:80]


def _build_candidates(mod, run, recipe_steps, candidates, judges, budget, spent_s, result):
    """Build and check each candidate until the budget would be overrun, or, for a phase whose candidates
    are NESTED (each holds the ones after it), until one is correct. A candidate whose build would overrun the
    budget is left out, and a cheaper one after it may still be built. Returns (runners of the correct ones by
    their record's index, a record per candidate built, the labels left out by the budget)."""
    runners, records, left_out = {}, [], []
    longest = spent_s                       # the kept recipe's build: what one more build may cost
    measured = {}                           # build kind (the phase's build_estimate) -> its longest build here
    for i, knobs in enumerate(steps(candidates, f"{mod.NAME}: building candidates")):
        label = mod.label(knobs) if hasattr(mod, "label") else None
        if getattr(mod, "NESTED", False) and runners:
            held = [_label(mod, k) for k in candidates[i:]]
            holder = _label(mod, records[min(runners)]["knobs"])
            result["not_built"] = {"labels": held, "why": f"{holder} holds them and is correct (this phase's "
                                   "candidates are nested)"}
            result["notes"].append(f"not built: {', '.join(held)}; {result['not_built']['why']}")
            print(f"[{mod.NAME}] {len(held)} candidate(s) not built: {result['not_built']['why']}", flush=True)
            break
        kind, need = build_need(mod, knobs, run, measured, longest)
        if budget is not None and records and spent_s + need > budget:
            left_out.append(_label(mod, knobs))
            print(f"[{mod.NAME}] budget: {spent_s:.0f} of {budget:.0f} s spent, this build takes about "
                  f"{need:.0f} s: {_label(mod, knobs)} left out", flush=True)
            continue
        record = {"knobs": knobs, "label": label, "error": None}
        print(f"[{mod.NAME}] candidate {i + 1}/{len(candidates)} {json.dumps(knobs)[:120]}: building", flush=True)
        t0 = time.perf_counter()
        try:
            pipe = Pipeline.from_recipe(run.params, recipe_steps, extra=(mod.NAME, knobs))
            runner = pipe.build()
            with clock.section("check"):
                record.update(compare(runner.outputs(), dtype=pipe.dtype, **judges))
            record.update(compile_s=runner.compile_s, notes=pipe.notes, **({"info": pipe.info} if pipe.info else {}))
            if record["correct"]:
                runners[len(records)] = runner     # by its record's index: a candidate left out has none
        except Exception as e:
            record.update(correct=False, error=f"{type(e).__name__}: {e}")
        record["build_s"] = round(time.perf_counter() - t0, 2)
        spent_s += record["build_s"]
        longest = max(longest, record["build_s"])
        measured[kind] = max(measured.get(kind, 0.0), record["build_s"])
        records.append(record)
        compiled = "" if record.get("compile_s") is None else f", compiled in {record['compile_s']} s"
        verdict = record["error"] or ("correct" if record["correct"] else "wrong")
        print(f"[{mod.NAME}] candidate {i + 1}/{len(candidates)}: {verdict}{compiled}", flush=True)
    return runners, records, left_out


def build_need(mod, knobs, run, measured, longest):
    """(kind, seconds) one more build of these knobs is expected to take, to hold against the phase's budget.
    A phase with build_estimate(knobs, run) -> (kind, seconds or None) says which of its builds cost alike (a
    one-build PDL against a tuned build): the longest measured build of that kind here, else its estimate,
    else the longest build measured so far. Without it every build is of one kind: the longest so far."""
    if not hasattr(mod, "build_estimate"):
        return "build", longest
    kind, estimate = mod.build_estimate(knobs, run)
    if kind in measured:
        return kind, measured[kind]
    return kind, estimate if estimate is not None else longest


def pick(timings):
    """The index of the candidate to keep of those timed ({index: Timing}, indices in the order offered): the
    fastest, or the first offered of those within TIE of it."""
    fastest = min(t.p50_ms for t in timings.values())
    return min(i for i, t in timings.items() if t.p50_ms <= fastest * (1 + TIE))


def _try(mod, run, result, iters, warmup, knobs_to_try=()):
    recipe_steps = run.steps_before(mod.NAME)
    judges = baseline_judges(run)
    base = Pipeline.from_recipe(run.params, recipe_steps)
    ctx = Context(run, base, recipe_steps, phase_budget(mod, run))
    try:
        candidates = _candidates(mod, ctx, result, knobs_to_try)
    except Skip as why:
        result.update(ctx.info)
        result.update(status="skipped", next_action="", error=None)
        result["notes"].append(str(why))
        result["skip_reason"] = str(why)
        return
    result.update(ctx.info)
    budget, t0 = phase_budget(mod, run), time.perf_counter()
    contenders = {"previous": base.build()}                   # "previous" and candidate indices
    runners, records, left_out = _build_candidates(mod, run, recipe_steps, candidates, judges, budget,
                                                   time.perf_counter() - t0, result)
    contenders.update(runners)
    if budget is not None:
        result["budget"] = {"budget_s": round(budget, 1), "spent_s": round(time.perf_counter() - t0, 1),
                            "left_out": left_out}
        if left_out:
            result["notes"].append(f"time budget {budget:.0f} s: not built {', '.join(left_out)}")
    result["candidates"] = records
    with clock.section("time"):
        timings = bench.time_side_by_side({k: r.step for k, r in contenders.items()}, base.device,
                                          iters=iters, warmup=warmup)
    previous = timings.pop("previous")
    result["previous_p50_ms"] = round(previous.p50_ms, 5)
    for i, t in timings.items():
        records[i].update(p50_ms=round(t.p50_ms, 5), verdict=bench.verdict(t, previous))
    if not timings:
        errors = [r for r in records if r["error"]]
        result.update(status="failed" if len(errors) == len(records) else "rejected", correct=False,
                      knobs=records[0]["knobs"] if records else {},
                      error="; ".join(r["error"] for r in errors) or None)
        wrong = next((r for r in records if not r["error"]), None)
        if wrong:
            result.update(max_abs_diff=wrong["max_abs_diff"], rel_err=wrong["rel_err"])
            result["notes"] += wrong["problems"]
        return
    best_i = pick(timings)
    best, rec = timings[best_i], records[best_i]
    fastest_i = min(timings, key=lambda i: timings[i].p50_ms)
    if fastest_i != best_i:
        result["notes"].append(f"{_label(mod, rec['knobs'])} ({best.p50_ms:.4f} ms) taken over "
                               f"{_label(mod, records[fastest_i]['knobs'])} ({timings[fastest_i].p50_ms:.4f} ms): "
                               f"within {TIE:.1%} of it, a tie, and offered first")
    fill_timing(result, best)
    profile_into(run, result, contenders[best_i].step, base.device)
    rec.update({k: result.get(k) for k in ("kernel_count", "cpu_op_count", "launch_overhead_ms")})
    for i in timings:                # the other measured candidates: their counts, to compare (their traces too)
        if i != best_i:
            profile_into(run, records[i], contenders[i].step, base.device, f"{mod.NUMBER:02d}-{mod.NAME}-candidate{i + 1}")
    # and the kept recipe it was timed beside: what the comparison was against, kernel by kernel in its trace
    beside = {"p50_ms": round(previous.p50_ms, 5)}
    profile_into(run, beside, contenders["previous"].step, base.device, f"{mod.NUMBER:02d}-{mod.NAME}-previous")
    result["previous_profile"] = beside
    v, noise = bench.verdict(best, previous), bench.noise(best, previous)
    keep = v == "faster" if getattr(mod, "KEEP_IF", "not_slower") == "faster" else v != "slower"
    result.update(status="kept" if keep else "rejected", correct=True, knobs=rec["knobs"],
                  max_abs_diff=rec["max_abs_diff"], rel_err=rec["rel_err"], precise_err=rec["precise_err"],
                  compile_s=rec["compile_s"],
                  verdict=v, speedup_vs_previous=round(previous.p50_ms / best.p50_ms, 3),
                  noise=round(noise, 4))
    result["notes"] += rec.get("notes", [])
    result.update(rec.get("info") or {})
    if not keep:
        than = "the same as" if v == "same" else f"{v} than"
        result["notes"].append(f"{than} the kept recipe ({best.p50_ms:.4f} vs {previous.p50_ms:.4f} ms, "
                               f"noise {noise:.1%}): not kept")
