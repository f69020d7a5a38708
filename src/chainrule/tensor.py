"""``Tensor``: an array that records the operations applied to it, for reverse mode.

A tensor created with ``requires_grad=True`` is a *leaf*. Every operation on it produces a tensor
that remembers its primitive, its arguments and its parameters: that is the graph, stored on the
tensors themselves (no separate node objects, no reference cycles). ``loss.backward()`` walks it
backwards (see :mod:`chainrule.reverse`) and fills ``.grad`` of the leaves.

In-place changes are tracked by a clock: every recorded op stamps its output with the time it was
made, every in-place change stamps the changed tensor; backward refuses to use a tensor changed
after an op that saved it, instead of returning a wrong gradient.
"""

from __future__ import annotations

import itertools
import weakref

from . import backend
from .core import Tracer, apply, raw, state

_clock = itertools.count(1)

#: tensor -> clock time of its latest in-place change (only tensors ever changed in place).
modified_at: "weakref.WeakKeyDictionary[Tensor, int]" = weakref.WeakKeyDictionary()


class _Freed:
    """Marks a node whose graph was released by a backward pass without ``retain_graph``."""

    name = "<freed>"

    def __repr__(self):
        return "<freed graph>"


FREED = _Freed()


class Tensor(Tracer):
    """An array plus the record of how it was computed.

    >>> import chainrule as cr
    >>> x = cr.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> loss = (x * x).sum()
    >>> loss.backward()
    >>> x.grad
    array([2., 4., 6.])
    """

    __slots__ = ("data", "grad", "requires_grad", "_level", "_prim", "_args", "_params", "_stamp", "__weakref__")

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        data = backend.asarray(data, dtype=dtype)
        if requires_grad and not backend.is_float_dtype(data.dtype):
            raise TypeError(
                f"Tensor(requires_grad=True) needs a floating-point array, got dtype {data.dtype}; "
                "convert first, e.g. Tensor(x, dtype=float, requires_grad=True)"
            )
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._level = 0
        self._prim = None
        self._args = None
        self._params = None
        self._stamp = next(_clock)

    # -- tracer protocol -------------------------------------------------------------------------
    def _unwrap(self):
        return self.data

    def _process(self, prim, args, params):
        level = self._level
        values = []
        record = False
        for arg in args:
            if type(arg) is Tensor and arg._level == level:
                values.append(arg.data)
                if arg.requires_grad:
                    record = True
            else:
                values.append(arg)
        out = apply(prim, *values, **params)
        result = Tensor.__new__(Tensor)
        result.data = out
        result.grad = None
        result._level = level
        result._stamp = next(_clock)
        if record and state.grad_enabled:
            result.requires_grad = True
            result._prim = prim
            result._args = args
            result._params = params
        else:
            result.requires_grad = False
            result._prim = None
            result._args = None
            result._params = None
        return result

    # -- array-like attributes -------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def T(self):
        return ops.transpose(self)

    @property
    def mT(self):
        return ops.swapaxes(self, -1, -2)

    @property
    def is_leaf(self) -> bool:
        return self._prim is None

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        text = repr(raw(self.data))
        grad = ", requires_grad=True" if self.requires_grad else ""
        level = f", level={self._level}" if self._level else ""
        return f"Tensor({text}{grad}{level})"

    __hash__ = object.__hash__

    def numpy(self):
        """The plain array (shared, not copied)."""
        return raw(self.data)

    def item(self):
        return raw(self.data).item()

    def __float__(self):
        return float(raw(self.data))

    def __int__(self):
        return int(raw(self.data))

    def __bool__(self):
        return bool(raw(self.data))

    def __array__(self, dtype=None, copy=None):
        array = raw(self.data)
        return array if dtype is None else array.astype(dtype)

    def detach(self) -> "Tensor":
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not backend.is_float_dtype(self.data.dtype):
            raise TypeError(f"requires_grad needs a floating-point tensor, got dtype {self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, cotangent=None, retain_graph: bool = False, create_graph: bool = False):
        """Fill ``.grad`` of every leaf this tensor depends on (gradients add up across calls).

        ``cotangent`` is required unless the tensor holds a single value. ``retain_graph`` keeps
        the graph for another backward; ``create_graph`` records the backward pass itself so
        that the gradients can be differentiated again.
        """
        from .reverse import backward

        backward([self], [cotangent], retain_graph=retain_graph, create_graph=create_graph)

    # -- operators --------------------------------------------------------------------------------
    def __add__(self, other):
        return apply(_ADD, self, other)

    def __radd__(self, other):
        return apply(_ADD, other, self)

    def __sub__(self, other):
        return apply(_SUB, self, other)

    def __rsub__(self, other):
        return apply(_SUB, other, self)

    def __mul__(self, other):
        return apply(_MUL, self, other)

    def __rmul__(self, other):
        return apply(_MUL, other, self)

    def __truediv__(self, other):
        return apply(_DIV, self, other)

    def __rtruediv__(self, other):
        return apply(_DIV, other, self)

    def __pow__(self, other):
        return ops.power(self, other)

    def __rpow__(self, other):
        return ops.power(other, self)

    def __matmul__(self, other):
        return apply(_MATMUL, self, other)

    def __rmatmul__(self, other):
        return apply(_MATMUL, other, self)

    def __neg__(self):
        return apply(_NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return apply(_ABS, self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    # Comparisons have no derivative: they return plain boolean arrays.
    def __lt__(self, other):
        return raw(self) < raw(other)

    def __le__(self, other):
        return raw(self) <= raw(other)

    def __gt__(self, other):
        return raw(self) > raw(other)

    def __ge__(self, other):
        return raw(self) >= raw(other)

    def __eq__(self, other):
        return raw(self) == raw(other)

    def __ne__(self, other):
        return raw(self) != raw(other)

    # -- in-place changes ---------------------------------------------------------------------------
    def _check_inplace(self, what):
        if state.grad_enabled and self.requires_grad:
            kind = "a leaf that requires grad" if self._prim is None else "a recorded result"
            raise RuntimeError(
                f"{what}: in-place change of {kind} (shape {self.shape}) would corrupt its gradient; "
                "for parameter updates wrap it in `with chainrule.no_grad():`, otherwise write "
                "the out-of-place form (x = x + y, cnp.where, cnp.concatenate)"
            )
        if not isinstance(self.data, backend.ndarray):
            raise RuntimeError(f"{what}: in-place change of a tensor traced by a transformation")
        modified_at[self] = next(_clock)

    def __setitem__(self, index, value):
        self._check_inplace("__setitem__")
        self.data[index] = raw(value)

    def _inplace(self, ufunc, other, what):
        self._check_inplace(what)
        if self.data.ndim == 0:
            self.data = backend.asarray(ufunc(self.data, raw(other)), dtype=self.data.dtype)
        else:
            ufunc(self.data, raw(other), out=self.data)
        return self

    def __iadd__(self, other):
        return self._inplace(backend.xp.add, other, "+=")

    def __isub__(self, other):
        return self._inplace(backend.xp.subtract, other, "-=")

    def __imul__(self, other):
        return self._inplace(backend.xp.multiply, other, "*=")

    def __itruediv__(self, other):
        return self._inplace(backend.xp.divide, other, "/=")

    # -- methods mirroring NumPy ---------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return ops.min(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False):
        return ops.prod(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        return ops.var(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, ddof=0, keepdims=False):
        return ops.std(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def swapaxes(self, axis1, axis2):
        return ops.swapaxes(self, axis1, axis2)

    def astype(self, dtype):
        return ops.astype(self, dtype)

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

    def flatten(self):
        return ops.reshape(self, (-1,))

    def squeeze(self, axis=None):
        return ops.squeeze(self, axis)

    def dot(self, other):
        return ops.dot(self, other)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Same as ``Tensor(data, requires_grad, dtype)``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


from . import ops  # noqa: E402
from .primitives import ABS as _ABS  # noqa: E402
from .primitives import ADD as _ADD  # noqa: E402
from .primitives import DIV as _DIV  # noqa: E402
from .primitives import MATMUL as _MATMUL  # noqa: E402
from .primitives import MUL as _MUL  # noqa: E402
from .primitives import NEG as _NEG  # noqa: E402
from .primitives import SUB as _SUB  # noqa: E402
