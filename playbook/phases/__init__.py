"""The ladder's phases, one module each, in ladder order; playbook/ladder.py tries them.

    from playbook.phases import get_phase
    get_phase("gemm").candidates(ctx)        # what the phase would build here (or raises Skip)

A ladder phase module (cudagraph ... tuning) defines NUMBER, NAME, WHAT (one line), KEEP_IF
("not_slower" or "faster"), candidates(ctx) -> [knobs, ...] (raise Skip("why") when it cannot apply
here, or when what it has measured says no candidate can win) and apply(pipeline, knobs); it may define
BUDGET_S, the seconds its candidates may spend building. baseline and verify define run(run, result,
iters, warmup) instead.
"""
import importlib

from ..errors import choose

NAMES = ("baseline", "cudagraph", "attention", "gemm", "fusion", "kernels", "tuning", "verify")


class Skip(Exception):
    """Raised by candidates() when a phase cannot apply here; the message says why."""


def get_phase(name):
    choose("phase", name, NAMES)
    return importlib.import_module(f"{__name__}.{name}")


def available():
    """The phases that exist as modules, in ladder order."""
    out = []
    for name in NAMES:
        try:
            out.append(get_phase(name))
        except ModuleNotFoundError:
            continue
    return out
