"""The gradient-descent solver shared by ``saddle`` and ``particle``, and the two ways of getting
the gradient it follows (forward or reverse mode).

The solver is the one the evals specify: start with step η = 1e-5; stop when the gradient's
norm or the step's length falls to 1e-5; take a step only when it lowers the objective (else
halve η); double η after every 10 steps taken in a row. Its comparisons look at values only, so
the solver itself can be differentiated through: the iterates it returns carry derivatives with
respect to anything the objective depends on (which is how saddle and particle nest AD).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from ... import numpy as cnp
from ... import transforms
from ...transforms import jacobians
from ...transforms.jit import jit

TOLERANCE = 1e-5


def reverse_gradient(function: Callable) -> Callable:
    """The gradient of scalar ``function`` by reverse mode (one recorded pass, one pull back)."""
    return transforms.grad(function)


def forward_gradient(function: Callable) -> Callable:
    """The gradient of scalar ``function`` by forward mode (every input direction pushed forward
    in one batched pass)."""
    return jacobians.jacfwd(function)


def reverse_value_and_gradient(function: Callable) -> Callable:
    """``(x, *args) ↦ (function(x, *args), ∇ₓfunction(x, *args))`` by reverse mode, from one
    pass."""
    return transforms.value_and_grad(function)


def forward_value_and_gradient(function: Callable) -> Callable:
    """``(x, *args) ↦ (function(x, *args), ∇ₓfunction(x, *args))`` by forward mode: the value
    comes out of the same pass that pushes every direction of x forward (all of them batched in
    one pass; for a one-entry ``x``, the one direction as a plain ``jvp``, which skips the
    batching)."""

    def value_and_gradient(x, *args):
        if np.size(cnp.stop_gradient(x)) == 1:
            value, tangent = transforms.jvp(
                lambda x: function(x, *args), (x,), (np.ones(np.shape(x)),)
            )
            return value, cnp.reshape(tangent, np.shape(x))
        return jacobians.forward_jacobian(function, (x, *args), 0, transform="jacfwd")

    return value_and_gradient


GRADIENTS = {"f": forward_gradient, "r": reverse_gradient}
VALUE_AND_GRADIENTS = {"f": forward_value_and_gradient, "r": reverse_value_and_gradient}


@functools.cache
def staged_value_and_gradient(function: Callable, mode: str) -> Callable:
    """``VALUE_AND_GRADIENTS[mode](function)`` staged by :func:`chainrule.jit`, once per
    (function, mode): for a ``function`` of its arguments alone (no Python decision on their
    values), whose every evaluation then replays one flat program."""
    return jit(VALUE_AND_GRADIENTS[mode](function))


def _norm(vector) -> float:
    """The Euclidean norm of ``vector``'s value (derivatives play no part in the solver's tests)."""
    # The squares summed in Python: a BLAS dot of a 2-vector costs three times as much.
    entries = np.asarray(cnp.stop_gradient(vector), dtype=np.float64).ravel().tolist()
    return math.sqrt(sum([entry * entry for entry in entries]))


def descend(function: Callable, start, mode: str = "r", args: tuple = (), staged: bool = False):
    """``(x, function(x, *args))`` at a local minimiser x of scalar ``function`` from ``start``,
    by the evals' gradient descent, gradients with respect to x by forward (``mode="f"``) or
    reverse (``"r"``) mode. ``args`` are passed through (values an outer derivative may be
    tracing); ``staged=True`` replays one staged program per evaluation
    (:func:`staged_value_and_gradient`).

    Each trial point's value and gradient come from one pass (the gradient is
    needed exactly when the trial is taken, and a value-and-gradient pass costs little more than
    the value alone): the iterates are those of evaluating the value first and the gradient only
    after accepting, with one pass per trial instead of two per accepted step."""
    if staged:
        value_and_gradient = staged_value_and_gradient(function, mode)
    else:
        value_and_gradient = VALUE_AND_GRADIENTS[mode](function)
    x = start
    fx, gx = value_and_gradient(x, *args)
    eta = 1e-5
    steps_in_a_row = 0
    while True:
        if _norm(gx) <= TOLERANCE:
            return x, fx
        if steps_in_a_row == 10:
            eta *= 2.0
            steps_in_a_row = 0
            continue
        x_next = x - eta * gx
        if _norm(cnp.stop_gradient(x) - cnp.stop_gradient(x_next)) <= TOLERANCE:
            return x, fx
        fx_next, gx_next = value_and_gradient(x_next, *args)
        if fx_next < fx:
            x, fx, gx = x_next, fx_next, gx_next
            steps_in_a_row += 1
        else:
            eta /= 2.0
            steps_in_a_row = 0


def argmin(function: Callable, start, mode: str = "r"):
    """A local minimiser of scalar ``function`` from ``start``, by the evals' gradient descent."""
    return descend(function, start, mode)[0]


def argmax(function: Callable, start, mode: str = "r"):
    """A local maximiser of scalar ``function``: the minimiser of its negation."""
    return argmin(lambda x: -function(x), start, mode)


def maximum(function: Callable, start, mode: str = "r"):
    """``function`` at its local maximiser from ``start`` (the value the descent ends with)."""
    return -descend(lambda x: -function(x), start, mode)[1]
