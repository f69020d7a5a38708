"""gradbench ``gmm``: the log-posterior of a Gaussian mixture with a Wishart prior (ADBench's
formulation) and its gradient with respect to all parameters (alpha, mu, q, l) by reverse mode.

Each component's precision factor is Q_k = diag(exp q_k) + L_k, L_k strictly lower triangular
with l_k filled column by column. All n points and k components are handled at once: the scaled
points Q_k (x_n − μ_k) are one (k, n, d) array, Q_k x_n − Q_k μ_k from two batched matrix
products (each Q_kᵀ gathered in one take from l and exp q), their squared norms one einsum, and
the per-point log-sum-exp over components one reduction.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ... import numpy as cnp
from ... import transforms
from .common import EvalFunction, floats, to_list


@functools.cache
def _lower_triangle_index(d: int) -> np.ndarray:
    """(d, d) positions into l padded with one trailing zero: entry [j, i] for j > i is the
    column-by-column position of L[j, i] in l, every other entry points at the padding zero."""
    size = d * (d - 1) // 2
    index = np.full((d, d), size, dtype=np.intp)
    position = 0
    for i in range(d):
        for j in range(i + 1, d):
            index[j, i] = position
            position += 1
    return index


@functools.cache
def _factor_transposed_index(d: int) -> np.ndarray:
    """(d, d) positions into [l | exp q | 0] (lengths d(d−1)/2, d, 1) giving Q_kᵀ: entry [i, j]
    for j > i is L[j, i]'s place in l, [i, i] is exp q_i's, every other one the trailing zero."""
    size = d * (d - 1) // 2
    index = _lower_triangle_index(d).T.copy()  # [i, j] = L[j, i]'s place; size where none
    index[index == size] = size + d
    index[np.arange(d), np.arange(d)] = size + np.arange(d)
    return index


def _logsumexp(values, axis):
    shift = cnp.stop_gradient(cnp.max(values, axis=axis, keepdims=True))
    return cnp.log(cnp.sum(cnp.exp(values - shift), axis=axis)) + cnp.squeeze(shift, axis=axis)


def _log_gamma_distribution(a: float, p: int) -> float:
    return 0.25 * p * (p - 1) * math.log(math.pi) + sum(
        math.lgamma(a + 0.5 * (1 - j)) for j in range(1, p + 1)
    )


def log_posterior(alpha, mu, q, l, x, gamma: float, m: int):
    n, d = x.shape
    k = mu.shape[0]
    diagonal = cnp.exp(q)  # (k, d)
    # Q_k transposed, all k at once: one gather from [l | exp q | 0] (upper part of Q_kᵀ from
    # l, diagonal from exp q, zeros below), so the scaling is one batched product.
    source = cnp.concatenate([l, diagonal, cnp.zeros_like(l[:, :1])], axis=1)
    q_transposed = cnp.take(source, _factor_transposed_index(d), axis=1)  # (k, d, d)
    # Q_k (x_n − μ_k) as Q_k x_n − Q_k μ_k, (k, n, d): no (k, n, d) array of centred points, and
    # x is a constant, so the first product pulls back to Q_k only
    scaled = cnp.matmul(x, q_transposed) - cnp.matmul(mu[:, None, :], q_transposed)
    sum_q = cnp.sum(q, axis=1)  # (k,)
    squared = cnp.einsum(
        "knd,knd->kn", scaled, scaled
    )  # |Q_k (x_n − μ_k)|², no (k, n, d) temporary
    main_term = alpha[:, None] + sum_q[:, None] - 0.5 * squared  # (k, n)
    constant = -n * d * 0.5 * math.log(2 * math.pi)
    likelihood = constant + cnp.sum(_logsumexp(main_term, axis=0)) - n * _logsumexp(alpha, axis=0)
    wishart_n = d + m + 1
    prior_constant = wishart_n * d * (
        math.log(gamma) - 0.5 * math.log(2)
    ) - _log_gamma_distribution(0.5 * wishart_n, d)
    frobenius = cnp.sum(diagonal * diagonal) + cnp.sum(l * l)
    prior = -(0.5 * gamma * gamma * frobenius - m * cnp.sum(sum_q)) + k * prior_constant
    return likelihood + prior


_gradient = transforms.grad(log_posterior, argnums=(0, 1, 2, 3))


def _prepare(raw):
    d, k = int(raw["d"]), int(raw["k"])
    alpha = floats(raw["alpha"]).reshape(k)
    mu = floats(raw["mu"]).reshape(k, d)
    q = floats(raw["q"]).reshape(k, d)
    l = floats(raw["l"]).reshape(k, d * (d - 1) // 2)
    x = floats(raw["x"]).reshape(int(raw["n"]), d)
    return alpha, mu, q, l, x, float(raw["gamma"]), int(raw["m"])


def _gradient_json(gradients):
    alpha, mu, q, l = gradients
    return {"alpha": to_list(alpha), "mu": to_list(mu), "q": to_list(q), "l": to_list(l)}


FUNCTIONS = {
    "objective": EvalFunction(_prepare, lambda args: log_posterior(*args), float),
    "jacobian": EvalFunction(_prepare, lambda args: _gradient(*args), _gradient_json),
}
