"""What every eval module shares: the shape of one eval function, the functions of an eval of a
function and its gradient, and JSON conversions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import transforms


@dataclass(frozen=True)
class EvalFunction:
    """One function of an eval module: ``prepare`` turns the JSON input into the arguments
    (untimed by the eval's measure, reported as "prepare"), ``compute`` is what is timed on
    every run, and ``to_json`` turns the last run's result into the JSON output."""

    prepare: Callable[[Any], Any]
    compute: Callable[[Any], Any]
    to_json: Callable[[Any], Any]


def primal_and_gradient(
    prepare: Callable[[Any], tuple],
    primal: Callable,
    primal_json: Callable[[Any], Any] = float,
    differentiated: Callable | None = None,
) -> dict:
    """The ``FUNCTIONS`` of an eval of one function and its gradient: ``"primal"`` runs ``primal``
    on the tuple of arguments ``prepare`` makes (written back by ``primal_json``), ``"gradient"``
    the reverse-mode gradient of ``differentiated`` (``primal`` unless given) with respect to
    the first of them (written back as a list)."""
    gradient = transforms.grad(primal if differentiated is None else differentiated)
    return {
        "primal": EvalFunction(prepare, lambda args: primal(*args), primal_json),
        "gradient": EvalFunction(prepare, lambda args: gradient(*args), to_list),
    }


def floats(value) -> np.ndarray:
    """A JSON list (of lists) of numbers as a float64 array."""
    return np.asarray(value, dtype=np.float64)


def to_list(value) -> Any:
    """An array (or a 0-d value) as plain JSON numbers: lists of floats, or one float."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()
