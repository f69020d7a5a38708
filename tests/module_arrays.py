"""Test helper: a function of the primitive grid with its module's NumPy arrays converted.

Grid cases (``tests/primitive_grid.py``) read a few constant arrays from their module: a
``where`` condition, labels, index arrays. Code written for another array library or device
holds those in that library; :func:`with_module_arrays` rebuilds the function so that it does.
"""

import types

import numpy as np


def with_module_arrays(fun, convert):
    """``fun`` with every NumPy array among its module globals replaced by ``convert(array)``;
    lambdas among its defaults are rebuilt the same way."""
    if not isinstance(fun, types.FunctionType):
        return fun
    namespace = {
        name: convert(value) if isinstance(value, np.ndarray) else value
        for name, value in fun.__globals__.items()
    }
    defaults = None
    if fun.__defaults__ is not None:
        defaults = tuple(with_module_arrays(value, convert) for value in fun.__defaults__)
    rebuilt = types.FunctionType(fun.__code__, namespace, fun.__name__, defaults, fun.__closure__)
    rebuilt.__kwdefaults__ = fun.__kwdefaults__
    return rebuilt
