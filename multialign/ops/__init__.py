"""Public differentiable ops. One module per kernel family; each op picks a backend (see multialign._backend)."""
from .gram import gram, gram_matvec, mmd2  # noqa: F401
from .sinkhorn import SinkhornResult, sinkhorn, sinkhorn_divergence, sinkhorn_matrix  # noqa: F401
from .spd import (affine_invariant_distance, covariance, frechet_distance, log_euclidean_distance, spd_eigh, spd_exp, spd_invsqrt, spd_log, spd_pow, spd_sqrt, stein_divergence)  # noqa: F401
from .stress import stress  # noqa: F401
