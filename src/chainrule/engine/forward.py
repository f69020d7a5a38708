"""Forward mode: ``Dual`` carries a (primal, tangent) pair through the same primitive table.

No graph is stored: each primitive's JVP rule turns input tangents into the output tangent on the
spot, so memory stays that of the forward pass. One pass gives J·t for one direction t, which is
why a full gradient of P weights needs P passes in forward mode but one in reverse mode.

Many directions at once: a tangent may itself be a :class:`~chainrule.engine.batching.Batched` value
holding B tangents along a leading axis. The JVP rules never know: they see a tangent of the
primal's shape, and the batching layer carries the extra axis through every operation they use.
That is how ``jacfwd`` pushes all n basis directions through a single pass.
"""

from __future__ import annotations

from operator import attrgetter

from . import arraylib, ops
from .array_methods import ArrayOperators
from .arraylib import ndarray, xp
from .core import PLAIN_TYPES, Tracer, apply, evaluate, state
from .table import REFLECTED_OPERATORS, TABLE

_new = object.__new__
_NO_PARAMS: dict = {}  # the parameters of every operator's op; never mutated


class Dual(ArrayOperators, Tracer):
    """A value watched by forward mode: ``primal`` and its ``tangent`` at one level."""

    __slots__ = ("primal", "tangent", "_level")

    def __init__(self, primal, tangent, level):
        self.primal = primal
        self.tangent = tangent
        self._level = level

    def _unwrap(self):
        return self.primal

    # The primal's, read straight off it (C-level getters).
    shape = property(attrgetter("primal.shape"))
    dtype = property(attrgetter("primal.dtype"))
    ndim = property(attrgetter("primal.ndim"))
    size = property(attrgetter("primal.size"))

    def _process(self, prim, args, params):
        """``prim`` on the primals, and the JVP rule on the tangents.

        This runs for every operation of a ``jvp`` (and so of every Hessian-vector product), so
        the usual case takes the short way: plain primals with no backend layer and no ``vmap``
        go to the primitive's forward directly (the call :func:`~chainrule.engine.core.apply`
        would make), a tangent that already matches a NumPy output is kept without the
        shape and dtype helpers, and the result is built without ``__init__``."""
        level = self._level
        primals = []
        tangents = []
        plain = True
        for arg in args:
            if type(arg) is Dual and arg._level == level:
                primal = arg.primal
                tangents.append(arg.tangent)
            else:
                primal = arg
                tangents.append(None)
            if isinstance(primal, Tracer):
                plain = False
            primals.append(primal)
        if plain and not (state.batching and params):
            out = evaluate(prim, primals, params)
        else:
            out = apply(prim, *primals, **params)
        if arraylib.ns is not xp:  # a namespace whose operators refuse tracers
            tangents, out, primals = _lifted(tangents, out, primals)
        tangent = prim.jvp(tuple(tangents), out, *primals, **params)
        if tangent is None:
            tangent = ops.zeros_like(out)
        elif type(out) is ndarray and type(tangent) is ndarray:
            if tangent.shape != out.shape:
                tangent = ops.broadcast_to(tangent, out.shape)
            if tangent.dtype != out.dtype:
                tangent = ops.astype(tangent, out.dtype)
        else:
            out_shape = ops.shape(out)
            if ops.shape(tangent) != out_shape:
                tangent = ops.broadcast_to(tangent, out_shape)
            out_dtype = getattr(out, "dtype", None)
            if out_dtype is not None and getattr(tangent, "dtype", out_dtype) != out_dtype:
                tangent = ops.astype(tangent, out_dtype)
        result = _new(Dual)
        result.primal = out
        result.tangent = tangent
        result._level = level
        return result

    def __repr__(self):
        return f"Dual(primal={self.primal!r}, tangent={self.tangent!r}, level={self._level})"


def _operator(prim, reflected=False):
    """``dual (op) other`` for primitive ``prim``: with a dual of the same level or a plain value
    beside it, ``self`` is the highest-level tracer, so the op goes to :meth:`Dual._process`
    without the public function and :func:`~chainrule.engine.core.apply`'s search for it (every
    backward rule of a Hessian-vector product meets these). Anything else, a hook to run, or an
    error (redone there, to be reported as the public function reports it) takes the public
    function, as the table's operators do. The same entries as Tensor's fast operators: those
    whose public function may be skipped on such operands."""
    function = prim.function

    def general(self, other):
        return function(other, self) if reflected else function(self, other)

    def operator(self, other):
        kind = type(other)
        if ((kind is Dual and other._level == self._level) or kind in PLAIN_TYPES) and (
            not state.hooked
        ):
            try:
                return self._process(
                    prim, (other, self) if reflected else (self, other), _NO_PARAMS
                )
            except Exception:  # redone on the general path, which reports it
                pass
        return general(self, other)

    def unary(self):
        if not state.hooked:
            try:
                return self._process(prim, (self,), _NO_PARAMS)
            except Exception:  # redone on the general path, which reports it
                pass
        return function(self)

    name = f"__{'r' if reflected else ''}{prim.operator}__"
    chosen = operator if prim.operator in REFLECTED_OPERATORS else unary
    chosen.__name__ = chosen.__qualname__ = name
    return chosen


def _install_fast_operators():
    for prim in TABLE.values():
        if prim.operator is None or not prim.fast_operator:
            continue
        setattr(Dual, f"__{prim.operator}__", _operator(prim))
        if prim.operator in REFLECTED_OPERATORS:
            setattr(Dual, f"__r{prim.operator}__", _operator(prim, reflected=True))


_install_fast_operators()


def _lifted(tangents, out, primals):
    """Plain arrays as constant Tensors when some operand is traced (see
    :func:`chainrule.engine.tensor.lift_constant`); unchanged otherwise."""
    operands = (*tangents, out, *primals)
    if not any(isinstance(value, Tracer) for value in operands):
        return tangents, out, primals
    from .tensor import lift_constant  # noqa: PLC0415  (tensor imports this module's users)

    return (
        [lift_constant(t) for t in tangents],
        lift_constant(out),
        [lift_constant(p) for p in primals],
    )
