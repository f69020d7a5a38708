"""Tracers, transformation levels and the one dispatch function every operation goes through.

A *tracer* is a value that a transformation is watching: a :class:`~chainrule.engine.tensor.Tensor`
records a graph for reverse mode, a :class:`~chainrule.engine.forward.Dual` carries a tangent for
forward mode. Every tracer belongs to a *level*. Eager tensors live at level 0; each call of a
functional transform (``grad``, ``vjp``, ``jvp``...) opens a fresh, higher level, so that nested
transforms (a Hessian is ``jvp`` of ``grad``) see their own tracers and treat the others as
constants. This is the classic tracer-level design of JAX's autodidax, without the recursion a graph
walk would need.

``apply(prim, *args, **params)`` hands an operation to the highest-level tracer among ``args``;
with no tracer at all it simply runs the primitive's forward on plain arrays. Because derivative
rules are written with the same operations, the same rule runs untraced on the first-order hot
path and is recorded when a higher-order derivative is wanted.
"""

from __future__ import annotations

import itertools
from contextlib import ContextDecorator, contextmanager

from . import arraylib
from .arraylib import device_of, is_array, ndarray, xp


class Tracer:
    """Base class of values watched by a transformation (see module docstring)."""

    __slots__ = ()
    _level: int
    #: Whether the tracer is a batch of values (``vmap``): :func:`strip` keeps it.
    _is_batch = False
    # NumPy must hand ``ndarray (op) tracer`` to the tracer's reflected operator, not broadcast
    # the tracer as an object array.
    __array_ufunc__ = None

    def _process(self, prim, args, params):  # pragma: no cover - abstract
        raise NotImplementedError

    def _compare(self, op, first, second):  # pragma: no cover - only a batch compares
        """``op`` on ``first`` and ``second`` at this tracer's level (see :func:`compare`)."""
        raise NotImplementedError

    def _detached(self):  # pragma: no cover - only a batch is kept by strip
        """This value without derivatives, its batching kept (see ``stop_gradient``)."""
        raise NotImplementedError

    def _on_stacked(self, function):  # pragma: no cover - only a batch has stacked values
        """``function`` of the stacked values, as a batch again (see ``Batched``)."""
        raise NotImplementedError

    def _unwrap(self):  # pragma: no cover - abstract
        """The value one level down (an array or a lower-level tracer)."""
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(tracer)`` gives the plain values, without derivatives (as for a Tensor),
        instead of NumPy walking the tracer element by element into an object array."""
        array = xp.asarray(raw(self))
        return array if dtype is None else array.astype(dtype)


#: Types of plain values that the tracers' operators take on their fast paths as the other
#: operand (beside a tracer of their own level): arrays, Python numbers and NumPy scalars.
PLAIN_TYPES = frozenset(
    {ndarray, float, int, bool}
    | {xp.dtype(name).type for name in ("float64", "float32", "float16", "int64", "int32", "bool")}
)


# Levels only ever grow: a transform started later is always nested inside the ones still open.
_level_counter = itertools.count(1)


def new_level() -> int:
    return next(_level_counter)


class _State:
    """Process-wide switches read on the hot path (plain attributes, no locking).

    * ``grad_enabled``: whether operations on tensors are recorded (:func:`no_grad`).
    * ``anomaly``: the reverse pass checks every cotangent for NaN/Inf and every saved array
      for in-place changes (:mod:`chainrule.engine.anomaly`, whose observer checks forwards).
    * ``observers``: callables ``observer(prim, args, params, out)`` run after every primitive
      evaluation on plain arrays (anomaly detection, cost counting); ``()`` costs nothing.
    * ``foreign``: primitives compute with another array namespace than NumPy's
      (:func:`chainrule.backend.namespace.use_namespace`); code that builds arrays itself builds
      them with ``arraylib.ns`` then.
    * ``redirected``: some backend layer supplies forwards (:func:`set_forward_layer`).
    * ``batching``: the number of ``vmap`` calls running. Only then may a parameter hold a
      batch (cross-entropy's labels, an index array computed from batched values), which
      :func:`apply` then finds.
    * ``hooked``: any of the four above: the one flag that the plain-value path of :func:`apply`
      and the fast paths of :class:`~chainrule.engine.tensor.Tensor` read before they call
      ``prim.forward`` themselves. Change the four with :meth:`switch`, which keeps it right.
    """

    __slots__ = (
        "grad_enabled",
        "anomaly",
        "observers",
        "foreign",
        "redirected",
        "hooked",
        "batching",
    )

    def __init__(self):
        self.grad_enabled = True
        self.batching = 0  # how many vmap calls are running: parameters may hold batches then
        self.anomaly = self.foreign = self.redirected = self.hooked = False
        self.observers: tuple = ()

    def switch(self, **switches) -> None:
        """Set any of ``anomaly``, ``observers``, ``foreign``, ``redirected``, then ``hooked``."""
        for name, value in switches.items():
            setattr(self, name, value)
        self.hooked = self.anomaly or bool(self.observers) or self.foreign or self.redirected


state = _State()


def raw(value):
    """Strip every tracer and return the plain array (or scalar) underneath."""
    while isinstance(value, Tracer):
        value = value._unwrap()
    return value


def strip(value):
    """The primal value under the differentiation tracers (Tensor, Dual) of ``value``: a plain
    array, or a batch of them (a ``Batched`` of ``vmap``), which stays batched.

    Derivative rules read primals with this, not :func:`raw` (``strip(x) > 0`` in the ReLU rule):
    under ``vmap(grad(f))`` the primals are batched, and :func:`raw` would hand the rule the
    stacked array, whose leading batch axis the rule does not expect."""
    while isinstance(value, Tracer) and not value._is_batch:
        value = value._unwrap()
    return value


def compare(op, first, second):
    """``op(first, second)`` for a comparison ``op`` (``operator.lt``...) on primal values: a
    plain boolean array, or a batch of them when an operand is batched. Comparisons have no
    derivative, so nothing is recorded."""
    first, second = strip(first), strip(second)
    top = None
    for value in (first, second):
        if isinstance(value, Tracer) and (top is None or value._level > top._level):
            top = value
    if top is None:
        return op(first, second)
    return top._compare(op, first, second)


def shape(value) -> tuple:
    """The shape ``value`` shows (a tracer shows one example's shape; a number has ``()``).

    Rules and public functions ask this dozens of times per training step, mostly of NumPy
    arrays, whose shape is already a tuple: that case is answered first."""
    if type(value) is ndarray:
        return value.shape
    return tuple(getattr(value, "shape", ()))


def ndim(value) -> int:
    if type(value) is ndarray:
        return value.ndim
    return len(shape(value))


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
    """As :func:`zeros_like`, with ones."""
    if isinstance(value, Tracer):
        return arraylib.ns.ones_like(_one_example(value), dtype=dtype or value.dtype)  # type: ignore[attr-defined]
    return arraylib.ns.ones_like(value, dtype=dtype)


def _shape_of(value):
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__


def _named_error(error, prim, args, params):
    # Only on the error path: operands on two devices (a NumPy and a CuPy array) are the usual
    # cause of a TypeError from a ufunc, and the user needs to hear which devices met. Array
    # parameters count as operands (where's condition, cross-entropy's labels); an index does
    # not (host index arrays are fine on a GPU).
    names = prim.operands or [f"operand {position}" for position in range(len(args))]
    operands = [(name, raw(arg)) for name, arg in zip(names, args, strict=False)]
    operands += [
        (name, value) for name, value in params.items() if name != "index" and is_array(value)
    ]
    devices: dict = {}
    for name, value in operands:
        devices.setdefault(device_of(value), (name, value))
    if len(devices) > 1:
        met = list(devices.items())[:2]
        (first, (first_name, first_value)), (second, (second_name, second_value)) = met
        return TypeError(
            f"chainrule.{prim.name}: operands on different devices: {first_name} on {first!r} "
            f"(shape {_shape_of(first_value)}), {second_name} on {second!r} (shape "
            f"{_shape_of(second_value)}); move them to one device first (Tensor.to / "
            "chainrule.backend.device.to_device)"
        )
    shapes = ", ".join(str(_shape_of(a)) for a in args)
    extra = f" with {params}" if params else ""
    return type(error)(f"chainrule.{prim.name}: {error} (operand shapes: {shapes}{extra})")


# ------------------------------------------------------------------------------------------------
# The one dispatch path: the table's forward, or the one a backend layer supplies
# ------------------------------------------------------------------------------------------------

#: The backend layers that may supply forwards, innermost first: another array namespace, the
#: matmul precision policy, the cuBLAS routing of CUDA-graph capture. Each wraps what the layers
#: below it give, whatever order they were switched on in.
FORWARD_LAYERS = ("namespace", "precision", "cuda_graph")

_forward_layers: dict = {}  # layer name -> supplier(prim, forward) -> forward
_resolved_forwards: dict = {}  # prim -> its forward under the active layers (a cache)


def set_forward_layer(layer: str, supplier):
    """Let backend ``layer`` (one of :data:`FORWARD_LAYERS`) supply forwards, or stop it with
    ``None``; returns the supplier it replaces, to restore on the way out.

    ``supplier(prim, forward)`` returns the forward that computes ``prim`` on that layer, given
    ``forward``, the one the layers below supply (the table's own at the bottom): return it
    unchanged to leave ``prim`` alone. Nothing in the table is changed: while any layer is on,
    :func:`apply`, :class:`~chainrule.engine.tensor.Tensor` and every interpreter evaluate
    primitives through :func:`forward_of`; with none, they call ``prim.forward`` directly and
    pay nothing for the mechanism.
    """
    if layer not in FORWARD_LAYERS:
        raise ValueError(f"set_forward_layer: layer must be one of {FORWARD_LAYERS}, got {layer!r}")
    previous = _forward_layers.pop(layer, None)
    if supplier is not None:
        _forward_layers[layer] = supplier
    _resolved_forwards.clear()
    state.switch(redirected=bool(_forward_layers))
    return previous


def forward_of(prim):
    """The forward that computes ``prim`` now: the table's, through every active backend layer."""
    forward = _resolved_forwards.get(prim)
    if forward is None:
        forward = prim.forward
        for layer in FORWARD_LAYERS:
            supplier = _forward_layers.get(layer)
            if supplier is not None:
                forward = supplier(prim, forward)
        _resolved_forwards[prim] = forward
    return forward


def evaluate_hooked(prim, values, params):
    """``prim`` on plain ``values`` while ``state.hooked``: the forward of :func:`forward_of`,
    then the observers."""
    try:
        out = forward_of(prim)(*values, **params)
    except (ValueError, IndexError, TypeError) as error:
        raise _named_error(error, prim, values, params) from error
    for observer in state.observers:
        observer(prim, values, params, out)
    return out


class Stacked:
    """A parameter's batch, unwrapped by the batching level now processing it: ``value`` holds
    the stacked values (batch axis first). Batching rules that take array parameters
    (cross-entropy's labels, an index) look for it; a batch of another level stays a tracer."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def batch_in_params(params):
    """The highest-level batch (a ``Batched`` of ``vmap``) held by a parameter, or None: a
    parameter itself, or a member of a tuple parameter (an index)."""
    top = None
    for value in params.values():
        for member in value if type(value) is tuple else (value,):
            if isinstance(member, Tracer) and (top is None or member._level > top._level):
                top = member
    return top


def apply(prim, *args, **params):
    """Apply primitive ``prim`` to ``args``: the highest-level tracer among them (or, under
    ``vmap``, among the parameters) takes charge."""
    top = None
    for arg in args:
        if isinstance(arg, Tracer) and (top is None or arg._level > top._level):
            top = arg
    if state.batching and params:
        batch = batch_in_params(params)
        if batch is not None and (top is None or batch._level > top._level):
            top = batch
    if top is not None:
        return top._process(prim, args, params)
    return evaluate(prim, args, params)  # plain values: every rule on the hot path lands here


def evaluate(prim, values, params):
    """``prim`` on plain ``values``: its forward (through the backend layers and observers when
    ``state.hooked``), an error naming the op and the operand shapes."""
    if state.hooked:
        return evaluate_hooked(prim, values, params)
    try:
        return prim.forward(*values, **params)
    except (ValueError, IndexError, TypeError) as error:
        raise _named_error(error, prim, values, params) from error


class _GradMode(ContextDecorator):
    """Sets ``state.grad_enabled`` inside a ``with`` block (or a decorated function) and restores
    the previous value on the way out, exceptions included. A plain class: entering it costs a
    fraction of a generator-based context manager, and a training loop enters one every step."""

    __slots__ = ("enabled", "previous")

    def __init__(self, enabled: bool):
        self.enabled = enabled
        # A stack: the same object may be entered again before it exits.
        self.previous: list[bool] = []

    def __enter__(self):
        self.previous.append(state.grad_enabled)
        state.grad_enabled = self.enabled

    def __exit__(self, *exc_info):  # returns None: an exception goes on
        state.grad_enabled = self.previous.pop()


def no_grad():
    """Within this block operations on tensors are not recorded (parameter updates, evaluation)."""
    return _GradMode(False)


def enable_grad():
    """Within this block operations are recorded again (inside ``no_grad``, or by the reverse pass
    when it records itself for ``create_graph``)."""
    return _GradMode(True)


@contextmanager
def observe(observer):
    """Call ``observer(prim, args, params, out)`` after each primitive evaluation in the block."""
    state.switch(observers=(*state.observers, observer))
    try:
        yield observer
    finally:
        state.switch(observers=tuple(o for o in state.observers if o is not observer))
