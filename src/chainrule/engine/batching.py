"""Batching: many tangents (or cotangents) through one pass, along a leading batch axis.

``Batched(value, level)`` is a tracer whose ``value`` stacks B examples along axis 0 but which
shows every piece of code the *per-example* shape ``value.shape[1:]``. Code written for one
example therefore runs unchanged on the whole batch; in particular every JVP and VJP rule of the
primitive table, which is how ``jacfwd`` pushes n basis tangents and ``jacrev`` m basis cotangents
through a single pass each.

When an operation reaches a Batched argument, :meth:`Batched._process` looks up the primitive's
*batching rule* in :data:`RULES` and runs the primitive once on the stacked values, rewritten so
that the batch axis is carried through. All knowledge of the batch axis lives in this table:

* axis-carrying parameters move by one (``axis``, ``axes``, ``shape``, ``index``, einsum
  ``subscripts``);
* operands that carry no batch axis are lined up for broadcasting: a batched operand whose
  per-example rank is lower than the others' gets size-1 axes inserted *after* the batch axis, so
  that NumPy pairs per-example axes with per-example axes and never with the batch axis.

Worked example: let ``t`` be Batched with value shape (B, 3, 4), so ``t.shape == (3, 4)``.

* ``sum(t, axis=(0,))`` runs ``sum(value, axis=(1,))``: value shape (B, 4), ``shape`` (4,).
* ``t * y`` with ``y.shape == (2, 3, 4)`` first reshapes value to (B, 1, 3, 4), then multiplies:
  value shape (B, 2, 3, 4), ``shape`` (2, 3, 4), exactly what ``t * y`` is for one example.
* ``t[:, idx]`` with an integer array ``idx`` moves the batch axis last, indexes, and moves it
  back, because NumPy places the axes of separated integer-array indices first.

A primitive with no rule here still works, one example at a time (a loop inside that one
primitive, not a loop of passes); the test suite checks that every primitive has a rule.

The primal values a rule reads (``raw(x) > 0`` in the ReLU rule, for instance) are never batched
by chainrule's transforms: only tangents and cotangents are.
"""

from __future__ import annotations

import builtins

from . import arraylib, core, ops
from .array_methods import ArrayOperators
from .arraylib import xp
from .core import Tracer


class Batched(ArrayOperators, Tracer):
    """B values of one per-example shape, stacked along axis 0 of ``value`` (see module
    docstring)."""

    __slots__ = ("value", "_level", "shape")

    def __init__(self, value, level):
        self.value = value
        self._level = level
        self.shape = tuple(value.shape[1:])  # what every operation sees: one example's shape

    def _unwrap(self):
        # ``raw`` of a Batched is the stacked array: only use it where the batch axis is expected.
        return self.value

    @property
    def batch_size(self) -> int:
        return self.value.shape[0]

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        size = 1
        for n in self.shape:
            size *= n
        return size

    @property
    def dtype(self):
        return self.value.dtype

    def _process(self, prim, args, params):
        level = self._level
        batched = [type(arg) is Batched and arg._level == level for arg in args]
        values = [
            arg.value if is_batched else arg for arg, is_batched in zip(args, batched, strict=True)
        ]
        rule = RULES.get(prim.name, _one_example_at_a_time)
        return Batched(rule(prim, values, batched, params, self.value.shape[0]), level)

    def __repr__(self):
        return f"Batched(value={self.value!r}, level={self._level})"


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _rank(value, is_batched):
    """Per-example rank of an operand."""
    rank = len(getattr(value, "shape", ()))
    return rank - 1 if is_batched else rank


def _align(value, rank):
    """Insert size-1 axes after the batch axis until the per-example rank is ``rank``."""
    shape = ops.shape(value)
    missing = rank - (len(shape) - 1)
    if missing <= 0:
        return value
    return ops.reshape(value, shape[:1] + (1,) * missing + shape[1:])


def _with_batch(value, size):
    """An operand without batch axis, repeated along a new leading axis (a broadcast view)."""
    return ops.broadcast_to(ops.expand_dims(value, 0), (size, *ops.shape(value)))


# ------------------------------------------------------------------------------------------------
# Rules: rule(prim, values, batched, params, size) -> stacked result (leading batch axis)
# ------------------------------------------------------------------------------------------------


