"""The reverse pass: backpropagation over the graph recorded on tensors.

The sweep knows nodes only by their attributes (``data``, ``grad``, ``requires_grad``, ``_level``,
``_prim``, ``_args``, ``_params``, ``_stamp``, ``_version``): the node type is the type of the
roots, :class:`~chainrule.engine.tensor.Tensor` in practice, so this module needs no import of it.

Two iterative sweeps, no recursion (a 100,000-op chain is fine):

1. From the roots, walk the graph once with an explicit stack and count, for every tensor, how
   many recorded ops consumed it (its fan-out).
2. Keep a table of *pending cotangents*. Start from the roots; a tensor is processed once all of
   its consumers have added their contribution to its entry (fan-out is a sum). Processing runs
   the primitive's VJP rule for each argument that needs a gradient, sums the result back to the
   argument's shape where broadcasting stretched it, and adds it to the argument's entry. Each
   entry is removed as soon as it is used, and without ``retain_graph`` each node drops its
   references to its inputs as soon as it is done, so memory falls during the sweep.
"""

from __future__ import annotations

from . import arraylib, ops
from .arraylib import ndarray, xp
from .core import Tracer, apply, state
from .primitives import SUM, TABLE

RESHAPE = TABLE["reshape"]

#: Whether the host allocator's policy (chainrule.util.host_memory) is still to be applied: once,
#: at the first backward pass, the first time a tape is freed.
_allocator_policy_pending = True


class _Freed:
    """Marks a node whose graph was released by a backward pass without ``retain_graph``."""

    name = "<freed>"

    def __repr__(self):
        return "<freed graph>"


FREED = _Freed()


def unbroadcast(cotangent, shape):
    """Sum ``cotangent`` down to ``shape``, undoing NumPy broadcasting (the one place it's done).

    A plain NumPy cotangent with no backend layer on (the eager first-order case: a bias's
    gradient in every training step) is summed with the ``sum`` entry's forward and reshaped
    directly: the very calls :func:`~chainrule.engine.core.apply` would make, without its
    dispatch or the public ``reshape``'s checks."""
    ct_shape = cotangent.shape
    if ct_shape == shape:
        return cotangent
    extra = len(ct_shape) - len(shape)
    axes = list(range(extra)) if extra > 0 else []
    for i, size in enumerate(shape):
        ct_size = ct_shape[extra + i] if extra + i >= 0 else None
        if size == ct_size:
            continue
        if size != 1 or ct_size is None:  # a cotangent smaller than its primal (e.g. 0)
            return ops.broadcast_to(cotangent, shape)
        axes.append(extra + i)
    if type(cotangent) is ndarray and not state.hooked:
        if axes:
            cotangent = SUM.forward(cotangent, axis=tuple(axes), keepdims=False)
        return cotangent if cotangent.shape == shape else RESHAPE.forward(cotangent, shape)
    if axes:
        cotangent = apply(SUM, cotangent, axis=tuple(axes), keepdims=False)
    return ops.reshape(cotangent, shape)


def _check_versions(node):
    """Raise if ``node`` or a tensor it saved was changed in place after ``node`` was recorded."""
    node_type = type(node)
    for arg in (node, *node._args):
        if type(arg) is node_type and getattr(arg, "_version", 0) > node._stamp:
            raise RuntimeError(
                f"backward of {node._prim.name}: an input of shape {arg.shape} it saved was "
                "changed in place after it was used; recompute the forward pass after the "
                "change, or change a copy"
            )


def _freed_error():
    return RuntimeError(
        "backward through a graph that a previous backward already freed; pass "
        "retain_graph=True to the first backward (or vjp) to call it again"
    )


def _count_consumers(roots, level, node_type):
    """{tensor: number of recorded ops that consume it}, over the graph reachable from ``roots``.

    Keyed by the tensors themselves (hashed by identity); the backward pass deletes each entry
    when its count reaches zero, so the table never keeps a finished tensor alive. Leaves are
    never pushed on the walk's stack: they consume nothing.
    """
    consumers = dict.fromkeys(roots, 0)
    seen = consumers.get
    stack = [root for root in consumers if root._prim is not None]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if node._prim is FREED:
            raise _freed_error()
        for arg in node._args:
            if type(arg) is node_type and arg._level == level and arg.requires_grad:
                count = seen(arg)
                if count is None:  # first visit (a root is there from the start, with 0)
                    consumers[arg] = 1
                    if arg._prim is not None:
                        push(arg)
                else:
                    consumers[arg] = count + 1
    return consumers


