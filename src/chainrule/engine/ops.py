"""Every operation of ``chainrule.numpy``, on Tensors, tracers or plain arrays alike.

Functions here either bind a primitive of :mod:`chainrule.engine.primitives` (through ``apply``) or
are composed from such functions, so they are differentiable in every mode for free. On plain arrays
they cost one dispatch on top of NumPy. Names and signatures follow NumPy.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence

from . import arraylib
from . import primitives as P
from .arraylib import xp
from .core import Tracer, apply, raw

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def shape(value) -> tuple:
    return tuple(getattr(value, "shape", ()))


def ndim(value) -> int:
    return len(shape(value))


def asarray(value, dtype=None):
    """A plain array for plain input; tracers pass through unchanged, and so does an array on
    another device (a CuPy array stays on its GPU: NumPy's ``asarray`` would refuse it)."""
    if hasattr(value, "_level"):
        return value if dtype is None else astype(value, dtype)
    if type(value) is not xp.ndarray and arraylib.device_of(value) != "cpu":
        return arraylib.asarray(value, dtype=dtype)
    return arraylib.plain_asarray(value, dtype=dtype)


def _normalize_axis(axis, rank, op):
    """``axis`` as a sorted tuple of non-negative ints, or ``None`` for all axes."""
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    normalized = []
    for ax in axes:
        if not -rank <= ax < builtins.max(rank, 1):
            raise ValueError(
                f"chainrule.{op}: axis {ax} is out of bounds for an array of rank {rank}"
            )
        normalized.append(ax % rank if rank else 0)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"chainrule.{op}: repeated axis in {axis}")
    return tuple(sorted(normalized)) if rank else ()


def _one_example(value):
    """The plain array under tracer ``value``, cut to the shape ``value`` shows: a batch of
    tangents (``chainrule.engine.batching``) stacks examples along leading axes, and its first
    example is a view of one example's shape on the batch's device."""
    array = raw(value)
    extra = ndim(array) - ndim(value)
    return array[(0,) * extra] if extra > 0 else array


def zeros_like(value, dtype=None):
    """A plain array of zeros (constants carry no derivative) of ``value``'s shape as ``value``
    shows it (for a batch of tangents, the shape of one example), on ``value``'s device."""
    if isinstance(value, Tracer):
        return arraylib.ns.zeros_like(_one_example(value), dtype=dtype or value.dtype)  # type: ignore[attr-defined]
    return arraylib.ns.zeros_like(value, dtype=dtype)


def ones_like(value, dtype=None):
    if isinstance(value, Tracer):
        return arraylib.ns.ones_like(_one_example(value), dtype=dtype or value.dtype)  # type: ignore[attr-defined]
    return arraylib.ns.ones_like(value, dtype=dtype)


def astype(x, dtype):
    dtype = arraylib.as_dtype(dtype)
    if getattr(x, "dtype", None) == dtype:
        return x
    return apply(P.ASTYPE, x, dtype=dtype)


def stop_gradient(x):
    """The value of ``x`` with every derivative cut (a plain array)."""
    return raw(x)


# ------------------------------------------------------------------------------------------------
# Elementwise
# ------------------------------------------------------------------------------------------------


def add(x, y):
    return apply(P.ADD, x, y)


def subtract(x, y):
    return apply(P.SUB, x, y)


def multiply(x, y):
    return apply(P.MUL, x, y)


def divide(x, y):
    return apply(P.DIV, x, y)


true_divide = divide


def negative(x):
    return apply(P.NEG, x)


def power(x, y):
    # Integer-valued constant exponents: x**2 is x*x (exact and cheaper), x**1 is x.
    if isinstance(y, (int, float)) and not isinstance(y, bool):
        if y == 2:
            return apply(P.MUL, x, x)
        if y == 1:
            return x
        if y == 0.5:
            return apply(P.SQRT, x)
    return apply(P.POW, x, y)


def square(x):
    return apply(P.MUL, x, x)


def sqrt(x):
    return apply(P.SQRT, x)


def exp(x):
    return apply(P.EXP, x)


def log(x):
    return apply(P.LOG, x)


def log1p(x):
    return apply(P.LOG1P, x)


def expm1(x):
    return apply(P.EXPM1, x)


def sin(x):
    return apply(P.SIN, x)


