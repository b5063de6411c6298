"""The inference playbook: a measured optimization ladder for batch-1 latency.

    import playbook
    fast = playbook.apply(model, example_inputs, "reports/<run>/recipe.json")   # see playbook/reuse.py
"""


def apply(model, example_inputs, recipe, **kwargs):
    """The model with a ladder run's recipe applied: a callable (playbook/reuse.py)."""
    from .reuse import apply as _apply
    return _apply(model, example_inputs, recipe, **kwargs)
