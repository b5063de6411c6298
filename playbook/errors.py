"""The one error type a user can cause: it says what was wrong and what to do.

    raise PlaybookError("unknown workload 'lama'; choose one of: tiny, llama, pi0, custom")

The CLI prints its message and exits 2; anything else is a bug and keeps its traceback.
"""


class PlaybookError(Exception):
    pass


def choose(kind, value, choices):
    """Raise unless value is one of choices, naming them all."""
    if value not in choices:
        raise PlaybookError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")
    return value
