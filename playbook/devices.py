"""Which device we run on, how to wait for it, and its two ceilings (copy bandwidth, matmul rate).

    device = resolve_device("auto")          # torch.device("cuda") when a GPU is there, else cpu
    vendor(device)                           # "cuda" | "rocm" | "cpu"
    ceilings = measure_ceilings(device)      # {"copy_gbps": ..., "matmul_tflops": ...}

ROCm builds of torch also call their device "cuda"; vendor() tells them apart.
"""
import platform
import subprocess
import time

import torch

from .errors import PlaybookError, choose

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "auto"}


def resolve_device(name):
    choose("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PlaybookError(
            "--device cuda was asked for but torch sees no GPU "
            f"(torch {torch.__version__}); use --device cpu or --device auto")
    return torch.device(name)


def resolve_dtype(name, device):
    """'auto' means bfloat16 on a GPU and float32 on a CPU."""
    name = DTYPE_ALIASES.get(name, name)
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    choose("dtype", name, list(DTYPES) + list(k for k in DTYPE_ALIASES if k != "auto"))
    return DTYPES[name]


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def vendor(device):
    if device.type != "cuda":
        return "cpu"
    return "rocm" if torch.version.hip else "cuda"


def sync(device):
    """Stream-level wait (cheaper than a device-wide one, notably on ROCm)."""
    if device.type == "cuda":
        torch.cuda.current_stream().synchronize()


def describe(device):
    """Facts about the device for run.json."""
    info = {"type": device.type, "vendor": vendor(device), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    runtime=torch.version.hip or torch.version.cuda,
                    driver=_driver_version())
    else:
        info["name"] = f"CPU ({info['cpu']}, {info['threads']} threads)"
    return info


def _driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def _median_seconds(fn, device, repeats):
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def measure_ceilings(device):
    """Copy bandwidth (bytes read + written per second) and dense matmul rate, measured once per run."""
    big = (1 << 28) if device.type == "cuda" else (1 << 25)   # bytes copied: 256 MiB on a GPU, 32 MiB on a CPU
    src = torch.randn(big // 4, device=device)
    dst = torch.empty_like(src)
    copy_s = _median_seconds(lambda: dst.copy_(src), device, 20 if device.type == "cuda" else 5)
    del src, dst
    n = 8192 if device.type == "cuda" else 1024
    mm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=mm_dtype)
    b = torch.randn(n, n, device=device, dtype=mm_dtype)
    mm_s = _median_seconds(lambda: a @ b, device, 10 if device.type == "cuda" else 3)
    return {"copy_gbps": round(2 * big / copy_s / 1e9, 1),
            "matmul_tflops": round(2 * n ** 3 / mm_s / 1e12, 2),
            "matmul_dtype": dtype_name(mm_dtype)}
