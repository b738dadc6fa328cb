"""Triton GPU kernels: ``@triton.jit`` kernels with their launchers, one file per family.

Triton decides at decoration time whether kernels are compiled for the GPU or run by its CPU
interpreter (``TRITON_INTERPRET=1``). ``INTERPRET`` records that decision for this process, so that the
backend resolver can refuse CPU tensors when the kernels were compiled for the GPU.
"""
import triton as _triton

INTERPRET: bool = bool(_triton.knobs.runtime.interpret)