def cos(x):
    return apply(P.COS, x)


def tan(x):
    return apply(P.TAN, x)


def tanh(x):
    return apply(P.TANH, x)


def arctan(x):
    return apply(P.ARCTAN, x)


def sinh(x):
    return apply(P.SINH, x)


def cosh(x):
    return apply(P.COSH, x)


def abs(x):  # noqa: A001 - NumPy's name
    return apply(P.ABS, x)


absolute = abs


def sign(x):
    return apply(P.SIGN, x)


def maximum(x, y):
    return apply(P.MAXIMUM, x, y)


def minimum(x, y):
    return apply(P.MINIMUM, x, y)


def where(condition, x, y):
    """``x`` where ``condition`` else ``y``; the condition is not differentiated."""
    return apply(P.WHERE, x, y, condition=raw(condition))


def clip(x, a_min=None, a_max=None):
    if a_min is not None:
        x = maximum(x, a_min)
    if a_max is not None:
        x = minimum(x, a_max)
    return x


def sigmoid(x):
    return apply(P.SIGMOID, x)


def relu(x):
    """max(x, 0); its derivative at 0 is taken as 0."""
    return apply(P.RELU, x)


def softplus(x):
    """log(1 + exp(x)), computed without overflow."""
    return apply(P.SOFTPLUS, x)


_GELU_SCALE = math.sqrt(2.0 / math.pi)


def gelu(x):
    """GELU, tanh approximation (Hendrycks & Gimpel): 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715
    x^3)))."""
    inner = _GELU_SCALE * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1 + tanh(inner))


