"""``jit``: stage a function out to a flat program of primitives once, then replay it.

Every transform in chainrule is an interpreter that runs while the user's function runs: a
Hessian of a small function goes through three levels of tracers on every operation, and a
gradient inside a loop records and walks a graph on every iteration. ``jit(fun)`` pays that once
per input signature. The first call runs ``fun`` on *staging tracers* (a transformation level of
their own, below every transform that ``fun`` opens inside), which write down every primitive
application that reaches them, with its parameters, as one equation of a flat program: the
primitives of ``fun``'s own work and, when ``fun`` takes a gradient or a Jacobian, those of the
derivative rules too. Later calls with the same signature replay the program: one primitive
application per equation, no graph, no tangents, no tracer levels of ``fun``'s own.

On plain arrays, a program replayed in a loop (from its ``_COMPILE_AFTER``-th replay) is compiled
into one generated Python function of its inputs, a line per equation, so that a replay costs
little more than its primitives' own calls (:func:`_compiled`). Under a transform, a replay
applies each primitive with :func:`~chainrule.engine.core.apply`, so a jitted function
composes with every transform outside it. ``grad(jit(f))`` records the program's primitives on
the tape; ``jvp`` pushes tangents through them; ``vmap`` batches them. This is where nested AD
gains most: ``jit(grad(potential))`` inside a trajectory that an outer ``jvp`` differentiates
costs one forward-mode level per primitive, instead of a forward level carrying a reverse (or
batched forward) level on every operation of ``potential``.

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> f = lambda x: cnp.sum(cnp.sin(x) * x)
>>> fast = cr.jit(cr.hessian(f))
>>> x = np.array([0.5, 1.0, 2.0])
>>> bool(np.allclose(fast(x), cr.hessian(f)(x)))
True
>>> fast.trace_count  # a second call with the same shapes replays
1
>>> _ = fast(x + 1.0); fast.trace_count
1

What a program assumes (as in JAX):

* **Arrays are traced; everything else is static.** Array leaves of the arguments (NumPy and
  CuPy arrays, NumPy scalars, tracers of enclosing transforms) are the program's inputs: a call
  with other shapes or dtypes stages a new program. Every other leaf (a Python number, a string,
  ``None``), and every argument named in ``static_argnums`` or ``static_argnames``, is part of the
  signature by value and frozen into the program.
* **No Python decision on a traced value.** ``if x > 0``, ``float(x)``, ``x.item()`` or
  ``np.asarray(x)`` inside ``fun`` would be frozen at the staged value, so they raise a
  :class:`ConcretizationError` naming the function; use ``chainrule.numpy.where``, or make the
  argument static.
* **Closed-over arrays are constants.** An array that ``fun`` reads from its closure is frozen
  into the program; a *tracer* it reads from its closure (a value an enclosing ``grad`` or
  ``jvp`` is watching) would lose its derivative, so that is an error too: pass it as an
  argument.

Each call that stages writes ``trace_count`` up by one; ``clear_cache()`` drops the programs.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from keyword import iskeyword
from operator import attrgetter
from typing import Any

from ..engine import core, ops
from ..engine.array_methods import ArrayOperators
from ..engine.arraylib import ndarray, xp
from ..engine.batching import Batched, unbatch
from ..engine.core import Tracer, apply, compare, evaluate, new_level, state, strip
from ..engine.primitives.shapes import BROADCAST_TO, RESHAPE
from ..engine.table import Primitive
from ..engine.tensor import Tensor
from .api import jvp, vjp
from .custom import pack_leaves, unpack_leaves
from .pytree import leaves_like, leaves_match, structure_key, tree_flatten, tree_unflatten


class ConcretizationError(TypeError):
    """A jitted function asked for the value of a traced array (see
    :mod:`chainrule.transforms.jit`)."""


class _Staged(ArrayOperators, Tracer):
    """A value of the function being staged: the concrete ``value`` seen while staging, and the
    slot of the program that will hold it on a replay.

    Derivative rules treat it as a value, as they treat a batch of ``vmap``: :func:`strip` stops
    at it (``_is_batch``), so a rule's comparisons and ``stop_gradient`` reach it and are written
    down as equations instead of being read off the staged value."""

    __slots__ = ("value", "_level", "slot", "_program")
    _is_batch = True

    def __init__(self, value, program, slot):
        self.value = value
        self._level = program.level
        self.slot = slot
        self._program = program

    shape = property(attrgetter("value.shape"))
    dtype = property(attrgetter("value.dtype"))
    ndim = property(attrgetter("value.ndim"))
    size = property(attrgetter("value.size"))

    def _unwrap(self):
        return self.value

    def _process(self, prim, args, params):
        return self._program.record_primitive(prim, args, params)

    def _compare(self, op, first, second):
        return self._program.record_call(functools.partial(compare, op), (first, second))

    def _detached(self):
        return self._program.record_call(ops.stop_gradient, (self,))

    def _on_stacked(self, function):
        return self._program.record_call(functools.partial(_on_values, function), (self,))

    def _refuse(self, what):
        raise ConcretizationError(
            f"jit of {self._program.name}: {what} of a traced array (shape {self.shape}, dtype "
            f"{self.dtype}): a jitted function is staged once per input signature, so a Python "
            "decision on an array's value would be frozen at the staged value; use "
            "chainrule.numpy.where for a choice per element, or make the argument static "
            "(static_argnums / static_argnames)"
        )

    def __bool__(self):
        self._refuse("bool()")

    def __float__(self):
        self._refuse("float()")

    def __int__(self):
        self._refuse("int()")

    def __index__(self):
        self._refuse("an index")

    def item(self):
        self._refuse(".item()")

    def tolist(self):
        self._refuse(".tolist()")

    def __array__(self, dtype=None, copy=None):
        self._refuse("np.asarray()")

    def __repr__(self):
        return f"Staged(shape={self.shape}, dtype={self.dtype}, slot={self.slot})"


def _on_values(function, value):
    """``function`` of the stacked values of ``value`` (see ``Tracer._on_stacked``): a batch's
    own, or, for a value that is not a batch, of the value as a batch of one."""
    primal = strip(value)
    if isinstance(primal, Tracer):
        return primal._on_stacked(function)
    return function(primal[None])[0]


class _Program:
    """The equations staged from one call, and how to replay them (see module docstring)."""

    def __init__(self, name: str, inputs: int):
        self.name = name
        self.level = new_level()
        self.inputs = inputs
        self.values: list = [None] * inputs  # slot -> constant (None for computed slots)
        self.constant_slots: dict = {}  # id(constant) -> slot, and the constants kept alive
        # Each: (primitive or None, call or None, operand slots, params, param slots or None,
        # output slot); after finish, the slots read there for the last time as well.
        self.equations: list[tuple] = []
        self.outputs: list[int] = []
        self.as_primitive: Primitive | None = None  # built when first needed (see call)
        self.output_meta: list = []  # (shape, dtype) of each output
        self._traced_verdicts: dict = {}  # which inputs are traced -> use as_primitive or not
        self.input_dtypes: list = []
        self.input_shapes: list = []  # the staged shape of each input slot
        self.replay: Callable | None = None  # the equations as one function (see _compiled)
        self.plain_runs = 0  # replays on plain arrays before there was one
        self.arrays: dict = {}  # computed slot -> (shape, dtype) where it was a NumPy array

    # -- staging --------------------------------------------------------------------------------

    def _new_slot(self, value=None) -> int:
        self.values.append(value)
        return len(self.values) - 1

    def _slot_of(self, value):
        """The slot and the staged value of operand ``value`` (a constant gets a slot of its
        own, one per distinct object)."""
        if type(value) is _Staged and value._program is self:
            return value.slot, value.value
        if isinstance(value, Tracer):
            raise ValueError(
                f"jit of {self.name}: the function reads a value that an enclosing transform is "
                f"tracing ({type(value).__name__} of shape {ops.shape(value)}) from its closure; "
                "its derivative would be lost: pass it to the jitted function as an argument"
            )
        kept = self.constant_slots.get(id(value))
        if kept is None:
            kept = self.constant_slots[id(value)] = (self._new_slot(value), value)
        return kept[0], value

    def _operands(self, args):
        """The slots of ``args`` and their staged values."""
        slots = []
        values = []
        for arg in args:
            slot, value = self._slot_of(arg)
            slots.append(slot)
            values.append(value)
        return tuple(slots), values

    def record_primitive(self, prim, args, params):
        """``prim`` on ``args``, evaluated on the staged values and written down as an
        equation."""
        slots, values = self._operands(args)
        param_slots = None
        staged_params = params
        if params and core.batch_in_params(params) is not None:
            param_slots, staged_params = self._params_of(params)
            for name, position, _ in param_slots:
                member = staged_params[name] if position is None else staged_params[name][position]
                if name == "index" and getattr(member, "dtype", None) == xp.bool_:
                    raise ConcretizationError(
                        f"jit of {self.name}: chainrule.{prim.name} with a boolean mask computed "
                        "from traced values: the result's shape would depend on the values, "
                        "which a staged program cannot follow; select with "
                        "chainrule.numpy.where instead"
                    )
        out = evaluate(prim, values, staged_params)
        return self._append(prim, None, slots, params, param_slots, out)

    def _params_of(self, params):
        """Which members of ``params`` are program values (``(name, member, slot)``, member None
        for a whole parameter), and the parameters with the staged values in their place."""
        refs: list[tuple] = []
        concrete = {}
        for name, value in params.items():
            if type(value) is tuple:
                members = []
                for position, member in enumerate(value):
                    if isinstance(member, Tracer):
                        slot, member = self._slot_of(member)
                        refs.append((name, position, slot))
                    members.append(member)
                concrete[name] = tuple(members)
            elif isinstance(value, Tracer):
                slot, concrete[name] = self._slot_of(value)
                refs.append((name, None, slot))
            else:
                concrete[name] = value
        return tuple(refs), concrete

    def record_call(self, call, args):
        """``call(*args)`` (a function of values without derivative: a comparison,
        ``stop_gradient``), written down as an equation that calls it again on a replay."""
        slots, values = self._operands(args)
        return self._append(None, call, slots, {}, None, call(*values))

    def _append(self, prim, call, slots, params, param_slots, out):
        slot = self._new_slot()
        self.equations.append((prim, call, slots, params, param_slots, slot))
        if type(out) is ndarray and out.ndim:  # what a compiled replay may write into
            self.arrays[slot] = (out.shape, out.dtype)
        return _Staged(out, self, slot)

    def finish(self, output_leaves) -> None:
        """Take the outputs, drop the equations they do not need, and note where each slot is
        read for the last time (a replay lets go of intermediate arrays as it goes)."""
        self.outputs = [self._slot_of(leaf)[0] for leaf in output_leaves]
        self.output_meta = [
            (ops.shape(leaf), getattr(leaf, "dtype", None)) for leaf in output_leaves
        ]
        self._share_common_work()
        self.equations = self.needed_with_frees(self.equations)
        self.constant_slots.clear()

    def needed_with_frees(self, equations: list) -> list:
        """Of ``equations`` (in the staged form, without slots freed), those the outputs need,
        each with the computed slots read there for the last time appended."""
        needed = set(self.outputs)
        kept = []
        for equation in reversed(equations):
            if equation[5] in needed:
                kept.append(equation)
                needed.update(_reads(equation))
        seen = set(self.outputs)
        finished = []
        for equation in kept:  # last equation first
            reads = _reads(equation)
            # Computed slots (inputs and constants stay) not read by any later equation.
            frees = tuple(
                slot
                for slot in reads
                if slot not in seen and slot >= self.inputs and self.values[slot] is None
            )
            seen.update(reads)
            finished.append((*equation, frees))
        finished.reverse()
        return finished

    def _share_common_work(self) -> None:
        """Common subexpressions: an equation that applies the same primitive to the same slots
        with the same parameters as an earlier one (derivative rules recompute ``cos(x)`` and
        the like) reads the earlier result instead. Primitives are pure functions of their
        operands, so this changes no value, only the work."""
        alias: dict = {}
        first_of: dict = {}
        shared = []
        for prim, call, slots, params, param_slots, out in self.equations:
            slots = tuple(alias.get(slot, slot) for slot in slots)
            if param_slots is not None:
                param_slots = tuple((n, m, alias.get(slot, slot)) for n, m, slot in param_slots)
            key = None
            if prim is not None:
                # Each parameter's type too: 1, 1.0 and True are equal keys, not equal params.
                key = (prim, slots, param_slots, tuple((k, type(v), v) for k, v in params.items()))
                try:
                    earlier = first_of.get(key)
                except TypeError:  # an array among the parameters: not compared
                    key = earlier = None
                if earlier is not None:
                    alias[out] = earlier
                    continue
                if key is not None:
                    first_of[key] = out
            shared.append((prim, call, slots, params, param_slots, out))
        self.equations = shared
        self.outputs = [alias.get(slot, slot) for slot in self.outputs]

    # -- replay ---------------------------------------------------------------------------------

    def call(self, inputs: Sequence) -> list:
        """The outputs for ``inputs``: on plain arrays, :meth:`run`; under reverse mode on top,
        for a program the tracers mostly reach, the program as *one* primitive
        (:class:`_AsPrimitive`), so that an outer ``grad`` records one node instead of one per
        equation; otherwise :meth:`run` through the tracers, equation by equation."""
        for value in inputs:
            if isinstance(value, Tracer):
                break
        else:
            return self.run(inputs)
        if not _reverse_on_top(inputs) or not self._mostly_traced(inputs):
            # Equation by equation (measured, gradbench's saddle and particle): forward mode,
            # which stores nothing, pays less per equation than a staged tangent map would;
            # batches (jacfwd's tangents, vmap's values) would meet the batching interpreter
            # in the staged maps all the same; and where the tracers reach only a few
            # equations, the others cost a plain call each, less than a node whose rules
            # replay the whole program.
            return self.run(inputs)
        if self.as_primitive is None:
            computed = all(
                slot >= self.inputs and self.values[slot] is None for slot in self.outputs
            )
            if not computed or len({dtype for _, dtype in self.output_meta}) != 1:
                return self.run(inputs)  # an input or a constant returned, or mixed dtypes
            self.as_primitive = _AsPrimitive(self).primitive
        return unpack_leaves(apply(self.as_primitive, *inputs), self.output_meta)

    def _mostly_traced(self, inputs) -> bool:
        """Whether the equations that read a traced input, directly or not, are at least half
        of the program (and four or more): then one primitive beats interpreting them."""
        pattern = tuple(isinstance(value, Tracer) for value in inputs)
        verdict = self._traced_verdicts.get(pattern)
        if verdict is None:
            reached = {slot for slot, traced in enumerate(pattern) if traced}
            count = 0
            for equation in self.equations:
                if not reached.isdisjoint(_reads(equation)):
                    reached.add(equation[5])
                    count += 1
            verdict = self._traced_verdicts[pattern] = count >= max(4, len(self.equations) / 2)
        return verdict

    def run(self, inputs: Sequence) -> list:
        """The outputs for ``inputs`` (one per input slot): each equation applied in turn, with
        :func:`~chainrule.engine.core.apply` when some input is a tracer, else evaluated on the
        plain arrays directly."""
        env = list(self.values)
        env[: self.inputs] = inputs
        traced = False
        for value in inputs:
            if isinstance(value, Tracer):
                traced = True
                break
        if not traced and not state.hooked:
            replay = self.replay
            if replay is None:
                self.plain_runs += 1
                if self.plain_runs < _COMPILE_AFTER:
                    return self._run_plain(env)
                replay = self.replay = _compiled(self)
            try:
                return replay(*inputs)
            except (ValueError, IndexError, TypeError):
                return self._run_plain(env)  # redone equation by equation, to name the op
        for prim, call, slots, params, param_slots, out, frees in self.equations:
            args = [env[slot] for slot in slots]
            if param_slots is not None:
                params = _with_values(params, param_slots, env)
            if prim is None:
                env[out] = call(*args)
            elif traced:
                env[out] = apply(prim, *args, **params)
            else:
                env[out] = evaluate(prim, args, params)
            for slot in frees:
                env[slot] = None
        return [env[slot] for slot in self.outputs]

    def _run_plain(self, env) -> list:
        """:meth:`run` on plain arrays with nothing hooked: each primitive's forward called
        directly (what :func:`~chainrule.engine.core.evaluate` would call); a failing one is
        redone through evaluate, whose error names the op and the operand shapes."""
        prim = params = None
        args: list = []
        try:
            for prim, call, slots, params, param_slots, out, frees in self.equations:
                args = [env[slot] for slot in slots]
                if param_slots is not None:
                    params = _with_values(params, param_slots, env)
                env[out] = call(*args) if prim is None else prim.forward(*args, **params)
                for slot in frees:
                    env[slot] = None
        except (ValueError, IndexError, TypeError):
            if prim is not None:
                evaluate(prim, args, params)  # redone there, to be reported as evaluate reports
            raise
        return [env[slot] for slot in self.outputs]


class _AsPrimitive:
    """A program as a primitive of its own (not in the table), for the interpreters
    of the transforms around a jitted function, as JAX treats a jitted call:

    * forward: the plain replay (several outputs packed into one flat vector, unpacked by
      :meth:`_Program.call`);
    * JVP: the program's tangent map, itself staged (``jit`` of ``jvp`` of the replay, one
      program per set of inputs that carry a tangent) and replayed on plain arrays;
    * VJP: the program's cotangent map, staged the same way (``jit`` of ``vjp`` of the replay,
      recomputing the forward inside: a node keeps only its inputs, as under ``checkpoint``);
    * batching: the replay on batches of a fresh level (``vmap`` of the program).

    On traced values (a derivative of higher order) the staged maps replay through the tracers
    in turn, so every order stays available. The FLOPs of the primitive itself are 0: its
    equations are counted as they are evaluated."""

    def __init__(self, program: _Program):
        self.program = program
        self.tangent_maps: dict = {}
        self.cotangent_map: Jitted | None = None
        self.differentiable = tuple(
            position
            for position, dtype in enumerate(program.input_dtypes)
            if xp.issubdtype(dtype, xp.inexact)
        )
        self.primitive = Primitive(
            f"jit({program.name})",
            self.forward,
            self.vjp,
            self.jvp,
            lambda out, *args, **params: 0,
            batching=self.batch,
        )

    def forward(self, *values):
        return pack_leaves(self.program.run(values))

    def jvp(self, tangents, out, *primals):
        present = tuple(i for i, tangent in enumerate(tangents) if tangent is not None)
        tangent_map = self.tangent_maps.get(present)
        if tangent_map is None:
            run = self.program.run
            count = len(primals)

            def tangent_of(*primals_and_tangents):
                fixed = list(primals_and_tangents[:count])

                def along(*moving):
                    inputs = list(fixed)
                    for position, value in zip(present, moving, strict=True):
                        inputs[position] = value
                    return pack_leaves(run(inputs))

                moving = tuple(fixed[position] for position in present)
                return jvp(along, moving, tuple(primals_and_tangents[count:]))[1]

            tangent_map = self.tangent_maps[present] = Jitted(tangent_of, (), ())
        return tangent_map(*primals, *(tangents[position] for position in present))

    def vjp(self, cotangent, out, *values):
        if self.cotangent_map is None:
            run = self.program.run
            differentiable = self.differentiable

            def cotangents_of(*values_and_cotangent):
                values = list(values_and_cotangent[:-1])

                def of_differentiable(*moving):
                    inputs = list(values)
                    for position, value in zip(differentiable, moving, strict=True):
                        inputs[position] = value
                    return pack_leaves(run(inputs))

                moving = [values[position] for position in differentiable]
                pullback = vjp(of_differentiable, *moving)[1]
                return pullback(values_and_cotangent[-1])

            self.cotangent_map = Jitted(cotangents_of, (), ())
        found = self.cotangent_map(*values, cotangent)
        contributions: list = [None] * len(values)
        for position, contribution in zip(self.differentiable, found, strict=True):
            contributions[position] = contribution
        return contributions

    def batch(self, prim, values, batched, params, size):
        level = new_level()
        inputs = [
            Batched(value, level) if is_batched else value
            for value, is_batched in zip(values, batched, strict=True)
        ]
        state.batching += 1  # program values among parameters may be batches now
        try:
            out = pack_leaves(self.program.run(inputs))
        finally:
            state.batching -= 1
        return unbatch(out, size, level)


def _reverse_on_top(inputs) -> bool:
    """Whether the highest-level tracer among ``inputs`` is reverse mode's (a Tensor), with no
    batch (``Batched``) anywhere under the tracers or as a Dual's tangent."""
    top = None
    for value in inputs:
        if isinstance(value, Tracer) and (top is None or value._level > top._level):
            top = value
        while isinstance(value, Tracer):
            if value._is_batch or isinstance(getattr(value, "tangent", None), Tracer):
                return False
            value = value._unwrap()
    return type(top) is Tensor