def _elementwise(prim, values, batched, params, size):
    """Elementwise primitives: line up per-example ranks, then NumPy broadcasting does the rest."""
    ranks = [len(getattr(v, "shape", ())) - b for v, b in zip(values, batched, strict=True)]
    rank = builtins.max(ranks)
    condition = params.get("condition")  # ``where``: a broadcasting operand held as a parameter
    if condition is not None:
        rank = builtins.max(rank, ops.ndim(condition))
    for i, (own, is_batched) in enumerate(zip(ranks, batched, strict=True)):
        if is_batched and own < rank:
            values = list(values)
            values[i] = _align(values[i], rank)
    return core.apply(prim, *values, **params)


def _shift_axes(prim, values, batched, params, size):
    """Reductions over ``axis`` (a tuple of non-negative ints): every axis moves by one."""
    return core.apply(prim, values[0], **{**params, "axis": tuple(a + 1 for a in params["axis"])})


def _shift_axis(prim, values, batched, params, size):
    """Primitives along one ``axis`` (an int)."""
    return core.apply(prim, values[0], **{**params, "axis": params["axis"] + 1})


def _leading_dims(prim, values, batched, params, size):
    """Primitives that already treat leading axes as a stack (det, inv): nothing to change."""
    return core.apply(prim, *values, **params)


def _reshape(prim, values, batched, params, size):
    return core.apply(prim, values[0], shape=(size, *params["shape"]))


def _transpose(prim, values, batched, params, size):
    return core.apply(prim, values[0], axes=(0, *(a + 1 for a in params["axes"])))


def _broadcast_to(prim, values, batched, params, size):
    shape = tuple(params["shape"])
    return core.apply(prim, _align(values[0], len(shape)), shape=(size, *shape))


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


def _getitem(prim, values, batched, params, size):
    x = values[0]
    items = _index_items(params["index"])
    if _is_basic(items):  # slices, ints, None: a leading full slice keeps the batch axis in front
        return core.apply(prim, x, index=(slice(None), *items))
    # Integer or boolean arrays may move axes to the front (NumPy's rule for separated advanced
    # indices): index with the batch axis last instead, where no index can reach it.
    items = _expand_ellipsis(items, ops.ndim(x) - 1)
    out = core.apply(prim, ops.moveaxis(x, 0, -1), index=items)
    return ops.moveaxis(out, -1, 0)


def _scatter_add(prim, values, batched, params, size):
    update = values[0]
    shape = tuple(params["shape"])
    items = _index_items(params["index"])
    if _is_basic(items):
        # ``update`` may broadcast into the indexed region: line its per-example rank up with it.
        target_rank = xp.broadcast_to(xp.zeros((), dtype=bool), shape)[items].ndim
        return core.apply(
            prim, _align(update, target_rank), index=(slice(None), *items), shape=(size, *shape)
        )
    items = _expand_ellipsis(items, len(shape))
    out = core.apply(prim, ops.moveaxis(update, 0, -1), index=items, shape=(*shape, size))
    return ops.moveaxis(out, -1, 0)


def _concatenate(prim, values, batched, params, size):
    stacked = [v if b else _with_batch(v, size) for v, b in zip(values, batched, strict=True)]
    return core.apply(prim, *stacked, axis=params["axis"] + 1)


#: A stack of products whose every factor has at most this many rows (or columns) runs as one
#: product instead: NumPy would loop over the stack calling BLAS on slivers.
_THIN = 4


