"""Python operators and NumPy-style methods shared by every tracer type.

Each dispatches to :mod:`chainrule.engine.ops`, so user code written with ``+``, ``@``,
``x.sum()``... runs unchanged on Tensors (reverse mode), Duals (forward mode) and batched tangents.
``Tensor`` overrides the hottest operators with fast paths of its own.
"""

from __future__ import annotations

from . import ops


class ArrayOperators:
    """Python operators and the common array methods for tracers that are not Tensors.

    They dispatch to :mod:`chainrule.engine.ops`, so functions written with ``+``, ``@``,
    ``x.sum()``... run unchanged under forward mode and under the batching of
    :mod:`chainrule.engine.batching`. Comparisons have no derivative: they return plain boolean
    arrays.
    """

    __slots__ = ()

    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.subtract(self, other)

    def __rsub__(self, other):
        return ops.subtract(other, self)

    def __mul__(self, other):
        return ops.multiply(self, other)

    def __rmul__(self, other):
        return ops.multiply(other, self)

    def __truediv__(self, other):
        return ops.divide(self, other)

    def __rtruediv__(self, other):
        return ops.divide(other, self)

    def __pow__(self, other):
        return ops.power(self, other)

    def __rpow__(self, other):
        return ops.power(other, self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __neg__(self):
        return ops.negative(self)

    def __abs__(self):
        return ops.abs(self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def __lt__(self, other):
        return ops.raw(self) < ops.raw(other)

    def __le__(self, other):
        return ops.raw(self) <= ops.raw(other)

    def __gt__(self, other):
        return ops.raw(self) > ops.raw(other)

    def __ge__(self, other):
        return ops.raw(self) >= ops.raw(other)

    def __eq__(self, other):
        return ops.raw(self) == ops.raw(other)

    def __ne__(self, other):
        return ops.raw(self) != ops.raw(other)

    __hash__ = object.__hash__

    @property
    def T(self):
        return ops.transpose(self)

    def sum(self, axis=None, keepdims=False):
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def astype(self, dtype):
        return ops.astype(self, dtype)

    def min(self, axis=None, keepdims=False):
        return ops.min(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False):
        return ops.prod(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        return ops.var(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, ddof=0, keepdims=False):
        return ops.std(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def swapaxes(self, axis1, axis2):
        return ops.swapaxes(self, axis1, axis2)

    @property
    def mT(self):
        return ops.swapaxes(self, -1, -2)

    def ravel(self):
        return ops.reshape(self, (-1,))

    flatten = ravel

    def squeeze(self, axis=None):
        return ops.squeeze(self, axis)

    def dot(self, other):
        return ops.dot(self, other)

    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def tanh(self):
        return ops.tanh(self)

    def sqrt(self):
        return ops.sqrt(self)

    def relu(self):
        return ops.relu(self)

    def sigmoid(self):
        return ops.sigmoid(self)

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