#: Plain replays interpreted before a program is compiled (:func:`_compiled`). Compiling costs
#: about 13 µs per equation, and saves about 0.3 µs per equation on every replay after: a program
#: called a few times is not worth it, one in a loop soon is.
_COMPILE_AFTER = 32


def _compiled(program: _Program) -> Callable:
    """``program``'s equations on plain arrays as one Python function of its inputs, generated
    as source and compiled once: each equation one line that calls the primitive's forward
    (or the recorded call) on local variables, and a ``del`` where a value is read for the last
    time. This is :meth:`_Program._run_plain` without the interpreter: no loop over equations,
    no slot lists, no parameter dicts unpacked, so a replay costs little more than its
    primitives' own calls. The same forwards on the same operands, less the views their readers
    do not need (:func:`_without_views`): the same bits."""
    names: dict = {"_with_values": _with_values}

    def ref(slot):
        if slot < program.inputs:
            return f"a{slot}"
        constant = program.values[slot]
        if constant is None:
            return f"v{slot}"
        names[f"k{slot}"] = constant
        return f"k{slot}"

    inputs = ", ".join(f"a{slot}" for slot in range(program.inputs))
    lines = [f"def replay({inputs}):"]
    equations = program.needed_with_frees(_without_views(program))
    writers, writable = _in_place_slots(program, equations)
    for index, (prim, call, slots, params, param_slots, out, frees) in enumerate(equations):
        names[f"f{index}"] = call if prim is None else prim.forward
        operands = [ref(slot) for slot in slots]
        if out in writers:  # an elementwise result: into an operand's dying buffer, if any
            meta = program.arrays[out]
            dying = [slot for slot in frees if slot in writable and program.arrays[slot] == meta]
            if dying:
                operands.append(f"out=v{dying[0]}")
        if param_slots is not None:  # parameters that hold program values
            names[f"p{index}"], names[f"s{index}"] = params, param_slots
            values = ", ".join(f"{slot}: {ref(slot)}" for _, _, slot in param_slots)
            operands.append(f"**_with_values(p{index}, s{index}, {{{values}}})")
        elif all(name.isidentifier() and not iskeyword(name) for name in params):
            for position, (name, value) in enumerate(params.items()):
                names[f"p{index}_{position}"] = value
                operands.append(f"{name}=p{index}_{position}")
        elif params:
            names[f"p{index}"] = params
            operands.append(f"**p{index}")
        lines.append(f"    v{out} = f{index}({', '.join(operands)})")
        if frees:
            lines.append(f"    del {', '.join(f'v{slot}' for slot in frees)}")
    lines.append(f"    return [{', '.join(ref(slot) for slot in program.outputs)}]")
    code = compile("\n".join(lines), f"<jit of {program.name}>", "exec")
    exec(code, names)  # noqa: S102  (source generated above from slot numbers alone)
    return names["replay"]


