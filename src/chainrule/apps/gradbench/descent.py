"""The gradient-descent solver shared by ``saddle`` and ``particle``, and the two ways of getting
the gradient it follows (forward or reverse mode).

The solver is the one the evals specify: start with step η = 1e-5; stop when the gradient's
norm or the step's length falls to 1e-5; take a step only when it lowers the objective (else
halve η); double η after every 10 steps taken in a row. Its comparisons look at values only, so
the solver itself can be differentiated through: the iterates it returns carry derivatives with
respect to anything the objective depends on (which is how saddle and particle nest AD).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ... import numpy as cnp
from ... import transforms
from ...transforms import jacobians

TOLERANCE = 1e-5


def reverse_gradient(function: Callable) -> Callable:
    """The gradient of scalar ``function`` by reverse mode (one recorded pass, one pull back)."""
    return transforms.grad(function)


def forward_gradient(function: Callable) -> Callable:
    """The gradient of scalar ``function`` by forward mode (every input direction pushed forward
    in one batched pass)."""
    return jacobians.jacfwd(function)


GRADIENTS = {"f": forward_gradient, "r": reverse_gradient}


def _norm(vector) -> float:
    """The Euclidean norm of ``vector``'s value (derivatives play no part in the solver's tests)."""
    value = np.asarray(cnp.stop_gradient(vector), dtype=np.float64).ravel()
    return math.sqrt(float(value @ value))


def argmin(function: Callable, start, gradient_by: Callable = reverse_gradient):
    """A local minimiser of scalar ``function`` from ``start``, by the evals' gradient descent."""
    gradient = gradient_by(function)
    x = start
    fx = function(x)
    gx = gradient(x)
    eta = 1e-5
    steps_in_a_row = 0
    while True:
        if _norm(gx) <= TOLERANCE:
            return x
        if steps_in_a_row == 10:
            eta *= 2.0
            steps_in_a_row = 0
            continue
        x_next = x - eta * gx
        if _norm(cnp.stop_gradient(x) - cnp.stop_gradient(x_next)) <= TOLERANCE:
            return x
        fx_next = function(x_next)
        if fx_next < fx:
            x, fx = x_next, fx_next
            gx = gradient(x)
            steps_in_a_row += 1
        else:
            eta /= 2.0
            steps_in_a_row = 0


def argmax(function: Callable, start, gradient_by: Callable = reverse_gradient):
    """A local maximiser of scalar ``function``: the minimiser of its negation."""
    return argmin(lambda x: -function(x), start, gradient_by)


def maximum(function: Callable, start, gradient_by: Callable = reverse_gradient):
    """``function`` at its local maximiser from ``start``."""
    return function(argmax(function, start, gradient_by))
