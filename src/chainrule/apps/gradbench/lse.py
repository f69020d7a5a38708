"""gradbench ``lse``: LogSumExp written from its parts (a max, a shifted sum of exponentials, a
log), as the eval asks, and its gradient by reverse mode.

The shift ``a = max x`` cancels out of the value, so it is held constant (``stop_gradient``):
the derivative is the same, and the backward pass skips the max.
"""

from __future__ import annotations

from ... import numpy as cnp
from .common import floats, primal_and_gradient


def logsumexp(x):
    shift = cnp.stop_gradient(cnp.max(x))
    return cnp.log(cnp.sum(cnp.exp(x - shift))) + shift


def _prepare(raw):
    return (floats(raw["x"]),)


FUNCTIONS = primal_and_gradient(_prepare, logsumexp)
