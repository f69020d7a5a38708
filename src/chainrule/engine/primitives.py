"""The primitive table: one entry per primitive, holding its forward, VJP, JVP and FLOP rules.

Reading guide (signatures of the rules, ``out`` is the primitive's output)::

    forward(*args, **params)                    -> out          # plain arrays in, plain array out
    vjp:   one rule per argument, rule_i(cotangent, out, *args, **params) -> cotangent of arg i
           (``None`` marks an argument that is never differentiated), or for variadic
           primitives a single rule returning a tuple of cotangents
    jvp(tangents, out, *args, **params)         -> tangent of out   # tangents[i] is None when zero
    flops(out, *args, **params)                 -> int
    array_api(namespace)                        -> a forward computing with that namespace

``array_api`` (optional) builds the forward for another array-API namespace (``lambda ns: ns.exp``);
:func:`chainrule.backend.namespace.use_namespace` binds it in place of the NumPy forward for a block
of code. A primitive without one raises there, naming itself and the namespace.

Rules are written with chainrule's own operations (``ops``) and Python operators, so the very same
rule runs on plain arrays on the first-order hot path and is itself recorded when a second
derivative is asked for. Rules never worry about broadcasting: the interpreters sum a cotangent
back to its argument's shape (``unbroadcast``) and broadcast tangents to the output shape in one
central place. A primitive declared without both rules is an error at import time.

Non-differentiable points follow the usual conventions: ``relu'(0) = 0``, ``|x|'(0) = 0``,
``sign' = 0``; ``maximum``/``minimum``/``max`` split the gradient evenly between tied entries.
"""

from __future__ import annotations

import math
import string

from . import arraylib
from .arraylib import xp


class Primitive:
    """A primitive operation: forward computation plus derivative and cost rules, side by side."""

    __slots__ = ("name", "forward", "vjp", "jvp", "flops", "array_api")

    def __init__(self, name, forward, vjp, jvp, flops, array_api=None):
        self.name = name
        self.forward = forward
        self.vjp = vjp  # tuple of per-argument rules, or one callable returning a tuple
        self.jvp = jvp
        self.flops = flops
        self.array_api = array_api  # namespace -> forward, or None (NumPy only)

    def __repr__(self):
        return f"Primitive({self.name})"


#: name -> Primitive, the whole table.
TABLE: dict[str, Primitive] = {}


def _linear_jvp(prim_name):
    """JVP of a primitive that is linear in its (single differentiable) array argument."""

    def jvp(tangents, out, *args, **params):
        return ops.apply(TABLE[prim_name], tangents[0], **params)

    return jvp


def _from_vjp(rule):
    """JVP of an elementwise unary primitive: its Jacobian is diagonal, so J t equals J^T t."""

    def jvp(tangents, out, x, **params):
        return rule(tangents[0], out, x, **params)

    return jvp


def _elementwise_flops(per_element=1):
    return lambda out, *args, **params: per_element * int(getattr(out, "size", 1))


def _no_flops(out, *args, **params):
    return 0


def _input_flops(out, x, *args, **params):
    return int(getattr(x, "size", 1))


def defprim(name, forward, vjp, jvp, flops=None, array_api=None) -> Primitive:
    """Declare primitive ``name``. ``jvp="linear"`` derives forward mode from the forward itself;
    ``jvp="from_vjp"`` derives it from the (single, elementwise) VJP rule. ``array_api`` builds
    the forward for another array-API namespace (see the module docstring)."""
    if vjp is None or jvp is None:
        raise TypeError(f"primitive {name!r} needs both a VJP and a JVP rule")
    if jvp == "linear":
        jvp = _linear_jvp(name)
    elif jvp == "from_vjp":
        jvp = _from_vjp(vjp[0])
    prim = Primitive(name, forward, vjp, jvp, flops or _elementwise_flops(), array_api)
    TABLE[name] = prim
    return prim


