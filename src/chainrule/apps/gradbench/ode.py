"""gradbench ``ode``: s steps of classical Runge-Kutta on y0' = x0, yi' = xi·y(i−1) from y(0) = 0
over t in [0, 2], and the gradient of the last component of y(2) with respect to x by reverse mode.

Each step is a handful of whole-vector operations, so the recorded graph has O(s) nodes whatever
n is.
"""

from __future__ import annotations

from ... import numpy as cnp
from .common import floats, primal_and_gradient, to_list


def _rate(head, tail, y):
    """The right-hand side (x0, x1·y0, x2·y1, ...), given head = x[:1] and tail = x[1:]."""
    return cnp.concatenate([head, tail * y[:-1]])


def solve(x, steps: int):
    h = 2.0 / steps
    y = cnp.zeros_like(x)
    head, tail = x[:1], x[1:]
    for _ in range(steps):
        k1 = _rate(head, tail, y)
        k2 = _rate(head, tail, y + (h / 2.0) * k1)
        k3 = _rate(head, tail, y + (h / 2.0) * k2)
        k4 = _rate(head, tail, y + h * k3)
        y = y + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
    return y


def last_component(x, steps: int):
    return solve(x, steps)[-1]


def _prepare(raw):
    return floats(raw["x"]), int(raw["s"])


FUNCTIONS = primal_and_gradient(_prepare, solve, to_list, differentiated=last_component)