def _without_views(program: _Program) -> list:
    """``program``'s equations (in the staged form, without the slots freed) for a compiled
    replay, less two kinds of view that their readers do not need, every later operand read
    through what replaced them:

    * a ``broadcast_to`` whose every reader is an elementwise ufunc (``matmul`` aside) that gets
      the same result shape from the unbroadcast array, which it broadcasts itself: a sum's VJP
      broadcasts its cotangent so, and ``np.broadcast_to`` builds an iterator, about 2 µs, more
      than the ufunc itself on small arrays;
    * a ``reshape`` of a ``reshape``, which reshapes the first one's operand instead, or is that
      operand itself where it has the final shape already (a sum's VJP over an axis and the
      unbroadcast after it make such pairs).

    Only arrays of a known shape and dtype (computed NumPy arrays of one dimension or more, and
    inputs) take a view's place, never a Python number (whose dtype would give way), and outputs
    stay as staged. An elementwise result is computed element by element from the same
    operands whether they were broadcast before or by the ufunc: the same bits."""
    readers: dict = {}
    for equation in program.equations:
        for slot in _reads(equation):
            readers.setdefault(slot, []).append(equation)
    outputs = set(program.outputs)
    alias: dict = {}  # the slot of an elided view -> the slot read in its place
    reshaped_from: dict = {}  # the slot of a kept reshape -> its operand
    kept = []
    for prim, call, slots, params, param_slots, out, _ in program.equations:
        slots = tuple(alias.get(slot, slot) for slot in slots)
        if param_slots is not None:
            param_slots = tuple((n, m, alias.get(slot, slot)) for n, m, slot in param_slots)
        if prim is RESHAPE and out not in outputs:
            source = reshaped_from.get(slots[0])
            if source is not None:
                shape = _array_shape(program, source)
                if shape is not None and shape == _shape_of(program, out):
                    alias[out] = source
                    continue
                slots = (source,)
            reshaped_from[out] = slots[0]
        elif (
            prim is BROADCAST_TO
            and out not in outputs
            and _array_shape(program, slots[0]) is not None
            and _broadcast_by_readers(program, readers.get(out, ()), out, slots[0], alias)
        ):
            alias[out] = slots[0]
            continue
        kept.append((prim, call, slots, params, param_slots, out))
    return kept


