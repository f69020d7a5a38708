"""Reductions (sum, max, prod, logsumexp), the cumulative sum, and the fused softmax
cross-entropy; with their public functions, which normalise ``axis``.

Inside the table ``axis`` is always a sorted tuple of non-negative ints (an int for ``cumsum``),
so that the rules and the generic batching rules (``"axes"``, ``"axis"``) can shift it. The
softmax cross-entropy is fused for numerical stability, as logsumexp is.
"""

from __future__ import annotations

import builtins
import operator
import weakref

from .. import arraylib
from ..arraylib import xp
from ..core import Stacked, Tracer, apply, compare, ndim, raw, shape, state, strip
from ..table import defprim, public
from .elementwise import EXP, astype, where
from .shapes import BROADCAST_TO, broadcast_to, getitem, input_flops, reshape, with_batch


def normalize_axis(axis, rank, op):
    """``axis`` as a sorted tuple of non-negative ints (all axes for ``None``), checked against
    ``rank``; errors name ``op``."""
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


def _keep(value, x_ndim, axis, keepdims):
    """Put back the reduced axes (as size 1) so that ``value`` broadcasts against the input."""
    if keepdims or not axis or not ndim(value):  # a 0-d value broadcasts as it is
        return value
    kept = list(shape(value))
    for ax in sorted(axis):
        kept.insert(ax, 1)
    return reshape(value, tuple(kept))


def _sum_vjp(g, out, x, axis, keepdims):
    kept = _keep(g, x.ndim, axis, keepdims)
    if (type(kept) is xp.ndarray or isinstance(kept, xp.generic)) and not state.hooked:
        # A plain NumPy cotangent (the 0-d one of a full sum, or a mean, in every training step):
        # the broadcast_to entry's forward, as its dispatch would call it.
        return kept if kept.shape == x.shape else BROADCAST_TO.forward(kept, x.shape)
    return broadcast_to(kept, x.shape)


SUM = defprim(
    # The ufunc's own reduce: the same result as xp.sum without its Python-level wrapper.
    "sum",
    lambda x, axis, keepdims: xp.add.reduce(x, axis=axis, keepdims=keepdims),
    (_sum_vjp,),
    "linear",
    input_flops,
    array_api=lambda ns: lambda x, axis, keepdims: ns.sum(x, axis=axis, keepdims=keepdims),
    batching="axes",
)


