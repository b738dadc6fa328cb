"""Public differentiable ops. One module per kernel family; each op picks a backend (see multialign._backend)."""
from .gram import gram, gram_matvec, mmd2  # noqa: F401