# ------------------------------------------------------------------------------------------------
# Reductions
# ------------------------------------------------------------------------------------------------


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return apply(P.SUM, x, axis=_normalize_axis(axis, ndim(x), "sum"), keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    axes = _normalize_axis(axis, ndim(x), "mean")
    count = math.prod(shape(x)[a] for a in axes)
    return apply(P.SUM, x, axis=axes, keepdims=keepdims) / count


def max(x, axis=None, keepdims=False):  # noqa: A001
    return apply(P.MAX, x, axis=_normalize_axis(axis, ndim(x), "max"), keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return -max(-x, axis=axis, keepdims=keepdims)


amax, amin = max, min


def prod(x, axis=None, keepdims=False):
    return apply(P.PROD, x, axis=_normalize_axis(axis, ndim(x), "prod"), keepdims=keepdims)


def var(x, axis=None, ddof=0, keepdims=False):
    axes = _normalize_axis(axis, ndim(x), "var")
    count = math.prod(shape(x)[a] for a in axes)
    centered = x - mean(x, axis=axes, keepdims=True)
    return sum(centered * centered, axis=axes, keepdims=keepdims) / (count - ddof)


def std(x, axis=None, ddof=0, keepdims=False):
    return sqrt(var(x, axis=axis, ddof=ddof, keepdims=keepdims))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) computed stably (fused primitive)."""
    return apply(
        P.LOGSUMEXP, x, axis=_normalize_axis(axis, ndim(x), "logsumexp"), keepdims=keepdims
    )


def log_softmax(x, axis=-1):
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    return exp(log_softmax(x, axis=axis))


def softmax_cross_entropy(logits, labels):
    """Per-example -log softmax(logits)[label] from integer ``labels`` (fused, stable)."""
    labels = arraylib.asarray(raw(labels))  # a capture's recording array stays one
    # The range check reads values into Python: on a base-class view, so that a captured step
    # does not guard on it (a replay skips it; an out-of-range label still fails its indexing).
    is_subclass = type(labels) is not xp.ndarray and isinstance(labels, xp.ndarray)
    checked = labels.view(xp.ndarray) if is_subclass else labels
    if labels.shape != shape(logits)[:-1]:
        raise ValueError(
            f"chainrule.softmax_cross_entropy: labels of shape {labels.shape} do not match "
            f"logits of shape {shape(logits)} (expected labels of shape {shape(logits)[:-1]})"
        )
    classes = shape(logits)[-1]
    if type(checked) is xp.ndarray:  # NumPy labels: the checks of the hot path
        if labels.dtype.kind not in "iu":  # signed or unsigned integers (cheaper than issubdtype)
            raise TypeError(_NOT_INTEGER_LABELS.format(labels.dtype))
        if checked.size and (int(checked.min()) < 0 or int(checked.max()) >= classes):
            _raise_label_range(checked.min(), checked.max(), classes, logits)
    else:  # labels on a GPU or in another namespace (labels and logits on two devices: the
        # primitive's forward raises, naming both devices)
        kind = getattr(labels.dtype, "kind", None)  # NumPy's dtypes (CuPy's too) have one
        if (
            (kind not in "iu")
            if kind is not None
            else not arraylib.ns.isdtype(labels.dtype, "integral")
        ):
            raise TypeError(_NOT_INTEGER_LABELS.format(labels.dtype))
        # No range check on a GPU: reading the labels back would stall the device every step
        # (and cannot be part of a CUDA graph). Data sets check theirs on the host when built.
        if arraylib.device_of(labels) == "cpu" and checked.size:
            low, high = arraylib.ns.min(checked), arraylib.ns.max(checked)
            if int(low) < 0 or int(high) >= classes:
                _raise_label_range(low, high, classes, logits)
    return apply(P.SOFTMAX_CROSS_ENTROPY, logits, labels=labels)


_NOT_INTEGER_LABELS = "chainrule.softmax_cross_entropy: labels must be integers, got {}"


def _raise_label_range(low, high, classes, logits):
    # A negative label would silently pick a class from the end (and break the gradient).
    raise ValueError(
        f"chainrule.softmax_cross_entropy: labels must lie in [0, {classes}), got values "
        f"from {int(low)} to {int(high)} (logits of shape {shape(logits)})"
    )


def cumsum(x, axis=None):
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return apply(P.CUMSUM, x, axis=_normalize_axis(axis, ndim(x), "cumsum")[0])


# ------------------------------------------------------------------------------------------------
# Shapes and indexing
# ------------------------------------------------------------------------------------------------


def reshape(x, newshape):
    if isinstance(newshape, int):
        newshape = (newshape,)
    newshape = tuple(newshape)
    if shape(x) == newshape:
        return x
    return apply(P.RESHAPE, x, shape=newshape)


def ravel(x):
    return reshape(x, (-1,))


def transpose(x, axes=None):
    rank = ndim(x)
    axes = tuple(reversed(range(rank))) if axes is None else tuple(a % rank for a in axes)
    if sorted(axes) != list(range(rank)):
        raise ValueError(f"chainrule.transpose: axes {axes} are not a permutation for rank {rank}")
    if axes == tuple(range(rank)):
        return x
    return apply(P.TRANSPOSE, x, axes=axes)


def swapaxes(x, axis1, axis2):
    order = list(range(ndim(x)))
    order[axis1], order[axis2] = order[axis2], order[axis1]
    if order[axis1] == order[axis2]:
        return x
    # A swap is always a valid permutation: skip transpose's checks (matmul's VJP runs this).
    return apply(P.TRANSPOSE, x, axes=tuple(order))


def moveaxis(x, source, destination):
    source = [source] if isinstance(source, int) else list(source)
    destination = [destination] if isinstance(destination, int) else list(destination)
    rank = ndim(x)
    source = [s % rank for s in source]
    destination = [d % rank for d in destination]
    order = [a for a in range(rank) if a not in source]
    for dest, src in sorted(zip(destination, source, strict=True)):
        order.insert(dest, src)
    return transpose(x, order)


def expand_dims(x, axis):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    new_rank = ndim(x) + len(axes)
    for a in axes:
        if not -new_rank <= a < new_rank:
            raise ValueError(
                f"chainrule.expand_dims: axis {a} is out of bounds for the result of rank "
                f"{new_rank} "
                f"(input shape {shape(x)})"
            )
    axes = tuple(sorted(a % new_rank for a in axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"chainrule.expand_dims: repeated axis in {axis}")
    new_shape = list(shape(x))
    for a in axes:
        new_shape.insert(a, 1)
    return reshape(x, tuple(new_shape))


def squeeze(x, axis=None):
    old = shape(x)
    if axis is None:
        axes = [i for i, s in enumerate(old) if s == 1]
    else:
        axes = [a % len(old) for a in ((axis,) if isinstance(axis, int) else axis)]
        for a in axes:
            if old[a] != 1:
                raise ValueError(
                    f"chainrule.squeeze: axis {a} has size {old[a]}, not 1 (shape {old})"
                )
    return reshape(x, tuple(s for i, s in enumerate(old) if i not in axes))


def broadcast_to(x, newshape):
    newshape = tuple(newshape)
    if shape(x) == newshape:
        return x
    return apply(P.BROADCAST_TO, x, shape=newshape)


def _namespace_beside(value):
    """The module to build index arrays for ``value`` with: the active namespace inside
    ``use_namespace``, else that of ``value``'s device (NumPy, or CuPy for a GPU array)."""
    return arraylib.ns if arraylib.ns is not xp else arraylib.namespace_of(value)


def _plain_index(index):
    """Indices that are tracers (e.g. Tensors of integers) become plain arrays."""
    if isinstance(index, tuple):
        return tuple(raw(i) for i in index)
    return raw(index)


def getitem(x, index):
    """Basic, integer-array and boolean indexing, as ``x[index]``."""
    return apply(P.GETITEM, x, index=_plain_index(index))


def take(x, indices, axis=None):
    if axis is None:
        return getitem(reshape(x, (-1,)), raw(indices))
    axis = axis % ndim(x)
    return getitem(x, (slice(None),) * axis + (arraylib.asarray(raw(indices)),))


def take_along_axis(x, indices, axis):
    indices = arraylib.asarray(raw(indices))  # a GPU array stays where it is
    rank = ndim(x)
    axis = axis % rank
    if indices.ndim != rank:
        raise ValueError(
            f"chainrule.take_along_axis: indices of rank {indices.ndim} for an array of rank {rank}"
        )
    namespace = _namespace_beside(indices)
    grids = []
    for ax in range(rank):
        if ax == axis:
            grids.append(indices)
        else:
            size_shape = [1] * rank
            size_shape[ax] = shape(x)[ax]
            grids.append(namespace.reshape(namespace.arange(shape(x)[ax]), tuple(size_shape)))
    return getitem(x, tuple(namespace.broadcast_arrays(*grids)))


def concatenate(arrays: Sequence, axis=0):
    arrays = list(arrays)
    if not arrays:
        raise ValueError("chainrule.concatenate: needs at least one array")
    axis = axis % builtins.max(ndim(arrays[0]), 1)
    return apply(P.CONCATENATE, *arrays, axis=axis)


def stack(arrays: Sequence, axis=0):
    arrays = list(arrays)
    if not arrays:
        raise ValueError("chainrule.stack: needs at least one array")
    shapes = {shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"chainrule.stack: all arrays must have one shape, got {sorted(shapes)}")
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis)


