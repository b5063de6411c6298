"""Our Triton kernels for the memory-bound ops of a transformer step, each a torch custom op.

    from playbook.kernels import rms_norm, fused_add_rms_norm, gelu_tanh_and_mul, silu_and_mul
    from playbook.kernels import reference        # the pure-torch definitions they are tested against
    from playbook.kernels.gemv import gemv        # a decode step's projections, the norm and the add folded in
    from playbook.kernels.decode_attention import decode_attention_filled

They run on CUDA and ROCm GPUs, and on CPU tensors under TRITON_INTERPRET=1 (set before import), which
is how CI tests them.
"""
from . import reference
from .activations import act_and_mul, gelu_tanh_and_mul, silu_and_mul
from .norms import fused_add_rms_norm, rms_norm

__all__ = ["rms_norm", "fused_add_rms_norm", "gelu_tanh_and_mul", "silu_and_mul", "act_and_mul", "reference"]
