"""Every operation of ``chainrule.numpy``, on Tensors, tracers or plain arrays alike.

The functions that bind one primitive come from the table (:mod:`chainrule.engine.table`): each
entry's public functions, generated or written beside the entry in
:mod:`chainrule.engine.primitives`, are collected here by :func:`public_functions`. The rest,
written below, are compositions of them (``mean``, ``var``, ``softmax``, ``tensordot``,
``linalg.norm``...), so they are differentiable in every mode for free. On plain arrays every
function costs one dispatch on top of NumPy. Names and signatures follow NumPy.
"""

from __future__ import annotations

import builtins
import math
import string
from collections.abc import Sequence

from . import arraylib
from .arraylib import xp
from .core import Tracer, apply, ndim, ones_like, raw, shape, strip, zeros_like
from .primitives.decompositions import svdvals
from .primitives.elementwise import (
    ABS,
    EXP,
    MAXIMUM,
    MINIMUM,
    MUL,
    SQRT,
    TANH,
    astype,
    power,
    where,
)
from .primitives.linalg import diagonal, einsum, matmul, trace
from .primitives.reductions import (
    SUM,
    cumsum,
    logsumexp,
    max,
    normalize_axis,
    prod,
    softmax_cross_entropy,
    sum,
)
from .primitives.shapes import (
    broadcast_to,
    concatenate,
    expand_dims,
    getitem,
    moveaxis,
    ravel,
    reshape,
    squeeze,
    swapaxes,
    transpose,
)
from .table import public_functions

#: Imported for the namespace (and for callers of ``ops.<name>``), not used below.
_REEXPORTED: tuple = (Tracer, apply, broadcast_to, cumsum, ones_like, prod, softmax_cross_entropy)
_REEXPORTED += (squeeze, swapaxes, transpose, zeros_like, diagonal, trace, matmul)


def asarray(value, dtype=None):
    """A plain array for plain input; tracers pass through unchanged, and so does an array on
    another device (a CuPy array stays on its GPU: NumPy's ``asarray`` would refuse it)."""
    if hasattr(value, "_level"):
        return value if dtype is None else astype(value, dtype)
    if type(value) is not xp.ndarray and arraylib.device_of(value) != "cpu":
        return arraylib.asarray(value, dtype=dtype)
    return arraylib.plain_asarray(value, dtype=dtype)


def stop_gradient(x):
    """The value of ``x`` with every derivative cut: a plain array (under vmap, a batch of
    them)."""
    primal = strip(x)
    return primal._detached() if isinstance(primal, Tracer) else primal


# ------------------------------------------------------------------------------------------------
# Elementwise compositions
# ------------------------------------------------------------------------------------------------


def square(x):
    """``x * x``."""
    return MUL(x, x)


def clip(x, a_min=None, a_max=None):
    """``x`` limited to ``[a_min, a_max]`` (either bound may be None)."""
    if a_min is not None:
        x = MAXIMUM(x, a_min)
    if a_max is not None:
        x = MINIMUM(x, a_max)
    return x


_GELU_SCALE = math.sqrt(2.0 / math.pi)


def gelu(x):
    """GELU, tanh approximation (Hendrycks & Gimpel): 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715
    x^3)))."""
    inner = _GELU_SCALE * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1 + TANH(inner))


def _sqrt_zero_at_zero(x):
    """sqrt(x), whose derivative at x = 0 is taken as 0 instead of the infinite one (which,
    times a zero derivative of x, gives NaN): the gradient of a spread or a norm at zero, as
    PyTorch defines it. The inner ``where`` keeps the branch not taken finite, so that no NaN
    leaks into any derivative order."""
    at_zero = strip(x) == 0
    return where(at_zero, 0, SQRT(where(at_zero, 1, x)))


# ------------------------------------------------------------------------------------------------
# Reductions
# ------------------------------------------------------------------------------------------------


def mean(x, axis=None, keepdims=False):
    """The mean over ``axis`` (all axes when None)."""
    axes = normalize_axis(axis, ndim(x), "mean")
    count = math.prod(shape(x)[a] for a in axes)
    return apply(SUM, x, axis=axes, keepdims=keepdims) / count  # axes already normalised


