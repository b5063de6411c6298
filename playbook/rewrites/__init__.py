"""Model rewrites the ladder's phases apply, each one generic and each one checked by the correctness gate.

    attention.py    phase 2: route attention through F.scaled_dot_product_attention; pick its backend
    fusion.py       phase 4: fuse sibling projections (Q/K/V, gate/up) into one GEMM
    kernel_swap.py  phase 5: swap RMSNorms, add + norm pairs and gated activations for playbook/kernels/
    count.py        what one eager step launches: GEMMs, batched matmuls, attention calls

Every rewrite edits the workload's model in place, names the sites it changed (module paths, so a
recipe rebuilds the same model in a fresh process) and says why when it finds nothing to change.
"""
from .count import count_ops  # noqa: F401