def _shape_of(program: _Program, slot: int):
    """The staged shape of ``slot``'s value: an input's, a computed NumPy array's or a
    constant's; None for any other computed value."""
    if slot < program.inputs:
        return program.input_shapes[slot]
    meta = program.arrays.get(slot)
    if meta is not None:
        return meta[0]
    constant = program.values[slot]
    return None if constant is None else xp.shape(constant)


def _array_shape(program: _Program, slot: int):
    """The staged shape of ``slot`` where it holds an input or a computed NumPy array of one
    dimension or more (whose dtype stays what it is next to any operand); else None."""
    if slot >= program.inputs and slot not in program.arrays:
        return None
    return _shape_of(program, slot) or None


def _broadcast_by_readers(program: _Program, readers, view, source, alias) -> bool:
    """Whether every equation of ``readers`` is an elementwise ufunc without parameters reading
    ``view`` as an operand, whose staged result shape it gets with ``source`` in ``view``'s
    place (and the views elided so far, ``alias``, in theirs)."""
    for prim, _, slots, params, param_slots, out, _ in readers:
        forward = None if prim is None else prim.forward
        if not isinstance(forward, xp.ufunc) or forward is xp.matmul or params or param_slots:
            return False
        operands = []
        for slot in slots:
            shape = _shape_of(program, source if slot == view else alias.get(slot, slot))
            if shape is None:
                return False
            operands.append(shape)
        if out not in program.arrays or xp.broadcast_shapes(*operands) != program.arrays[out][0]:
            return False
    return True


