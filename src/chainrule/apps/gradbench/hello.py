"""gradbench ``hello``: ``square`` is x*x; ``double`` is the derivative of square, by reverse
mode."""

from __future__ import annotations

import numpy as np

from ... import transforms
from .common import EvalFunction


def square(x):
    return x * x


_derivative_of_square = transforms.grad(square)


def _scalar(value):
    return np.float64(value)


FUNCTIONS = {
    "square": EvalFunction(prepare=_scalar, compute=square, to_json=float),
    "double": EvalFunction(prepare=_scalar, compute=_derivative_of_square, to_json=float),
}
