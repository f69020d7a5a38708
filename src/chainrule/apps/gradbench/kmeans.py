"""gradbench ``kmeans``: the k-means cost Σ_i min_j |C_j − P_i|² and the Newton direction
J·H⁻¹ for the centroids, where J is the gradient and H the (diagonal) Hessian of the cost.

The Hessian of this cost is diagonal (each coordinate of each centroid only meets itself), so
its diagonal is the Hessian-vector product with the all-ones vector: one forward-over-reverse
pass (``jvp`` of ``grad``) gives the gradient as its primal output and the diagonal as its
tangent, without ever forming the (kd)×(kd) Hessian.

Squared distances come from |p|² − 2 p·c + |c|² as one matrix product, so the cost of all
n×k distances is one GEMM.
"""

from __future__ import annotations

import numpy as np

from ... import numpy as cnp
from ... import transforms
from .common import EvalFunction, floats, to_list


def cost(centroids, points):
    squared_points = np.sum(points * points, axis=1, keepdims=True)  # (n, 1), constant
    distances = (
        squared_points
        - 2.0 * cnp.matmul(points, cnp.transpose(centroids))
        + cnp.sum(centroids * centroids, axis=1)[None, :]
    )
    return cnp.sum(cnp.min(distances, axis=1))


_gradient = transforms.grad(cost)


def newton_direction(centroids, points):
    gradient, hessian_diagonal = transforms.jvp(
        lambda c: _gradient(c, points), (centroids,), (np.ones_like(centroids),)
    )
    return np.asarray(gradient) / np.asarray(hessian_diagonal)


def _prepare(raw):
    return floats(raw["centroids"]), floats(raw["points"])


FUNCTIONS = {
    "cost": EvalFunction(_prepare, lambda args: cost(*args), float),
    "dir": EvalFunction(_prepare, lambda args: newton_direction(*args), to_list),
}