def _matmul(prim, values, batched, params, size):
    x, y = values
    x_batched, y_batched = batched
    x_rank, y_rank = _rank(x, x_batched), _rank(y, y_batched)
    if x_batched and not y_batched and y_rank <= 2:
        if x_rank == 1:  # (B, K) @ (K, N): already one matrix product
            return core.apply(prim, x, y)
        x_shape = ops.shape(x)
        if x_shape[-2] <= _THIN:  # thin rows: (B*...*M, K) @ (K, N) in one product
            out = core.apply(prim, ops.reshape(x, (-1, x_shape[-1])), y)
            return ops.reshape(out, x_shape[:-1] + ops.shape(out)[1:])
    if y_batched and not x_batched and x_rank <= 2:
        if y_rank == 1:  # x @ t for each t: (B, K) @ x^T in one product
            return core.apply(prim, y, x if x_rank == 1 else ops.swapaxes(x, -1, -2))
        y_shape = ops.shape(y)
        if x_rank == 2 and y_shape[-1] <= _THIN:  # thin columns: (B*...*N, K) @ x^T, then back
            x_t = ops.swapaxes(x, -1, -2)
            if y_shape[-1] == 1:  # a column per example: no transposes needed
                out = core.apply(prim, ops.reshape(y, (-1, y_shape[-2])), x_t)
                return ops.reshape(out, y_shape[:-2] + (ops.shape(x)[0], 1))
            rows = ops.reshape(ops.swapaxes(y, -1, -2), (-1, y_shape[-2]))
            out = ops.reshape(
                core.apply(prim, rows, x_t), y_shape[:-2] + (y_shape[-1], ops.shape(x)[0])
            )
            return ops.swapaxes(out, -1, -2)
    # General case: make 1-d operands matrices (NumPy's own convention), line up the stack axes,
    # multiply, and drop the axes that the promotion added.
    if x_rank == 1:
        x = ops.expand_dims(x, -2)
    if y_rank == 1:
        y = ops.expand_dims(y, -1)
    rank = builtins.max(x_rank, y_rank, 2)
    if x_batched:
        x = _align(x, rank)
    if y_batched:
        y = _align(y, rank)
    out = core.apply(prim, x, y)
    if y_rank == 1:
        out = ops.squeeze(out, -1)
    if x_rank == 1:
        out = ops.squeeze(out, -1 if y_rank == 1 else -2)
    return out


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum(prim, values, batched, params, size):
    subscripts = params["subscripts"]
    inputs, output = subscripts.split("->")
    letter = next(c for c in _LETTERS if c not in subscripts)
    inputs = [
        letter + spec if b else spec for spec, b in zip(inputs.split(","), batched, strict=True)
    ]
    return core.apply(prim, *values, subscripts=",".join(inputs) + "->" + letter + output)


def _solve(prim, values, batched, params, size):
    a, b = values
    a_batched, b_batched = batched
    vector = _rank(b, b_batched) == 1
    if vector:  # NumPy reads a 1-d right-hand side as a vector only when it is truly 1-d
        b = ops.expand_dims(b, -1)
    rank = builtins.max(_rank(a, a_batched), _rank(b, b_batched))
    if a_batched:
        a = _align(a, rank)
    if b_batched:
        b = _align(b, rank)
    out = core.apply(prim, a, b)
    return ops.squeeze(out, -1) if vector else out


def _softmax_cross_entropy(prim, values, batched, params, size):
    labels = arraylib.asarray(params["labels"])  # a GPU array stays on its device
    # ``backend.ns``: NumPy's broadcast_to, or that of the namespace use_namespace made active.
    labels = arraylib.ns.broadcast_to(labels, (size, *labels.shape))
    return core.apply(prim, values[0], labels=labels)


def _one_example_at_a_time(prim, values, batched, params, size):
    """Fallback for a primitive without a rule: correct, one example at a time."""
    outs = []
    for i in range(size):
        args = [ops.getitem(v, i) if b else v for v, b in zip(values, batched, strict=True)]
        outs.append(core.apply(prim, *args, **params))
    return ops.stack(outs)


ELEMENTWISE = (
    "negative",
    "exp",
    "log",
    "log1p",
    "expm1",
    "sin",
    "cos",
    "tan",
    "tanh",
    "arctan",
    "sinh",
    "cosh",
    "sqrt",
    "abs",
    "sign",
    "sigmoid",
    "relu",
    "softplus",
    "astype",
    "add",
    "subtract",
    "multiply",
    "divide",
    "power",
    "maximum",
    "minimum",
    "where",
)

#: primitive name -> batching rule.
RULES = {name: _elementwise for name in ELEMENTWISE}
RULES.update(
    {
        "sum": _shift_axes,
        "max": _shift_axes,
        "prod": _shift_axes,
        "logsumexp": _shift_axes,
        "cumsum": _shift_axis,
        "reshape": _reshape,
        "transpose": _transpose,
        "broadcast_to": _broadcast_to,
        "getitem": _getitem,
        "scatter_add": _scatter_add,
        "concatenate": _concatenate,
        "matmul": _matmul,
        "einsum": _einsum,
        "det": _leading_dims,
        "inv": _leading_dims,
        "solve": _solve,
        "softmax_cross_entropy": _softmax_cross_entropy,
    }
)


def unbatch(value, size, level):
    """The stacked array behind ``value``: its ``value`` if it is Batched at ``level``, else
    ``value`` repeated ``size`` times (a result that does not depend on the batch)."""
    if type(value) is Batched and value._level == level:
        return value.value
    return _with_batch(value, size)
