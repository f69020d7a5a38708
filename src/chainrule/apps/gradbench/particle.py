"""gradbench ``particle``: choose the control w so that a charged particle, pushed by two fixed
charges at (10, 10 − w) and (10, 0), crosses the x axis at the origin.

The trajectory is naive Euler integration (Δt = 0.1) from x = (0, 8), ẋ = (0.75, 0), with the
acceleration −∇ₓp(x; w), p(x; w) = Σ 1/|x − charge|, until the next position would have y ≤ 0;
linear interpolation then gives the crossing point x(t_f), and the cost is x₀(t_f)². The outer
descent on w differentiates through the whole trajectory, including every inner gradient ∇ₓp
(nested AD). Functions ``ff``, ``fr``, ``rf``, ``rr``: outer then inner mode.
"""

from __future__ import annotations

import numpy as np

from ... import numpy as cnp
from ...transforms.jit import jit
from . import descent
from .common import EvalFunction

TIME_STEP = 1e-1
FIXED_CHARGES = np.array([[10.0, 10.0], [10.0, 0.0]])
MOVABLE = np.array([[0.0, 1.0], [0.0, 0.0]])  # w moves the first charge down


def potential(position, charges):
    """p(x) = Σ 1/|x − charge| over the rows of ``charges``."""
    offsets = position - charges  # row i: x − charge i (position broadcasts over the rows)
    return cnp.sum(cnp.sum(offsets * offsets, axis=1) ** -0.5)


#: ∇ₓp(x; charges) by each mode, staged once into a flat program (:func:`chainrule.jit`): the
#: outer descent's derivative then passes one tracer level per primitive of the gradient, instead
#: of an inner transform's levels on every operation of ``potential`` at each Euler step.
FIELD_GRADIENTS = {mode: jit(gradient(potential)) for mode, gradient in descent.GRADIENTS.items()}


def crossing_cost(w, inner: str):
    """x₀(t_f)² for control ``w`` (a 1-vector), the field's gradient taken in mode ``inner``."""
    charges = FIXED_CHARGES - w[0] * MOVABLE  # rows: (10, 10 − w), (10, 0)
    field_gradient = FIELD_GRADIENTS[inner]
    position = np.array([0.0, 8.0])
    velocity = np.array([0.75, 0.0])
    while True:
        field = field_gradient(position, charges)  # the acceleration is −field
        next_position = position + TIME_STEP * velocity
        if not cnp.stop_gradient(next_position)[1] > 0:  # a test of the value: nothing recorded
            break
        position = next_position
        velocity = velocity - TIME_STEP * field
    time_to_axis = -position[1] / velocity[1]
    crossing = position + time_to_axis * velocity
    return crossing[0] * crossing[0]


def optimal_control(w0: float, outer: str, inner: str) -> float:
    start = np.array([w0])
    w = descent.argmin(lambda w: crossing_cost(w, inner), start, outer)
    return float(np.asarray(w)[0])


def _prepare(raw):
    return float(raw["w"])


def _variant(outer: str, inner: str) -> EvalFunction:
    return EvalFunction(_prepare, lambda w0: optimal_control(w0, outer, inner), float)


FUNCTIONS = {outer + inner: _variant(outer, inner) for outer in "fr" for inner in "fr"}
