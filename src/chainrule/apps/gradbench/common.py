"""What every eval module shares: the shape of one eval function and JSON conversions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EvalFunction:
    """One function of an eval module: ``prepare`` turns the JSON input into the arguments
    (untimed by the eval's measure, reported as "prepare"), ``compute`` is what is timed on
    every run, and ``to_json`` turns the last run's result into the JSON output."""

    prepare: Callable[[Any], Any]
    compute: Callable[[Any], Any]
    to_json: Callable[[Any], Any]


def floats(value) -> np.ndarray:
    """A JSON list (of lists) of numbers as a float64 array."""
    return np.asarray(value, dtype=np.float64)


def to_list(value) -> Any:
    """An array (or a 0-d value) as plain JSON numbers: lists of floats, or one float."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()
