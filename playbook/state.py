"""The run directory: parameters, reference outputs, one JSON per phase, and the recipe of kept phases.

    run = Run.create("reports/20261121-120000-tiny", params)   # or Run.open(path) for an existing one
    run.write_phase(result)                # phases/01-cudagraph.json, written atomically
    run.recipe()["phases"]                 # [{"phase": 1, "name": "cudagraph", "knobs": {...}}, ...]

Layout: run.json, reference.pt (the baseline's outputs; reference_fp32.pt too for bf16/fp16 runs),
recipe.json, phases/NN-<name>.json, notebooks/ (executed), traces/ (torch.profiler, .json.gz), figures/,
report.md, report.html, bkc.md. Every JSON is written to a temporary file and renamed into place, so a
crash never leaves half a file.
"""
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import PlaybookError

PHASE_FIELDS = ("phase", "name", "status", "p50_ms", "p95_ms", "mean_ms", "std_ms", "correct",
                "max_abs_diff", "knobs", "next_action", "error")
STATUSES = ("kept", "rejected", "skipped", "failed")


def write_json(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PlaybookError(f"{what} {path} is corrupt ({e}); delete it to re-run that step, "
                            "or start a new run without --resume") from e


def new_run_id(workload, preset):
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join(x for x in (stamp, workload, preset) if x)


class Run:
    def __init__(self, path, params):
        self.path = Path(path)
        self.params = params

    # --- opening -------------------------------------------------------
    @classmethod
    def create(cls, path, params):
        path = Path(path)
        if (path / "run.json").exists():
            raise PlaybookError(f"{path} already holds a run; use --resume to continue it or pick another --out")
        write_json(path / "run.json", params)
        return cls(path, params)

    @classmethod
    def open(cls, path):
        path = Path(path)
        if not (path / "run.json").exists():
            raise PlaybookError(f"{path} is not a run directory (no run.json); start one with "
                                "`python -m playbook run --workload tiny` or run 00-baseline first")
        params = read_json(path / "run.json", "run file")
        if not isinstance(params, dict) or "workload" not in params:
            raise PlaybookError(f"run file {path / 'run.json'} is corrupt (no 'workload'); start a new run")
        return cls(path, params)

    def reload(self):
        """run.json as it is on disk now (a phase's notebook kernel writes fields the chain has not seen)."""
        path = self.path / "run.json"
        if path.exists():
            self.params = read_json(path, "run file")
        return self

    def update(self, **fields):
        """Merge fields into run.json as it is on disk now: another process (a phase's notebook kernel)
        may have written fields this object has not seen, and a stale copy must not erase them."""
        path = self.path / "run.json"
        if path.exists():
            self.params = {**read_json(path, "run file"), **fields}
        else:
            self.params.update(fields)
        write_json(path, self.params)

    def use_compile_cache(self):
        """Point Inductor's FX-graph and autotune caches at this run's (run.json "compile_cache"):
        --resume, re-runs and later runs of the same graphs load them instead of compiling again. Set, not
        defaulted: importing Inductor fills in its /tmp default."""
        where = Path(self.params.get("compile_cache") or self.path / "inductor-cache").resolve()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(where)
        return where

    # --- phases ---------------------------------------------------------
    def phase_path(self, number, name):
        return self.path / "phases" / f"{number:02d}-{name}.json"

    def write_phase(self, result):
        missing = [k for k in PHASE_FIELDS if k not in result]
        if missing or result["status"] not in STATUSES:
            raise ValueError(f"phase result lacks {missing} or has status {result.get('status')!r}")
        write_json(self.phase_path(result["phase"], result["name"]), result)

    def phases(self):
        """Every recorded phase result, in ladder order."""
        folder = self.path / "phases"
        return [read_json(p, "phase file") for p in sorted(folder.glob("[0-9][0-9]-*.json"))]

    def phase(self, name):
        return next((p for p in self.phases() if p["name"] == name), None)

    # --- recipe ---------------------------------------------------------
    def recipe(self):
        path = self.path / "recipe.json"
        if not path.exists():
            return {"workload": self.workload_params(), "phases": []}
        recipe = read_json(path, "recipe")
        if not isinstance(recipe.get("phases"), list):
            raise PlaybookError(f"recipe {path} is corrupt (no 'phases' list); delete it and re-run the chain")
        return recipe

    def steps_before(self, name):
        """The recipe a phase is tried against: every kept phase but its own earlier record (a re-run)."""
        return [s for s in self.recipe()["phases"] if s["name"] != name]

    def keep(self, result):
        """Add a kept phase (with its knobs) to the recipe, replacing an earlier record of the same phase."""
        steps = self.steps_before(result["name"])
        steps.append({"phase": result["phase"], "name": result["name"], "knobs": result["knobs"]})
        self._write_recipe(steps, result["p50_ms"])

    def drop_steps(self, names):
        """Remove these phases' steps from the recipe: a phase re-run and not kept this time, or phases about to
        run again after one that re-ran (steps kept on the old recipe must not be built under it); returns the
        names dropped. The recipe's p50 falls back to the last kept phase left."""
        names = set(names)
        recipe = self.recipe()
        dropped = [s["name"] for s in recipe["phases"] if s["name"] in names]
        if dropped:
            steps = [s for s in recipe["phases"] if s["name"] not in names]
            kept = {p["name"]: p["p50_ms"] for p in self.phases() if p["status"] == "kept"}
            self._write_recipe(steps, kept.get(steps[-1]["name"]) if steps else kept.get("baseline"))
        return dropped

    def _write_recipe(self, steps, p50_ms):
        recipe = self.recipe()
        recipe["workload"] = self.workload_params()
        recipe["phases"] = sorted(steps, key=lambda s: s["phase"])
        recipe.update(p50_ms=p50_ms, **self.fingerprint())
        recipe.pop("verified", None)                 # a changed recipe is no longer the one verify measured
        write_json(self.path / "recipe.json", recipe)

    def fingerprint(self):
        """Where and when a recipe was measured: device name, driver and library versions, the date."""
        info = self.params.get("device_info", {})
        return {"device": info.get("name"), "date": dt.date.today().isoformat(),
                "fingerprint": {**(self.params.get("versions") or {}), "driver": info.get("driver"),
                                "runtime": info.get("runtime")}}

    def record_verified(self, result):
        """verify's numbers on the recipe, the best-known-config record `python -m playbook check` guards."""
        recipe = self.recipe()
        recipe.update(workload=self.workload_params(), **self.fingerprint())
        recipe["verified"] = {k: result.get(k) for k in ("p50_ms", "p95_ms", "iters", "correct", "rel_err",
                                                          "baseline_same_run_p50_ms", "speedup_vs_baseline")}
        write_json(self.path / "recipe.json", recipe)

    def workload_params(self):
        return {**{k: self.params.get(k) for k in ("workload", "preset", "model", "device", "dtype")},
                "options": self.params.get("options") or {}}

    # --- reference outputs ---------------------------------------------
    def save_reference(self, leaves, name="reference"):
        """name: "reference" (the untouched model's outputs) or "reference_fp32" (its fp32 twin's)."""
        tmp = self.path / f".{name}.pt.tmp"
        torch.save(leaves, tmp)
        os.replace(tmp, self.path / f"{name}.pt")

    def judges(self):
        """What compare() needs: the reference, the fp32 reference (or None) and the baseline's own error."""
        precise = self.reference("reference_fp32") if (self.path / "reference_fp32.pt").exists() else None
        return {"reference": self.reference(), "precise": precise,
                "baseline_err": self.params.get("baseline_precise_err")}

    def reference(self, name="reference"):
        path = self.path / f"{name}.pt"
        if not path.exists():
            raise PlaybookError(f"{self.path} has no baseline reference outputs; run phase 00-baseline first")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PlaybookError(f"{path} is corrupt ({e}); delete it and re-run 00-baseline") from e