def _sum_tangents(*terms):
    """Add the non-None terms (a None tangent stands for zero)."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


# ----------------------------------------------------------------------------------------------
# Elementwise unary
# ----------------------------------------------------------------------------------------------
NEG = defprim(
    "negative", xp.negative, (lambda g, out, x: -g,), "linear", array_api=lambda ns: ns.negative
)
EXP = defprim("exp", xp.exp, (lambda g, out, x: g * out,), "from_vjp", array_api=lambda ns: ns.exp)
LOG = defprim("log", xp.log, (lambda g, out, x: g / x,), "from_vjp", array_api=lambda ns: ns.log)
LOG1P = defprim(
    "log1p", xp.log1p, (lambda g, out, x: g / (x + 1),), "from_vjp", array_api=lambda ns: ns.log1p
)
EXPM1 = defprim(
    "expm1", xp.expm1, (lambda g, out, x: g * (out + 1),), "from_vjp", array_api=lambda ns: ns.expm1
)
SIN = defprim(
    "sin", xp.sin, (lambda g, out, x: g * ops.cos(x),), "from_vjp", array_api=lambda ns: ns.sin
)
COS = defprim(
    "cos", xp.cos, (lambda g, out, x: -g * ops.sin(x),), "from_vjp", array_api=lambda ns: ns.cos
)
TAN = defprim(
    "tan", xp.tan, (lambda g, out, x: g * (out * out + 1),), "from_vjp", array_api=lambda ns: ns.tan
)
TANH = defprim(
    "tanh",
    xp.tanh,
    (lambda g, out, x: g * (1 - out * out),),
    "from_vjp",
    array_api=lambda ns: ns.tanh,
)
ARCTAN = defprim(
    "arctan",
    xp.arctan,
    (lambda g, out, x: g / (x * x + 1),),
    "from_vjp",
    array_api=lambda ns: ns.atan,
)
SINH = defprim(
    "sinh", xp.sinh, (lambda g, out, x: g * ops.cosh(x),), "from_vjp", array_api=lambda ns: ns.sinh
)
COSH = defprim(
    "cosh", xp.cosh, (lambda g, out, x: g * ops.sinh(x),), "from_vjp", array_api=lambda ns: ns.cosh
)
SQRT = defprim(
    "sqrt", xp.sqrt, (lambda g, out, x: g / (out * 2),), "from_vjp", array_api=lambda ns: ns.sqrt
)
# |x|'(0) = 0 by convention (sign(0) = 0). The sign is an array of x's floating dtype, which
# every namespace multiplies with g.
ABS = defprim(
    "abs",
    xp.abs,
    (lambda g, out, x: g * arraylib.ns.sign(ops.raw(x)),),
    "from_vjp",
    array_api=lambda ns: ns.abs,
)
# Piecewise constant: derivative zero everywhere it exists.
SIGN = defprim(
    "sign",
    xp.sign,
    (lambda g, out, x: ops.zeros_like(g),),
    lambda ts, out, x: ops.zeros_like(ts[0]),
)


def _sigmoid_in(namespace):
    """The sigmoid computed with ``namespace``: exp(-|x|) never overflows; pick the
    algebraically equal branch for each sign."""

    def sigmoid(x):
        z = namespace.exp(-namespace.abs(x))
        return namespace.where(x >= 0, 1 / (1 + z), z / (1 + z))

    return sigmoid


SIGMOID = defprim(
    "sigmoid",
    _sigmoid_in(xp),
    (lambda g, out, x: g * out * (1 - out),),
    "from_vjp",
    _elementwise_flops(4),
    array_api=_sigmoid_in,
)


def _relu_vjp(g, out, x):
    """g where x > 0, else 0 (relu'(0) = 0 by convention). NumPy multiplies by the boolean mask,
    its fastest form on the hot path (a ``where`` or ``g * sign(out)`` costs more there); the
    array API mixes no booleans into float arithmetic, so other namespaces select with where."""
    positive = ops.raw(x) > 0
    if arraylib.ns is xp:
        return g * positive
    return ops.where(positive, g, 0)


RELU = defprim(
    "relu",
    lambda x: xp.maximum(x, 0),
    (_relu_vjp,),
    "from_vjp",
    array_api=lambda ns: lambda x: ns.maximum(x, 0),
)
SOFTPLUS = defprim(
    "softplus",
    lambda x: xp.logaddexp(x, 0),
    (lambda g, out, x: g * ops.sigmoid(x),),
    "from_vjp",
    _elementwise_flops(4),
    array_api=lambda ns: lambda x: ns.logaddexp(x, 0),
)
ASTYPE = defprim(
    "astype",
    lambda x, dtype: x.astype(dtype),
    (lambda g, out, x, dtype: ops.astype(g, x.dtype),),
    "linear",
    _no_flops,
    array_api=lambda ns: lambda x, dtype: ns.astype(x, dtype),
)

# ----------------------------------------------------------------------------------------------
# Elementwise binary (broadcasting is undone centrally by the interpreters)
# ----------------------------------------------------------------------------------------------
ADD = defprim(
    "add",
    xp.add,
    (lambda g, out, x, y: g, lambda g, out, x, y: g),
    lambda ts, out, x, y: _sum_tangents(ts[0], ts[1]),
    array_api=lambda ns: ns.add,
)
SUB = defprim(
    "subtract",
    xp.subtract,
    (lambda g, out, x, y: g, lambda g, out, x, y: -g),
    lambda ts, out, x, y: ts[0] if ts[1] is None else (-ts[1] if ts[0] is None else ts[0] - ts[1]),
    array_api=lambda ns: ns.subtract,
)
MUL = defprim(
    "multiply",
    xp.multiply,
    (lambda g, out, x, y: g * y, lambda g, out, x, y: g * x),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else ts[0] * y, None if ts[1] is None else x * ts[1]
    ),
    array_api=lambda ns: ns.multiply,
)
DIV = defprim(
    "divide",
    xp.divide,
    (lambda g, out, x, y: g / y, lambda g, out, x, y: -g * out / y),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else ts[0] / y, None if ts[1] is None else -ts[1] * out / y
    ),
    array_api=lambda ns: ns.divide,
)


def _log_where_positive(x):
    # d(x**y)/dy = x**y log x; where x <= 0 the power is only defined for integer y, take 0.
    if not hasattr(x, "_level") and (not hasattr(x, "shape") or isinstance(x, xp.generic)):
        # A constant number (the 2 of 2**y) gives a number: NumPy's where would make it a host
        # array, which a GPU cotangent cannot be multiplied with.
        return math.log(x) if x > 0 else 0.0
    x_raw = ops.raw(x)
    positive = x_raw > 0
    return ops.where(positive, ops.log(ops.where(positive, x, 1)), 0)


def _pow_vjp_x(g, out, x, y):
    if not hasattr(y, "_level"):
        # d(x**0)/dx = 0 everywhere, also at x = 0 where 0 * 0**-1 would be NaN. Only for a
        # constant exponent: a traced one keeps the plain formula, whose y-derivative is needed.
        if not hasattr(y, "shape"):  # a Python number
            if y == 0:  # x ** 1 is x
                return g * y * x
        else:  # an array, compared where it lives (a device exponent stays on its device)
            y_zero = y == 0
            if arraylib.ns.any(y_zero):
                return g * y * x ** arraylib.ns.where(y_zero, 1, y - 1)
    return g * y * x ** (y - 1)


def _pow_vjp_y(g, out, x, y):
    return g * out * _log_where_positive(x)


POW = defprim(
    "power",
    xp.power,
    (_pow_vjp_x, _pow_vjp_y),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else _pow_vjp_x(ts[0], out, x, y),
        None if ts[1] is None else _pow_vjp_y(ts[1], out, x, y),
    ),
    _elementwise_flops(10),
    array_api=lambda ns: ns.pow,
)


def _tie_split(first, second):
    """Share of the cotangent going to ``first`` in max(first, second): 1, 0, or 1/2 at a tie.
    NumPy adds the boolean masks (its fastest form); the array API mixes no booleans into float
    arithmetic, so other namespaces select with where."""
    a, b = ops.raw(first), ops.raw(second)
    if arraylib.ns is xp:
        return (a > b) + 0.5 * (a == b)
    larger, tie = a > b, a == b
    one = arraylib.ns.ones_like(larger, dtype=_float_dtype_of(a, b))
    return arraylib.ns.where(larger, one, arraylib.ns.where(tie, 0.5 * one, 0 * one))


def _float_dtype_of(*values):
    """The floating dtype of the first array among ``values`` with one (the default otherwise)."""
    for value in values:
        dtype = getattr(value, "dtype", None)
        if dtype is not None and arraylib.is_float_dtype(dtype):
            return dtype
    return arraylib.as_dtype("float64")


MAXIMUM = defprim(
    "maximum",
    xp.maximum,
    (lambda g, out, x, y: g * _tie_split(x, y), lambda g, out, x, y: g * _tie_split(y, x)),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else ts[0] * _tie_split(x, y),
        None if ts[1] is None else ts[1] * _tie_split(y, x),
    ),
    array_api=lambda ns: ns.maximum,
)
MINIMUM = defprim(
    "minimum",
    xp.minimum,
    (lambda g, out, x, y: g * _tie_split(y, x), lambda g, out, x, y: g * _tie_split(x, y)),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else ts[0] * _tie_split(y, x),
        None if ts[1] is None else ts[1] * _tie_split(x, y),
    ),
    array_api=lambda ns: ns.minimum,
)
# The condition is a static parameter: it has no derivative.
WHERE = defprim(
    "where",
    lambda x, y, condition: xp.where(condition, x, y),
    (
        lambda g, out, x, y, condition: ops.where(condition, g, 0),
        lambda g, out, x, y, condition: ops.where(condition, 0, g),
    ),
    lambda ts, out, x, y, condition: ops.where(
        condition, 0 if ts[0] is None else ts[0], 0 if ts[1] is None else ts[1]
    ),
    _no_flops,
    array_api=lambda ns: lambda x, y, condition: ns.where(condition, x, y),
)

# ----------------------------------------------------------------------------------------------
# Reductions (``axis`` is always a normalised tuple of non-negative ints here)
# ----------------------------------------------------------------------------------------------


def _keep(value, x_ndim, axis, keepdims):
    """Put back the reduced axes (as size 1) so that ``value`` broadcasts against the input."""
    if keepdims or not axis or not ops.ndim(value):  # a 0-d value broadcasts as it is
        return value
    shape = list(ops.shape(value))
    for ax in sorted(axis):
        shape.insert(ax, 1)
    return ops.reshape(value, tuple(shape))


def _sum_vjp(g, out, x, axis, keepdims):
    return ops.broadcast_to(_keep(g, x.ndim, axis, keepdims), x.shape)


SUM = defprim(
    # The ufunc's own reduce: the same result as xp.sum without its Python-level wrapper.
    "sum",
    lambda x, axis, keepdims: xp.add.reduce(x, axis=axis, keepdims=keepdims),
    (_sum_vjp,),
    "linear",
    _input_flops,
    array_api=lambda ns: lambda x, axis, keepdims: ns.sum(x, axis=axis, keepdims=keepdims),
)


def _reduce_max(x, axis, keepdims):
    """The maximum over ``axis``: NumPy's ufunc method for NumPy arrays (no Python wrapper on the
    hot path); for other arrays the active namespace's ``max``: NumPy's function, which
    dispatches to the array's module (CuPy implements no ``maximum.reduce``), or the namespace of
    ``use_namespace``."""
    if isinstance(x, xp.ndarray):
        return xp.maximum.reduce(x, axis=axis, keepdims=keepdims)
    # The active namespace's max: NumPy's (which dispatches to CuPy), or use_namespace's.
    return arraylib.ns.max(x, axis=axis, keepdims=keepdims)


def _max_share(out, x, axis, keepdims):
    """Which entries attain the maximum, each weighted 1/(number of ties)."""
    x_raw = ops.raw(x)
    # In x's dtype: the array API neither sums nor divides booleans.
    hit = ops.astype(x_raw == _keep(ops.raw(out), x_raw.ndim, axis, keepdims), x_raw.dtype)
    return hit / arraylib.ns.sum(hit, axis=axis, keepdims=True)


MAX = defprim(
    "max",
    _reduce_max,
    (
        lambda g, out, x, axis, keepdims: (
            _keep(g, x.ndim, axis, keepdims) * _max_share(out, x, axis, keepdims)
        ),
    ),
    lambda ts, out, x, axis, keepdims: ops.sum(
        ts[0] * _max_share(out, x, axis, keepdims), axis=axis, keepdims=keepdims
    ),
    _input_flops,
    array_api=lambda ns: lambda x, axis, keepdims: ns.max(x, axis=axis, keepdims=keepdims),
)


def _prod_partials(out, x, axis, keepdims):
    """d prod / d x_i = product of the others, exact also where x has zeros."""
    x_raw = ops.raw(x)
    is_zero = x_raw == 0
    safe_x = ops.where(is_zero, 1, x)
    # Counted in x's dtype: the array API sums no booleans.
    zeros_in_slice = arraylib.ns.sum(ops.astype(is_zero, x_raw.dtype), axis=axis, keepdims=True)
    product_of_nonzero = ops.prod(safe_x, axis=axis, keepdims=True)
    only_zero = ops.where(zeros_in_slice == 1, product_of_nonzero, 0)
    return ops.where(is_zero, only_zero, _keep(out, x_raw.ndim, axis, keepdims) / safe_x)


PROD = defprim(
    "prod",
    lambda x, axis, keepdims: xp.prod(x, axis=axis, keepdims=keepdims),
    (
        lambda g, out, x, axis, keepdims: (
            _keep(g, x.ndim, axis, keepdims) * _prod_partials(out, x, axis, keepdims)
        ),
    ),
    lambda ts, out, x, axis, keepdims: ops.sum(
        ts[0] * _prod_partials(out, x, axis, keepdims), axis=axis, keepdims=keepdims
    ),
    _input_flops,
    array_api=lambda ns: lambda x, axis, keepdims: ns.prod(x, axis=axis, keepdims=keepdims),
)


def _logsumexp_forward(x, axis, keepdims):
    if isinstance(x, xp.ndarray):  # the ufunc method, without _reduce_max's call (a hot path)
        peak = xp.maximum.reduce(x, axis=axis, keepdims=True)
    else:
        peak = _reduce_max(x, axis, True)
    peak = xp.where(xp.isfinite(peak), peak, 0)
    out = xp.log(xp.add.reduce(xp.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else out.squeeze(axis=axis)


def _namespace_logsumexp(namespace):
    """The logsumexp forward of :func:`_logsumexp_forward` in an array-API namespace."""

    def forward(x, axis, keepdims):
        peak = namespace.max(x, axis=axis, keepdims=True)
        peak = namespace.where(namespace.isfinite(peak), peak, 0)
        out = namespace.log(namespace.sum(namespace.exp(x - peak), axis=axis, keepdims=True)) + peak
        return out if keepdims else namespace.squeeze(out, axis=axis)

    return forward


def _lse_weights(out, x, axis, keepdims):
    """softmax(x) along ``axis``: the derivative of logsumexp."""
    return ops.exp(x - _keep(out, x.ndim, axis, keepdims))


LOGSUMEXP = defprim(
    "logsumexp",
    _logsumexp_forward,
    (
        lambda g, out, x, axis, keepdims: (
            _keep(g, x.ndim, axis, keepdims) * _lse_weights(out, x, axis, keepdims)
        ),
    ),
    lambda ts, out, x, axis, keepdims: ops.sum(
        ts[0] * _lse_weights(out, x, axis, keepdims), axis=axis, keepdims=keepdims
    ),
    lambda out, x, **params: 4 * int(x.size),
    array_api=_namespace_logsumexp,
)


def _reverse_along(value, axis):
    index = (slice(None),) * axis + (slice(None, None, -1),)
    return ops.getitem(value, index)


CUMSUM = defprim(
    "cumsum",
    lambda x, axis: xp.cumsum(x, axis=axis),
    (lambda g, out, x, axis: _reverse_along(ops.cumsum(_reverse_along(g, axis), axis=axis), axis),),
    "linear",
    _input_flops,
    array_api=lambda ns: lambda x, axis: ns.cumulative_sum(x, axis=axis),
)

# ----------------------------------------------------------------------------------------------
# Shape and indexing
# ----------------------------------------------------------------------------------------------
# Shape ops run on every backward pass: arrays use their own methods (NumPy's module-level
# functions add a Python wrapper that costs more than the view they return).
RESHAPE = defprim(
    "reshape",
    lambda x, shape: x.reshape(shape) if isinstance(x, xp.ndarray) else xp.reshape(x, shape),
    (lambda g, out, x, shape: ops.reshape(g, x.shape),),
    "linear",
    _no_flops,
    array_api=lambda ns: ns.reshape,
)
TRANSPOSE = defprim(
    "transpose",
    lambda x, axes: x.transpose(axes) if isinstance(x, xp.ndarray) else xp.transpose(x, axes),
    (lambda g, out, x, axes: ops.transpose(g, tuple(_inverse_permutation(axes))),),
    "linear",
    _no_flops,
    array_api=lambda ns: ns.permute_dims,
)


def _inverse_permutation(axes):
    inverse = [0] * len(axes)
    for position, ax in enumerate(axes):
        inverse[ax] = position
    return inverse


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


BROADCAST_TO = defprim(
    "broadcast_to",
    _broadcast_to_forward,
    (lambda g, out, x, shape: g,),
    "linear",
    _no_flops,
    array_api=lambda ns: ns.broadcast_to,
)


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


GETITEM = defprim(
    "getitem",
    lambda x, index: x[index],
    (lambda g, out, x, index: ops.apply(TABLE["scatter_add"], g, index=index, shape=x.shape),),
    "linear",
    _no_flops,
    array_api=_namespace_getitem,
)
SCATTER_ADD = defprim(
    "scatter_add",
    _scatter_add_forward,
    (lambda g, out, update, index, shape: ops.getitem(g, index),),
    "linear",
    _input_flops,
    array_api=_namespace_scatter_add,
)


def _concatenate_vjp(g, out, *xs, axis):
    cotangents = []
    start = 0
    for x in xs:
        size = x.shape[axis]
        index = (slice(None),) * axis + (slice(start, start + size),)
        cotangents.append(ops.getitem(g, index))
        start += size
    return tuple(cotangents)


def _concatenate_jvp(ts, out, *xs, axis):
    if all(t is None for t in ts):
        return None
    parts = [ops.zeros_like(x) if t is None else t for t, x in zip(ts, xs, strict=True)]
    return ops.concatenate(parts, axis=axis)


CONCATENATE = defprim(
    "concatenate",
    lambda *xs, axis: xp.concatenate(xs, axis=axis),
    _concatenate_vjp,
    _concatenate_jvp,
    _no_flops,
    array_api=lambda ns: lambda *xs, axis: ns.concat(xs, axis=axis),
)

# ----------------------------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------------------------


def _mT(value):
    return ops.swapaxes(value, -1, -2)


def _matmul_vjp_x(g, out, x, y):
    if x.ndim == 1 and y.ndim == 1:
        return g * y
    if x.ndim == 1:  # (k,) @ (..., k, n) -> (..., n)
        return ops.matmul(y, ops.expand_dims(g, -1))[..., 0]
    if y.ndim == 1:  # (..., m, k) @ (k,) -> (..., m)
        return ops.expand_dims(g, -1) * y
    return ops.matmul(g, _mT(y))


def _matmul_vjp_y(g, out, x, y):
    if x.ndim == 1 and y.ndim == 1:
        return g * x
    if x.ndim == 1:
        return ops.expand_dims(x, -1) * ops.expand_dims(g, -2)
    if y.ndim == 1:
        return ops.matmul(_mT(x), ops.expand_dims(g, -1))[..., 0]
    return ops.matmul(_mT(x), g)


def _matmul_flops(out, x, y):
    contracted = x.shape[-1]
    return 2 * int(getattr(out, "size", 1)) * int(contracted)


MATMUL = defprim(
    "matmul",
    xp.matmul,
    (_matmul_vjp_x, _matmul_vjp_y),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else ops.matmul(ts[0], y),
        None if ts[1] is None else ops.matmul(x, ts[1]),
    ),
    _matmul_flops,
    array_api=lambda ns: ns.matmul,
)


def _parse_einsum(subscripts, count):
    inputs, output = subscripts.replace(" ", "").split("->")
    inputs = inputs.split(",")
    if len(inputs) != count:
        raise ValueError(f"einsum: {subscripts!r} names {len(inputs)} operands, got {count}")
    return inputs, output


def _einsum_vjp(g, out, *operands, subscripts):
    inputs, output = _parse_einsum(subscripts, len(operands))
    unused_letters = [c for c in string.ascii_letters if c not in subscripts]
    cotangents = []
    for i, target in enumerate(inputs):
        if "." in target:
            raise NotImplementedError(
                f"einsum: no derivative for operand {i} with ellipsis subscripts {target!r} in "
                f"{subscripts!r}; write the axes out explicitly"
            )
        sizes = dict(zip(target, operands[i].shape, strict=True))
        letters = "".join(dict.fromkeys(target))  # each letter once, in order of appearance
        others = [s for j, s in enumerate(inputs) if j != i]
        available = set(output).union(*others) if others else set(output)
        # Letters summed away inside operand i alone cannot come out of the einsum: broadcast after.
        kept = "".join(c for c in letters if c in available)
        spec = ",".join([output, *others]) + "->" + kept
        contribution = ops.einsum(spec, g, *[o for j, o in enumerate(operands) if j != i])
        if kept != letters:
            shape = tuple(sizes[c] if c in kept else 1 for c in letters)
            full_shape = tuple(sizes[c] for c in letters)
            contribution = ops.broadcast_to(ops.reshape(contribution, shape), full_shape)
        if letters != target:
            # A repeated letter reads a diagonal (``ii->i``): write the cotangent back onto that
            # diagonal, zeros elsewhere, by multiplying with identities: out[i, a] = c[i] * eye[i,
            # a].
            fresh = iter(unused_letters)
            spelled, identity_specs = [], []
            for position, c in enumerate(target):
                if c in target[:position]:
                    twin = next(fresh)
                    spelled.append(twin)
                    identity_specs.append(c + twin)
                else:
                    spelled.append(c)
            # Built where the cotangent lives (NumPy, or CuPy for a GPU array).
            eye = arraylib.namespace_of(ops.raw(g)).eye
            identities = [eye(sizes[pair[0]], dtype=ops.raw(g).dtype) for pair in identity_specs]
            full_spec = ",".join([letters, *identity_specs]) + "->" + "".join(spelled)
            contribution = ops.einsum(full_spec, contribution, *identities)
        cotangents.append(contribution)
    return tuple(cotangents)


def _einsum_jvp(ts, out, *operands, subscripts):
    terms = []
    for i, t in enumerate(ts):
        if t is not None:
            args = list(operands)
            args[i] = t
            terms.append(ops.einsum(subscripts, *args))
    return _sum_tangents(*terms)


def _einsum_flops(out, *operands, subscripts):
    inputs, _ = _parse_einsum(subscripts, len(operands))
    sizes = {}
    for spec, operand in zip(inputs, operands, strict=True):
        for letter, size in zip(spec, operand.shape, strict=True):
            sizes[letter] = size
    return 2 * math.prod(sizes.values()) if len(operands) > 1 else int(operands[0].size)


EINSUM = defprim(
    "einsum",
    lambda *operands, subscripts: xp.einsum(subscripts, *operands, optimize=len(operands) > 2),
    _einsum_vjp,
    _einsum_jvp,
    _einsum_flops,
)


def _det_vjp(g, out, x):
    scale = ops.expand_dims(ops.expand_dims(g * out, -1), -1)
    return scale * _mT(ops.linalg.inv(x))


DET = defprim(
    "det",
    xp.linalg.det,
    (_det_vjp,),
    lambda ts, out, x: out * ops.trace(ops.linalg.solve(x, ts[0]), axis1=-2, axis2=-1),
    lambda out, x: int(x.shape[-1]) ** 3 * max(1, int(x.size) // int(x.shape[-1]) ** 2),
)
INV = defprim(
    "inv",
    xp.linalg.inv,
    (lambda g, out, x: -ops.matmul(_mT(out), ops.matmul(g, _mT(out))),),
    lambda ts, out, x: -ops.matmul(out, ops.matmul(ts[0], out)),
    lambda out, x: 2 * int(x.shape[-1]) ** 3 * max(1, int(x.size) // int(x.shape[-1]) ** 2),
)


def _solve_vjp_b(g, out, a, b):
    if b.ndim == 1:
        return ops.linalg.solve(_mT(a), ops.expand_dims(g, -1))[..., 0]
    return ops.linalg.solve(_mT(a), g)


def _solve_vjp_a(g, out, a, b):
    gb = _solve_vjp_b(g, out, a, b)
    if b.ndim == 1:
        return -ops.expand_dims(gb, -1) * ops.expand_dims(out, -2)
    return -ops.matmul(gb, _mT(out))


def _solve_jvp(ts, out, a, b):
    # a x = b  =>  a dx = db - da x
    rhs = ts[1]
    if ts[0] is not None:
        # A 1-d b is one vector for every matrix of the batch: multiply it as a column.
        da_x = (
            ops.matmul(ts[0], ops.expand_dims(out, -1))[..., 0]
            if b.ndim == 1
            else ops.matmul(ts[0], out)
        )
        rhs = -da_x if rhs is None else rhs - da_x
    if b.ndim == 1:
        return ops.linalg.solve(a, ops.expand_dims(rhs, -1))[..., 0]
    return ops.linalg.solve(a, rhs)


SOLVE = defprim(
    "solve",
    xp.linalg.solve,
    (_solve_vjp_a, _solve_vjp_b),
    _solve_jvp,
    lambda out, a, b: int(a.shape[-1]) ** 3 + 2 * int(a.shape[-1]) * int(getattr(out, "size", 1)),
)

# ----------------------------------------------------------------------------------------------
# Fused for numerical stability: softmax cross-entropy from logits and integer labels
# ----------------------------------------------------------------------------------------------


def _arange_like(value, stop):
    """``arange(stop)`` beside ``value``: NumPy's for NumPy arrays (checked first, the CPU
    path), the active namespace's inside ``use_namespace``, else the module of the array's
    device (CuPy's for a GPU array)."""
    if isinstance(value, xp.ndarray):
        return xp.arange(stop)
    if arraylib.ns is not xp:
        return arraylib.ns.arange(stop)
    return arraylib.namespace_of(value).arange(stop)


def _xent_forward(logits, labels):
    if type(labels) is not type(logits) and arraylib.device_of(labels) != arraylib.device_of(
        logits
    ):
        # Named by the engine's error path, which lists the devices of operands and labels.
        raise TypeError("labels and logits on different devices")
    lse = _logsumexp_forward(logits, (logits.ndim - 1,), False)
    # logits[..., label] for every example: one gather on the rows of a (examples, classes) view.
    classes = logits.shape[-1]
    rows = logits.reshape(-1, classes)
    count = rows.shape[0]
    examples = xp.arange(count) if isinstance(labels, xp.ndarray) else _arange_like(labels, count)
    picked = rows[examples, labels.reshape(-1)].reshape(labels.shape)
    return lse - picked


def _xent_dlogits(logits, labels):
    """softmax(logits) - onehot(labels): the gradient of the per-example loss.

    The softmax is exp(logits - peak) / sum(exp(logits - peak)) with a constant peak (the row
    maximum): softmax does not change when its input is shifted, so the peak carries no
    derivative and higher-order derivatives stay exact. Unlike the forward pass (where a row of
    -inf logits must give a loss of +inf, not NaN), the peak has no finiteness guard here: a row
    whose maximum is not finite (a +inf or NaN logit, or all -inf) has no finite gradient either
    way (with a guard some of its entries would be 0, the others NaN; without, all are NaN), and
    leaving the guard out saves two operations (two kernel launches on a GPU) per training step.
    """
    values = ops.raw(logits)
    classes = values.shape[-1]
    if isinstance(values, xp.ndarray):  # NumPy, written out: this runs in every training step
        peak = xp.maximum.reduce(values, axis=-1, keepdims=True)
        onehot = xp.arange(classes) == labels[..., None]
    else:  # a GPU array, or another namespace's
        peak = _reduce_max(values, -1, True)
        onehot = _arange_like(labels, classes) == labels[..., None]
        if arraylib.ns is not xp:  # the array API subtracts no booleans from floats
            onehot = arraylib.ns.astype(onehot, values.dtype)
    exp = ops.exp(logits - peak)
    return exp / ops.sum(exp, axis=-1, keepdims=True) - onehot


def _namespace_xent(namespace):
    """The fused cross-entropy forward in an array-API namespace (a take along the class axis)."""
    logsumexp = _namespace_logsumexp(namespace)

    def forward(logits, labels):
        classes_axis = logits.ndim - 1
        picked = namespace.take_along_axis(logits, namespace.expand_dims(labels, axis=-1), axis=-1)
        return logsumexp(logits, (classes_axis,), False) - namespace.squeeze(picked, axis=-1)

    return forward


def _xent_vjp(g, out, logits, labels):
    return ops.reshape(g, ops.shape(g) + (1,)) * _xent_dlogits(logits, labels)


SOFTMAX_CROSS_ENTROPY = defprim(
    "softmax_cross_entropy",
    _xent_forward,
    (_xent_vjp,),
    lambda ts, out, logits, labels: ops.sum(ts[0] * _xent_dlogits(logits, labels), axis=-1),
    lambda out, logits, labels: 5 * int(logits.size),
    array_api=_namespace_xent,
)


def check_table() -> None:
    """Every primitive has its forward, VJP, JVP and FLOP rules (run at import)."""
    for name, prim in TABLE.items():
        for field in ("forward", "vjp", "jvp", "flops"):
            if getattr(prim, field) is None:
                raise TypeError(f"primitive {name!r} has no {field} rule")


check_table()

from . import ops  # noqa: E402  (rules look ops up at call time; ops imports this module)
