"""Batching: many tangents (or cotangents) through one pass, along a leading batch axis.

``Batched(value, level)`` is a tracer whose ``value`` stacks B examples along axis 0 but which
shows every piece of code the *per-example* shape ``value.shape[1:]``. Code written for one
example therefore runs unchanged on the whole batch; in particular every JVP and VJP rule of the
primitive table, which is how ``jacfwd`` pushes n basis tangents and ``jacrev`` m basis cotangents
through a single pass each.

When an operation reaches a Batched argument, :meth:`Batched._process` looks up the primitive's
*batching rule* in its table entry (``batching``: one of the generic rules of
:data:`~chainrule.engine.primitives.shapes.GENERIC_RULES` by name, or a rule of the entry's own,
written beside it in :mod:`chainrule.engine.primitives`) and runs the primitive once on the
stacked values, rewritten so that the batch axis is carried through:

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

A primitive without a rule still works, one example at a time (a loop inside that one
primitive, not a loop of passes); the test suite checks that every primitive has a rule.

The same tracer is the public ``vmap`` (:mod:`chainrule.transforms.vmap`): there the *primal*
values are batched too, so the derivative rules read primals with
:func:`~chainrule.engine.core.strip`, which keeps a batch, and compare them with
:func:`~chainrule.engine.core.compare`, which gives a batch of booleans.
"""

from __future__ import annotations

import builtins

from . import core, ops
from .array_methods import ArrayOperators
from .core import Tracer, ndim
from .primitives.shapes import GENERIC_RULES, align, one_example_at_a_time, with_batch


class Batched(ArrayOperators, Tracer):
    """B values of one per-example shape, stacked along axis 0 of ``value`` (see module
    docstring)."""

    __slots__ = ("value", "_level", "shape")
    _is_batch = True  # core.strip keeps a batch of primals batched (vmap)

    def __init__(self, value, level):
        self.value = value
        self._level = level
        # What every operation sees: one example's shape (every array's and tracer's shape is a
        # tuple, and so is its slice).
        self.shape = value.shape[1:]

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
        # Every op on a batch of tangents (each op of jacfwd, of a Hessian) runs this, in one
        # loop over the operands. The rule: the entry's own, a generic one it names, or (none
        # given) one example at a time.
        level = self._level
        batched = []
        values = []
        for arg in args:
            if type(arg) is Batched and arg._level == level:
                batched.append(True)
                values.append(arg.value)
            else:
                batched.append(False)
                values.append(arg)
        if core.state.batching and params and core.batch_in_params(params) is not None:
            params = _stacked_params(params, level)
        rule = prim.batching
        if type(rule) is str:
            rule = GENERIC_RULES[rule]
        elif rule is None:
            rule = one_example_at_a_time
        return Batched(rule(prim, values, batched, params, self.value.shape[0]), level)

    def _compare(self, op, first, second):
        """A comparison at this level: the operands' stacked values lined up as the elementwise
        rule lines them up, compared one level down (see :func:`chainrule.engine.core.compare`)."""
        level = self._level
        pair = (first, second)
        batched = [type(v) is Batched and v._level == level for v in pair]
        values = [core.strip(v.value) if b else v for v, b in zip(pair, batched, strict=True)]
        ranks = [ndim(v) - b for v, b in zip(values, batched, strict=True)]
        rank = builtins.max(ranks)
        values = [align(v, rank) if b else v for v, b in zip(values, batched, strict=True)]
        return Batched(core.compare(op, *values), level)

    def _on_stacked(self, function):
        """``function`` (of a plain array with the batch axis first, such as an argsort along a
        shifted axis) on the stacked values, as a batch again: for functions of primals without
        derivative that the batching rules do not cover."""
        value = core.strip(self.value)
        if isinstance(value, Tracer):
            raise NotImplementedError(
                "this function of batched values is not supported under nested vmap"
            )
        return Batched(function(value), self._level)

    def _detached(self):
        """This batch without derivatives (``stop_gradient``), each nested level kept."""
        return Batched(ops.stop_gradient(self.value), self._level)

    def __bool__(self):
        raise TypeError(
            "a batched value (inside vmap) has no single truth value: Python control flow on it "
            "would pick one branch for every example; use chainrule.numpy.where instead"
        )

    def __repr__(self):
        return f"Batched(value={self.value!r}, level={self._level})"


def _stacked_params(params, level):
    """``params`` with each batch of ``level`` (a parameter, or a member of a tuple parameter)
    replaced by :class:`~chainrule.engine.core.Stacked`: the rule of the primitive sees which
    array parameters carry the batch axis."""

    def unwrap(value):
        if type(value) is Batched and value._level == level:
            return core.Stacked(value.value)
        return value

    return {
        name: tuple(unwrap(v) for v in value) if type(value) is tuple else unwrap(value)
        for name, value in params.items()
    }


def unbatch(value, size, level):
    """The stacked array behind ``value``: its ``value`` if it is Batched at ``level``, else
    ``value`` repeated ``size`` times (a result that does not depend on the batch)."""
    if type(value) is Batched and value._level == level:
        return value.value
    return with_batch(value, size)
