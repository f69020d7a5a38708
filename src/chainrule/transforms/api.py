"""Functional transforms with JAX's names: grad, value_and_grad, vjp, jvp.

(Whole Jacobians and Hessians build on these in :mod:`chainrule.transforms.jacobians`, ``linearize``
in :mod:`chainrule.transforms.linearize`.) Each transform announces the passes it starts to any open
``chainrule.count()`` block (:func:`chainrule.transforms.counting.note_pass`).

``fun`` takes and returns plain arrays or pytrees of them; results are plain arrays or pytrees.
Each call opens a fresh level (see :mod:`chainrule.engine.core`), which is why transforms nest:
``grad(grad(f))`` and ``jvp(grad(f), ...)`` work without special cases.
"""

from __future__ import annotations

import functools
import numbers

from ..engine import arraylib, ops
from ..engine.arraylib import ndarray, xp
from ..engine.core import Tracer, new_level, raw
from ..engine.forward import Dual
from ..engine.reverse import backward_pass
from ..engine.tensor import Tensor, constant_data, current_epoch, numpy_seed, traced_leaf
from .counting import is_counting, note_pass
from .pytree import tree_flatten, tree_unflatten


def _as_value(leaf, transform):
    # A float NumPy array, the usual leaf, is checked here in two attribute reads; anything else
    # (a number, a list, a subclass, a tracer, a GPU array, any array inside use_namespace, which
    # takes it into the active namespace) is converted and its dtype asked of the namespace.
    if type(leaf) is ndarray and arraylib.ns is xp and leaf.dtype.kind in "fc":
        return leaf
    value = leaf if isinstance(leaf, Tracer) else arraylib.asarray(leaf)
    dtype = value.dtype  # type: ignore[union-attr]  # every tracer type has a dtype
    if not arraylib.is_float_dtype(dtype):
        raise TypeError(
            f"{transform}: inputs to differentiate must be floating-point, got dtype {dtype}; "
            "convert with .astype(float) or pass the integer input through a closure"
        )
    return value


def _lift_tensor(leaf, level, transform):
    return traced_leaf(_as_value(leaf, transform), level)


def lift_tree(tree, level, transform):
    """``(lifted, treedef, leaves)``: ``tree`` with every leaf lifted to a tensor of ``level``
    (checked by :func:`_as_value`), its structure, and the lifted leaves in order: how
    ``grad``, ``vjp`` and ``jacrev`` watch an argument, on every call."""
    leaves, treedef = tree_flatten(tree)
    lifted = [traced_leaf(_as_value(leaf, transform), level) for leaf in leaves]
    return tree_unflatten(treedef, lifted), treedef, lifted


def _is_array_like(value) -> bool:
    """An array, a tracer or a number: the outputs a transform can differentiate."""
    if isinstance(value, (Tracer, numbers.Number)):
        return not isinstance(value, bool)
    return hasattr(value, "dtype") and hasattr(value, "shape")


def check_outputs(out, leaves, transform):
    """Refuse an output that is not an array (or a pytree of arrays, where ``leaves`` has more
    than one), naming the type. Without this check ``None``, a string or a list of numbers would
    differentiate to silent zeros, since nothing in them was recorded."""
    if not leaves:
        raise TypeError(
            f"{transform}: fun must return an array or a Tensor, got {type(out).__name__} "
            f"({out!r:.60})"
        )
    for leaf in leaves:
        if not _is_array_like(leaf):
            where = "" if leaf is out else f" inside its {type(out).__name__} output"
            raise TypeError(
                f"{transform}: fun must return arrays or Tensors, got {type(leaf).__name__} "
                f"({leaf!r:.60}){where}"
            )


def _argnums_tuple(argnums, nargs, transform):
    if type(argnums) is int and 0 <= argnums < nargs:  # the usual case, on every call of grad
        return (argnums,)
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not -nargs <= n < nargs:
            raise ValueError(
                f"{transform}: argnums {argnums} out of range for {nargs} positional arguments"
            )
    return tuple(n % nargs for n in nums)


def _lower(value, level):
    """One level down: the value a tracer of ``level`` wraps (other values pass through)."""
    if isinstance(value, Tensor) and value._level == level:
        value = value.data
    elif isinstance(value, Dual) and value._level == level:
        value = value.primal
    return _plain(value)


