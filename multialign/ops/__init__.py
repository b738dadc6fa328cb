"""Public differentiable ops. One module per kernel family; each op picks a backend (see multialign._backend)."""
from .gram import gram, gram_matvec, mmd2  # noqa: F401
from .sinkhorn import SinkhornResult, sinkhorn, sinkhorn_divergence, sinkhorn_matrix  # noqa: F401
