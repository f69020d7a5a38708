"""``vmap``: write a function for one example, run it on a whole batch in one pass.

``vmap(f, in_axes, out_axes)(*args)`` cuts every argument along its ``in_axes`` entry into B
examples, runs ``f`` *once* with each such argument replaced by a
:class:`~chainrule.engine.batching.Batched` tracer (the stacked values, showing ``f`` one
example's shape), and stacks the results along ``out_axes``. Every primitive meets the batch
through the batching rule of its table entry, so the work is the batched NumPy call, not a Python
loop over examples: ``vmap(grad(loss), in_axes=(None, 0, 0))(params, x, y)`` gives per-example
gradients at the cost of one backward pass over the batch.

It composes with every other transform because it is one more level of the tracer design
(:mod:`chainrule.engine.core`): ``vmap(grad(f))`` records the gradient's graph on batched values,
``grad(vmap(f))`` differentiates through the batched computation, nested ``vmap`` stacks a batch
of batches, and ``vmap(jvp(...))`` pushes a batch of tangents. The derivative rules read primal
values with :func:`~chainrule.engine.core.strip`, which keeps a batch of primals batched.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

from ..engine import arraylib
from ..engine.batching import Batched, unbatch
from ..engine.core import Tracer, new_level, state
from ..engine.primitives.shapes import moveaxis
from .pytree import tree_flatten, tree_unflatten


def _is_axis(spec) -> bool:
    return spec is None or (isinstance(spec, numbers.Integral) and not isinstance(spec, bool))


def _leaf_axes(tree, spec, what: str, fname: str) -> list:
    """The axis of each leaf of ``tree``, in flattening order, from ``spec``: an int or None for
    a whole subtree, or a dict, list or tuple of the same structure holding such specs (a pytree
    *prefix*, as in JAX). Walked with an explicit stack, on a copy of ``tree`` whose leaves are
    their own positions, so that the walk's order does not matter."""
    leaves, treedef = tree_flatten(tree)
    axes: list = [None] * len(leaves)
    positions = tree_unflatten(treedef, list(range(len(leaves))))
    pending = [(positions, tree, spec, what)]
    while pending:
        node, original, node_spec, path = pending.pop()
        if _is_axis(node_spec):
            for position in tree_flatten(node)[0]:
                axes[position] = node_spec
        elif isinstance(node_spec, dict):
            if not isinstance(node, dict) or set(node) != set(node_spec):
                raise ValueError(
                    f"vmap of {fname}: {path} is {_describe(original)}, but its axis spec is "
                    f"a dict with keys {sorted(map(str, node_spec))}"
                )
            pending.extend((node[k], original[k], node_spec[k], f"{path}[{k!r}]") for k in node)
        elif isinstance(node_spec, (list, tuple)):
            if not isinstance(node, (list, tuple)) or len(node) != len(node_spec):
                raise ValueError(
                    f"vmap of {fname}: {path} is {_describe(original)}, but its axis spec is a "
                    f"{type(node_spec).__name__} of {len(node_spec)} entries"
                )
            pending.extend(
                (child, original[i], node_spec[i], f"{path}[{i}]") for i, child in enumerate(node)
            )
        else:
            raise TypeError(
                f"vmap of {fname}: {path}: an axis spec must be an int, None, or a dict, list or "
                f"tuple of them, got {type(node_spec).__name__} {node_spec!r:.40}"
            )
    return axes


def _describe(node) -> str:
    if isinstance(node, (dict, list, tuple)):
        return f"a {type(node).__name__} of {len(node)} entries"
    shape = getattr(node, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(node).__name__


def _normalise_axis(axis, ndim, what, fname):
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"vmap of {fname}: {what} has {ndim} dimension(s), so in_axes {axis} is out of range"
        )
    return axis % ndim


