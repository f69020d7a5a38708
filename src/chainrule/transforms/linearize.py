"""``linearize``: evaluate a function once, then apply its Jacobian to any number of tangents.

``linearize(fun, *primals)`` runs forward mode once with *recorded* tangents: each input's tangent
is a fresh reverse-mode tensor, so every JVP rule that touches a tangent is written down as it
runs. What is written down is exactly the linear map t -> J t: the rules' multiplications by
primal-dependent factors (``cos(x)`` for ``sin``, the weight matrix for ``matmul``...) appear with
those factors already computed, as constants. The recording is then flattened into a *tape*, a
list of primitive applications in dependency order, and the tensors are dropped.

Each call of the returned ``jvp_fun(*tangents)`` replays the tape on the new tangents: no primal
work, no derivative factors recomputed, only the linear ops. Tangents may be batched
(:class:`~chainrule.engine.batching.Batched`), so a whole block of directions also goes in one
replay.

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> out, jvp_fun = cr.linearize(cnp.sin, np.array([0.0, np.pi]))
>>> jvp_fun(np.array([1.0, 1.0]))
array([ 1., -1.])
"""

from __future__ import annotations

from ..engine import arraylib, ops
from ..engine.core import Tracer, apply, enable_grad, new_level, raw
from ..engine.forward import Dual
from ..engine.tensor import Tensor, constant_data
from .api import _as_value, _batch_size, _lift_tensor, _plain
from .counting import is_counting, note_pass
from .pytree import tree_flatten, tree_unflatten


def _record_order(roots, level):
    """Recorded tensors of ``level`` reachable from ``roots``, each after everything it uses
    (iterative depth-first post-order; no recursion)."""
    order = []
    visited = set()
    stack = [(root, False) for root in roots]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._prim is not None:
            for arg in node._args:
                if (
                    type(arg) is Tensor
                    and arg._level == level
                    and arg.requires_grad
                    and id(arg) not in visited
                ):
                    stack.append((arg, False))
    return order


class _Tape:
    """The linear map as a list of steps ``(prim, slots, constants, params, out_slot)``: argument
    ``i`` of a step is ``env[slots[i]]`` when ``slots[i] >= 0`` and ``constants[i]`` otherwise."""

    def __init__(self, inputs, outputs, level):
        slot_of = {id(tensor): i for i, tensor in enumerate(inputs)}
        self.n_inputs = len(inputs)
        roots = [t for t in outputs if t is not None]
        self.steps = []
        for node in _record_order(roots, level):
            if node._prim is None:  # an input tangent (or a stray leaf: treated as zero)
                continue
            slots, constants = [], []
            for arg in node._args:
                on_tape = type(arg) is Tensor and arg._level == level
                slot = slot_of.get(id(arg)) if on_tape else None
                slots.append(-1 if slot is None else slot)
                # A tensor of this level that needs no derivative is a constant: keep its value, as
                # of a constant the JVP rules lifted to a Tensor inside backend.use_namespace.
                constants.append(
                    None if slot is not None else (arg.data if on_tape else constant_data(arg))
                )
            slot_of[id(node)] = len(slot_of)
            self.steps.append(
                (node._prim, tuple(slots), tuple(constants), node._params, slot_of[id(node)])
            )
        self.n_slots = len(slot_of)
        self.output_slots = [None if t is None else slot_of.get(id(t)) for t in outputs]
        # Free every value right after its last use, as a backward pass frees its cotangents.
        last_use: dict[int, int] = {}
        for position, (_, step_slots, _, _, _) in enumerate(self.steps):
            for slot in step_slots:
                if slot >= 0:
                    last_use[slot] = position
        keep = {slot for slot in self.output_slots if slot is not None}
        self.release: list[list[int]] = [[] for _ in self.steps]
        for slot, position in last_use.items():
            if slot not in keep:
                self.release[position].append(slot)

    def run(self, tangents):
        env = [None] * self.n_slots
        env[: self.n_inputs] = tangents
        for (prim, slots, constants, params, out_slot), release in zip(
            self.steps, self.release, strict=True
        ):
            args = [env[s] if s >= 0 else c for s, c in zip(slots, constants, strict=True)]
            env[out_slot] = apply(prim, *args, **params)
            for slot in release:
                env[slot] = None
        return [None if slot is None else env[slot] for slot in self.output_slots]

    def __len__(self):
        return len(self.steps)


