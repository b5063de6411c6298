"""bkc.md: a run's best known config in words, read like a "do not regress" record.

    python -m playbook report reports/<run>     # writes bkc.md beside report.md

Every kept phase's knobs, why it is there (what it removes) and what losing it costs: the gain it
measured over the recipe before it, side by side in one process (the ladder's own ablation). Then
what was tried and not kept, and the commands that reuse and guard the recipe. Rendered from the run's
JSON only.
"""
import json
from pathlib import Path

from .phases import get_phase


def shown(path):
    """A path as a command run from the current folder would name it: relative where it lies below."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _knobs(knobs):
    short = {}
    for k, v in knobs.items():
        short[k] = f"{len(v)} groups" if k == "groups" else v
    return json.dumps(short)


def render(run):
    recipe, phases = run.recipe(), {p["name"]: p for p in run.phases()}
    p = run.params
    verified = recipe.get("verified") or {}
    base = phases.get("baseline", {}).get("p50_ms")
    fp = recipe.get("fingerprint") or p.get("versions") or {}
    title = f"{p['workload']} {p.get('preset') or ''}".strip()
    lines = [f"## {title} on {recipe.get('device') or p['device']}: best known config (do not regress)", "",
             "### Current best result", ""]
    if verified:
        lines.append(f"- **{verified['p50_ms']:.3f} ms p50** (p95 {verified['p95_ms']:.3f}, {verified['iters']} iterations), "
                     f"{verified['speedup_vs_baseline']}x the untouched model measured beside it "
                     f"({verified['baseline_same_run_p50_ms']:.3f} ms); correct (relative error {verified['rel_err']:.3g})")
    elif recipe.get("p50_ms"):
        lines.append(f"- **{recipe['p50_ms']:.3f} ms p50** as measured by the last kept phase (not yet verified: run phase 7)")
    else:
        lines.append("- no phase kept yet: the untouched model is the best known config")
    if base:
        lines.append(f"- baseline (phase 0, its own process): {base:.3f} ms")
    lines += [f"- measured {recipe.get('date') or p.get('created')} with torch {fp.get('torch')}, "
              f"driver {fp.get('driver')}, triton {fp.get('triton')}, transformers {fp.get('transformers')}",
              f"- workload: {(p.get('workload_info') or {}).get('description') or title}, dtype {p.get('dtype')}",
              "", "### What to run", "", "```bash",
              f"python -m playbook check --recipe {shown(run.path / 'recipe.json')}      # exit 1 on a regression > 2%",
              "```", "", "```python", "import playbook",
              f"fast = playbook.apply(model, example_inputs, {str(shown(run.path / 'recipe.json'))!r})",
              "out = fast(*example_inputs)", "```", "",
              "### The knobs, why, and what losing each costs", ""]
    for step in recipe["phases"]:
        ph = phases.get(step["name"], {})
        mod = get_phase(step["name"])
        cost = ""
        if ph.get("previous_p50_ms") and ph.get("p50_ms"):
            lost = ph["previous_p50_ms"] - ph["p50_ms"]
            cost = (f" Measured beside the recipe before it: {ph['previous_p50_ms']:.3f} -> {ph['p50_ms']:.3f} ms "
                    f"({ph.get('speedup_vs_previous')}x); losing it costs about {lost:+.3f} ms a step"
                    + (f" (+{100 * lost / ph['p50_ms']:.0f}%)." if lost > 0 else " (it was kept as no slower)."))
        why = _why(mod, step["knobs"])
        lines.append(f"- phase {step['phase']} `{step['name']}`: `{_knobs(step['knobs'])}`. Why: {why}.{cost}")
        lines += [f"  - {n}" for n in ph.get("notes", [])[:3]]
    others = [ph for ph in phases.values() if ph["name"] not in ("baseline", "verify")
              and ph["name"] not in {s["name"] for s in recipe["phases"]}]
    if others:
        lines += ["", "### Tried and not kept", ""]
        for ph in others:
            why = ph.get("skip_reason") or ph.get("error") or "; ".join(ph.get("notes", [])[-1:]) or ph["status"]
            lines.append(f"- phase {ph['phase']} `{ph['name']}` {ph['status']}: {why}")
    return "\n".join(lines) + "\n"


def _why(mod, knobs):
    """What the kept candidate does (its CHOICES line, where the phase names its candidates), else the phase's WHAT."""
    choices, label = getattr(mod, "CHOICES", {}), getattr(mod, "label", None)
    try:
        chosen = choices.get(label(knobs)) if label else None
    except (KeyError, TypeError, AttributeError):
        chosen = None
    return f"{chosen} (phase {mod.NUMBER}: {mod.WHAT})" if chosen else mod.WHAT


def write(run):
    path = run.path / "bkc.md"
    path.write_text(render(run))
    return path
