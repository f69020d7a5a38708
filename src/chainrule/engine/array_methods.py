"""Python operators and NumPy-style methods shared by every tracer type.

Each dispatches to :mod:`chainrule.engine.ops`, so user code written with ``+``, ``@``,
``x.sum()``... runs unchanged on Tensors (reverse mode), Duals (forward mode) and batched tangents.
The operators and most methods are generated from the primitive table (an entry's ``operator``
and ``methods``); the methods written here are compositions or take NumPy's method-only forms
(``x.reshape(2, 3)``). ``Tensor`` overrides the hottest operators with fast paths of its own.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from . import ops
from .core import compare
from .table import REFLECTED_OPERATORS, TABLE


class ArrayOperators:
    """Python operators and the common array methods for tracers that are not Tensors.

    They dispatch to :mod:`chainrule.engine.ops`, so functions written with ``+``, ``@``,
    ``x.sum()``... run unchanged under forward mode and under the batching of
    :mod:`chainrule.engine.batching`. Comparisons have no derivative: they return plain boolean
    arrays (a batch of them under ``vmap``, see :func:`chainrule.engine.core.compare`).
    """

    __slots__ = ()

    if TYPE_CHECKING:  # set from the table by install_table_operators, below

        def _binary(self, other) -> Any: ...
        def _unary(self) -> Any: ...

        __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __getitem__ = _binary
        __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = _binary
        __neg__ = __abs__ = _unary

    __hash__ = object.__hash__

    @property
    def T(self):
        return ops.transpose(self)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def min(self, axis=None, keepdims=False):
        return ops.min(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        return ops.var(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, ddof=0, keepdims=False):
        return ops.std(self, axis=axis, ddof=ddof, keepdims=keepdims)

    @property
    def mT(self):
        return ops.swapaxes(self, -1, -2)

    def ravel(self):
        return ops.reshape(self, (-1,))

    flatten = ravel

    def dot(self, other):
        return ops.dot(self, other)

    def clip(self, a_min=None, a_max=None):
        return ops.clip(self, a_min, a_max)

    def __pos__(self):
        return self

    def __len__(self):
        shape = self.shape  # type: ignore[attr-defined]  # every tracer type has a shape
        if not shape:
            raise TypeError("len() of a 0-d value")
        return shape[0]

    def __bool__(self):
        return bool(ops.raw(self))

    # Conversions to Python numbers see the value only (no derivative), as for Tensor.
    def __float__(self):
        return float(ops.raw(self))

    def __int__(self):
        return int(ops.raw(self))

    def item(self):
        return ops.raw(self).item()

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _reflected(function, name):
    def operator(self, other):
        return function(other, self)

    operator.__name__ = operator.__qualname__ = name
    operator.__doc__ = f"``other {name[3:-2]} self``: :func:`chainrule.numpy.{function.__name__}`."
    return operator


def install_table_operators(cls) -> None:
    """Give ``cls`` every table entry's operator (``__add__`` and ``__radd__``...) and methods:
    the entry's public function itself (its first parameter is the tracer)."""
    for prim in TABLE.values():
        for name in prim.methods:
            setattr(cls, name, prim.functions[name])
        if prim.operator is not None:
            function = prim.function
            setattr(cls, f"__{prim.operator}__", function)
            if prim.operator in REFLECTED_OPERATORS:
                name = f"__r{prim.operator}__"
                setattr(cls, name, _reflected(function, name))


install_table_operators(ArrayOperators)


def _comparison(op):
    def method(self, other):
        return compare(op, self, other)

    method.__name__ = f"__{op.__name__}__"
    return method


# Comparisons have no derivative: plain booleans, or a batch of them under vmap (core.compare).
for _op in (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne):
    setattr(ArrayOperators, f"__{_op.__name__}__", _comparison(_op))