def _in_place_slots(program: _Program, equations: list) -> tuple[set, set]:
    """``(writers, writable)``: the slots of elementwise results that a compiled replay may
    write into an operand's array where that operand is read for the last time (as NumPy's
    in-place ufuncs do, with the bits of the out-of-place call), and the computed slots whose
    array may be written into so. A fresh array is the result of a ufunc forward without
    parameters (``matmul`` included: a new array, no view of another), a NumPy array of at least
    one dimension when staged; the writers are those ufuncs but ``matmul`` (whose ``out`` may
    not overlap its operands). A writable slot is fresh, read only by such ufuncs (so that no
    view of it is alive) and not an output. Fewer new arrays per replay: on a training step's
    128 KiB activations, each new one costs page faults."""
    fresh = set()
    writers = set()
    for prim, _, _, params, param_slots, out, _ in equations:
        forward = None if prim is None else prim.forward
        if (
            isinstance(forward, xp.ufunc)
            and not params
            and param_slots is None
            and out in program.arrays
        ):
            fresh.add(out)
            if forward is not xp.matmul:
                writers.add(out)
    writable = fresh - set(program.outputs)
    for equation in equations:
        if equation[5] not in fresh:
            writable -= _reads(equation)  # a reader that may keep a view
    return writers, writable


