"""Tracers, transformation levels and the one dispatch function every operation goes through.

A *tracer* is a value that a transformation is watching: a :class:`~chainrule.tensor.Tensor`
records a graph for reverse mode, a :class:`~chainrule.forward.Dual` carries a tangent for forward
mode. Every tracer belongs to a *level*. Eager tensors live at level 0; each call of a functional
transform (``grad``, ``vjp``, ``jvp``...) opens a fresh, higher level, so that nested transforms
(a Hessian is ``jvp`` of ``grad``) see their own tracers and treat the others as constants. This is
the classic tracer-level design of JAX's autodidax, without the recursion a graph walk would need.

``apply(prim, *args, **params)`` hands an operation to the highest-level tracer among ``args``;
with no tracer at all it simply runs the primitive's forward on plain arrays. Because derivative
rules are written with the same operations, the same rule runs untraced on the first-order hot
path and is recorded when a higher-order derivative is wanted.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

from .backend import xp


class Tracer:
    """Base class of values watched by a transformation (see module docstring)."""

    __slots__ = ()
    _level: int
    # NumPy must hand ``ndarray (op) tracer`` to the tracer's reflected operator, not broadcast
    # the tracer as an object array.
    __array_ufunc__ = None

    def _process(self, prim, args, params):  # pragma: no cover - abstract
        raise NotImplementedError

    def _unwrap(self):  # pragma: no cover - abstract
        """The value one level down (an array or a lower-level tracer)."""
        raise NotImplementedError


# Levels only ever grow: a transform started later is always nested inside the ones still open.
_level_counter = itertools.count(1)


def new_level() -> int:
    return next(_level_counter)


class _State:
    """Process-wide switches read on the hot path (plain attributes, no locking)."""

    __slots__ = ("grad_enabled", "observers", "anomaly")

    def __init__(self):
        self.grad_enabled = True
        # When true, every primitive's forward output and every cotangent is checked for NaN/Inf.
        self.anomaly = False
        # Callables ``observer(prim, args, params, out)`` run after every primitive evaluation on
        # plain arrays; used by anomaly detection and cost counting. Empty tuple = no overhead.
        self.observers = ()


state = _State()


def raw(value):
    """Strip every tracer and return the plain array (or scalar) underneath."""
    while isinstance(value, Tracer):
        value = value._unwrap()
    return value


def _shape_of(value):
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__


def evaluate(prim, args, params):
    """Run ``prim``'s forward on plain values, turning NumPy's errors into ones that name the op."""
    try:
        out = prim.forward(*args, **params)
    except (ValueError, IndexError, TypeError) as error:
        shapes = ", ".join(str(_shape_of(a)) for a in args)
        extra = f" with {params}" if params else ""
        raise type(error)(f"chainrule.{prim.name}: {error} (operand shapes: {shapes}{extra})") from error
    if state.observers:
        for observer in state.observers:
            observer(prim, args, params, out)
    if state.anomaly:
        check_finite(out, f"forward of {prim.name}", args)
    return out


class AnomalyError(FloatingPointError):
    """A primitive produced NaN or Inf while ``chainrule.detect_anomaly()`` was active."""


def check_finite(value, where, args=()):
    value = raw(value)
    if not xp.all(xp.isfinite(value)):
        shapes = ", ".join(str(_shape_of(raw(a))) for a in args)
        raise AnomalyError(f"{where} produced NaN/Inf (operand shapes: {shapes})")


def apply(prim, *args, **params):
    """Apply primitive ``prim`` to ``args``: the highest-level tracer among them takes charge."""
    top = None
    for arg in args:
        if isinstance(arg, Tracer) and (top is None or arg._level > top._level):
            top = arg
    if top is None:
        return evaluate(prim, args, params)
    return top._process(prim, args, params)


@contextmanager
def no_grad():
    """Within this block operations on tensors are not recorded (parameter updates, evaluation)."""
    previous = state.grad_enabled
    state.grad_enabled = False
    try:
        yield
    finally:
        state.grad_enabled = previous


@contextmanager
def enable_grad():
    previous = state.grad_enabled
    state.grad_enabled = True
    try:
        yield
    finally:
        state.grad_enabled = previous


@contextmanager
def detect_anomaly():
    """Raise :class:`AnomalyError` naming the first op whose forward or backward made NaN/Inf."""
    previous = state.anomaly
    state.anomaly = True
    try:
        yield
    finally:
        state.anomaly = previous


@contextmanager
def observe(observer):
    """Call ``observer(prim, args, params, out)`` after each primitive evaluation in the block."""
    state.observers = state.observers + (observer,)
    try:
        yield observer
    finally:
        state.observers = tuple(o for o in state.observers if o is not observer)