def split(x, indices_or_sections, axis=0):
    size = shape(x)[axis]
    if isinstance(indices_or_sections, int):
        if size % indices_or_sections:
            raise ValueError(
                f"chainrule.split: axis {axis} of size {size} does not divide into "
                f"{indices_or_sections} equal parts"
            )
        step = size // indices_or_sections
        bounds = list(range(0, size + 1, step))
    else:
        bounds = [0, *indices_or_sections, size]
    axis = axis % ndim(x)
    prefix = (slice(None),) * axis
    return [
        getitem(x, prefix + (slice(lo, hi),))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def sort(x, axis=-1):
    if axis is None:  # NumPy: sort the flattened array
        x, axis = reshape(x, (-1,)), 0
    order = xp.argsort(raw(x), axis=axis, kind="stable")
    return take_along_axis(x, order, axis)


def flip(x, axis=None):
    axes = _normalize_axis(axis, ndim(x), "flip")
    return getitem(
        x, tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(ndim(x)))
    )


# ------------------------------------------------------------------------------------------------
# Linear algebra
# ------------------------------------------------------------------------------------------------


def matmul(x, y):
    if ndim(x) == 0 or ndim(y) == 0:
        raise ValueError(
            f"chainrule.matmul: operands must have at least one axis, got shapes {shape(x)} and "
            f"{shape(y)}"
        )
    return apply(P.MATMUL, x, y)


def dot(x, y):
    if ndim(x) == 0 or ndim(y) == 0:
        return multiply(x, y)
    if ndim(y) <= 2:
        return matmul(x, y)
    return tensordot(x, y, axes=([ndim(x) - 1], [ndim(y) - 2]))


def vdot(x, y):
    return sum(ravel(x) * ravel(y))