def _reads(equation) -> set:
    """The slots an equation reads: its operands and the program values among its params."""
    reads = set(equation[2])
    reads.update(slot for _, _, slot in equation[4] or ())
    return reads


def _with_values(params, param_slots, env):
    params = dict(params)
    for name, position, slot in param_slots:
        if position is None:
            params[name] = env[slot]
        else:
            members = list(params[name])
            members[position] = env[slot]
            params[name] = tuple(members)
    return params


def _is_traced_leaf(leaf) -> bool:
    """Arrays (of any namespace), NumPy scalars and tracers are inputs; other leaves static."""
    return isinstance(leaf, (ndarray, Tracer, xp.generic)) or (
        hasattr(leaf, "shape") and hasattr(leaf, "dtype") and not isinstance(leaf, numbers.Number)
    )


def _staging_value(leaf):
    """The concrete array a staged input starts from: the value ``leaf`` shows (for a batch of
    ``vmap``, its first example; shapes are all that staging depends on)."""
    if isinstance(leaf, Tracer):
        return core._one_example(leaf)
    return leaf


def _leaf_key(leaf):
    """``leaf``'s part of a signature: the shape and dtype it shows, and for an array that is not
    NumPy's (under any tracers), its type and device. A NumPy scalar (``np.int64(3)``, what NumPy
    returns for a 0-d result) signs as the 0-d array it stands for, so that a step counter that
    comes back from a replay as a scalar does not stage the function again."""
    if type(leaf) is ndarray or isinstance(leaf, xp.generic):
        return (leaf.shape, leaf.dtype)
    under = core.raw(leaf) if isinstance(leaf, Tracer) else leaf
    if type(under) is ndarray or isinstance(under, xp.generic):
        return (ops.shape(leaf), leaf.dtype)
    return (ops.shape(leaf), leaf.dtype, type(under), str(getattr(under, "device", None)))


