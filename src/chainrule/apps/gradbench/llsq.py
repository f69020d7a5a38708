"""gradbench ``llsq``: the linear least-squares objective of cmpad and its gradient.

y(x) = ½ Σ_i (s_i − Σ_j x_j t_i^j)², t_i = −1 + 2i/(n−1), s_i = sign(t_i). The polynomial is one
matrix-vector product with the n×m Vandermonde matrix of t (built inside the timed function,
as the reference builds t inside its loop); the gradient is reverse mode over it.
"""

from __future__ import annotations

import numpy as np

from ... import numpy as cnp
from .common import floats, primal_and_gradient


def _vandermonde(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    t = -1.0 + np.arange(n, dtype=np.float64) * 2.0 / (n - 1)
    return np.vander(t, m, increasing=True), np.sign(t)


def objective(x, n: int):
    powers, s = _vandermonde(n, x.shape[0])
    residual = s - cnp.matmul(powers, x)
    return cnp.sum(residual * residual) / 2.0


def _prepare(raw):
    return floats(raw["x"]), int(raw["n"])


FUNCTIONS = primal_and_gradient(_prepare, objective)
