"""The hand-off prompt: the long-horizon template (seeds/000) filled from a run, for an agent or a colleague.

    python -m playbook prompt --run reports/<run>      # prints it

Model, GPU, target, the measured baseline, the inference parameters, the phases still open, the
progress table so far and the gate command all come from the run's JSON.
"""
import re
import sys
from pathlib import Path

from .errors import PlaybookError
from .phases import NAMES
from .report import progress_table
from .state import Run

TEMPLATE = Path(__file__).parent / "templates" / "handoff.md"


def fields(run):
    p, phases = run.params, run.phases()
    info, recipe = p.get("device_info") or {}, run.recipe()
    baseline = next((x["p50_ms"] for x in phases if x["name"] == "baseline"), None)
    if baseline is None:
        raise PlaybookError(f"{run.path} has no measured baseline yet: run phase 00-baseline first")
    done = {x["name"] for x in phases if x["status"] in ("kept", "skipped")}
    open_phases = [n for n in NAMES if n not in done]
    target = p.get("target_ms")
    best = (recipe.get("verified") or {}).get("p50_ms") or recipe.get("p50_ms") or baseline
    gate = f"python -m playbook gate --target-ms {target} --run {run.path}" if target else \
        f"python -m playbook gate --target-ms <ms> --run {run.path}   # this run has no target yet"
    return {
        "MODEL_NAME": (p.get("workload_info") or {}).get("description") or p["workload"],
        "GPU_MODEL": info.get("name") or p["device"], "VENDOR": {"cuda": "CUDA", "rocm": "ROCm"}.get(info.get("vendor"), "CPU"),
        "WORK_DIR": str(Path.cwd()), "TARGET_MS": f"{target:g}" if target else "(none set: run with --target-ms)",
        "INFERENCE_PARAMS": f"batch 1, workload {p['workload']} preset {p.get('preset') or '-'}, dtype {p.get('dtype')}",
        "BASELINE_MS": f"{baseline:.3f}", "DATE": (p.get("created") or "")[:10], "TORCH": (p.get("versions") or {}).get("torch"),
        "BEST_MS": f"{best:.3f}", "RECIPE": str(run.path / "recipe.json"),
        "KEPT": " + ".join(s["name"] for s in recipe["phases"]) or "nothing kept yet",
        "OPEN_PHASES": ", ".join(open_phases) or "none",
        "PROGRESS_TABLE": progress_table(run), "PYTHON": sys.executable, "GATE_COMMAND": gate,
        "CHECK_COMMAND": f"python -m playbook check --recipe {run.path / 'recipe.json'}",
    }


def render(run_dir):
    run = Run.open(run_dir)
    values = fields(run)
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), TEMPLATE.read_text())
    return text