def backward_pass(roots, cotangents, *, epoch, retain_graph=False, create_graph=False, leaves=None):
    """Pull ``cotangents`` back from ``roots`` (tensors of one level) to the leaves.

    With ``leaves=None`` (eager use) every reached leaf's ``.grad`` is increased; otherwise the
    cotangent of each tensor in ``leaves`` is returned in order (``None`` where unreached).

    ``ready`` holds (tensor, its total cotangent) pairs whose consumers are all done; a tensor
    with several consumers waits in ``pending`` while their contributions add up. ``epoch`` is
    the in-place epoch now (see :mod:`chainrule.engine.tensor`): a node stamped with it has seen
    every in-place change, and needs no check.

    This loop runs once per recorded node, so what does not change during a pass (the namespace,
    anomaly mode, which branch reads the saved values) is decided once before it, and the
    common steps (a node of two operands, a fan-out sum) are written inline rather than as
    helper calls.
    """
    global _allocator_policy_pending
    if _allocator_policy_pending:  # once per process: keep freed tapes mapped for the next call
        _allocator_policy_pending = False
        from ..util.host_memory import apply_default_policy  # noqa: PLC0415  (first pass only)

        apply_default_policy()
    Tensor = type(roots[0])  # noqa: N806 (the node type; a class)
    level = roots[0]._level
    consumers = _count_consumers(roots, level, Tensor)
    pending: dict = {}
    ready = []
    if len(roots) == 1 and len(cotangents) == 1 and consumers[roots[0]] == 0:
        # One root that no recorded op consumes (a loss): ready at once.
        del consumers[roots[0]]
        ready.append((roots[0], cotangents[0]))
    else:
        for root, cotangent in zip(roots, cotangents, strict=True):
            previous = pending.get(root)
            pending[root] = cotangent if previous is None else previous + cotangent
        for root in list(pending):
            if consumers[root] == 0:
                del consumers[root]
                ready.append((root, pending.pop(root)))
    wanted = None if leaves is None else {leaf: i for i, leaf in enumerate(leaves)}
    results: list | None = None if leaves is None else [None] * len(leaves)
    check_nan = state.anomaly
    if check_nan:  # detect_anomaly(): the checks of its module, loaded only in that mode
        from .anomaly import check_finite, check_saved  # noqa: PLC0415  (debug mode only)
    # The namespace cannot change during a pass: one whose operators refuse tracers (see
    # _lifted) needs the lifting of plain operands on the paths that may meet tracers.
    lifting = arraylib.ns is not xp
    pop, push = ready.pop, ready.append
    pending_get, pending_pop, consumers_pop = pending.get, pending.pop, consumers.pop

    while ready:
        node, cotangent = pop()
        prim = node._prim
        if prim is None:  # a leaf
            if wanted is not None:
                index = wanted.get(node)
                if index is not None:
                    results[index] = cotangent  # type: ignore[index]  # a list when wanted is
            elif level == 0:
                if not isinstance(cotangent, (ndarray, Tracer)):
                    # NumPy makes 0-d results scalars; .grad is an array
                    cotangent = arraylib.asarray(cotangent)
                grad = node.grad
                node.grad = cotangent if grad is None else grad + cotangent
            continue
        if node._stamp != epoch:  # some tensor was changed in place since this op was recorded
            _check_versions(node)
        if check_nan:
            check_saved(node)
        args = node._args
        params = node._params
        if not retain_graph:  # release the saved inputs now: memory falls during the sweep
            node._prim = FREED
            node._args = None
            node._params = None
        rules = prim.vjp
        values: tuple | list
        if create_graph:  # the rules see the nodes themselves, and are recorded
            values, out = args, node
            if lifting:
                cotangent, out, values, rules = _lifted(cotangent, out, values, rules, Tensor)
        else:  # the rules see the values one level down (lower-level tracers stay as they are)
            if len(args) == 2:
                first, second = args
                values = (
                    first.data if type(first) is Tensor and first._level == level else first,
                    second.data if type(second) is Tensor and second._level == level else second,
                )
            elif len(args) == 1:
                (first,) = args
                values = (first.data if type(first) is Tensor and first._level == level else first,)
            else:
                values = [
                    arg.data if type(arg) is Tensor and arg._level == level else arg for arg in args
                ]
            out = node.data
            if lifting and level:  # above level 0 a value may be a tracer: see _lifted
                cotangent, out, values, rules = _lifted(cotangent, out, values, rules, Tensor)
        if type(rules) is tuple:
            contributions = rules
            variadic = False
        else:
            contributions = rules(cotangent, out, *values, **params)
            variadic = True
        position = -1
        for arg in args:
            position += 1
            if type(arg) is not Tensor or arg._level != level or not arg.requires_grad:
                continue
            if variadic:
                contribution = contributions[position]
                if contribution is None:
                    continue
            elif params:
                contribution = rules[position](cotangent, out, *values, **params)
            else:
                contribution = rules[position](cotangent, out, *values)
            # Shapes and dtypes are read off the arrays under any Tensors (what Tensor's own
            # properties would return, without a Python call each: under grad of grad every
            # contribution and every saved value is a Tensor).
            arg_base = arg.data
            while type(arg_base) is Tensor:
                arg_base = arg_base.data
            base = contribution
            while type(base) is Tensor:
                base = base.data
            if base.shape != arg_base.shape:
                contribution = base = unbroadcast(contribution, arg_base.shape)
                while type(base) is Tensor:
                    base = base.data
            dtype, arg_dtype = base.dtype, arg_base.dtype
            if dtype is not arg_dtype and dtype != arg_dtype:
                contribution = ops.astype(contribution, arg_dtype)
            if check_nan:
                check_finite(contribution, f"backward of {prim.name}", values)
            # One dictionary operation for the usual single consumer: its count is taken out,
            # and put back (one less) only while more consumers are to come.
            count = consumers_pop(arg)
            previous = pending_pop(arg, None) if count == 1 else pending_get(arg)
            if previous is not None:  # fan-out is a sum
                try:
                    contribution = previous + contribution
                except TypeError:  # a plain array of a namespace that refuses tracers
                    contribution = lift_constant(previous, Tensor) + contribution
            if count == 1:
                push((arg, contribution))
            else:  # more consumers to come
                consumers[arg] = count - 1
                pending[arg] = contribution
        # Drop this node's arrays before the next one is processed.
        del values, out, cotangent, contributions
    return results


