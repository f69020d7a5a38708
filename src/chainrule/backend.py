"""The one place that knows which array module does the arithmetic.

Everything else in chainrule reaches array math through ``xp`` (and the few helpers here), so that
swapping NumPy for another array module with NumPy's API is a change to this file alone.
"""

from __future__ import annotations

import numpy as _numpy

#: The array module every primitive computes with.
xp = _numpy

#: The concrete array type of the backend.
ndarray = _numpy.ndarray

#: Types that count as "a plain value" (not traced) on the hot path.
SCALAR_TYPES = (int, float, bool, complex, _numpy.number, _numpy.bool_)


def asarray(value, dtype=None):
    """Turn ``value`` into a backend array without copying when it already is one."""
    return xp.asarray(value, dtype=dtype)


def is_array(value) -> bool:
    return isinstance(value, ndarray)


def is_float_dtype(dtype) -> bool:
    # The dtype's kind letter: "f" real floating, "c" complex (cheaper than issubdtype).
    return xp.dtype(dtype).kind in "fc"


def finfo(dtype):
    return xp.finfo(dtype)


def default_float_dtype():
    return xp.float64