def min(x, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """The minimum over ``axis``; tied entries share the gradient evenly."""
    return -max(-x, axis=axis, keepdims=keepdims)


amin = min


def var(x, axis=None, ddof=0, keepdims=False):
    """The variance over ``axis`` with ``ddof`` delta degrees of freedom."""
    axes = normalize_axis(axis, ndim(x), "var")
    count = math.prod(shape(x)[a] for a in axes)
    centered = x - mean(x, axis=axes, keepdims=True)
    return sum(centered * centered, axis=axes, keepdims=keepdims) / (count - ddof)


def std(x, axis=None, ddof=0, keepdims=False):
    """The standard deviation over ``axis``. At zero spread (a constant input) its gradient is
    0, as in PyTorch, not the NaN of sqrt's infinite slope times a zero derivative."""
    return _sqrt_zero_at_zero(var(x, axis=axis, ddof=ddof, keepdims=keepdims))


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed stably."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``."""
    return EXP(log_softmax(x, axis=axis))


# ------------------------------------------------------------------------------------------------
# Indexing and joining
# ------------------------------------------------------------------------------------------------


def _index_array(indices):
    """Plain index arrays (a GPU array stays where it is), or a batch of them under vmap."""
    batch = strip(indices)
    return batch if isinstance(batch, Tracer) else arraylib.asarray(raw(indices))


def take(x, indices, axis=None):
    if axis is None:
        return getitem(reshape(x, (-1,)), _index_array(indices))
    axis = axis % ndim(x)
    return getitem(x, (slice(None),) * axis + (_index_array(indices),))


def take_along_axis(x, indices, axis):
    indices = _index_array(indices)
    rank = ndim(x)
    axis = axis % rank
    if indices.ndim != rank:
        raise ValueError(
            f"chainrule.take_along_axis: indices of rank {indices.ndim} for an array of rank {rank}"
        )
    namespace = arraylib.namespace_beside(raw(indices))
    grids = []
    for ax in range(rank):
        if ax == axis:
            grids.append(indices)
        else:
            size_shape = [1] * rank
            size_shape[ax] = shape(x)[ax]
            grids.append(namespace.reshape(namespace.arange(shape(x)[ax]), tuple(size_shape)))
    if isinstance(indices, Tracer):  # the batching rule of getitem broadcasts them
        return getitem(x, tuple(grids))
    return getitem(x, tuple(namespace.broadcast_arrays(*grids)))


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
    primal = strip(x)
    if isinstance(primal, Tracer):  # a batch (vmap): argsort each example's values
        shifted = axis % ndim(x) + 1
        order = primal._on_stacked(lambda values: xp.argsort(values, axis=shifted, kind="stable"))
    else:
        order = xp.argsort(primal, axis=axis, kind="stable")
    return take_along_axis(x, order, axis)


def flip(x, axis=None):
    axes = normalize_axis(axis, ndim(x), "flip")
    return getitem(
        x, tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(ndim(x)))
    )


# ------------------------------------------------------------------------------------------------
# Products and linear algebra
# ------------------------------------------------------------------------------------------------


def dot(x, y):
    if ndim(x) == 0 or ndim(y) == 0:
        return MUL(x, y)
    if ndim(y) <= 2:
        return matmul(x, y)
    return tensordot(x, y, axes=([ndim(x) - 1], [ndim(y) - 2]))


def vdot(x, y):
    return sum(ravel(x) * ravel(y))


def inner(x, y):
    if ndim(x) == 0 or ndim(y) == 0:
        return MUL(x, y)
    return tensordot(x, y, axes=([ndim(x) - 1], [ndim(y) - 1]))


def outer(x, y):
    return reshape(x, (-1, 1)) * reshape(y, (1, -1))


