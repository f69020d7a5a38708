"""Losses, each with ``reduction`` "mean" (default), "sum" or "none" (per example).

* ``mse``: mean squared error, averaged over output components, per example.
* ``softmax_cross_entropy``: -log softmax(logits)[label] from logits and integer labels, through
  the engine's fused, stable primitive (no exp of large logits, no log of 0).
* ``binary_logistic``: the logistic-regression cost -[y log σ(z) + (1 - y) log(1 - σ(z))] for
  labels y in {0, 1}, computed stably as softplus(z) - y z.

Labels are checked: integer labels outside [0, classes) raise ``ValueError`` rather than
silently picking another class's logit.

>>> import numpy as np
>>> logits = np.array([[2.0, 0.0], [0.0, 0.0]])
>>> softmax_cross_entropy(logits, np.array([0, 1]), reduction="none").round(4)
array([0.1269, 0.6931])
>>> float(binary_logistic(np.array([0.0]), np.array([1.0])).round(4))
0.6931
"""

from __future__ import annotations

from .. import numpy as cnp
from ..engine import arraylib
from ..engine.arraylib import asarray, xp
from ..engine.core import Tracer, raw, state, strip
from ..transforms.jit import staging
from ..util.lookup import look_up
from .module import shape_of

REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_example, reduction):
    if reduction == "mean":
        return cnp.mean(per_example)
    if reduction == "sum":
        return cnp.sum(per_example)
    if reduction == "none":
        return per_example
    raise ValueError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS}")


def mse(predictions, targets, reduction="mean"):
    """Squared error averaged over each example's output components."""
    targets = raw(targets) if not hasattr(targets, "_level") else targets
    pred_shape, target_shape = shape_of(predictions), shape_of(targets)
    if pred_shape != target_shape:
        if pred_shape[:-1] == target_shape and pred_shape[-1:] == (1,):
            targets = cnp.reshape(targets, pred_shape)
        else:
            raise ValueError(
                f"mse: predictions of shape {pred_shape} but targets of shape {target_shape}"
            )
    diff = predictions - targets
    squared = diff * diff
    per_example = cnp.mean(squared, axis=-1) if len(pred_shape) > 1 else squared
    return _reduce(per_example, reduction)


def _traced(labels):
    """The labels as a transform batches or stages them (``vmap``, ``jit``), or None for labels
    that are plain arrays under any differentiating tracers. Traced labels stay traced, so that
    each call's own labels reach the loss instead of the values seen when it was staged."""
    under = strip(labels)
    return under if isinstance(under, Tracer) else None


def check_labels(labels, classes: int, what="labels"):
    """Integer labels in [0, classes), or ``ValueError`` naming the first offending one.

    Labels on a GPU are checked here for their dtype only: reading their values back to the host
    would stall the device at every step (and cannot be part of a CUDA graph). Data sets check
    their labels on the host when they are built (:func:`chainrule.data.validate`), and
    :func:`softmax_cross_entropy` turns an out-of-range GPU label into a NaN loss on the device."""
    traced = _traced(labels)
    if traced is not None:
        # Under vmap the stacked values are there to check; while jit stages, they are only the
        # first call's (a replay would skip the check), so only the dtype is checked then.
        if not staging():
            check_labels(raw(traced), classes, what)  # every example's labels, stacked
        elif traced.dtype.kind not in "iubf":
            raise ValueError(f"{what} must be integer class indices, got dtype {traced.dtype}")
        return cnp.astype(traced, xp.int64)
    if state.foreign:
        return _check_labels_in_namespace(arraylib.ns, arraylib.asarray(raw(labels)), classes, what)
    labels = asarray(raw(labels))  # keeps a captured step's recording array what it is
    on_host = arraylib.device_of(labels) == "cpu"
    if labels.dtype.kind == "f":
        if on_host and (not xp.all(xp.isfinite(labels)) or not xp.all(labels == xp.round(labels))):
            raise ValueError(f"{what} must be whole numbers (class indices)")
        labels = labels.astype(xp.int64)
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"{what} must be integer class indices, got dtype {labels.dtype}")
    if not on_host:
        return labels.astype(xp.int64, copy=False)
    bad = (labels < 0) | (labels >= classes)
    if xp.any(bad):
        index = int(xp.argmax(bad.ravel()))
        raise ValueError(
            f"{what}: {labels.ravel()[index]} at position {index} is outside [0, {classes}) "
            f"for {classes} classes"
        )
    return labels.astype(xp.int64, copy=False)


