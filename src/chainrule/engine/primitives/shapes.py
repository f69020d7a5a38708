"""Shape and indexing primitives: reshape, transpose, broadcast_to, getitem, its adjoint
scatter_add, and concatenate; with the public functions built directly on them.

Shape ops run on every backward pass: NumPy arrays use their own methods (NumPy's module-level
functions add a Python wrapper that costs more than the view they return). Each entry carries its
own batching rule, since each moves the batch axis in its own way (see
:mod:`chainrule.engine.batching`); the helpers for those rules (:func:`align`,
:func:`with_batch`) and the generic rules that other entries name (:data:`GENERIC_RULES`) live
here too.
"""

from __future__ import annotations

import builtins
import math

from .. import arraylib
from ..arraylib import xp
from ..core import Stacked, apply, ndim, shape, strip, zeros_like
from ..table import Primitive, defprim, elementwise_flops, public

_NO_FLOPS = elementwise_flops(0)


def input_flops(out, x, *args, **params):
    """FLOP rule of a primitive costing one operation per entry of its input."""
    return int(getattr(x, "size", 1))


# ------------------------------------------------------------------------------------------------
# Batching: the rules' helpers and the generic rules, rule(prim, values, batched, params, size)
# -> stacked result (the interpreter is chainrule.engine.batching)
# ------------------------------------------------------------------------------------------------


def batch_rank(value, is_batched):
    """Per-example rank of an operand."""
    rank = len(getattr(value, "shape", ()))
    return rank - 1 if is_batched else rank


def align(value, rank):
    """Insert size-1 axes after the batch axis until the per-example rank is ``rank``."""
    value_shape = shape(value)
    missing = rank - (len(value_shape) - 1)
    if missing <= 0:
        return value
    return reshape(value, value_shape[:1] + (1,) * missing + value_shape[1:])


def with_batch(value, size):
    """An operand without batch axis, repeated along a new leading axis (a broadcast view)."""
    return broadcast_to(expand_dims(value, 0), (size, *shape(value)))


def _elementwise(prim, values, batched, params, size):
    """Elementwise primitives: line up per-example ranks, then NumPy broadcasting does the rest."""
    if len(values) == 1:  # one operand: nothing to line up (each op of a batch of tangents)
        return apply(prim, *values, **params)
    if len(values) == 2:  # two: nothing to line up when their per-example ranks agree
        first, second = values
        if (
            len(getattr(first, "shape", ())) - batched[0]
            == len(getattr(second, "shape", ())) - batched[1]
        ):
            return apply(prim, first, second, **params)
    # (values and batched come from the interpreter, one entry per operand: zip needs no check)
    ranks = [len(getattr(v, "shape", ())) - b for v, b in zip(values, batched)]  # noqa: B905
    rank = builtins.max(ranks)
    for i, own in enumerate(ranks):
        if own < rank and batched[i]:
            values = list(values)
            values[i] = align(values[i], rank)
    return apply(prim, *values, **params)


def _shift_axes(prim, values, batched, params, size):
    """Reductions over ``axis`` (a tuple of non-negative ints): every axis moves by one."""
    return apply(prim, values[0], **dict(params, axis=tuple([a + 1 for a in params["axis"]])))


def _shift_axis(prim, values, batched, params, size):
    """Primitives along one ``axis`` (an int)."""
    return apply(prim, values[0], **{**params, "axis": params["axis"] + 1})


def _leading_dims(prim, values, batched, params, size):
    """Primitives that already treat leading axes as a stack (det, inv): nothing to change."""
    return apply(prim, *values, **params)


def one_example_at_a_time(prim, values, batched, params, size):
    """Fallback for a primitive without a rule: correct, one example at a time."""
    outs = []
    for i in range(size):
        args = [getitem(v, i) if b else v for v, b in zip(values, batched, strict=True)]
        outs.append(apply(prim, *args, **params))
    return concatenate([expand_dims(out, 0) for out in outs], axis=0)


#: The generic batching rules an entry names by its ``batching`` string (looked up by
#: :meth:`chainrule.engine.batching.Batched._process`).
GENERIC_RULES = {
    "elementwise": _elementwise,
    "axes": _shift_axes,
    "axis": _shift_axis,
    "stacked": _leading_dims,
}


