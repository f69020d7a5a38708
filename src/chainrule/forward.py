"""Forward mode: ``Dual`` carries a (primal, tangent) pair through the same primitive table.

No graph is stored: each primitive's JVP rule turns input tangents into the output tangent on the
spot, so memory stays that of the forward pass. One pass gives J·t for one direction t, which is
why a full gradient of P weights needs P passes in forward mode but one in reverse mode.
"""

from __future__ import annotations

from . import ops
from .core import Tracer, apply


class Dual(Tracer):
    """A value watched by forward mode: ``primal`` and its ``tangent`` at one level."""

    __slots__ = ("primal", "tangent", "_level")

    def __init__(self, primal, tangent, level):
        self.primal = primal
        self.tangent = tangent
        self._level = level

    def _unwrap(self):
        return self.primal

    @property
    def shape(self):
        return self.primal.shape

    @property
    def dtype(self):
        return self.primal.dtype

    @property
    def ndim(self):
        return self.primal.ndim

    @property
    def size(self):
        return self.primal.size

    def _process(self, prim, args, params):
        level = self._level
        primals = []
        tangents = []
        for arg in args:
            if type(arg) is Dual and arg._level == level:
                primals.append(arg.primal)
                tangents.append(arg.tangent)
            else:
                primals.append(arg)
                tangents.append(None)
        out = apply(prim, *primals, **params)
        tangent = prim.jvp(tuple(tangents), out, *primals, **params)
        if tangent is None:
            tangent = ops.zeros_like(out)
        else:
            out_shape = ops.shape(out)
            if ops.shape(tangent) != out_shape:
                tangent = ops.broadcast_to(tangent, out_shape)
            out_dtype = getattr(out, "dtype", None)
            if out_dtype is not None and getattr(tangent, "dtype", out_dtype) != out_dtype:
                tangent = ops.astype(tangent, out_dtype)
        return Dual(out, tangent, level)

    # Operators: the same set as Tensor's, so functions written with them run in forward mode.
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

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def __repr__(self):
        return f"Dual(primal={self.primal!r}, tangent={self.tangent!r}, level={self._level})"