def inner(x, y):
    if ndim(x) == 0 or ndim(y) == 0:
        return multiply(x, y)
    return tensordot(x, y, axes=([ndim(x) - 1], [ndim(y) - 1]))


def outer(x, y):
    return reshape(x, (-1, 1)) * reshape(y, (1, -1))


def einsum(subscripts: str, *operands):
    """Einstein summation with explicit output subscripts, e.g. ``einsum("ij,jk->ik", a, b)``."""
    if "->" not in subscripts:
        raise ValueError(
            f"chainrule.einsum: give explicit output subscripts ('ij,jk->ik'), got {subscripts!r}"
        )
    subscripts = _spell_out_ellipsis(subscripts.replace(" ", ""), operands)
    return apply(P.EINSUM, *operands, subscripts=subscripts)


def _spell_out_ellipsis(subscripts, operands):
    """``...`` replaced by letters of its own, so that every axis is named and differentiable:
    ``einsum("...ij,jk->...ik", a, b)`` with ``a`` of rank 4 becomes ``"abij,jk->abik"``. The
    axes an ellipsis stands for broadcast right-aligned, as in NumPy."""
    if "..." not in subscripts:
        return subscripts
    inputs, output = subscripts.split("->")
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        return subscripts  # the primitive reports the mismatch
    # How many axes each operand's ellipsis stands for (0 where it has none).
    ranks = [
        ndim(op) - (len(spec) - 3) if "..." in spec else 0
        for spec, op in zip(inputs, operands, strict=True)
    ]
    width = builtins.max(ranks)
    if builtins.min(ranks) < 0:
        raise ValueError(f"chainrule.einsum: {subscripts!r} names more axes than an operand has")
    unused = [c for c in _LETTERS if c not in subscripts]
    if width > len(unused):
        raise ValueError(f"chainrule.einsum: too many axes under '...' in {subscripts!r}")
    letters = "".join(unused[:width])
    spelled = [
        spec.replace("...", letters[width - rank :])
        for spec, rank in zip(inputs, ranks, strict=True)
    ]
    return ",".join(spelled) + "->" + output.replace("...", letters)


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def tensordot(x, y, axes=2):
    rank_x, rank_y = ndim(x), ndim(y)
    if isinstance(axes, int):
        axes_x = list(range(rank_x - axes, rank_x))
        axes_y = list(range(axes))
    else:
        axes_x, axes_y = ([a] if isinstance(a, int) else list(a) for a in axes)
    axes_x = [a % rank_x for a in axes_x]
    axes_y = [a % rank_y for a in axes_y]
    letters = iter(_LETTERS)
    sub_x = [next(letters) for _ in range(rank_x)]
    sub_y = [next(letters) for _ in range(rank_y)]
    for ax, ay in zip(axes_x, axes_y, strict=True):
        sub_y[ay] = sub_x[ax]
    out = [c for i, c in enumerate(sub_x) if i not in axes_x] + [
        c for i, c in enumerate(sub_y) if i not in axes_y
    ]
    return einsum(f"{''.join(sub_x)},{''.join(sub_y)}->{''.join(out)}", x, y)


def diagonal(x, offset=0, axis1=0, axis2=1):
    moved = moveaxis(x, (axis1, axis2), (-2, -1))
    rows, cols = shape(moved)[-2:]
    start_row, start_col = (0, offset) if offset >= 0 else (-offset, 0)
    length = builtins.max(0, builtins.min(rows - start_row, cols - start_col))
    index = _namespace_beside(raw(x)).arange(length)  # on x's device
    return getitem(moved, (Ellipsis, index + start_row, index + start_col))


def trace(x, offset=0, axis1=0, axis2=1):
    return sum(diagonal(x, offset, axis1, axis2), axis=-1)


def cross(x, y, axis=-1):
    x = moveaxis(x, axis, -1) if ndim(x) else x
    y = moveaxis(y, axis, -1) if ndim(y) else y
    if shape(x)[-1] != 3 or shape(y)[-1] != 3:
        raise ValueError(
            f"chainrule.cross: needs vectors of length 3, got shapes {shape(x)} and {shape(y)}"
        )
    x0, x1, x2 = (getitem(x, (Ellipsis, i)) for i in range(3))
    y0, y1, y2 = (getitem(y, (Ellipsis, i)) for i in range(3))
    out = stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], axis=-1)
    return moveaxis(out, -1, axis)