def vmap(
    fun: Callable,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_size: int | None = None,
) -> Callable:
    """Vectorise ``fun`` over a batch axis of its arguments (JAX's ``vmap``).

    ``in_axes``: an int (every argument is batched along that axis), None (not batched), or a
    tuple with one entry per positional argument, each an int, None or a pytree prefix of the
    argument (a dict or list of axes). ``out_axes``: where the batch axis goes in each output
    (same forms, against the output pytree). ``axis_size``: the batch size when no argument is
    batched. Keyword arguments are batched along axis 0, as in JAX. Every batched argument must
    have the same size along its axis; the error names the arguments that disagree.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> w = np.array([1.0, 2.0, 3.0])
    >>> xs = np.arange(6.0).reshape(2, 3)
    >>> cr.vmap(lambda w, x: cnp.dot(w, x), in_axes=(None, 0))(w, xs)
    array([ 8., 26.])
    >>> per_example = cr.vmap(cr.grad(lambda w, x: cnp.sum(cnp.tanh(w * x))), in_axes=(None, 0))
    >>> per_example(w, xs).shape
    (2, 3)
    """

    @functools.wraps(fun)
    def batched_fun(*args, **kwargs):
        if isinstance(in_axes, list):
            raise TypeError(
                f"vmap of {_name(fun)}: in_axes must be an int, None or a tuple (one entry per "
                "argument), not a list: JAX reads a list as one pytree"
            )
        if isinstance(in_axes, tuple):
            if len(in_axes) != len(args):
                raise ValueError(
                    f"vmap of {_name(fun)}: in_axes has {len(in_axes)} entries but the "
                    f"function got {len(args)} positional arguments"
                )
            arg_specs = in_axes
        elif _is_axis(in_axes):
            arg_specs = (in_axes,) * len(args)
        else:
            raise TypeError(
                f"vmap of {_name(fun)}: in_axes must be an int, None or a tuple, got "
                f"{type(in_axes).__name__}"
            )
        level = new_level()
        leaves_per_arg = []
        sizes: list[tuple[str, int]] = []
        # Keyword arguments are batched along axis 0, as in JAX (in_axes covers positions only).
        named = [
            (f"argument {i}", arg, spec)
            for i, (arg, spec) in enumerate(zip(args, arg_specs, strict=True))
        ]
        named += [(f"keyword argument {key!r}", value, 0) for key, value in kwargs.items()]
        for what, arg, spec in named:
            leaves, treedef = tree_flatten(arg)
            axes = _leaf_axes(arg, spec, what, _name(fun))
            leaves_per_arg.append((leaves, treedef, axes))
            for index, (leaf, axis) in enumerate(zip(leaves, axes, strict=True)):
                if axis is None:
                    continue
                name = what if len(leaves) == 1 else f"{what} leaf {index}"
                shape = getattr(leaf, "shape", None)
                if shape is None or len(shape) == 0:
                    raise ValueError(
                        f"vmap of {_name(fun)}: {name} is a {type(leaf).__name__} without axes, "
                        f"so it cannot be batched along axis {axis}; give it in_axes None"
                    )
                sizes.append((name, shape[_normalise_axis(axis, len(shape), name, _name(fun))]))
        size = _batch_size(sizes, axis_size, fun)
        batched_args = []
        for leaves, treedef, axes in leaves_per_arg:
            pieces = [
                leaf if axis is None else _batch(leaf, axis, level)
                for leaf, axis in zip(leaves, axes, strict=True)
            ]
            batched_args.append(tree_unflatten(treedef, pieces))
        batched_kwargs = dict(zip(kwargs, batched_args[len(args) :], strict=True))
        state.batching += 1  # parameters may hold batches now (core.apply looks for them)
        try:
            out = fun(*batched_args[: len(args)], **batched_kwargs)
        finally:
            state.batching -= 1
        out_leaves, out_treedef = tree_flatten(out)
        if isinstance(out_axes, tuple) and not isinstance(out, tuple):
            # A tuple of out_axes for a single output is a one-entry prefix.
            out_spec = out_axes[0] if len(out_axes) == 1 else out_axes
        else:
            out_spec = out_axes
        axes = _leaf_axes(out, out_spec, "output", _name(fun))
        results = []
        for index, (leaf, axis) in enumerate(zip(out_leaves, axes, strict=True)):
            results.append(_unbatch_output(leaf, axis, size, level, index, fun))
        return tree_unflatten(out_treedef, results)

    return batched_fun


def _name(fun) -> str:
    return getattr(fun, "__name__", type(fun).__name__)


def _batch_size(sizes, axis_size, fun) -> int:
    if not sizes:
        if axis_size is None:
            raise ValueError(
                f"vmap of {_name(fun)}: no argument is batched (every in_axes is None); give "
                "axis_size"
            )
        return int(axis_size)
    distinct = {n for _, n in sizes}
    if len(distinct) > 1 or (axis_size is not None and axis_size not in distinct):
        listed = ", ".join(f"{name} has size {n}" for name, n in sizes)
        wanted = "" if axis_size is None else f" (axis_size is {axis_size})"
        raise ValueError(
            f"vmap of {_name(fun)}: the batched axes have different sizes{wanted}: {listed}"
        )
    return sizes[0][1]


def _batch(leaf, axis, level):
    value = leaf if isinstance(leaf, Tracer) else arraylib.asarray(leaf)
    shape = value.shape  # type: ignore[union-attr]
    axis %= len(shape)
    if axis:
        value = moveaxis(value, axis, 0)
    return Batched(value, level)


def _unbatch_output(leaf, axis, size, level, index, fun):
    if not (isinstance(leaf, Tracer) or hasattr(leaf, "shape") or isinstance(leaf, numbers.Number)):
        raise TypeError(
            f"vmap of {_name(fun)}: output leaf {index} is a {type(leaf).__name__}, not an array"
        )
    if axis is None:
        if type(leaf) is Batched and leaf._level == level:
            raise ValueError(
                f"vmap of {_name(fun)}: output leaf {index} depends on the batch, but its "
                "out_axes is None"
            )
        return leaf
    stacked = unbatch(leaf if isinstance(leaf, Tracer) else arraylib.asarray(leaf), size, level)
    ndim = len(stacked.shape)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"vmap of {_name(fun)}: out_axes {axis} is out of range for output leaf {index} "
            f"of {ndim} dimension(s) (batch axis included)"
        )
    axis %= ndim
    return moveaxis(stacked, 0, axis) if axis else stacked
