"""The correctness gate: every tensor of a phase's outputs against the untouched model's.

    leaves = flatten(outputs)                       # {"logits": tensor, "past.0": tensor, ...}
    verdict = compare(leaves, reference, dtype)     # {"correct": bool, "max_abs_diff": ..., "rel_err": ...}

Pass: every leaf finite where the reference is, and for each floating leaf the relative error
||out - ref|| / ||ref|| within the dtype's tolerance. NaN never passes. Integer leaves must be equal.
"""
import torch

from .errors import PlaybookError

# Relative L2 tolerance per dtype. Two correct implementations differ by reordered sums:
# fp32 by ~1e-6, bf16 (8-bit mantissa, many layers deep) by up to ~1e-2.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2, torch.float64: 1e-7}


def flatten(obj, prefix=""):
    """Every tensor in a nested structure (tuple, list, dict, ModelOutput), keyed by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "output": obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    if not items and hasattr(obj, "to_tuple"):
        items = enumerate(obj.to_tuple())
    leaves = {}
    for key, value in items:
        leaves.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def snapshot(outputs):
    """Detached CPU copies of every output tensor: what a phase keeps as its reference."""
    return {k: v.detach().to("cpu", copy=True) for k, v in flatten(outputs).items()}


def check_inputs(args, kwargs):
    """Refuse all-zero floating inputs: they hide unwritten outputs and wrong indexing."""
    for name, t in flatten({"args": list(args), "kwargs": kwargs}).items():
        if t.is_floating_point() and t.numel() > 0 and not t.abs().max().item() > 0:
            raise PlaybookError(f"example input {name} is all zeros; correctness on zeros proves nothing: "
                                "give random inputs")


def compare(outputs, reference, dtype):
    """Compare output leaves with the reference leaves; returns a JSON-ready verdict."""
    got = snapshot(outputs)
    tol = TOLERANCES.get(dtype, 1e-4)
    verdict = {"correct": True, "max_abs_diff": 0.0, "rel_err": 0.0, "tolerance": tol, "problems": []}
    if set(got) != set(reference):
        verdict["correct"] = False
        verdict["problems"].append(f"outputs {sorted(got)} differ from the reference's {sorted(reference)}")
        return verdict
    for key, ref in reference.items():
        out = got[key]
        if out.shape != ref.shape:
            verdict["correct"] = False
            verdict["problems"].append(f"{key}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
            continue
        if not ref.is_floating_point():
            if not torch.equal(out, ref):
                verdict["correct"] = False
                verdict["problems"].append(f"{key}: integer output differs")
            continue
        o, r = out.double(), ref.double()
        if not torch.equal(torch.isfinite(o), torch.isfinite(r)) or torch.isnan(o).any():
            verdict["correct"] = False
            verdict["problems"].append(f"{key}: non-finite values (NaN or inf) where the reference has none")
            continue
        finite = torch.isfinite(r)
        diff = (o - r)[finite]
        max_abs = diff.abs().max().item() if diff.numel() else 0.0
        rel = (diff.norm() / r[finite].norm().clamp_min(1e-30)).item() if diff.numel() else 0.0
        verdict["max_abs_diff"] = max(verdict["max_abs_diff"], max_abs)
        verdict["rel_err"] = max(verdict["rel_err"], rel)
        if not rel <= tol:
            verdict["correct"] = False
            verdict["problems"].append(f"{key}: relative error {rel:.3g} > tolerance {tol:g} "
                                       f"(max abs diff {max_abs:.3g})")
    if any("non-finite" in p for p in verdict["problems"]):
        verdict["max_abs_diff"] = verdict["rel_err"] = None      # JSON has no NaN; None reads as 'not a number'
    return verdict