def _plain(value):
    """NumPy turns 0-d results into scalars; hand users arrays, as the transforms promise."""
    if isinstance(value, xp.generic) and arraylib.ns is xp:  # a scalar loss: what asarray does
        return xp.asarray(value)
    if isinstance(value, (Tracer, ndarray)) or value is None:
        if arraylib.ns is not xp and type(value) is Tensor:  # a constant lifted by reverse._lifted
            return constant_data(value)
        return value
    return arraylib.asarray(value) if hasattr(value, "dtype") else value


def _batch_size(tree) -> int:
    """Directions carried by (co)tangents: the batch size of a Batched leaf, else 1."""
    for leaf in tree_flatten(tree)[0]:
        size = getattr(leaf, "batch_size", None)
        if size is not None:
            return size
    return 1


def _rebuild(inputs, cotangents):
    """One pytree per lifted argument in ``inputs`` ((treedef, tensors) pairs), holding the
    cotangents in order: zeros where a leaf was never reached, plain arrays elsewhere."""
    trees = []
    end = 0
    for treedef, lifted in inputs:
        start, end = end, end + len(lifted)
        pieces = cotangents[start:end]
        for index, ct in enumerate(pieces):
            if type(ct) is not ndarray:  # (a NumPy array, the usual cotangent, is kept as it is)
                pieces[index] = ops.zeros_like(lifted[index].data) if ct is None else _plain(ct)
        trees.append(tree_unflatten(treedef, pieces))
    return trees


def value_and_grad(fun, argnums=0, has_aux=False):
    """``fun``'s value and its gradient with respect to the arguments ``argnums`` (reverse mode).

    ``fun`` must return a scalar (or ``(scalar, aux)`` with ``has_aux=True``).
    """

    @functools.wraps(fun)
    def value_and_grad_fun(*args, **kwargs):
        nums = _argnums_tuple(argnums, len(args), "grad")
        level = new_level()
        traced_args = list(args)
        inputs = []
        all_leaves: list = []  # every lifted leaf, in order: the ones the pass returns
        for n in nums:
            traced_args[n], treedef, lifted = lift_tree(traced_args[n], level, "grad")
            inputs.append((treedef, lifted))
            all_leaves += lifted
        note_pass("forward")
        result = fun(*traced_args, **kwargs)
        if has_aux:
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TypeError("grad with has_aux=True: fun must return a pair (value, aux)")
            out, aux = result
        else:
            out = result
        if type(out) is Tensor:  # the usual output (its shape read once, off its value)
            data = out.data
            out_shape = data.shape
        else:
            if not _is_array_like(out):
                check_outputs(out, [], "grad")
            out_shape = ops.shape(out)
        if out_shape != ():
            raise TypeError(
                f"grad needs fun to return a scalar (shape ()), got shape {out_shape}; reduce it "
                "(sum/mean) or use chainrule.vjp / chainrule.jacrev for non-scalar outputs"
            )
        if type(out) is Tensor and out._level == level and out.requires_grad:
            numpy_value = isinstance(data, (ndarray, xp.generic))
            dtype = data.dtype
            if not (dtype.kind in "fc" if numpy_value else arraylib.is_float_dtype(dtype)):
                raise TypeError(f"grad needs a floating-point output, got dtype {dtype}")
            seed = numpy_seed(data) if numpy_value else _nested_seed(data)
            note_pass("vjp")
            cotangents = backward_pass([out], [seed], epoch=current_epoch(), leaves=all_leaves)
        else:
            cotangents = [None] * len(all_leaves)
        grads = _rebuild(inputs, cotangents)
        grad_out = grads[0] if isinstance(argnums, int) else tuple(grads)
        value = _lower(out, level)
        if has_aux:
            aux = _map_lower(aux, level)
            return (value, aux), grad_out
        return value, grad_out

    return value_and_grad_fun


def _nested_seed(data):
    """The seed of a pass whose output value is itself traced (an inner ``grad`` of nested AD,
    tens of thousands per gradbench saddle run): 1 made as :func:`numpy_seed` makes it when the
    plain array under the outer tracers has the shape they show (no batch axis), else
    ``ones_like``."""
    base = raw(data)
    if isinstance(base, (ndarray, xp.generic)) and base.shape == ops.shape(data):
        return numpy_seed(base)
    return ops.ones_like(data)


def _map_lower(tree, level):
    leaves, treedef = tree_flatten(tree)
    return tree_unflatten(treedef, [_lower(leaf, level) for leaf in leaves])