#: How many user functions :func:`jit` is staging now (a jit inside a staged function counts
#: again): see :func:`staging`.
_staging_depth = 0


def staging() -> bool:
    """Whether :func:`jit` is staging a function now. Code with effects that a staged program
    cannot replay (module state changed in place, a draw from a random generator) asks, and
    refuses with a message instead of freezing the staged values into every replay."""
    return _staging_depth > 0


class Jitted:
    """The callable :func:`jit` returns: ``fun`` staged once per input signature, replayed."""

    def __init__(self, fun: Callable, static_argnums: tuple, static_argnames: tuple):
        self.fun = fun
        self.static_argnums = static_argnums
        self.static_argnames = static_argnames
        self.name = getattr(fun, "__name__", type(fun).__name__)
        self._programs: dict = {}
        self._last: tuple | None = None  # the last pytree call, for the next one (_last_call)
        self.trace_count = 0
        functools.update_wrapper(self, fun)

    def clear_cache(self) -> None:
        self._programs.clear()
        self._last = None

    def _split(self, args, kwargs):
        """(the static part of the signature, the traced part as a pytree)."""
        count = len(args)
        static_positions = {n % count if -count <= n < count else n for n in self.static_argnums}
        static = tuple((n, args[n]) for n in sorted(static_positions) if n < count)
        static += tuple(sorted((k, v) for k, v in kwargs.items() if k in self.static_argnames))
        traced_args = tuple(a for n, a in enumerate(args) if n not in static_positions)
        traced_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        return static, static_positions, (traced_args, traced_kwargs)

    def __call__(self, *args, **kwargs):
        flat_key = None
        if not kwargs:
            if not self.static_argnums:
                # The usual call, positional arrays only (every call of a jitted gradient in a
                # loop): the signature straight from the arguments, without a pytree flatten.
                flat_key = _flat_key(args)
                if flat_key is not None:
                    entry = self._programs.get(flat_key)
                    if entry is not None:
                        program, out_def = entry
                        outputs = program.call(args)
                        return (
                            outputs[0]
                            if out_def.kind == "leaf"
                            else tree_unflatten(out_def, outputs)
                        )
            if flat_key is None:
                result = self._like_last_call(args)
                if result is not _MISS:
                    return result
        static, static_positions, traced = self._split(args, kwargs)
        leaves, treedef = tree_flatten(traced)
        signature = []
        inputs = []
        for leaf in leaves:
            if _is_traced_leaf(leaf):
                signature.append(_leaf_key(leaf))
                inputs.append(leaf)
            else:
                signature.append(("static", type(leaf), leaf))
        key = (structure_key(treedef), tuple(signature), static)
        try:
            entry = self._programs.get(key)
        except TypeError as error:  # an unhashable static value
            raise TypeError(
                f"jit of {self.name}: static arguments and non-array leaves must be hashable: "
                f"{error}"
            ) from error
        if entry is None:
            program, out_def, staged_outputs = self._stage(
                args, kwargs, static_positions, leaves, treedef
            )
            self._programs[key] = (program, out_def)
            if flat_key is not None:
                self._programs[flat_key] = (program, out_def)
            elif not kwargs:
                self._last = _last_call(args, static, treedef, leaves, (program, out_def))
            if not any(isinstance(value, Tracer) for value in inputs):
                # The staged values were the real ones: this call's result is already computed.
                return tree_unflatten(out_def, staged_outputs)
        else:
            program, out_def = entry
        if flat_key is None and not kwargs:
            self._last = _last_call(args, static, treedef, leaves, (program, out_def))
        return tree_unflatten(out_def, program.call(inputs))

    def _like_last_call(self, args):
        """The result for positional ``args`` (pytrees of arrays, static arguments among them)
        when they match the last such call, checked in one walk without a new TreeDef or
        signature key (a training step's params and state on every step); else ``_MISS``."""
        last = self._last
        if last is None:
            return _MISS
        count, static, structure, checks, input_positions, (program, out_def) = last
        if len(args) != count:
            return _MISS
        if static:
            for position, value in static:
                arg = args[position]
                if not (arg is value or (type(arg) is type(value) and arg == value)):
                    return _MISS
            positions = {position for position, _ in static}
            args = tuple(arg for position, arg in enumerate(args) if position not in positions)
        leaves = leaves_like(args, structure)
        if leaves is None or not leaves_match(leaves, checks):
            return _MISS
        return tree_unflatten(out_def, program.call([leaves[i] for i in input_positions]))

    def _stage(self, args, kwargs, static_positions, leaves, treedef):
        self.trace_count += 1
        input_count = sum(1 for leaf in leaves if _is_traced_leaf(leaf))
        program = _Program(self.name, input_count)
        staged_leaves = []
        slot = 0
        for leaf in leaves:
            if _is_traced_leaf(leaf):
                value = _staging_value(leaf)
                staged_leaves.append(_Staged(value, program, slot))
                program.input_dtypes.append(value.dtype)
                program.input_shapes.append(ops.shape(value))
                slot += 1
            else:
                staged_leaves.append(leaf)
        traced_args, traced_kwargs = tree_unflatten(treedef, staged_leaves)
        positional = iter(traced_args)
        call_args = [
            args[n] if n in static_positions else next(positional) for n in range(len(args))
        ]
        call_kwargs = {**kwargs, **traced_kwargs}
        # Parameters may hold staged values (an index computed from traced values): core.apply
        # looks for tracers among them while a batching count is up, as under vmap.
        global _staging_depth
        state.batching += 1
        _staging_depth += 1
        try:
            out = self.fun(*call_args, **call_kwargs)
        finally:
            state.batching -= 1
            _staging_depth -= 1
        out_leaves, out_def = tree_flatten(out)
        program.finish(out_leaves)
        first = [leaf.value if type(leaf) is _Staged else leaf for leaf in out_leaves]
        return program, out_def, first