class linalg:
    """``chainrule.numpy.linalg``: norm, det, inv, solve."""

    @staticmethod
    def det(x):
        _require_square("det", x)
        return apply(P.DET, x)

    @staticmethod
    def inv(x):
        _require_square("inv", x)
        return apply(P.INV, x)

    @staticmethod
    def solve(a, b):
        _require_square("solve", a)
        return apply(P.SOLVE, a, b)

    @staticmethod
    def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 - NumPy's name
        """NumPy's ``linalg.norm``: vector norms (ord None/2, 1, inf, -inf, 0, any other p) and the
        matrix norms that need no SVD (Frobenius, 1, -1, inf, -inf). A matrix norm is taken when
        ``x`` is 2-d and ``axis`` is None, or when ``axis`` names two axes.

        The 2-norm's derivative at 0 is undefined (0/0): it comes out NaN there, as in NumPy's math.
        """
        rank = ndim(x)
        if axis is None:
            if ord is None:  # NumPy: the 2-norm of the flattened array, whatever the rank
                return sqrt(sum(x * x, axis=None, keepdims=keepdims))
            if rank not in (1, 2):
                raise ValueError(
                    f"chainrule.linalg.norm: ord={ord!r} needs a 1-d or 2-d array or an explicit "
                    "axis, "
                    f"got shape {shape(x)}"
                )
            axis = tuple(range(rank))
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(a % builtins.max(rank, 1) for a in axes)
        if len(axes) == 1:
            return _vector_norm(x, ord, axes[0], keepdims)
        if len(axes) == 2 and axes[0] != axes[1]:
            return _matrix_norm(x, ord, axes, keepdims)
        raise ValueError(
            f"chainrule.linalg.norm: axis must name one or two distinct axes, got {axis!r}"
        )


def _vector_norm(x, ord, axis, keepdims):
    if ord in (None, 2):
        return sqrt(sum(x * x, axis=axis, keepdims=keepdims))
    if ord == 1:
        return sum(abs(x), axis=axis, keepdims=keepdims)
    if ord == math.inf:
        return max(abs(x), axis=axis, keepdims=keepdims)
    if ord == -math.inf:
        return min(abs(x), axis=axis, keepdims=keepdims)
    if ord == 0:  # the number of non-zero entries: piecewise constant, no derivative
        return xp.sum(raw(x) != 0, axis=axis, keepdims=keepdims).astype(raw(x).dtype)
    if isinstance(ord, (int, float)) and not isinstance(ord, bool):
        return power(sum(power(abs(x), ord), axis=axis, keepdims=keepdims), 1.0 / ord)
    raise ValueError(f"chainrule.linalg.norm: invalid norm order {ord!r} for vectors")


def _matrix_norm(x, ord, axes, keepdims):
    row_axis, col_axis = axes
    if ord in (None, "fro", "f"):
        result = sqrt(sum(x * x, axis=axes))
    elif ord in (1, -1, math.inf, -math.inf):
        # 1-norms: extreme column sum of |x|; inf-norms: extreme row sum.
        summed_axis, extreme_axis = (row_axis, col_axis) if ord in (1, -1) else (col_axis, row_axis)
        if extreme_axis > summed_axis:
            extreme_axis -= 1
        sums = sum(abs(x), axis=summed_axis)
        result = max(sums, axis=extreme_axis) if ord > 0 else min(sums, axis=extreme_axis)
    elif ord in (2, -2, "nuc"):
        raise NotImplementedError(
            f"chainrule.linalg.norm: the matrix norm ord={ord!r} needs singular values, which "
            "chainrule has no primitive for; use the Frobenius norm (ord='fro') or ord=1/inf"
        )
    else:
        raise ValueError(f"chainrule.linalg.norm: invalid norm order {ord!r} for matrices")
    if keepdims:
        kept = list(shape(x))
        kept[row_axis] = kept[col_axis] = 1
        result = reshape(result, tuple(kept))
    return result


def _require_square(op, x):
    s = shape(x)
    if len(s) < 2 or s[-1] != s[-2]:
        raise ValueError(f"chainrule.linalg.{op}: needs square matrices (..., n, n), got shape {s}")
