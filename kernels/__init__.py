"""multialign.kernels: the compiled core (compute only: no autograd, no nn.Module, no I/O).

reference/  PyTorch eager, the readable specification and the test oracle
numba/      CPU kernels (njit, parallel, cached)
triton/     GPU kernels (@triton.jit + launchers); run on CPU tensors under TRITON_INTERPRET=1

Every family offers the same functions in each backend folder, with the same signatures and outputs.
Backends are imported lazily (``multialign._backend.kernel_module``) so that importing this package
never imports Numba or Triton.
"""
