import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))   # for custom-model fixtures (tests/fixture_models.py)
os.environ.setdefault("PYTHONPATH", str(ROOT))
if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors in Triton's interpreter; it must be on before playbook/kernels/ is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a GPU: run benchmarks/gpu_session.sh on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def run_params():
    return dict(workload="tiny", preset="tiny", device="cpu", dtype="float32", target_ms=None, iters=10, warmup=2)
