"""Anomaly detection: name the first operation whose forward or backward made NaN or Inf, and
catch saved arrays changed in place behind the engine's back.

A debugging aid, off by default and paid for only while :func:`detect_anomaly` is active: it
checks every forward output as an observer of :mod:`chainrule.engine.core`, and sets
``state.anomaly``, which the reverse pass reads once per pass (every cotangent is checked, and
every node's saved arrays are hashed as it is recorded and compared before its backward runs).
The interpreters import this module only in that mode.
"""

from __future__ import annotations

import hashlib
import weakref
from contextlib import contextmanager

from . import arraylib
from .arraylib import is_array, xp
from .core import Tracer, _shape_of, raw, state


class AnomalyError(FloatingPointError):
    """A primitive produced NaN or Inf while ``chainrule.detect_anomaly()`` was active."""


def check_finite(value, where, args=()):
    value = raw(value)
    if not xp.all(xp.isfinite(value)):
        shapes = ", ".join(str(_shape_of(raw(a))) for a in args)
        raise AnomalyError(f"{where} produced NaN/Inf (operand shapes: {shapes})")


#: Under ``detect_anomaly()``: id of a recorded node -> (a weak reference to it, digests of the
#: arrays its backward will read: its operands and its own value). Tensors count their in-place
#: changes (``_version``), but a plain NumPy array cannot, and ``tensor.data[...] = v`` bypasses
#: the count: hashing catches both. (Keyed by id: a Tensor's ``==`` is elementwise.)
_saved_digests: dict = {}


def _digest(value):
    data = getattr(value, "data", value) if isinstance(value, Tracer) else value
    if not is_array(data):
        return None  # a number (immutable) or a lower-level tracer (checked at its own level)
    host = arraylib.to_numpy(data)
    return hashlib.blake2b(host.tobytes(), digest_size=16).digest(), host.shape


def _saved(node):
    """(name, value) of everything ``node``'s backward reads: its value, its operands, and its
    array-valued parameters (a ``where`` condition, an index array)."""
    saved = [("its own output", node)]
    names = node._prim.operands
    saved += [
        (f"argument {i}" if names is None else f"argument {names[i]!r}", arg)
        for i, arg in enumerate(node._args)
    ]
    for key, value in node._params.items():
        if is_array(value):
            saved.append((f"parameter {key!r}", value))
        elif type(value) is tuple:  # an index such as (rows, slice(None))
            saved += [(f"parameter {key!r}[{i}]", v) for i, v in enumerate(value) if is_array(v)]
    return saved


def remember_saved(node):
    """Hash what ``node``'s backward will read (called as it is recorded, in anomaly mode)."""
    key = id(node)

    def forget(_ref, key=key):
        _saved_digests.pop(key, None)

    digests = [_digest(value) for _, value in _saved(node)]
    _saved_digests[key] = (weakref.ref(node, forget), digests)


def check_saved(node):
    """Raise if an array that ``node`` saved was changed in place after ``node`` was recorded."""
    entry = _saved_digests.get(id(node))
    if entry is None or entry[0]() is not node:
        return
    for (which, value), before in zip(_saved(node), entry[1], strict=True):
        if before is not None and _digest(value) != before:
            kind = type(value).__name__ if isinstance(value, Tracer) else "plain array"
            raise RuntimeError(
                f"backward of {node._prim.name}: {which} ({kind} of shape {before[1]}) was "
                "changed in place after the op was recorded, so its gradient would be wrong; "
                "change a copy, or recompute the forward pass after the change"
            )


def _check_forward(prim, args, params, out):
    """The observer that checks every forward output (see :func:`detect_anomaly`)."""
    check_finite(out, f"forward of {prim.name}", args)


@contextmanager
def detect_anomaly():
    """Raise :class:`AnomalyError` naming the first op whose forward or backward made NaN/Inf."""
    if state.anomaly:  # already on: the outer block turns it off
        yield
        return
    state.switch(anomaly=True, observers=(*state.observers, _check_forward))
    try:
        yield
    finally:
        observers = tuple(o for o in state.observers if o is not _check_forward)
        state.switch(anomaly=False, observers=observers)
