"""Open or create the run a notebook or the chain works in, from the notebooks' parameters.

    run = open_run(workload="tiny", device="cpu", target_ms=5.0)       # new reports/<id>/
    run = open_run(run_dir="reports/20261121-120000-tiny")             # the same run, in another notebook

A new run records its parameters, the device and the library versions in run.json. Opening an
existing run with different workload parameters is refused: one run, one model.
"""
import datetime as dt
import importlib.metadata
import os
import platform
from pathlib import Path

import torch

from .devices import describe, dtype_name, resolve_device, resolve_dtype
from .errors import PlaybookError
from .state import Run, new_run_id
from .workloads import check, default_preset, normalize_model

REPORTS = Path(os.environ.get("PLAYBOOK_REPORTS", "reports"))
# Inductor's compile caches, shared by the runs of this machine: a graph compiled once (the kept recipe,
# in every later phase and run) is loaded, not compiled again. The key is the graph, the settings and
# the torch version, so sharing is safe; PLAYBOOK_COMPILE_CACHE moves it (a fresh folder: a cold start).
COMPILE_CACHE = Path.home() / ".cache" / "inference-playbook" / "inductor"


def compile_cache():
    return str(Path(os.environ.get("PLAYBOOK_COMPILE_CACHE") or COMPILE_CACHE).resolve())
WORKLOAD_KEYS = ("workload", "preset", "model", "options", "device", "dtype")


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "hip": torch.version.hip}
    for name in ("transformers", "triton"):      # read from the installed metadata: importing transformers
        try:                                      # only to ask took 1.8 s of every run's start on a 2-core CPU
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def recorded(params, key):
    """A workload parameter as a run recorded it (runs made before options existed have none)."""
    return params.get(key, {} if key == "options" else None)


def parse_options(options):
    """{name: value} from a dict, or from "name=value" strings (the command line's --option)."""
    if not options:
        return {}
    if isinstance(options, dict):
        return dict(options)
    out = {}
    for item in ([options] if isinstance(options, str) else options):
        for part in filter(None, (s.strip() for s in item.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise PlaybookError(f"option {part!r} is not name=value (e.g. --option action_horizon=10)")
            out[name.strip()] = value.strip()
    return out


def positive_number(value, what, unit, example):
    """value as a positive, finite float, or None when it is not given; a bad one is refused by name."""
    if value in (None, "", 0):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlaybookError(f"{what} {value!r} is not a number of {unit} (e.g. {example})") from None
    if not number > 0 or number == float("inf"):
        raise PlaybookError(f"{what} {value!r} must be a positive, finite number of {unit}")
    return number


def check_target(target_ms):
    return positive_number(target_ms, "target", "milliseconds", "--target-ms 2.5")


def auto_workload(workload, preset, device):
    """(workload, preset) with workload "auto" resolved: llama 1b on a GPU, tiny on a CPU."""
    if workload != "auto":
        return workload, preset
    gpu = resolve_device(device).type == "cuda"
    return ("llama", preset or "1b") if gpu else ("tiny", preset or "tiny")


def resolve_params(workload="tiny", preset="", model="", device="auto", dtype="auto", target_ms=None,
                   iters=100, warmup=10, seed=0, options=None):
    """Validate everything a user can get wrong, before any model is built."""
    model = normalize_model(workload, model)
    options = check(workload, preset, model, parse_options(options))
    dev = resolve_device(device)
    if int(iters) < 5 or int(warmup) < 0:
        raise PlaybookError(f"iters must be at least 5 and warmup at least 0 (got {iters}, {warmup})")
    return {"workload": workload, "preset": preset or default_preset(workload, dev.type, model), "model": model,
            "options": options,
            "device": dev.type, "dtype": dtype_name(resolve_dtype(dtype, dev)),
            "target_ms": check_target(target_ms), "iters": int(iters), "warmup": int(warmup), "seed": int(seed)}


def open_run(run_dir="", **params):
    """The run at run_dir (created when it holds none yet), or a new one under reports/."""
    if run_dir and (Path(run_dir) / "run.json").exists():
        run = Run.open(run_dir)
        if params:
            wanted = resolve_params(**params)
            clash = {k: (recorded(run.params, k), wanted[k]) for k in WORKLOAD_KEYS if recorded(run.params, k) != wanted[k]}
            if clash:
                raise PlaybookError(f"run {run_dir} was made with different parameters "
                                    f"({', '.join(f'{k}: {a!r} there, {b!r} here' for k, (a, b) in clash.items())}); "
                                    "use a new run_dir or the run's own parameters")
        return run
    p = resolve_params(**params)
    path = Path(run_dir) if run_dir else REPORTS / new_run_id(p["workload"], p["preset"])
    device = resolve_device(p["device"])
    p.update(run_id=path.name, created=dt.datetime.now().isoformat(timespec="seconds"),
             versions=versions(), device_info=describe(device), compile_cache=compile_cache())
    return Run.create(path, p)