# ------------------------------------------------------------------------------------------------
# reshape
# ------------------------------------------------------------------------------------------------
RESHAPE = defprim(
    "reshape",
    lambda x, shape: x.reshape(shape) if isinstance(x, xp.ndarray) else xp.reshape(x, shape),
    (lambda g, out, x, shape: reshape(g, x.shape),),
    "linear",
    _NO_FLOPS,
    array_api="reshape",
    batching=lambda prim, values, batched, params, size: apply(
        prim, values[0], shape=(size, *params["shape"])
    ),
)


@public(RESHAPE)
def reshape(x, newshape):
    """``x`` with shape ``newshape`` (an int or a tuple, one entry may be -1)."""
    if isinstance(newshape, int):
        newshape = (newshape,)
    newshape = tuple(newshape)
    if shape(x) == newshape:
        return x
    return apply(RESHAPE, x, shape=newshape)


@public(RESHAPE)
def ravel(x):
    """``x`` flattened to one axis."""
    return reshape(x, (-1,))


@public(RESHAPE)
def expand_dims(x, axis):
    """``x`` with size-1 axes inserted at ``axis`` (an int or a tuple, positions in the result)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    new_rank = ndim(x) + len(axes)
    for a in axes:
        if not -new_rank <= a < new_rank:
            raise ValueError(
                f"chainrule.expand_dims: axis {a} is out of bounds for the result of rank "
                f"{new_rank} (input shape {shape(x)})"
            )
    axes = tuple(sorted(a % new_rank for a in axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"chainrule.expand_dims: repeated axis in {axis}")
    new_shape = list(shape(x))
    for a in axes:
        new_shape.insert(a, 1)
    return reshape(x, tuple(new_shape))


@public(RESHAPE, method=True)
def squeeze(x, axis=None):
    """``x`` without its size-1 axes (all of them, or those named by ``axis``)."""
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


# ------------------------------------------------------------------------------------------------
# transpose
# ------------------------------------------------------------------------------------------------
TRANSPOSE = defprim(
    "transpose",
    lambda x, axes: x.transpose(axes) if isinstance(x, xp.ndarray) else xp.transpose(x, axes),
    (lambda g, out, x, axes: transpose(g, tuple(_inverse_permutation(axes))),),
    "linear",
    _NO_FLOPS,
    array_api="permute_dims",
    batching=lambda prim, values, batched, params, size: apply(
        prim, values[0], axes=(0, *(a + 1 for a in params["axes"]))
    ),
)


@public(TRANSPOSE)
def transpose(x, axes=None):
    """``x`` with its axes permuted (reversed when ``axes`` is None), as NumPy's."""
    rank = ndim(x)
    axes = tuple(reversed(range(rank))) if axes is None else tuple(a % rank for a in axes)
    if sorted(axes) != list(range(rank)):
        raise ValueError(f"chainrule.transpose: axes {axes} are not a permutation for rank {rank}")
    if axes == tuple(range(rank)):
        return x
    return apply(TRANSPOSE, x, axes=axes)


@public(TRANSPOSE, method=True)
def swapaxes(x, axis1, axis2):
    """``x`` with two axes exchanged."""
    order = list(range(ndim(x)))
    order[axis1], order[axis2] = order[axis2], order[axis1]
    if order[axis1] == order[axis2]:
        return x
    # A swap is always a valid permutation: skip transpose's checks (matmul's VJP runs this).
    return apply(TRANSPOSE, x, axes=tuple(order))


@public(TRANSPOSE)
def moveaxis(x, source, destination):
    """``x`` with the axes ``source`` moved to the positions ``destination``, as NumPy's."""
    source = [source] if isinstance(source, int) else list(source)
    destination = [destination] if isinstance(destination, int) else list(destination)
    rank = ndim(x)
    source = [s % rank for s in source]
    destination = [d % rank for d in destination]
    order = [a for a in range(rank) if a not in source]
    for dest, src in sorted(zip(destination, source, strict=True)):
        order.insert(dest, src)
    return transpose(x, order)


def _inverse_permutation(axes):
    inverse = [0] * len(axes)
    for position, ax in enumerate(axes):
        inverse[ax] = position
    return inverse


# The cotangent is summed back to x's shape centrally, so the rule is the identity.


# ------------------------------------------------------------------------------------------------
# broadcast_to
# ------------------------------------------------------------------------------------------------
# The cotangent is summed back to x's shape centrally, so the rule is the identity.
def _broadcast_to_forward(x, shape):
    # xp.broadcast_to builds an iterator (microseconds). A single value, the usual case (the VJP
    # of a full sum), becomes the same read-only zero-stride view directly (for exact NumPy arrays
    # only: a subclass, such as a capture's recording array, must see the call).
    if (
        (type(x) is xp.ndarray or isinstance(x, xp.generic))
        and x.size == 1
        and x.ndim <= len(shape)
        and min(shape, default=0) >= 0
    ):
        view = xp.ndarray(shape, x.dtype, x, 0, (0,) * len(shape))
        view.flags.writeable = False
        return view
    return xp.broadcast_to(x, shape)


