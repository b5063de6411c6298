"""`custom`: your own nn.Module. `--model package.module:function`, where function returns (model, example_inputs).

    # mypkg/models.py
    def make(device=None, dtype=None):          # both arguments optional
        model = MyNet().eval()
        return model, (torch.randn(1, 3, 224, 224),)     # a tuple of positional inputs, or a dict of kwargs

    python -m playbook run --workload custom --model mypkg.models:make

Floating inputs and the model are moved to the run's device and dtype. Outputs may be tensors or nested
structures of them (tuples, dicts, Hugging Face ModelOutputs); every tensor in them is compared.
"""
import importlib
import inspect

import torch

from ..errors import PlaybookError
from .base import Workload, count_weight_bytes


def parse_spec(spec):
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise PlaybookError(f"--model {spec!r} is not package.module:function "
                            "(for example mypkg.models:make)")
    return module, func


def load(spec):
    module_name, func_name = parse_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PlaybookError(f"--model {spec!r}: cannot import {module_name!r} ({e}); "
                            "is its folder on PYTHONPATH or the package installed?") from e
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise PlaybookError(f"--model {spec!r}: {module_name!r} has no function {func_name!r}")
    return fn


def _move(x, device, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_move(v, device, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _move(v, device, dtype) for k, v in x.items()}
    return x


def build(spec, device, dtype, seed=0, weights_via=None):
    fn = load(spec)
    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if k in accepted}
    torch.manual_seed(seed)
    result = fn(**kwargs)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise PlaybookError(f"--model {spec!r} must return (model, example_inputs) with model an nn.Module; "
                            f"it returned {type(result).__name__}")
    model, inputs = result
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list, dict)):
        raise PlaybookError(f"--model {spec!r}: example_inputs must be a tuple of positional inputs or a dict "
                            f"of keyword inputs, not {type(inputs).__name__}")
    if weights_via is not None:
        model, inputs = model.to(dtype=weights_via), _move(inputs, "cpu", weights_via)
    model = model.to(device=device, dtype=dtype).eval()
    inputs = _move(inputs, device, dtype)
    args, kw = ((), inputs) if isinstance(inputs, dict) else (tuple(inputs), {})
    return Workload(name="custom", preset="", model=model, args=args, kwargs=kw,
                    weight_bytes=count_weight_bytes(model), flops=None,
                    description=f"{type(model).__name__} from {spec}")
