"""Another array-API namespace (``array_api_strict``, for one) in NumPy's place for a block.

:func:`use_namespace` is the ``"namespace"`` layer of the engine's one dispatch mechanism
(:func:`chainrule.engine.core.set_forward_layer`): while it is on, every primitive computes with
the forward its table entry builds for that namespace (``array_api``), and the few generic calls
the rules make (the names of :mod:`chainrule.engine.arraylib` listed in ``_SWITCHED_NAMES``:
``ns``, ``asarray``, ``plain_asarray``, ``as_dtype``, ``is_float_dtype``) are that namespace's.
Nothing in the table changes; on exit the layer is off and the names are NumPy's again, so the
NumPy path pays nothing for the switch.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as _numpy

from ..engine import arraylib
from ..engine.arraylib import namespace_name
from ..engine.core import set_forward_layer, state

#: The names of :mod:`chainrule.engine.arraylib` that :func:`use_namespace` rebinds.
_SWITCHED_NAMES = ("ns", "asarray", "plain_asarray", "as_dtype", "is_float_dtype")


def _namespace_bindings(namespace):
    """The generic functions of the engine for ``namespace`` (an array-API namespace)."""
    dtype_type = type(namespace.float64)

    def namespace_dtype(dtype):
        if isinstance(dtype, dtype_type):
            return dtype
        try:
            return getattr(namespace, _numpy.dtype(dtype).name)
        except (TypeError, AttributeError) as error:
            raise TypeError(
                f"dtype {dtype!r} has no counterpart in {namespace_name(namespace)}"
            ) from error

    def namespace_asarray(value, dtype=None):
        return namespace.asarray(value, dtype=None if dtype is None else namespace_dtype(dtype))

    def namespace_is_float_dtype(dtype) -> bool:
        return bool(
            namespace.isdtype(namespace_dtype(dtype), ("real floating", "complex floating"))
        )

    return {
        "ns": namespace,
        "asarray": namespace_asarray,
        "plain_asarray": namespace_asarray,
        "as_dtype": namespace_dtype,
        "is_float_dtype": namespace_is_float_dtype,
    }


def _unsupported_forward(prim_name, namespace):
    def forward(*args, **params):
        raise NotImplementedError(
            f"chainrule.{prim_name}: no array-API forward for namespace "
            f"{namespace_name(namespace)!r}; "
            "only primitives with one run inside use_namespace (the array-API column of "
            "docs/primitives.md lists them); compute this one outside the block, on NumPy arrays"
        )

    return forward


def _namespace_supplier(namespace):
    """The ``"namespace"`` layer's supplier: each entry's forward for ``namespace``, or one that
    raises, naming the primitive and the namespace, for an entry without an array-API form."""

    def supplier(prim, forward):
        make = prim.namespace_forward
        return _unsupported_forward(prim.name, namespace) if make is None else make(namespace)

    return supplier


@contextmanager
def use_namespace(namespace):
    """Compute with the array-API ``namespace`` (e.g. ``array_api_strict``) inside the block.

    Every primitive that has an array-API forward computes with ``namespace``'s function, every
    other one raises ``NotImplementedError`` naming it and the namespace, and the engine's
    generic calls (``arraylib.ns``, ``arraylib.asarray``, dtype checks) are ``namespace``'s. The
    operators' NumPy fast paths of :class:`~chainrule.engine.tensor.Tensor` stand aside in the
    block. On exit (exceptions included) everything is as before; blocks nest.

    Inputs must be ``namespace``'s arrays (or values its ``asarray`` takes): results are its
    arrays. Not thread-safe: the switch is process-wide, like :func:`chainrule.no_grad`.
    """
    module = vars(arraylib)
    saved_bindings = {name: module[name] for name in _SWITCHED_NAMES}
    saved_foreign = state.foreign
    previous = set_forward_layer("namespace", _namespace_supplier(namespace))
    try:
        module.update(_namespace_bindings(namespace))
        state.switch(foreign=True)
        yield namespace
    finally:
        state.switch(foreign=saved_foreign)
        set_forward_layer("namespace", previous)
        module.update(saved_bindings)
