"""multialign: fast, differentiable multimodal-alignment losses.

Fused kernels (kernel Gram reductions, log-domain Sinkhorn, stress, SPD matrix functions) written in
Triton for GPUs and Numba for CPUs, with a PyTorch reference, behind differentiable ops in
``multialign.ops``.
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402,F401
from ._backend import BACKENDS, BackendError, resolve_backend, use_backend  # noqa: E402,F401
from ._validation import set_validation, validation  # noqa: E402,F401
