"""What every kernel launcher shares: can Triton run on this tensor, a 2-D row view of it, and can it launch with
Programmatic Dependent Launch here."""
import functools
import os


INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device(name, *tensors):
    """Triton needs a CUDA or ROCm tensor, or a CPU tensor in the interpreter (tests; slow)."""
    for t in tensors:
        if t.device.type == "cuda":
            continue
        if t.device.type == "cpu" and INTERPRET:
            continue
        raise RuntimeError(
            f"playbook.kernels.{name}: Triton kernels run on CUDA/ROCm GPUs; got a {t.device.type} tensor. On a CPU, "
            f"set TRITON_INTERPRET=1 before importing kernels (the interpreter checks correctness, not speed), "
            f"or use playbook.kernels.reference.{name}.")


def rows(x, n):
    """x viewed as [rows, n] with a unit stride along n (a copy only when no such view exists)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return x2


def zero_counters(cache, device, n):
    """int32 zeros [n] on device, made once per (device, n) and kept in cache: the counters through which the
    last program of a split launch finds it is last (it combines, then sets its counter back to zero)."""
    key = (str(device), n)
    if key not in cache:
        import torch
        cache[key] = torch.zeros(n, dtype=torch.int32, device=device)
    return cache[key]


def sm_count(device):
    """The GPU's SM (CU) count; 4 off a GPU (the interpreter), so grids sized from it stay small there."""
    import torch
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def next_pow2(n):
    return 1 << max(0, (int(n) - 1).bit_length())


def warps_for(elements):
    """num_warps for a program that touches this many elements of a row block."""
    if elements >= 16384:
        return 16
    if elements >= 4096:
        return 8
    if elements >= 1024:
        return 4
    return 2


def pdl_here(device):
    """Programmatic Dependent Launch needs an NVIDIA GPU of compute capability 9 or more (not Triton's
    interpreter, not ROCm). A launcher asked for PDL where it cannot run launches as before."""
    import torch
    device = torch.device(device)
    return device.type == "cuda" and not INTERPRET and torch.version.hip is None and _sm90(device.index)


def pdl_launch(pdl, device):
    """The launch options of a kernel with a PDL constexpr: {"PDL": True, "launch_pdl": True} where pdl is asked
    for and `pdl_here` says it can run, else {}."""
    return {"PDL": True, "launch_pdl": True} if pdl and pdl_here(device) else {}


@functools.lru_cache(maxsize=None)
def _sm90(index):
    """The GPU's capability, asked once (each launch that wants PDL checks it)."""
    import torch
    return torch.cuda.get_device_capability(index)[0] >= 9