def _check_labels_in_namespace(namespace, labels, classes, what):
    """:func:`check_labels` inside ``backend.use_namespace``, with the array API standard's
    functions only (no dtype kinds, ``ravel`` or array methods there): int64 labels of the
    namespace, the same checks and messages."""
    if namespace.isdtype(labels.dtype, "real floating"):
        whole = namespace.all(namespace.isfinite(labels)) and namespace.all(
            labels == namespace.round(labels)
        )
        if not whole:
            raise ValueError(f"{what} must be whole numbers (class indices)")
    elif not namespace.isdtype(labels.dtype, ("integral", "bool")):
        raise ValueError(f"{what} must be integer class indices, got dtype {labels.dtype}")
    labels = namespace.astype(labels, namespace.int64)
    flat = namespace.reshape(labels, (-1,))
    bad = (flat < 0) | (flat >= classes)
    if namespace.any(bad):
        index = int(namespace.argmax(namespace.astype(bad, namespace.int8)))
        raise ValueError(
            f"{what}: {int(flat[index])} at position {index} is outside [0, {classes}) for "
            f"{classes} classes"
        )
    return labels


def softmax_cross_entropy(logits, labels, reduction="mean"):
    """Cross-entropy of integer ``labels`` under softmax(``logits``), fused and stable.

    On a GPU a label outside [0, classes) makes its example's loss NaN instead of raising: the
    check stays on the device (no host read per step, nothing a CUDA graph cannot hold), and the
    Trainer's finiteness check then stops the run. Without it, CuPy's indexing would wrap the
    label around and silently pick another class's logit."""
    classes = shape_of(logits)[-1]
    labels = check_labels(labels, classes)
    per_example = cnp.softmax_cross_entropy(logits, labels)
    if arraylib.device_of(labels) != "cpu":
        outside = (labels < 0) | (labels >= classes)
        per_example = cnp.where(outside, float("nan"), per_example)
    return _reduce(per_example, reduction)


cross_entropy = softmax_cross_entropy


def _logits_like(logits, label_shape):
    """``logits`` in the labels' shape: a trailing axis of one is dropped; another shape is an
    error."""
    if shape_of(logits) == label_shape:
        return logits
    if shape_of(logits)[:-1] == label_shape and shape_of(logits)[-1:] == (1,):
        return cnp.reshape(logits, label_shape)
    raise ValueError(
        f"binary_logistic: logits of shape {shape_of(logits)} but labels of shape {label_shape}"
    )


def binary_logistic(logits, labels, reduction="mean"):
    """Logistic-regression cost for labels in {0, 1}: softplus(z) - y z (stable for any z)."""
    traced = _traced(labels)
    if traced is not None:  # batched or staged labels, kept traced (see _traced)
        if not staging() and not xp.all((raw(traced) == 0) | (raw(traced) == 1)):
            raise ValueError("binary_logistic: labels must be 0 or 1")
        logits = _logits_like(logits, shape_of(traced))
        labels = cnp.astype(
            traced, raw(logits).dtype if hasattr(raw(logits), "dtype") else xp.float64
        )
    elif (
        state.foreign
    ):  # backend.use_namespace: that namespace's functions (the standard has no methods)
        namespace = arraylib.ns
        labels = arraylib.asarray(raw(labels))
        if not namespace.all((labels == 0) | (labels == 1)):
            raise ValueError("binary_logistic: labels must be 0 or 1")
        logits = _logits_like(logits, tuple(labels.shape))
        dtype = raw(logits).dtype if hasattr(raw(logits), "dtype") else namespace.float64
        labels = namespace.astype(labels, dtype)
    else:
        labels = asarray(raw(labels))  # a GPU array stays on its device
        if not xp.all((labels == 0) | (labels == 1)):
            raise ValueError("binary_logistic: labels must be 0 or 1")
        logits = _logits_like(logits, labels.shape)
        labels = labels.astype(raw(logits).dtype if hasattr(raw(logits), "dtype") else xp.float64)
    # The traced operand first: a plain array of another namespace may not defer to a tracer.
    return _reduce(cnp.softplus(logits) - logits * labels, reduction)


LOSSES = {
    "mse": mse,
    "cross_entropy": softmax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "binary_logistic": binary_logistic,
}


def get_loss(name_or_fn):
    if callable(name_or_fn):
        return name_or_fn
    return look_up(LOSSES, name_or_fn, "loss")
