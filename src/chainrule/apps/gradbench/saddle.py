"""gradbench ``saddle``: min over x of max over y of f(x, y) = (x₁² + y₁²) − (x₂² + y₂²) by nested
gradient descent, with the outer and the inner gradients each by forward (``f``) or reverse
(``r``) mode: functions ``ff``, ``fr``, ``rf``, ``rr``.

The outer objective x ↦ max_y f(x, y) runs the inner descent to its end; the outer gradient is
taken through that whole inner run, inner gradients included (nested AD). The output is the
outer minimiser followed by the maximiser for it, found with the outer mode.

Here (x₁, y₁) and (x₂, y₂) are the argument pairs of the eval's f: the first point holds
(x₁, y₁), the second (x₂, y₂).
"""

from __future__ import annotations

import numpy as np

from ... import numpy as cnp
from . import descent
from .common import EvalFunction, floats, to_list


def saddle_function(first, second):
    """(x₁² + y₁²) − (x₂² + y₂²), with first = (x₁, y₁) and second = (x₂, y₂)."""
    return first @ first - second @ second


def negated_saddle_function(second, first):
    """−f(first, second), written out, as a function of ``second`` (the maximiser of f over
    ``second`` is the minimiser of −f, and writing −f directly spares the descent one recorded
    negation per evaluation)."""
    return second @ second - first @ first


def saddle_point(start, outer: str, inner: str):
    def inner_maximum(first):
        # The inner descent's value-and-gradient is one staged program (chainrule.jit) of
        # ``second`` and ``first``: the outer derivative, which traces ``first``, then passes
        # one tracer level per primitive of it.
        lowest = descent.descend(negated_saddle_function, start, inner, (first,), staged=True)
        return -lowest[1]

    first = descent.argmin(inner_maximum, start, outer)
    second = descent.descend(negated_saddle_function, start, outer, (first,), staged=True)[0]
    return cnp.concatenate([first, second])


def _prepare(raw):
    start = floats(raw["start"])
    if start.shape != (2,):
        raise ValueError(f"saddle: start must hold 2 numbers, got shape {start.shape}")
    return start


def _variant(outer: str, inner: str) -> EvalFunction:
    return EvalFunction(
        _prepare, lambda start: np.asarray(saddle_point(start, outer, inner)), to_list
    )


FUNCTIONS = {outer + inner: _variant(outer, inner) for outer in "fr" for inner in "fr"}