def grad(fun, argnums=0, has_aux=False):
    """The gradient of scalar-valued ``fun`` with respect to argument(s) ``argnums``.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> cr.grad(lambda x: cnp.sum(cnp.sin(x)))(np.array([0.0, np.pi]))
    array([ 1., -1.])
    """
    value_and_grad_fun = value_and_grad(fun, argnums, has_aux)

    @functools.wraps(fun)
    def grad_fun(*args, **kwargs):
        value, gradient = value_and_grad_fun(*args, **kwargs)
        if has_aux:
            return gradient, value[1]
        return gradient

    return grad_fun


def vjp(fun, *primals, has_aux=False):
    """``(out, vjp_fun)``: ``vjp_fun(cotangent)`` returns one cotangent per primal, and may be
    called any number of times (the graph is kept until ``vjp_fun`` is dropped)."""
    level = new_level()
    inputs = []
    lifted_primals = []
    for primal in primals:
        lifted_primal, treedef, lifted = lift_tree(primal, level, "vjp")
        inputs.append((treedef, lifted))
        lifted_primals.append(lifted_primal)
    note_pass("forward")
    result = fun(*lifted_primals)
    if has_aux:
        out, aux = result
    else:
        out = result
    out_leaves, out_treedef = tree_flatten(out)
    check_outputs(out, out_leaves, "vjp")
    all_inputs = [t for _, lifted in inputs for t in lifted]

    def vjp_fun(cotangent):
        ct_leaves, ct_treedef = tree_flatten(cotangent)
        if ct_treedef != out_treedef:
            raise ValueError(
                f"vjp_fun: cotangent structure {ct_treedef} does not match output {out_treedef}"
            )
        roots, seeds = [], []
        for leaf, ct in zip(out_leaves, ct_leaves, strict=True):
            if ops.shape(ct) != ops.shape(leaf):
                raise ValueError(
                    f"vjp_fun: cotangent of shape {ops.shape(ct)} for an output of shape "
                    f"{ops.shape(leaf)}"
                )
            if isinstance(leaf, Tensor) and leaf._level == level and leaf.requires_grad:
                roots.append(leaf)
                seeds.append(
                    ct if isinstance(ct, Tracer) else ops.astype(arraylib.asarray(ct), leaf.dtype)
                )
        if is_counting():
            note_pass("vjp", _batch_size(ct_leaves))
        cotangents = (
            backward_pass(roots, seeds, epoch=current_epoch(), retain_graph=True, leaves=all_inputs)
            if roots
            else [None] * len(all_inputs)
        )
        return tuple(_rebuild(inputs, cotangents))

    out_value = tree_unflatten(out_treedef, [_lower(leaf, level) for leaf in out_leaves])
    if has_aux:
        return out_value, vjp_fun, _map_lower(aux, level)
    return out_value, vjp_fun


def jvp(fun, primals, tangents):
    """``(out, tangent_out)``: ``fun``'s value and its directional derivative along ``tangents``
    (forward mode, one pass, no graph stored). ``primals`` and ``tangents`` are tuples."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp: primals and tangents must be tuples (one entry per argument of fun)")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    level = new_level()
    duals = []
    for primal, tangent in zip(primals, tangents, strict=True):
        p_leaves, p_def = tree_flatten(primal)
        t_leaves, t_def = tree_flatten(tangent)
        if p_def != t_def:
            raise ValueError(
                f"jvp: tangent structure {t_def} does not match primal structure {p_def}"
            )
        leaves = []
        for p, t in zip(p_leaves, t_leaves, strict=True):
            value = _as_value(p, "jvp")
            if ops.shape(t) != ops.shape(value):
                raise ValueError(
                    f"jvp: tangent of shape {ops.shape(t)} for a primal of shape {ops.shape(value)}"
                )
            t = t if isinstance(t, Tracer) else ops.astype(arraylib.asarray(t), value.dtype)
            leaves.append(Dual(value, t, level))
        duals.append(tree_unflatten(p_def, leaves))
    if is_counting():
        note_pass("forward")
        note_pass("jvp", _batch_size(tangents))
    out = fun(*duals)
    out_leaves, out_def = tree_flatten(out)
    values, out_tangents = [], []
    for leaf in out_leaves:
        if isinstance(leaf, Dual) and leaf._level == level:
            values.append(_plain(leaf.primal))
            out_tangents.append(_plain(leaf.tangent))
        else:
            values.append(leaf)
            out_tangents.append(ops.zeros_like(leaf))
    return tree_unflatten(out_def, values), tree_unflatten(out_def, out_tangents)
