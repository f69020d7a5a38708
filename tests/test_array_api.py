"""Where the engine leaves the array API standard: the NumPy-only calls, listed and kept current.

The engine computes with NumPy's functions bound at import (the CPU hot path cannot afford a
namespace lookup per operation), so it does not yet run on a strict array-API namespace such as
``array_api_strict``: NumPy's functions silently convert those arrays to ``ndarray``. This test
names every NumPy-only ``xp.`` call in the autodiff engine, so that the list in ``docs/gpu.md``
stays exact: a new NumPy-only call, or one removed without updating the list, fails here.
"""

import ast
import pathlib

import numpy as np
import pytest

array_api_strict = pytest.importorskip("array_api_strict", reason="needs array-api-strict")

ENGINE = pathlib.Path(__file__).resolve().parents[1] / "src" / "chainrule"
ENGINE_MODULES = (
    "backend", "core", "tensor", "primitives", "ops", "reverse", "forward", "transforms",
    "batching", "linearize", "jacobians", "pytree", "array_methods",
)

#: NumPy-only names reached through ``xp`` in the engine, and what the standard offers instead.
NUMPY_ONLY = {
    "arctan": "atan",
    "array": "asarray",
    "concatenate": "concat",
    "cumsum": "cumulative_sum",
    "dtype": "the namespace's dtype objects / isdtype",
    "einsum": "no counterpart (tensordot / matmul compositions)",
    "generic": "no NumPy scalars in the standard: 0-d arrays",
    "integer": "isdtype(dtype, 'integral')",
    "ndarray": "array_api_compat.is_array_api_obj / the namespace's array type",
    "ndim": "x.ndim",
    "power": "pow",
    "transpose": "permute_dims",
    "add.at": "no counterpart (scatter-add: a one-hot matmul, or the library's own op)",
    "add.reduce": "sum",
    "maximum.reduce": "max",
}


def _xp_calls(source: str) -> set[str]:
    """Names used as ``xp.NAME`` (and ``xp.NAME.METHOD`` for ufunc methods) in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "xp":
            names.add(node.attr)
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("reduce", "at", "accumulate", "outer", "reduceat")
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "xp"
        ):
            names.add(f"{node.value.attr}.{node.attr}")
    return names


def test_the_list_of_numpy_only_calls_is_exact():
    standard = set(dir(array_api_strict)) | {"linalg"}
    used = set()
    for module in ENGINE_MODULES:
        used |= _xp_calls((ENGINE / f"{module}.py").read_text())
    numpy_only = {name for name in used if "." in name or name not in standard}
    assert numpy_only == set(NUMPY_ONLY), (
        f"new NumPy-only calls: {sorted(numpy_only - set(NUMPY_ONLY))}; "
        f"no longer used: {sorted(set(NUMPY_ONLY) - numpy_only)} (update docs/gpu.md too)"
    )


def test_numpy_functions_leave_a_strict_namespace_silently():
    # Why the engine cannot simply be handed strict arrays: the bound NumPy functions accept
    # them and answer with NumPy arrays, so a result would quietly change namespace.
    strict = array_api_strict.asarray([1.0, 2.0])
    assert type(np.exp(strict)) is np.ndarray
    assert type(array_api_strict.exp(strict)) is type(strict)