def tensordot(x, y, axes=2):
    rank_x, rank_y = ndim(x), ndim(y)
    if isinstance(axes, int):
        axes_x = list(range(rank_x - axes, rank_x))
        axes_y = list(range(axes))
    else:
        axes_x, axes_y = ([a] if isinstance(a, int) else list(a) for a in axes)
    axes_x = [a % rank_x for a in axes_x]
    axes_y = [a % rank_y for a in axes_y]
    letters = iter(string.ascii_letters)
    sub_x = [next(letters) for _ in range(rank_x)]
    sub_y = [next(letters) for _ in range(rank_y)]
    for ax, ay in zip(axes_x, axes_y, strict=True):
        sub_y[ay] = sub_x[ax]
    out = [c for i, c in enumerate(sub_x) if i not in axes_x] + [
        c for i, c in enumerate(sub_y) if i not in axes_y
    ]
    return einsum(f"{''.join(sub_x)},{''.join(sub_y)}->{''.join(out)}", x, y)


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


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 - NumPy's name
    """NumPy's ``linalg.norm``: vector norms (ord None/2, 1, inf, -inf, 0, any other p) and
    matrix norms (Frobenius, 1, -1, inf, -inf, and through the singular values 2, -2 and
    ``"nuc"``). A matrix norm is taken when ``x`` is 2-d and ``axis`` is None, or when ``axis``
    names two axes. The spectral norm's gradient at a repeated largest singular value is the mean
    of the tied ones' (as ``max`` splits ties).

    The gradient of the 2-norm and of the Frobenius norm at 0 is 0, as in PyTorch (the
    derivative itself is undefined there).
    """
    rank = ndim(x)
    if axis is None:
        if ord is None:  # NumPy: the 2-norm of the flattened array, whatever the rank
            return _sqrt_zero_at_zero(sum(x * x, axis=None, keepdims=keepdims))
        if rank not in (1, 2):
            raise ValueError(
                f"chainrule.linalg.norm: ord={ord!r} needs a 1-d or 2-d array or an explicit "
                f"axis, got shape {shape(x)}"
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
        return _sqrt_zero_at_zero(sum(x * x, axis=axis, keepdims=keepdims))
    if ord == 1:
        return sum(ABS(x), axis=axis, keepdims=keepdims)
    if ord == math.inf:
        return max(ABS(x), axis=axis, keepdims=keepdims)
    if ord == -math.inf:
        return min(ABS(x), axis=axis, keepdims=keepdims)
    if ord == 0:  # the number of non-zero entries: piecewise constant, no derivative
        nonzero = strip(x) != 0  # a batch of masks under vmap
        return sum(astype(nonzero, x.dtype), axis=axis, keepdims=keepdims)
    if isinstance(ord, (int, float)) and not isinstance(ord, bool):
        return power(sum(power(ABS(x), ord), axis=axis, keepdims=keepdims), 1.0 / ord)
    raise ValueError(f"chainrule.linalg.norm: invalid norm order {ord!r} for vectors")


def _matrix_norm(x, ord, axes, keepdims):
    row_axis, col_axis = axes
    if ord in (None, "fro", "f"):
        result = _sqrt_zero_at_zero(sum(x * x, axis=axes))
    elif ord in (1, -1, math.inf, -math.inf):
        # 1-norms: extreme column sum of |x|; inf-norms: extreme row sum.
        summed_axis, extreme_axis = (row_axis, col_axis) if ord in (1, -1) else (col_axis, row_axis)
        if extreme_axis > summed_axis:
            extreme_axis -= 1
        sums = sum(ABS(x), axis=summed_axis)
        result = max(sums, axis=extreme_axis) if ord > 0 else min(sums, axis=extreme_axis)
    elif ord in (2, -2, "nuc"):  # the largest, the smallest or the sum of the singular values
        values = svdvals(moveaxis(x, axes, (-2, -1)))
        if ord == "nuc":
            result = sum(values, axis=-1)
        else:
            result = max(values, axis=-1) if ord == 2 else min(values, axis=-1)
    else:
        raise ValueError(f"chainrule.linalg.norm: invalid norm order {ord!r} for matrices")
    if keepdims:
        kept = list(shape(x))
        kept[row_axis] = kept[col_axis] = 1
        result = reshape(result, tuple(kept))
    return result


class linalg:
    """``chainrule.numpy.linalg``: the table's ``linalg.*`` functions (det, inv, solve...) and
    :func:`norm`."""

    norm = staticmethod(norm)


# ------------------------------------------------------------------------------------------------
# The namespace: the table's functions, then the compositions above
# ------------------------------------------------------------------------------------------------
_TABLE_FUNCTIONS = public_functions()
for _name, _function in _TABLE_FUNCTIONS.items():
    if _name.startswith("linalg."):
        setattr(linalg, _name.removeprefix("linalg."), staticmethod(_function))
    else:
        globals()[_name] = _function

#: The compositions written in this module that are public.
_COMPOSED = {
    "amin",
    "asarray",
    "clip",
    "cross",
    "diagonal",
    "dot",
    "flip",
    "gelu",
    "inner",
    "linalg",
    "log_softmax",
    "mean",
    "min",
    "ones_like",
    "outer",
    "softmax",
    "sort",
    "split",
    "square",
    "stack",
    "std",
    "stop_gradient",
    "take",
    "take_along_axis",
    "tensordot",
    "trace",
    "var",
    "vdot",
    "zeros_like",
}

#: The public names of ``chainrule.numpy``.
__all__ = sorted({name for name in _TABLE_FUNCTIONS if "." not in name} | _COMPOSED)