def lift_constant(value, node_type):
    """A plain array as a constant node (level 0, nothing to differentiate); others unchanged.

    Derivative rules such as ``g * y`` rely on a plain ``g``'s operator deferring to a traced
    ``y`` (NumPy's ``__array_ufunc__ = None`` protocol). ``array_api_strict``'s operators raise
    instead, so inside :func:`chainrule.backend.namespace.use_namespace` the nested
    (higher-order) paths lift plain operands first, and the tracers' own operators run."""
    return value if isinstance(value, Tracer) or not hasattr(value, "shape") else node_type(value)


def constant_data(value, node_type):
    """A lifted constant's array again (a node of level 0 that nothing differentiates)."""
    if type(value) is node_type and not value.requires_grad and value._level == 0:
        return value.data
    return value


def _lifted(cotangent, out, values, rules, node_type):
    """Plain arrays of another namespace as constant nodes, when some value is traced (see
    :func:`lift_constant`), on the nested (higher-order) path only; the rules' results are
    unwrapped again where they stayed constant."""
    if not any(isinstance(value, Tracer) for value in values):
        return cotangent, out, values, rules

    def lift(value):
        return lift_constant(value, node_type)

    def unwrap(value):
        return constant_data(value, node_type)

    if type(rules) is tuple:
        rules = tuple(_unwrapping(rule, unwrap) for rule in rules)
    else:
        variadic = rules
        rules = lambda *args, **params: [unwrap(c) for c in variadic(*args, **params)]  # noqa: E731
    return lift(cotangent), lift(out), [lift(value) for value in values], rules


def _unwrapping(rule, unwrap):
    return lambda *args, **params: unwrap(rule(*args, **params))
