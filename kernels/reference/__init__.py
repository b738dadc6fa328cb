"""PyTorch eager reference kernels: the specification of every op and the oracle of the tests.

Short and obviously right rather than fast. Backwards are autograd of the forwards (``torch.func.vjp``),
so that a hand-written backward elsewhere is always checked against an independent derivation.
"""