def _batch_broadcast_to(prim, values, batched, params, size):
    target = tuple(params["shape"])
    return apply(prim, align(values[0], len(target)), shape=(size, *target))


BROADCAST_TO = defprim(
    "broadcast_to",
    _broadcast_to_forward,
    (lambda g, out, x, shape: g,),
    "linear",
    _NO_FLOPS,
    array_api="broadcast_to",
    batching=_batch_broadcast_to,
)


@public(BROADCAST_TO)
def broadcast_to(x, newshape):
    """``x`` broadcast to ``newshape`` (a read-only view on NumPy arrays)."""
    newshape = tuple(newshape)
    if shape(x) == newshape:
        return x
    return apply(BROADCAST_TO, x, shape=newshape)


# ------------------------------------------------------------------------------------------------
# getitem and its adjoint, scatter_add
# ------------------------------------------------------------------------------------------------
def _index_has_arrays(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


def _scatter_add_forward(g, index, shape):
    """zeros(shape) with ``g`` added at ``index``; repeated integer indices accumulate."""
    if not isinstance(g, xp.ndarray):
        return _device_scatter_add(g, index, shape)
    result = xp.zeros(shape, dtype=g.dtype)
    if _index_has_arrays(index):
        xp.add.at(result, index, g)
    else:
        result[index] = g
    return result


def _device_scatter_add(g, index, shape):
    """The scatter-add on another device's arrays (CuPy's), built where ``g`` lives.

    Basic indices assign into zeros. Array indices go through ``bincount``, which NumPy
    dispatches to the array's module: the flat position of every indexed entry (``positions``,
    an ``arange`` indexed like ``g``'s source) receives the sum of its cotangents. (CuPy's
    ``add.at`` exists, but NumPy hands it a tuple index, which CuPy refuses.) Integer index
    arrays on the host are fine: CuPy's indexing copies them over.
    """
    result = xp.zeros_like(g, shape=shape)
    if not _index_has_arrays(index):
        result[index] = g
        return result
    size = math.prod(shape)
    positions = arraylib.namespace_of(g).arange(size).reshape(shape)[index]
    flat_positions = positions.reshape(-1)
    updates = xp.broadcast_to(g, positions.shape).reshape(-1)
    if updates.dtype.kind == "c":  # bincount sums real weights only
        real = xp.bincount(flat_positions, weights=updates.real, minlength=size)
        imaginary = xp.bincount(flat_positions, weights=updates.imag, minlength=size)
        summed = real + 1j * imaginary
    else:
        summed = xp.bincount(flat_positions, weights=updates, minlength=size)
    return summed.astype(g.dtype, copy=False).reshape(shape)


def _take_axis(index):
    """For an index that takes along one axis, ``x[:, :, idx]`` (full slices, then one integer
    array), that axis; ``None`` for any other index."""
    items = index if isinstance(index, tuple) else (index,)
    *leading, last = items
    full = slice(None)
    if (
        all(type(item) is slice and item == full for item in leading)
        and getattr(last, "ndim", 0) == 1
    ):
        return len(leading)
    return None


def _with_ellipsis(index):
    """A basic index with a trailing ``...`` unless it has one: the same selection, in the form
    the standard requires when fewer axes than the array's are indexed (``x[0]`` of a matrix)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(item is Ellipsis for item in items):
        return index
    return (*items, Ellipsis)


def _namespace_getitem(namespace):
    """Indexing in an array-API namespace: what its ``__getitem__`` takes (integers, slices,
    ellipses, and integer arrays indexing every axis), plus a take along one axis."""

    def forward(x, index):
        axis = _take_axis(index) if _index_has_arrays(index) else None
        if axis is not None:  # the standard indexes with no slices next to arrays: a take
            return namespace.take(x, index[-1] if isinstance(index, tuple) else index, axis=axis)
        return x[index if _index_has_arrays(index) else _with_ellipsis(index)]

    return forward


def _namespace_scatter_add(namespace):
    """The scatter-add forward for an array-API namespace. The standard has no scatter-add for
    repeated integer indices, so array indices sum through a one-hot matrix product: the flat
    position of every indexed entry against every position of the result, a (k, size) matrix
    (k indexed entries), fine for the moderate sizes such a namespace is used at."""

    def one_hot(positions, size, dtype):
        return namespace.astype(
            namespace.reshape(positions, (-1, 1)) == namespace.arange(size), dtype
        )

    def forward(g, index, shape):
        if not _index_has_arrays(index):
            result = namespace.zeros(shape, dtype=g.dtype)
            result[_with_ellipsis(index)] = g
            return result
        axis = _take_axis(index)
        if axis is not None:  # x[:, idx]: g's axis ``axis`` holds the taken entries
            indices = index[-1] if isinstance(index, tuple) else index
            size = shape[axis]
            hits = one_hot(namespace.where(indices < 0, indices + size, indices), size, g.dtype)
            summed = namespace.tensordot(hits, g, axes=([0], [axis]))  # (size, *others)
            order = (*range(1, axis + 1), 0, *range(axis + 1, len(shape)))
            return namespace.permute_dims(summed, order)
        items = index if isinstance(index, tuple) else (index,)
        basic = (slice, type(None), type(Ellipsis))
        if len(items) != len(shape) or any(isinstance(item, basic) for item in items):
            raise NotImplementedError(
                f"chainrule.scatter_add (the derivative of indexing with arrays): index {index!r} "
                f"has no array-API form in {arraylib.namespace_name(namespace)!r}; index every "
                "axis with integers or integer arrays, or take along one axis (x[:, idx])"
            )
        position, stride = 0, 1
        for item, size in zip(reversed(items), reversed(shape), strict=True):
            item = namespace.asarray(item)
            position = position + namespace.where(item < 0, item + size, item) * stride
            stride *= size
        positions = namespace.broadcast_to(namespace.asarray(position), g.shape)
        summed = namespace.matmul(
            namespace.reshape(g, (1, -1)), one_hot(positions, stride, g.dtype)
        )
        return namespace.reshape(summed, shape)

    return forward


_BASIC_INDEX_TYPES = (int, xp.integer, slice, type(None), type(Ellipsis))


def _index_items(index):
    return index if isinstance(index, tuple) else (index,)


def _is_basic(items):
    return all(isinstance(item, _BASIC_INDEX_TYPES) for item in items)


def _expand_ellipsis(items, rank):
    """``items`` with any Ellipsis written out as slices, for an array of rank ``rank``."""
    if not any(item is Ellipsis for item in items):
        return items
    used = 0
    for item in items:
        if item is None or item is Ellipsis:
            continue
        if isinstance(item, _BASIC_INDEX_TYPES):
            used += 1
        else:  # an index array (on the host or a device) or a list
            array = item if hasattr(item, "dtype") else xp.asarray(item)
            used += array.ndim if array.dtype == bool else 1
    expanded = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (rank - used))
        else:
            expanded.append(item)
    return tuple(expanded)


def _batched_items(items, size, what):
    """An index holding integer arrays batched by ``vmap`` (``take_along_axis`` of a batched
    order): the same index on the stacked array, with the batch as one more index array
    (``arange(size)``) in front, every other array given a leading axis to broadcast against it.
    NumPy places the broadcast shape of adjacent array indices where they stand, so this is
    exact when every item is an array or an int; a mix with slices is refused."""
    arrays = []
    for item in items:
        if isinstance(item, Stacked):
            value = strip(item.value)  # the stacked indices (batch axis first)
            if not hasattr(value, "__array_namespace__") and not isinstance(value, xp.ndarray):
                raise NotImplementedError(
                    f"chainrule.{what}: an index batched by two nested vmaps is not supported"
                )
        elif isinstance(item, (int, xp.integer)) or hasattr(item, "dtype"):
            value = xp.asarray(item)[None]
        else:
            raise ValueError(
                f"chainrule.{what}: an index that depends on the batch (vmap) must be made of "
                f"integer arrays and ints only, got {type(item).__name__} beside it"
            )
        if value.dtype == bool:
            raise ValueError(
                f"chainrule.{what}: a boolean mask that depends on the batch (vmap) would give "
                "examples of different sizes; select with chainrule.numpy.where instead"
            )
        arrays.append(value)
    rank = builtins.max(a.ndim for a in arrays)
    arrays = [a.reshape(a.shape[:1] + (1,) * (rank - a.ndim) + a.shape[1:]) for a in arrays]
    batch = xp.arange(size).reshape((size,) + (1,) * (rank - 1))
    return (batch, *arrays), rank - 1


def _has_batched_item(items):
    return any(isinstance(item, Stacked) for item in items)


def _batch_getitem(prim, values, batched, params, size):
    x = values[0]
    items = _index_items(params["index"])
    if _has_batched_item(items):
        index, _ = _batched_items(items, size, "getitem")
        return apply(prim, x, index=index)
    if _is_basic(items):  # slices, ints, None: a leading full slice keeps the batch axis in front
        return apply(prim, x, index=(slice(None), *items))
    # Integer or boolean arrays may move axes to the front (NumPy's rule for separated advanced
    # indices): index with the batch axis last instead, where no index can reach it.
    items = _expand_ellipsis(items, ndim(x) - 1)
    out = apply(prim, moveaxis(x, 0, -1), index=items)
    return moveaxis(out, -1, 0)


def _batch_scatter_add(prim, values, batched, params, size):
    update = values[0]
    target = tuple(params["shape"])
    items = _index_items(params["index"])
    if _has_batched_item(items):
        index, rank = _batched_items(items, size, "scatter_add")
        if not batched[0]:
            update = with_batch(update, size)
        return apply(prim, align(update, rank), index=index, shape=(size, *target))
    if _is_basic(items):
        # ``update`` may broadcast into the indexed region: line its per-example rank up with it.
        target_rank = xp.broadcast_to(xp.zeros((), dtype=bool), target)[items].ndim
        return apply(
            prim, align(update, target_rank), index=(slice(None), *items), shape=(size, *target)
        )
    items = _expand_ellipsis(items, len(target))
    out = apply(prim, moveaxis(update, 0, -1), index=items, shape=(*target, size))
    return moveaxis(out, -1, 0)


GETITEM = defprim(
    "getitem",
    lambda x, index: x[index],
    (lambda g, out, x, index: SCATTER_ADD(g, index=index, shape=x.shape),),
    "linear",
    _NO_FLOPS,
    array_api=_namespace_getitem,
    batching=_batch_getitem,
    operator="getitem",
)
SCATTER_ADD: Primitive = defprim(
    "scatter_add",
    _scatter_add_forward,
    (lambda g, out, update, index, shape: getitem(g, index),),
    "linear",
    input_flops,
    array_api=_namespace_scatter_add,
    batching=_batch_scatter_add,
    names=(),
    gpu="On CuPy arrays, array indices sum through ``bincount`` (CuPy's ``add.at`` refuses the "
    "tuple index NumPy hands it); basic indices assign into zeros.",
)


def _plain_index(index):
    """Indices that are tracers (e.g. Tensors of integers) become plain arrays, or a batch of
    them under vmap (:func:`~chainrule.engine.core.strip`)."""
    if isinstance(index, tuple):
        return tuple(strip(i) for i in index)
    return strip(index)


@public(GETITEM)
def getitem(x, index):
    """Basic, integer-array and boolean indexing, as ``x[index]``."""
    return apply(GETITEM, x, index=_plain_index(index))


# ------------------------------------------------------------------------------------------------
# concatenate
# ------------------------------------------------------------------------------------------------
def _concatenate_vjp(g, out, *xs, axis):
    cotangents = []
    start = 0
    for x in xs:
        size = x.shape[axis]
        index = (slice(None),) * axis + (slice(start, start + size),)
        cotangents.append(getitem(g, index))
        start += size
    return tuple(cotangents)


def _concatenate_jvp(ts, out, *xs, axis):
    if all(t is None for t in ts):
        return None
    parts = [zeros_like(x) if t is None else t for t, x in zip(ts, xs, strict=True)]
    return concatenate(parts, axis=axis)


def _batch_concatenate(prim, values, batched, params, size):
    stacked = [v if b else with_batch(v, size) for v, b in zip(values, batched, strict=True)]
    return apply(prim, *stacked, axis=params["axis"] + 1)


CONCATENATE = defprim(
    "concatenate",
    lambda *xs, axis: xp.concatenate(xs, axis=axis),
    _concatenate_vjp,
    _concatenate_jvp,
    _NO_FLOPS,
    array_api=lambda ns: lambda *xs, axis: ns.concat(xs, axis=axis),
    batching=_batch_concatenate,
)


@public(CONCATENATE)
def concatenate(arrays, axis=0):
    """The arrays joined along an existing ``axis``."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("chainrule.concatenate: needs at least one array")
    axis = axis % builtins.max(ndim(arrays[0]), 1)
    return apply(CONCATENATE, *arrays, axis=axis)
