"""Elementwise primitives: unary functions, binary arithmetic, ``where`` and ``astype``.

Their batching rule is the generic ``"elementwise"`` one and their cotangents are summed back
over broadcast axes centrally, so an entry here is a forward and one short rule per argument.

Non-differentiable points follow the usual conventions: ``relu'(0) = 0``, ``|x|'(0) = 0``,
``sign' = 0``, ``hypot`` has derivative 0 at the origin; ``maximum``/``minimum`` split the
gradient evenly between tied entries.
"""

from __future__ import annotations

import math

from .. import arraylib
from ..arraylib import xp
from ..core import Tracer, apply, strip, zeros_like
from ..table import Primitive, defprim, elementwise_flops, public

_NO_FLOPS = elementwise_flops(0)


def _sum_tangents(*terms):
    """Add the non-None terms (a None tangent stands for zero)."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


def _each_tangent(rules):
    """JVP of a binary primitive from its two VJP rules (each linear in the cotangent and, the
    primitive being elementwise, equal to its JVP rule)."""
    first, second = rules

    def jvp(ts, out, x, y):
        return _sum_tangents(
            None if ts[0] is None else first(ts[0], out, x, y),
            None if ts[1] is None else second(ts[1], out, x, y),
        )

    return jvp


def _binary(name, forward, rules, **fields) -> Primitive:
    """An elementwise binary primitive whose JVP follows from its VJP rules."""
    return defprim(name, forward, rules, _each_tangent(rules), batching="elementwise", **fields)


def _unary(name, forward, rule, **fields) -> Primitive:
    """An elementwise unary primitive whose JVP is its VJP rule (a diagonal Jacobian)."""
    return defprim(name, forward, (rule,), "from_vjp", batching="elementwise", **fields)


# ------------------------------------------------------------------------------------------------
# Unary
# ------------------------------------------------------------------------------------------------
NEG = defprim(
    "negative",
    xp.negative,
    (lambda g, out, x: -g,),
    "linear",
    array_api="negative",
    batching="elementwise",
    operator="neg",
)
EXP = _unary("exp", xp.exp, lambda g, out, x: g * out, array_api="exp", methods=("exp",))
LOG = _unary("log", xp.log, lambda g, out, x: g / x, array_api="log", methods=("log",))
LOG1P = _unary("log1p", xp.log1p, lambda g, out, x: g / (x + 1), array_api="log1p")
EXPM1 = _unary("expm1", xp.expm1, lambda g, out, x: g * (out + 1), array_api="expm1")
SIN = _unary("sin", xp.sin, lambda g, out, x: g * COS(x), array_api="sin")
COS: Primitive = _unary("cos", xp.cos, lambda g, out, x: -g * SIN(x), array_api="cos")
TAN = _unary("tan", xp.tan, lambda g, out, x: g * (out * out + 1), array_api="tan")
TANH = _unary(
    "tanh", xp.tanh, lambda g, out, x: g * (1 - out * out), array_api="tanh", methods=("tanh",)
)
ARCTAN = _unary("arctan", xp.arctan, lambda g, out, x: g / (x * x + 1), array_api="atan")
SINH = _unary("sinh", xp.sinh, lambda g, out, x: g * COSH(x), array_api="sinh")
COSH: Primitive = _unary("cosh", xp.cosh, lambda g, out, x: g * SINH(x), array_api="cosh")
SQRT = _unary("sqrt", xp.sqrt, lambda g, out, x: g / (out * 2), array_api="sqrt", methods=("sqrt",))
# The real cube root: d cbrt(x) = 1 / (3 cbrt(x)^2), infinite at 0 as the true derivative is.
# The standard has no cbrt: other namespaces take sign(x) |x|^(1/3).
CBRT = _unary(
    "cbrt",
    xp.cbrt,
    lambda g, out, x: g / (3 * out * out),
    array_api=lambda ns: lambda x: ns.sign(x) * ns.abs(x) ** (1 / 3),
    doc="The real cube root of ``x`` (negative for negative ``x``), as NumPy's ``cbrt``.",
)
# |x|'(0) = 0 by convention (sign(0) = 0). The sign is an array of x's floating dtype, which
# every namespace multiplies with g.
ABS = _unary(
    "abs",
    xp.abs,
    lambda g, out, x: g * _sign_of(x),
    array_api="abs",
    names=("abs", "absolute"),
    operator="abs",
)


def _sign_of(x):
    """sign(x) of a primal, a plain array (the namespace's own sign, on the hot path), or a
    batch of signs under ``vmap``."""
    primal = strip(x)
    return SIGN(primal) if isinstance(primal, Tracer) else arraylib.ns.sign(primal)


# Piecewise constant: derivative zero everywhere it exists.
SIGN = defprim(
    "sign",
    xp.sign,
    (lambda g, out, x: zeros_like(g),),
    lambda ts, out, x: zeros_like(ts[0]),
    batching="elementwise",
)

FLOOR_DIVIDE = defprim(
    "floor_divide",
    xp.floor_divide,
    (lambda g, out, x, y: zeros_like(g), lambda g, out, x, y: zeros_like(g)),
    lambda ts, out, x, y: zeros_like(out),
    array_api="floor_divide",
    batching="elementwise",
    operator="floordiv",
    doc="``x // y``, rounded toward minus infinity, as NumPy's ``floor_divide``.",
)


def _sigmoid_in(namespace):
    """The sigmoid computed with ``namespace``: exp(-|x|) never overflows; pick the
    algebraically equal branch for each sign."""

    def sigmoid(x):
        z = namespace.exp(-namespace.abs(x))
        return namespace.where(x >= 0, 1 / (1 + z), z / (1 + z))

    return sigmoid


SIGMOID = _unary(
    "sigmoid",
    _sigmoid_in(xp),
    lambda g, out, x: g * out * (1 - out),
    flops=elementwise_flops(4),
    array_api=_sigmoid_in,
    methods=("sigmoid",),
    doc="The logistic function 1 / (1 + exp(-x)), computed without overflow.",
)


def _relu_vjp(g, out, x):
    """g where x > 0, else 0 (relu'(0) = 0 by convention). NumPy multiplies by the boolean mask,
    its fastest form on the hot path (a ``where`` or ``g * sign(out)`` costs more there); the
    array API mixes no booleans into float arithmetic, so other namespaces select with where."""
    if type(x) is xp.ndarray and arraylib.ns is xp:  # a NumPy primal: no tracer to strip
        return g * (x > 0)
    positive = strip(x) > 0
    if arraylib.ns is xp:
        return g * positive
    return where(positive, g, 0)


RELU = _unary(
    "relu",
    lambda x: xp.maximum(x, 0),
    _relu_vjp,
    array_api=lambda ns: lambda x: ns.maximum(x, 0),
    methods=("relu",),
    doc="max(x, 0); its derivative at 0 is taken as 0.",
)
SOFTPLUS = _unary(
    "softplus",
    lambda x: xp.logaddexp(x, 0),
    lambda g, out, x: g * SIGMOID(x),
    flops=elementwise_flops(4),
    array_api=lambda ns: lambda x: ns.logaddexp(x, 0),
    doc="log(1 + exp(x)), computed without overflow.",
)
ASTYPE = defprim(
    "astype",
    lambda x, dtype: x.astype(dtype),
    (lambda g, out, x, dtype: astype(g, x.dtype),),
    "linear",
    _NO_FLOPS,
    array_api=lambda ns: lambda x, dtype: ns.astype(x, dtype),
    batching="elementwise",
)


@public(ASTYPE, method=True)
def astype(x, dtype):
    """``x`` converted to ``dtype`` (unchanged, not copied, when it already has it)."""
    dtype = arraylib.as_dtype(dtype)
    if getattr(x, "dtype", None) == dtype:
        return x
    return apply(ASTYPE, x, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Binary (broadcasting is undone by the interpreters)
# ------------------------------------------------------------------------------------------------
ADD = defprim(
    "add",
    xp.add,
    (lambda g, out, x, y: g, lambda g, out, x, y: g),
    lambda ts, out, x, y: _sum_tangents(ts[0], ts[1]),
    array_api="add",
    batching="elementwise",
    operator="add",
)
SUB = defprim(
    "subtract",
    xp.subtract,
    (lambda g, out, x, y: g, lambda g, out, x, y: -g),
    lambda ts, out, x, y: ts[0] if ts[1] is None else (-ts[1] if ts[0] is None else ts[0] - ts[1]),
    array_api="subtract",
    batching="elementwise",
    operator="sub",
)
MUL = _binary(
    "multiply",
    xp.multiply,
    (lambda g, out, x, y: g * y, lambda g, out, x, y: g * x),
    array_api="multiply",
    operator="mul",
)
DIV = _binary(
    "divide",
    xp.divide,
    (lambda g, out, x, y: g / y, lambda g, out, x, y: -g * out / y),
    array_api="divide",
    names=("divide", "true_divide"),
    operator="truediv",
)


def _where_nonzero(value):
    """``value`` with its zeros replaced by 1: a divisor that is safe where the quotient is
    defined as 0 (the numerator is 0 there too)."""
    return where(strip(value) == 0, 1, value)


# d hypot(x, y) = (x dx + y dy) / hypot(x, y); at the origin (0/0) the derivative is taken as 0,
# as |x|'(0) is.
HYPOT = _binary(
    "hypot",
    xp.hypot,
    (
        lambda g, out, x, y: g * x / _where_nonzero(out),
        lambda g, out, x, y: g * y / _where_nonzero(out),
    ),
    flops=elementwise_flops(4),
    array_api="hypot",
    doc="sqrt(x**2 + y**2) without overflow or underflow, as NumPy's ``hypot``.",
)


def _log_where_positive(x):
    # d(x**y)/dy = x**y log x; where x <= 0 the power is only defined for integer y, take 0.
    if not hasattr(x, "_level") and (not hasattr(x, "shape") or isinstance(x, xp.generic)):
        # A constant number (the 2 of 2**y) gives a number: NumPy's where would make it a host
        # array, which a GPU cotangent cannot be multiplied with.
        return math.log(x) if x > 0 else 0.0
    positive = strip(x) > 0
    return where(positive, LOG(where(positive, x, 1)), 0)


def _pow_vjp_x(g, out, x, y):
    if type(y) is float or type(y) is int:  # a Python number, the usual exponent: as below
        return g * y * x if y == 0 else g * y * x ** (y - 1)
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


POW = _binary(
    "power",
    xp.power,
    (_pow_vjp_x, _pow_vjp_y),
    flops=elementwise_flops(10),
    array_api="pow",
    operator="pow",
)


def _namespace_float_power(namespace):
    """``float_power`` in an array-API namespace, which has none: its ``pow`` in float64."""

    def forward(x, y):
        return namespace.pow(
            namespace.astype(x, namespace.float64), namespace.astype(y, namespace.float64)
        )

    return forward


FLOAT_POWER = _binary(
    "float_power",
    xp.float_power,
    (_pow_vjp_x, _pow_vjp_y),
    flops=elementwise_flops(10),
    array_api=_namespace_float_power,
    doc="``x ** y`` computed in float64 (or complex128), as NumPy's ``float_power``: the C "
    "library's ``pow``, the one Python's ``**`` calls, so the bits match Python floats'.",
)


@public(POW)
def power(x, y):
    """``x ** y``. Integer-valued constant exponents take exact, cheaper forms: ``x**2`` is
    ``x*x``, ``x**1`` is ``x``, ``x**0.5`` is ``sqrt(x)``."""
    if isinstance(y, (int, float)) and not isinstance(y, bool):
        if y == 2:
            return MUL(x, x)
        if y == 1:
            return x
        if y == 0.5:
            return SQRT(x)
    return apply(POW, x, y)


def _tie_share(g, first, second):
    """The part of cotangent ``g`` that goes to ``first`` in max(first, second): all of it where
    ``first`` is larger, none where smaller, half at a tie. With NumPy the share is built in
    ``g``'s dtype (a scalar half of that dtype times the tie mask), so a float32 step stays
    float32, and without a data-dependent branch, which a captured step could not replay; the
    array API mixes no booleans into float arithmetic, so other namespaces select with where."""
    a, b = strip(first), strip(second)
    dtype = _float_dtype_of(g, a, b)
    if arraylib.ns is xp:
        return g * ((a > b) + (a == b) * xp.dtype(dtype).type(0.5))
    larger, tie = a > b, a == b
    one = arraylib.ns.ones_like(larger, dtype=dtype)
    return g * arraylib.ns.where(larger, one, arraylib.ns.where(tie, 0.5 * one, 0 * one))


def _float_dtype_of(*values):
    """The floating dtype of the first array among ``values`` with one (the default otherwise)."""
    for value in values:
        dtype = getattr(value, "dtype", None)
        if dtype is not None and arraylib.is_float_dtype(dtype):
            return dtype
    return arraylib.as_dtype("float64")


MAXIMUM = _binary(
    "maximum",
    xp.maximum,
    (lambda g, out, x, y: _tie_share(g, x, y), lambda g, out, x, y: _tie_share(g, y, x)),
    array_api="maximum",
)
MINIMUM = _binary(
    "minimum",
    xp.minimum,
    (lambda g, out, x, y: _tie_share(g, y, x), lambda g, out, x, y: _tie_share(g, x, y)),
    array_api="minimum",
)
# The condition is an operand without derivative (its VJP rule is None): an operand, not a
# parameter, so that a batch of conditions under ``vmap`` reaches the batching rule.
WHERE = defprim(
    "where",
    xp.where,
    (
        None,
        lambda g, out, condition, x, y: where(condition, g, 0),
        lambda g, out, condition, x, y: where(condition, 0, g),
    ),
    lambda ts, out, condition, x, y: where(
        condition, 0 if ts[1] is None else ts[1], 0 if ts[2] is None else ts[2]
    ),
    _NO_FLOPS,
    array_api="where",
    batching="elementwise",
    operands=("condition", "x", "y"),
)


@public(WHERE)
def where(condition, x, y):
    """``x`` where ``condition`` else ``y``; the condition is not differentiated."""
    return apply(WHERE, strip(condition), x, y)
