"""The target gate: exit 0 when p50 <= target, 1 when above (with the gap), 2 when no p50 was found.

    python -m playbook gate --target-ms 25 --p50-ms 23.7
    python -m playbook gate --target-ms 25 --run reports/<run>            # the verify phase's p50
    python -m playbook gate --target-ms 25 --benchmark-cmd "python bench.py"

With --benchmark-cmd the command's output is read as a JSON object with a "p50" key, else the last
line holding "p50" followed by a number ("P50:   25.3 ms"), as the source's verification-gate.py does.
"""
import json
import re
import shlex
import subprocess

from .state import Run

P50_LINE = re.compile(r"p50\D*?(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def _json_p50(text):
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return float(obj["p50"]) if isinstance(obj, dict) and isinstance(obj.get("p50"), (int, float)) else None


def p50_from_text(text):
    """A JSON object's "p50" (the whole output, or its last JSON line), else the last "p50 <number>" line."""
    lines = text.strip().splitlines()
    for candidate in [text] + lines[::-1]:
        value = _json_p50(candidate)
        if value is not None:
            return value
    for line in reversed(lines):
        m = P50_LINE.search(line)
        if m:
            return float(m.group(1))
    return None


def p50_from_run(run_dir, phase=None):
    """The named phase's p50, else verify's, else the last kept phase's."""
    phases = Run.open(run_dir).phases()
    if phase:
        found = [p for p in phases if p["name"] == phase]
    else:
        found = [p for p in phases if p["name"] == "verify"] or \
                [p for p in phases if p["status"] == "kept" and p["p50_ms"] is not None]
    return found[-1]["p50_ms"] if found else None


def p50_from_command(cmd):
    done = subprocess.run(shlex.split(cmd), capture_output=True, text=True)
    print(done.stdout, end="")
    return p50_from_text(done.stdout)


def gate(target_ms, p50_ms, baseline_ms=None, out=print):
    if p50_ms is None:
        out("GATE ERROR: no p50 found")
        return 2
    gap = p50_ms - target_ms
    line = f"p50 {p50_ms:.3f} ms, target {target_ms:.3f} ms"
    if baseline_ms:
        line += f", baseline {baseline_ms:.3f} ms ({baseline_ms / p50_ms:.2f}x)"
    if gap <= 0:
        out(f"PASS: {line} (under by {-gap:.3f} ms)")
        return 0
    out(f"FAIL: {line}: above by {gap:.3f} ms ({gap / target_ms:+.1%})")
    return 1