def _flat_key(args):
    """The signature of positional ``args`` that are all arrays or tracers, or None."""
    key: list = ["flat"]
    for arg in args:
        if type(arg) is ndarray:
            key.append((arg.shape, arg.dtype))
        elif isinstance(arg, Tracer):
            key.append(_leaf_key(arg))
        else:
            return None
    return tuple(key)


#: What :meth:`Jitted._like_last_call` returns when the call does not match the last one.
_MISS = object()


def _last_call(args, static, treedef, leaves, entry) -> tuple | None:
    """What the next positional call checks to reuse ``entry`` (see
    :func:`~chainrule.transforms.pytree.leaves_match`): the number of arguments, the static
    ones, the structure of the others, per leaf its (shape, dtype) or its static value, the
    positions of the inputs; None where some leaf is not a NumPy array or scalar (a tracer, a
    device array), which takes the general path."""
    checks: list[tuple] = []
    input_positions = []
    for position, leaf in enumerate(leaves):
        if not _is_traced_leaf(leaf):
            checks.append((None, leaf))
        elif type(leaf) is ndarray or isinstance(leaf, xp.generic):
            checks.append((leaf.shape, leaf.dtype))
            input_positions.append(position)
        else:
            return None
    return len(args), static, treedef.children[0], checks, input_positions, entry


def jit(
    fun: Callable | None = None,
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
) -> Any:
    """Stage ``fun`` out to a flat program of primitives per input signature and replay it (JAX's
    ``jit``, without a compiler: see :mod:`chainrule.transforms.jit`). Usable as a decorator, with
    or without arguments.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> @cr.jit
    ... def loss_grad(w, x):
    ...     return cr.grad(lambda w: cnp.sum(cnp.tanh(x @ w) ** 2))(w)
    >>> w, x = np.ones((3, 2)), np.arange(6.0).reshape(2, 3) / 6
    >>> bool(np.allclose(loss_grad(w, x), cr.grad(lambda w: cnp.sum(cnp.tanh(x @ w) ** 2))(w)))
    True
    """
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    if isinstance(static_argnames, str):
        static_argnames = (static_argnames,)
    if fun is None:
        return functools.partial(
            jit, static_argnums=static_argnums, static_argnames=static_argnames
        )
    return Jitted(fun, tuple(static_argnums), tuple(static_argnames))
