"""The correctness gate: every tensor of a phase's outputs against the untouched model's.

    leaves = flatten(outputs)                       # {"logits": tensor, "past.0": tensor, ...}
    verdict = compare(leaves, reference, dtype)     # {"correct": bool, "max_abs_diff": ..., "rel_err": ...}

Pass: every leaf finite where the reference is (NaN never passes), integer leaves equal, and each
floating leaf's relative error ||out - ref|| / ||ref|| within the allowed error. In fp32 the reference
is the untouched model's output and the allowed error the fp32 tolerance. In bf16/fp16 two correct
implementations differ by rounding that grows with depth, so the judge is the same model run in fp32
on the same (rounded) weights: a phase passes when it is within the dtype's tolerance of it, or no
more than twice as far from it as the untouched model is.
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


def _errors(got, ref):
    """max abs diff and relative L2 error of got against ref (finite entries), or None if non-finite differs."""
    o, r = got.double(), ref.double()
    if not torch.equal(torch.isfinite(o), torch.isfinite(r)) or torch.isnan(o).any():
        return None
    finite = torch.isfinite(r)
    diff = (o - r)[finite]
    if not diff.numel():
        return 0.0, 0.0
    return diff.abs().max().item(), (diff.norm() / r[finite].norm().clamp_min(1e-30)).item()


def allowed_error(dtype, baseline_err=None):
    """The relative error a phase may have against the fp32 reference: the dtype's tolerance, or twice
    the untouched model's own error in that dtype when that is larger (bf16 logits of a deep model)."""
    tol = TOLERANCES.get(dtype, 1e-4)
    return max(tol, 2 * baseline_err) if baseline_err else tol


def compare(outputs, reference, dtype, precise=None, baseline_err=None):
    """Compare output leaves with the untouched model's (reference) and, for fp16/bf16 runs, with the
    same model run in fp32 on the same rounded weights (precise). Returns a JSON-ready verdict:
    max_abs_diff and rel_err against the untouched model; precise_err against fp32; correct."""
    got = snapshot(outputs)
    tol = allowed_error(dtype, baseline_err)
    verdict = {"correct": True, "max_abs_diff": 0.0, "rel_err": 0.0, "precise_err": None, "tolerance": tol,
               "judged_against": "fp32 reference" if precise else "untouched model", "problems": []}
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
        errs = _errors(out, ref)
        if errs is None:
            verdict["correct"] = False
            verdict["problems"].append(f"{key}: non-finite values (NaN or inf) where the reference has none")
            continue
        max_abs, rel = errs
        verdict["max_abs_diff"] = max(verdict["max_abs_diff"], max_abs)
        verdict["rel_err"] = max(verdict["rel_err"], rel)
        judged = rel
        if precise is not None:
            judged = _errors(out, precise[key])[1]
            verdict["precise_err"] = max(verdict["precise_err"] or 0.0, judged)
        if not judged <= tol:
            verdict["correct"] = False
            verdict["problems"].append(f"{key}: relative error {judged:.3g} against the {verdict['judged_against']} "
                                       f"> allowed {tol:.3g} (max abs diff to the untouched model {max_abs:.3g})")
    if any("non-finite" in p for p in verdict["problems"]):
        verdict["max_abs_diff"] = verdict["rel_err"] = None      # JSON has no NaN; None reads as 'not a number'
    return verdict