@public(SUM, method=True)
def sum(x, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """The sum over ``axis`` (all axes when None)."""
    return apply(SUM, x, axis=normalize_axis(axis, ndim(x), "sum"), keepdims=keepdims)


def _reduce_max(x, axis, keepdims):
    """The maximum over ``axis``: NumPy's ufunc method for NumPy arrays (no Python wrapper on the
    hot path); for other arrays the active namespace's ``max``: NumPy's function, which
    dispatches to the array's module (CuPy implements no ``maximum.reduce``), or the namespace of
    ``use_namespace``."""
    if isinstance(x, xp.ndarray):
        return xp.maximum.reduce(x, axis=axis, keepdims=keepdims)
    # The active namespace's max: NumPy's (which dispatches to CuPy), or use_namespace's.
    return arraylib.ns.max(x, axis=axis, keepdims=keepdims)


def _weighted_reduction_rules(weights):
    """VJP and JVP of a reduction whose derivative is ``weights(out, x, axis, keepdims)`` (an
    array of x's shape): the cotangent spreads as ``g * weights``, the tangent sums
    ``t * weights`` over the reduced axes. Max (the share of the tied maxima) and logsumexp (the
    softmax) are of this form."""

    def vjp(g, out, x, axis, keepdims):
        return _keep(g, x.ndim, axis, keepdims) * weights(out, x, axis, keepdims)

    def jvp(tangents, out, x, axis, keepdims):
        return sum(tangents[0] * weights(out, x, axis, keepdims), axis=axis, keepdims=keepdims)

    return (vjp,), jvp


def _max_share(out, x, axis, keepdims):
    """Which entries attain the maximum, each weighted 1/(number of ties)."""
    x_primal = strip(x)  # a plain array, or a batch of them under vmap
    hit = x_primal == _keep(strip(out), ndim(x_primal), axis, keepdims)
    if arraylib.ns is xp and isinstance(x_primal, xp.ndarray):
        # NumPy counts and divides the booleans directly: no float copy of the mask.
        return xp.divide(hit, xp.add.reduce(hit, axis=axis, keepdims=True), dtype=x_primal.dtype)
    # In x's dtype: the array API neither sums nor divides booleans.
    hit = astype(hit, x_primal.dtype)
    return hit / sum(hit, axis=axis, keepdims=True)


_MAX_VJP, _MAX_JVP = _weighted_reduction_rules(_max_share)
MAX = defprim(
    "max",
    _reduce_max,
    _MAX_VJP,
    _MAX_JVP,
    input_flops,
    array_api=lambda ns: lambda x, axis, keepdims: ns.max(x, axis=axis, keepdims=keepdims),
    batching="axes",
    gpu="CuPy has no ``maximum.reduce``: CuPy arrays take the namespace's ``max``.",
)


@public(MAX, names=("max", "amax"), method=True)
def max(x, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """The maximum over ``axis``; tied entries share the gradient evenly."""
    return apply(MAX, x, axis=normalize_axis(axis, ndim(x), "max"), keepdims=keepdims)


def _prod_partials(out, x, axis, keepdims):
    """d prod / d x_i = product of the others, exact also where x has zeros."""
    x_primal = strip(x)
    is_zero = x_primal == 0
    safe_x = where(is_zero, 1, x)
    # Counted in x's dtype: the array API sums no booleans.
    zeros_in_slice = sum(astype(is_zero, x_primal.dtype), axis=axis, keepdims=True)
    product_of_nonzero = prod(safe_x, axis=axis, keepdims=True)
    only_zero = where(zeros_in_slice == 1, product_of_nonzero, 0)
    return where(is_zero, only_zero, _keep(out, ndim(x_primal), axis, keepdims) / safe_x)


PROD = defprim(
    "prod",
    lambda x, axis, keepdims: xp.prod(x, axis=axis, keepdims=keepdims),
    (
        lambda g, out, x, axis, keepdims: (
            _keep(g, x.ndim, axis, keepdims) * _prod_partials(out, x, axis, keepdims)
        ),
    ),
    lambda ts, out, x, axis, keepdims: sum(
        ts[0] * _prod_partials(out, x, axis, keepdims), axis=axis, keepdims=keepdims
    ),
    input_flops,
    array_api=lambda ns: lambda x, axis, keepdims: ns.prod(x, axis=axis, keepdims=keepdims),
    batching="axes",
)


@public(PROD, method=True)
def prod(x, axis=None, keepdims=False):
    """The product over ``axis``; its gradient is exact also where entries are zero."""
    return apply(PROD, x, axis=normalize_axis(axis, ndim(x), "prod"), keepdims=keepdims)


def _logsumexp_parts(x, axis):
    """What logsumexp computes on the way: ``(peak, exp, sums, guarded)``. ``peak`` holds the
    maxima along ``axis`` (kept as size-1 axes), those that are not finite set to 0 (a row of
    -inf must give -inf, not NaN); ``exp = exp(x - peak)``; ``sums`` its sums along ``axis``;
    ``guarded`` whether some peak was set to 0 (None where it is not asked: off plain NumPy,
    reading it would stall a device, and a capture would guard on it)."""
    if isinstance(x, xp.ndarray):  # the ufunc method, without _reduce_max's call (a hot path)
        peak = xp.maximum.reduce(x, axis=axis, keepdims=True)
    else:
        peak = _reduce_max(x, axis, True)
    finite = xp.isfinite(peak)
    guarded = None
    if type(x) is xp.ndarray:  # one test of all peaks is cheaper than the where it saves
        guarded = not finite.all()
    if guarded is not False:
        peak = xp.where(finite, peak, 0)
    exp = xp.exp(x - peak)
    return peak, exp, xp.add.reduce(exp, axis=axis, keepdims=True), guarded


def _logsumexp_forward(x, axis, keepdims):
    peak, _, sums, _ = _logsumexp_parts(x, axis)
    out = xp.log(sums) + peak
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
    return EXP(x - _keep(out, x.ndim, axis, keepdims))


_LSE_VJP, _LSE_JVP = _weighted_reduction_rules(_lse_weights)
LOGSUMEXP = defprim(
    "logsumexp",
    _logsumexp_forward,
    _LSE_VJP,
    _LSE_JVP,
    lambda out, x, **params: 4 * int(x.size),
    array_api=_namespace_logsumexp,
    batching="axes",
)


@public(LOGSUMEXP)
def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over ``axis``, computed stably (a fused primitive)."""
    return apply(LOGSUMEXP, x, axis=normalize_axis(axis, ndim(x), "logsumexp"), keepdims=keepdims)


def _reverse_along(value, axis):
    index = (slice(None),) * axis + (slice(None, None, -1),)
    return getitem(value, index)


CUMSUM = defprim(
    "cumsum",
    lambda x, axis: xp.cumsum(x, axis=axis),
    (lambda g, out, x, axis: _reverse_along(cumsum(_reverse_along(g, axis), axis=axis), axis),),
    "linear",
    input_flops,
    array_api=lambda ns: lambda x, axis: ns.cumulative_sum(x, axis=axis),
    batching="axis",
)


@public(CUMSUM)
def cumsum(x, axis=None):
    """The running sum along ``axis`` (of the flattened array when None)."""
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return apply(CUMSUM, x, axis=normalize_axis(axis, ndim(x), "cumsum")[0])


# ------------------------------------------------------------------------------------------------
# Fused for numerical stability: softmax cross-entropy from logits and integer labels
# ------------------------------------------------------------------------------------------------


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
    peak, exp, sums, guarded = _logsumexp_parts(logits, (logits.ndim - 1,))
    lse = (xp.log(sums) + peak).squeeze(axis=-1)
    # logits[..., label] for every example: one gather on the rows of a (examples, classes) view.
    classes = logits.shape[-1]
    rows = logits.reshape(-1, classes)
    count = rows.shape[0]
    examples = xp.arange(count) if isinstance(labels, xp.ndarray) else _arange_like(labels, count)
    picked = rows[examples, labels.reshape(-1)].reshape(labels.shape)
    out = lse - picked
    if guarded is False and type(out) is type(labels) is xp.ndarray:
        # Plain NumPy arrays, every peak finite: the rule may read exp and sums.
        _SOFTMAX_MEMO[0] = (weakref.ref(out, _forget_softmax), logits, labels, exp, sums)
    return out


def _forget_softmax(dead):
    """Drop the kept softmax once its output is gone (no rule can ask for it then): an
    evaluation's large batch does not stay in memory until the next cross-entropy."""
    memo = _SOFTMAX_MEMO[0]
    if memo is not None and memo[0] is dead:
        _SOFTMAX_MEMO[0] = None


#: The softmax pieces of the last NumPy cross-entropy forward: a weak reference to its ``out``,
#: then ``logits``, ``labels``, ``exp`` and ``sums``. Its derivative is softmax(logits) -
#: onehot(labels), and the forward has just computed exp(logits - peak) and its sums: the rule of
#: the node that recorded ``out`` takes them from here instead of computing them again (a
#: residual, as PyTorch saves the result of its log-softmax). One slot, matched by the identity
#: of ``out`` (alive: a dead reference matches nothing), ``logits`` and ``labels`` (kept alive, so
#: no other object can take their place); emptied by the rule that reads it and when ``out``
#: dies, so that nothing stays after a training step or an evaluation. A rule called on anything
#: else, after another forward, or a second time (a retained graph) computes the softmax itself.
#: Kept only where every peak was finite (the forward's guard changed nothing), so that the bits
#: are the same either way.
_SOFTMAX_MEMO: list = [None]


def _xent_dlogits(logits, labels, out=None):
    """softmax(logits) - onehot(labels): the gradient of the per-example loss.

    The softmax is exp(logits - peak) / sum(exp(logits - peak)) with a constant peak (the row
    maximum): softmax does not change when its input is shifted, so the peak carries no
    derivative and higher-order derivatives stay exact. Unlike the forward pass (where a row of
    -inf logits must give a loss of +inf, not NaN), the peak has no finiteness guard here: a row
    whose maximum is not finite (a +inf or NaN logit, or all -inf) has no finite gradient either
    way (with a guard some of its entries would be 0, the others NaN; without, all are NaN), and
    leaving the guard out saves two operations (two kernel launches on a GPU) per training step.

    Given the forward's ``out``, plain NumPy logits take the softmax pieces that forward kept
    (:data:`_SOFTMAX_MEMO`) when it was the last one.
    """
    memo = _SOFTMAX_MEMO[0]
    if (
        memo is not None
        and memo[1] is logits
        and memo[2] is labels
        and out is not None
        and memo[0]() is out
        and not state.hooked
    ):  # plain NumPy logits: the forward's exp(logits - peak) and sums, read once
        _SOFTMAX_MEMO[0] = None
        dlogits = memo[3] / memo[4]
        dlogits -= xp.arange(logits.shape[-1]) == labels[..., None]
        return dlogits
    values = strip(logits)
    classes = values.shape[-1]
    if isinstance(values, Tracer) or isinstance(labels, Tracer):  # a batch of examples (vmap)
        peak = max(values, axis=-1, keepdims=True)
        onehot = compare(operator.eq, xp.arange(classes), reshape(labels, (*shape(labels), 1)))
        onehot = astype(onehot, values.dtype)
    elif isinstance(values, xp.ndarray):  # NumPy, written out: this runs in every training step
        peak = xp.maximum.reduce(values, axis=-1, keepdims=True)
        onehot = xp.arange(classes) == labels[..., None]
        if type(logits) is xp.ndarray and not state.hooked:
            # Nothing to record or observe: the calls below, in their order, in one buffer (an
            # in-place ufunc gives the bits of its out-of-place form).
            dlogits = xp.exp(logits - peak)
            dlogits /= xp.add.reduce(dlogits, axis=-1, keepdims=True)
            dlogits -= onehot
            return dlogits
    else:  # a GPU array, or another namespace's
        peak = _reduce_max(values, -1, True)
        onehot = _arange_like(labels, classes) == labels[..., None]
        if arraylib.ns is not xp:  # the array API subtracts no booleans from floats
            onehot = arraylib.ns.astype(onehot, values.dtype)
    exp = EXP(logits - peak)
    return exp / sum(exp, axis=-1, keepdims=True) - onehot


def _namespace_xent(namespace):
    """The fused cross-entropy forward in an array-API namespace (a take along the class axis)."""
    logsumexp = _namespace_logsumexp(namespace)

    def forward(logits, labels):
        classes_axis = logits.ndim - 1
        picked = namespace.take_along_axis(logits, namespace.expand_dims(labels, axis=-1), axis=-1)
        return logsumexp(logits, (classes_axis,), False) - namespace.squeeze(picked, axis=-1)

    return forward


def _batch_softmax_cross_entropy(prim, values, batched, params, size):
    labels = params["labels"]
    if isinstance(labels, Stacked):  # labels batched by vmap, as the logits may be
        logits = values[0] if batched[0] else with_batch(values[0], size)
        return prim(logits, labels=labels.value)
    labels = arraylib.asarray(labels)  # a GPU array stays on its device
    # NumPy's broadcast_to, or that of the namespace use_namespace made active.
    labels = arraylib.ns.broadcast_to(labels, (size, *labels.shape))
    return prim(values[0], labels=labels)


def _xent_vjp(g, out, logits, labels):
    dlogits = _xent_dlogits(logits, labels, out)
    if type(g) is type(dlogits) is xp.ndarray and g.dtype == dlogits.dtype and not state.hooked:
        # A fresh buffer, scaled in place (a product's bits do not depend on the operands' order).
        dlogits *= g[..., None]
        return dlogits
    return reshape(g, shape(g) + (1,)) * dlogits


SOFTMAX_CROSS_ENTROPY = defprim(
    "softmax_cross_entropy",
    _xent_forward,
    (_xent_vjp,),
    lambda ts, out, logits, labels: sum(ts[0] * _xent_dlogits(logits, labels, out), axis=-1),
    lambda out, logits, labels: 5 * int(logits.size),
    array_api=_namespace_xent,
    batching=_batch_softmax_cross_entropy,
    gpu="No range check of the labels on a GPU: reading them back would stall the device every "
    "step (and cannot be part of a CUDA graph); data sets check theirs on the host when built.",
)


@public(SOFTMAX_CROSS_ENTROPY)
def softmax_cross_entropy(logits, labels):
    """Per-example -log softmax(logits)[label] from integer ``labels`` (fused, stable)."""
    batch = strip(labels)  # a batch of label arrays under vmap: checked on its stacked values
    batch = batch if isinstance(batch, Tracer) else None
    labels = arraylib.asarray(raw(labels))  # a capture's recording array stays one
    # The range check reads values into Python: on a base-class view, so that a captured step
    # does not guard on it (a replay skips it; an out-of-range label still fails its indexing).
    is_subclass = type(labels) is not xp.ndarray and isinstance(labels, xp.ndarray)
    checked = labels.view(xp.ndarray) if is_subclass else labels
    if shape(labels if batch is None else batch) != shape(logits)[:-1]:
        raise ValueError(
            f"chainrule.softmax_cross_entropy: labels of shape "
            f"{shape(labels if batch is None else batch)} do not match "
            f"logits of shape {shape(logits)} (expected labels of shape {shape(logits)[:-1]})"
        )
    classes = shape(logits)[-1]
    if type(checked) is xp.ndarray:  # NumPy labels: the checks of the hot path
        if labels.dtype.kind not in "iu":  # signed or unsigned integers (cheaper than issubdtype)
            raise TypeError(_NOT_INTEGER_LABELS.format(labels.dtype))
        # One reduction for both ends: seen as unsigned, a negative label is a huge one.
        if checked.size and int(xp.maximum.reduce(_as_unsigned(checked), axis=None)) >= classes:
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
    return apply(SOFTMAX_CROSS_ENTROPY, logits, labels=labels if batch is None else batch)


_NOT_INTEGER_LABELS = "chainrule.softmax_cross_entropy: labels must be integers, got {}"


_UNSIGNED: dict = {}  # a signed integer dtype -> the unsigned one of its size and byte order


def _as_unsigned(labels):
    """Integer ``labels`` viewed as unsigned integers of the same size (no copy): -1 reads as
    the largest value, so one maximum checks a label range from both ends."""
    dtype = labels.dtype
    if dtype.kind == "u":
        return labels
    unsigned = _UNSIGNED.get(dtype)
    if unsigned is None:
        unsigned = _UNSIGNED[dtype] = xp.dtype(dtype.str.replace("i", "u"))
    return labels.view(unsigned)


def _raise_label_range(low, high, classes, logits):
    # A negative label would silently pick a class from the end (and break the gradient).
    raise ValueError(
        f"chainrule.softmax_cross_entropy: labels must lie in [0, {classes}), got values "
        f"from {int(low)} to {int(high)} (logits of shape {shape(logits)})"
    )
