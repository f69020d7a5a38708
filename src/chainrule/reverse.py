"""The reverse pass: backpropagation over the graph recorded on tensors.

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

from . import ops
from .backend import is_float_dtype
from .core import Tracer, check_finite, enable_grad, raw, state
from .tensor import FREED, Tensor, modified_at


def unbroadcast(cotangent, shape):
    """Sum ``cotangent`` down to ``shape``, undoing NumPy broadcasting (the one place it's done)."""
    ct_shape = cotangent.shape
    if ct_shape == shape:
        return cotangent
    extra = len(ct_shape) - len(shape)
    if extra < 0 or any(s != 1 and s != c for s, c in zip(shape, ct_shape[extra:])):
        return ops.broadcast_to(cotangent, shape)  # a cotangent smaller than its primal (e.g. 0)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, s in enumerate(shape) if s == 1 and ct_shape[extra + i] != 1
    )
    if axes:
        cotangent = ops.sum(cotangent, axis=axes)
    return ops.reshape(cotangent, shape)


def _needs_grad(arg, level):
    return type(arg) is Tensor and arg._level == level and arg.requires_grad


def _check_versions(node):
    for arg in (node, *node._args):
        if type(arg) is Tensor:
            changed = modified_at.get(arg)
            if changed is not None and changed > node._stamp:
                raise RuntimeError(
                    f"backward of {node._prim.name}: an input of shape {arg.shape} it saved was "
                    "changed in place after it was used; recompute the forward pass after the "
                    "change, or change a copy"
                )


def _count_consumers(roots, level):
    consumers: dict[int, int] = {}
    seen = {id(root) for root in roots}
    stack = list(roots)
    while stack:
        node = stack.pop()
        prim = node._prim
        if prim is None:
            continue
        if prim is FREED:
            raise RuntimeError(
                "backward through a graph that a previous backward already freed; pass "
                "retain_graph=True to the first backward (or vjp) to call it again"
            )
        for arg in node._args:
            if type(arg) is Tensor and arg._level == level and arg.requires_grad:
                key = id(arg)
                consumers[key] = consumers.get(key, 0) + 1
                if key not in seen:
                    seen.add(key)
                    stack.append(arg)
    return consumers


def backward_pass(roots, cotangents, *, retain_graph=False, create_graph=False, leaves=None):
    """Pull ``cotangents`` back from ``roots`` (tensors of one level) to the leaves.

    With ``leaves=None`` (eager use) every reached leaf's ``.grad`` is increased; otherwise the
    cotangent of each tensor in ``leaves`` is returned in order (``None`` where unreached).
    """
    level = roots[0]._level
    consumers = _count_consumers(roots, level)
    pending: dict[int, object] = {}
    ready = []
    for root, cotangent in zip(roots, cotangents):
        key = id(root)
        pending[key] = cotangent if key not in pending else pending[key] + cotangent
        if consumers.get(key, 0) == 0 and all(r is not root for r in ready):
            ready.append(root)
    wanted = None if leaves is None else {id(leaf): i for i, leaf in enumerate(leaves)}
    results = None if leaves is None else [None] * len(leaves)
    check_nan = state.anomaly
    versions_tracked = bool(modified_at)

    while ready:
        node = ready.pop()
        key = id(node)
        cotangent = pending.pop(key)
        prim = node._prim
        if prim is None:  # a leaf
            if wanted is not None:
                if key in wanted:
                    results[wanted[key]] = cotangent
            elif node._level == 0:
                node.grad = cotangent if node.grad is None else node.grad + cotangent
            continue
        if versions_tracked:
            _check_versions(node)
        args = node._args
        params = node._params
        if create_graph:
            values, out = args, node
        else:
            values = tuple(a.data if (type(a) is Tensor and a._level == level) else a for a in args)
            out = node.data
        rules = prim.vjp
        if type(rules) is tuple:
            contributions = [
                rules[i](cotangent, out, *values, **params) if _needs_grad(arg, level) else None
                for i, arg in enumerate(args)
            ]
        else:
            contributions = rules(cotangent, out, *values, **params)
        if not retain_graph:
            node._args = None
            node._prim = FREED
            node._params = None
        for arg, contribution in zip(args, contributions):
            if contribution is None or not _needs_grad(arg, level):
                continue
            arg_data = arg.data
            if contribution.shape != arg_data.shape:
                contribution = unbroadcast(contribution, arg_data.shape)
            if contribution.dtype != arg_data.dtype:
                contribution = ops.astype(contribution, arg_data.dtype)
            if check_nan:
                check_finite(contribution, f"backward of {prim.name}", values)
            arg_key = id(arg)
            previous = pending.get(arg_key)
            pending[arg_key] = contribution if previous is None else previous + contribution
            remaining = consumers[arg_key] - 1
            consumers[arg_key] = remaining
            if remaining == 0:
                ready.append(arg)
    return results


def _seed(root, cotangent, create_graph):
    if cotangent is None:
        if root.size != 1:
            raise RuntimeError(
                f"backward of a tensor of shape {root.shape} needs a cotangent of that shape; "
                "reduce it to a scalar first (e.g. loss.sum() or loss.mean()) or pass one"
            )
        one = ops.ones_like(raw(root.data))
        return one
    if isinstance(cotangent, Tensor) and not create_graph:
        cotangent = cotangent.data
    if tuple(cotangent.shape if hasattr(cotangent, "shape") else ()) != tuple(root.shape):
        raise ValueError(
            f"backward: cotangent of shape {getattr(cotangent, 'shape', ())} does not match the "
            f"tensor's shape {root.shape}"
        )
    return ops.astype(ops.asarray(cotangent), root.dtype) if not isinstance(cotangent, Tracer) else cotangent


def backward(roots, cotangents, *, retain_graph=False, create_graph=False):
    """Eager backward: fill ``.grad`` of every leaf reached from ``roots``."""
    for root in roots:
        if not isinstance(root, Tensor):
            raise TypeError(f"backward needs Tensors, got {type(root).__name__}")
        if not root.requires_grad:
            raise RuntimeError(
                "backward of a tensor that does not require grad: no input was created with "
                "requires_grad=True, or it was computed under chainrule.no_grad()"
            )
        if not is_float_dtype(root.dtype):
            raise TypeError(f"backward of a tensor of dtype {root.dtype}; it must be floating-point")
    seeds = [_seed(root, ct, create_graph) for root, ct in zip(roots, cotangents)]
    if create_graph:
        seeds = [s if isinstance(s, Tensor) else Tensor(s) for s in seeds]
        with enable_grad():
            backward_pass(roots, seeds, retain_graph=True, create_graph=True)
    else:
        backward_pass(roots, seeds, retain_graph=retain_graph)