def linearize(fun, *primals):
    """``(out, jvp_fun)``: ``fun``'s value at ``primals`` and its linear map, recorded once.

    ``jvp_fun(*tangents)`` (one tangent per primal, of the same structure) returns the output
    tangent, as ``jvp(fun, primals, tangents)[1]`` would, by replaying the recorded linear ops only.
    """
    tape_level = new_level()
    dual_level = new_level()
    primal_defs, values, tangent_inputs, duals = [], [], [], []
    for primal in primals:
        leaves, treedef = tree_flatten(primal)
        primal_defs.append(treedef)
        lifted = []
        for leaf in leaves:
            value = _as_value(leaf, "linearize")
            # The tangent is a recorded input; its value (zeros) only serves the one trace.
            tangent = _lift_tensor(ops.zeros_like(value), tape_level, "linearize")
            values.append(value)
            tangent_inputs.append(tangent)
            lifted.append(Dual(value, tangent, dual_level))
        duals.append(tree_unflatten(treedef, lifted))
    note_pass("forward")
    note_pass("jvp")
    with enable_grad():
        out = fun(*duals)
    out_leaves, out_def = tree_flatten(out)
    out_values, out_tangents = [], []
    for leaf in out_leaves:
        if type(leaf) is Dual and leaf._level == dual_level:
            out_values.append(_plain(leaf.primal))
            tangent = leaf.tangent
            traced = (
                type(tangent) is Tensor and tangent._level == tape_level and tangent.requires_grad
            )
            out_tangents.append(tangent if traced else None)
        else:
            out_values.append(_plain(leaf))
            out_tangents.append(None)
    tape = _Tape(tangent_inputs, out_tangents, tape_level)
    del duals, out, out_leaves, out_tangents, tangent_inputs  # the tape holds all that is needed
    out_dtypes = [getattr(v, "dtype", None) for v in out_values]

    def jvp_fun(*tangents):
        if len(tangents) != len(primal_defs):
            raise ValueError(
                f"jvp_fun: {len(primal_defs)} tangents expected (one per primal), got "
                f"{len(tangents)}"
            )
        flat = []
        for tangent, treedef, start in zip(
            tangents, primal_defs, _starts(primal_defs), strict=True
        ):
            leaves, t_def = tree_flatten(tangent)
            if t_def != treedef:
                raise ValueError(
                    f"jvp_fun: tangent structure {t_def} does not match primal structure {treedef}"
                )
            for offset, leaf in enumerate(leaves):
                value = values[start + offset]
                if ops.shape(leaf) != ops.shape(value):
                    raise ValueError(
                        f"jvp_fun: tangent of shape {ops.shape(leaf)} for a primal of shape "
                        f"{ops.shape(value)}"
                    )
                # ``backend.asarray`` read here, not imported: use_namespace rebinds it.
                if not isinstance(leaf, Tracer):
                    leaf = ops.astype(arraylib.asarray(leaf), value.dtype)
                flat.append(leaf)
        if is_counting():
            note_pass("jvp", _batch_size(tangents))
        results = tape.run(flat)
        pieces = []
        for result, value, dtype in zip(results, out_values, out_dtypes, strict=True):
            if result is None:  # an output the tangents do not reach: zeros on its device
                namespace = arraylib.ns  # NumPy's, or the one use_namespace made active
                pieces.append(namespace.zeros_like(raw(value), dtype=dtype or namespace.float64))
            else:
                pieces.append(_plain(result))
        return tree_unflatten(out_def, pieces)

    jvp_fun.tape = tape  # type: ignore[attr-defined]  # the tape, for inspection
    return tree_unflatten(out_def, out_values), jvp_fun


def _starts(treedefs):
    starts, total = [], 0
    for treedef in treedefs:
        starts.append(total)
        total += treedef.count
    return starts
