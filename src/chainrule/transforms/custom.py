"""User-written derivative rules: ``custom_vjp`` and ``custom_jvp``, with JAX's names.

A decorated function becomes one primitive per call, built on the spot (not entered in the
table): its operands are the leaves of the differentiable arguments, its output the leaves of
``fun``'s result (packed into one flat vector when there are several). The interpreters then
treat it like any table entry, so it nests under every transform:

* ``custom_vjp``: the primitive's VJP rule calls ``bwd(residuals, cotangent)``. The residuals of
  the first-order pass are those ``fwd`` returned in the forward pass; when the rule runs on
  traced values (a second derivative), ``fwd`` is run again on them, so that ``bwd``, written in
  ``chainrule.numpy`` ops, is itself differentiated. Forward mode is refused, as in JAX.
* ``custom_jvp``: the JVP rule is the user's; reverse mode transposes it, as JAX does: the rule
  is linear in the tangents, so its VJP with respect to the tangents (one reverse pass through
  the rule, with the primals held constant) is the cotangent of the primals.

``nondiff_argnums`` arguments are static: they are handed to the rules first, as in JAX, and may
not hold traced values. ``fun`` must not close over traced values (a closure is a constant).

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> @cr.custom_vjp
... def clip_gradient(x):
...     return x
>>> clip_gradient.defvjp(lambda x: (x, None), lambda res, g: (cnp.clip(g, -1.0, 1.0),))
>>> cr.grad(lambda x: cnp.sum(3.0 * clip_gradient(x)))(np.array([1.0, 2.0]))
array([1., 1.])
"""

from __future__ import annotations

import functools
from typing import Any

from ..engine import arraylib, ops
from ..engine.arraylib import xp
from ..engine.core import Tracer, apply, raw
from ..engine.primitives.shapes import concatenate
from ..engine.table import Primitive
from .pytree import tree_flatten, tree_unflatten

__all__ = ["custom_jvp", "custom_vjp"]


def _name(fun) -> str:
    return str(getattr(fun, "__qualname__", None) or getattr(fun, "__name__", repr(fun)))


def _split_args(args, nondiff_argnums, name):
    nums = tuple(n % len(args) for n in nondiff_argnums) if args else ()
    for n in nondiff_argnums:
        if not -len(args) <= n < len(args):
            raise ValueError(
                f"{name}: nondiff_argnums {nondiff_argnums} out of range for {len(args)} arguments"
            )
    static = [args[n] for n in sorted(set(nums))]
    for n, value in zip(sorted(set(nums)), static, strict=True):
        if any(isinstance(leaf, Tracer) for leaf in tree_flatten(value)[0]):
            raise TypeError(
                f"{name}: argument {n} is in nondiff_argnums but holds a traced value; "
                "differentiate with respect to it by leaving it out of nondiff_argnums"
            )
    diff_positions = [i for i in range(len(args)) if i not in nums]
    return static, diff_positions


def _leaf_value(leaf):
    return leaf if isinstance(leaf, Tracer) else arraylib.asarray(leaf)


class _Call:
    """What one call of a custom function knows: the argument structure, the output structure
    (set by the forward), and the residuals of the first-order pass."""

    __slots__ = (
        "args",
        "positions",
        "treedefs",
        "counts",
        "out_def",
        "out_meta",
        "res",
        "inputs",
        "static",
    )

    def __init__(self, args, positions):
        self.args = list(args)
        self.positions = positions
        self.treedefs = []
        self.counts = []
        self.out_def: Any = None
        self.out_meta: Any = None  # [(shape, dtype)] of the output leaves
        self.res: Any = None
        self.inputs: Any = None
        self.static: list = []

    def rebuild(self, leaves):
        """The full argument list with the differentiable ones rebuilt from ``leaves``."""
        args = list(self.args)
        start = 0
        for position, treedef, count in zip(
            self.positions, self.treedefs, self.counts, strict=True
        ):
            args[position] = tree_unflatten(treedef, list(leaves[start : start + count]))
            start += count
        return args

    def diff_trees(self, leaves):
        args = self.rebuild(leaves)
        return tuple(args[p] for p in self.positions)


def pack_leaves(leaves):
    """One leaf: itself; several: one flat vector of their common dtype, in order.

    Built from the primitives (``reshape``, ``astype``, ``concatenate``), so that it computes on
    the leaves' own array module (NumPy or CuPy), records on whatever traces them, and is staged
    by :func:`~chainrule.jit` like any other op. :func:`unpack_leaves` undoes it."""
    if len(leaves) == 1:
        return leaves[0]
    dtype = xp.result_type(*[getattr(raw(leaf), "dtype", None) or float for leaf in leaves])
    return concatenate([ops.astype(ops.reshape(leaf, (-1,)), dtype) for leaf in leaves])


def unpack_leaves(packed, meta) -> list:
    """The leaves of shapes and dtypes ``meta`` (``(shape, dtype)`` pairs) back out of
    :func:`pack_leaves`'s vector."""
    if len(meta) == 1:
        return [packed]
    leaves: list = []
    start = 0
    for shape, dtype in meta:
        size = 1
        for n in shape:
            size *= n
        leaves.append(
            ops.astype(ops.reshape(ops.getitem(packed, slice(start, start + size)), shape), dtype)
        )
        start += size
    return leaves


def _check_leaves(name, what, got, expected, structure):
    """``got`` leaves against ``expected`` (shape, dtype) pairs: an error naming both."""
    if len(got) != len(expected):
        raise ValueError(
            f"{name}: {what} has {len(got)} array(s) where {len(expected)} were expected "
            f"(structure {structure})"
        )
    checked: list = []
    for i, (leaf, (shape, dtype)) in enumerate(zip(got, expected, strict=True)):
        if leaf is None:
            checked.append(None)
            continue
        if not hasattr(leaf, "shape"):
            leaf = arraylib.asarray(leaf, dtype=dtype)
        if tuple(leaf.shape) != tuple(shape):
            raise ValueError(
                f"{name}: {what} leaf {i} has shape {tuple(leaf.shape)}, expected {tuple(shape)}"
            )
        if leaf.dtype != dtype:
            raise TypeError(
                f"{name}: {what} leaf {i} (shape {tuple(shape)}) has dtype {leaf.dtype}, "
                f"expected {dtype}"
            )
        checked.append(leaf)
    return checked


def _meta(leaves):
    return [(tuple(ops.shape(leaf)), _leaf_value(leaf).dtype) for leaf in leaves]


def _call(prim, args, static_argnums, label):
    """Apply ``prim`` to the flat differentiable leaves of ``args`` (the static ones, at
    ``static_argnums``, go to the rules as they are) and rebuild the output."""
    static, positions = _split_args(args, static_argnums, label)
    call = _Call(args, positions)
    call.static = static
    leaves: list = []
    for position in call.positions:
        flat, treedef = tree_flatten(args[position])
        call.treedefs.append(treedef)
        call.counts.append(len(flat))
        leaves.extend(_leaf_value(leaf) for leaf in flat)
    packed = apply(prim, *leaves, call=call)
    return tree_unflatten(call.out_def, unpack_leaves(packed, call.out_meta))


def _record_output(call, out):
    out_leaves, out_def = tree_flatten(out)
    call.out_def = out_def
    call.out_meta = _meta(out_leaves)
    return pack_leaves(out_leaves)


def _no_flops(out, *args, **params):
    return 0


def _has_tracer(args) -> bool:
    return any(isinstance(leaf, Tracer) for leaf in tree_flatten(list(args))[0])


class custom_vjp:  # noqa: N801 (JAX's name)
    """``f = custom_vjp(fun, nondiff_argnums=())``, then ``f.defvjp(fwd, bwd)``.

    ``fwd(*args) -> (out, residuals)``; ``bwd(*nondiff_args, residuals, cotangent_out)`` returns a
    tuple with one cotangent per differentiable argument (pytrees of its structure; ``None`` for
    a zero). Plain calls run ``fun``; ``grad``, ``vjp``, ``jacrev`` and ``Tensor.backward`` use
    the rules; ``jvp`` and ``jacfwd`` raise ``TypeError`` (as in JAX: write a ``custom_jvp``).
    Second derivatives are right where ``fwd`` and ``bwd`` are written in ``chainrule.numpy``.
    """

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd = None
        self.bwd = None
        self.__name__ = _name(fun)
        self._prim = Primitive(
            f"custom_vjp({self.__name__})", self._forward, self._vjp, self._jvp, _no_flops
        )

    def defvjp(self, fwd, bwd):
        """Set the rules; returns ``None`` (JAX's ``defvjp`` is used as a statement)."""
        self.fwd, self.bwd = fwd, bwd

    def __get__(self, instance, owner=None):  # a method: bind like a function
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args):
        if not _has_tracer(args):
            return self.fun(*args)
        if self.fwd is None or self.bwd is None:
            raise TypeError(f"custom_vjp {self.__name__}: no rules; call defvjp(fwd, bwd) first")
        return _call(self._prim, args, self.nondiff_argnums, f"custom_vjp {self.__name__}")

    def _run_fwd(self, call, leaves):
        result = self.fwd(*call.rebuild(leaves))  # type: ignore[misc]
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise TypeError(
                f"custom_vjp {self.__name__}: fwd must return a pair (out, residuals), got "
                f"{type(result).__name__}"
            )
        return result

    def _forward(self, *leaves, call):
        out, res = self._run_fwd(call, leaves)
        call.res, call.inputs = res, leaves
        return _record_output(call, out)

    def _vjp(self, cotangent, out, *values, call):
        name = f"custom_vjp {self.__name__}"
        if call.inputs is not None and all(
            a is b for a, b in zip(values, call.inputs, strict=True)
        ):
            res = call.res
        else:  # traced values (a higher derivative): rebuild the residuals from them
            res = self._run_fwd(call, values)[1]
        cts = tree_unflatten(call.out_def, unpack_leaves(cotangent, call.out_meta))
        static = [call.args[n] for n in sorted({n % len(call.args) for n in self.nondiff_argnums})]
        result = self.bwd(*static, res, cts)  # type: ignore[misc]
        return _flat_cotangents(name, result, call, values)

    def _jvp(self, tangents, out, *primals, call):
        raise TypeError(
            f"can't apply forward-mode autodiff (jvp) to custom_vjp function {self.__name__}; "
            "define it with custom_jvp instead (reverse mode is derived from a JVP rule)"
        )


def _flat_cotangents(name, result, call, values):
    """The cotangents ``bwd`` returned, checked against the arguments, one per operand."""
    ndiff = len(call.positions)
    if not isinstance(result, (tuple, list)) or len(result) != ndiff:
        got = f"{len(result)} entries" if isinstance(result, (tuple, list)) else type(result)
        raise TypeError(
            f"{name}: bwd must return a tuple of {ndiff} cotangent(s), one per differentiable "
            f"argument, got {got}"
        )
    flat: list = []
    start = 0
    for index, (tree, count, treedef) in enumerate(
        zip(result, call.counts, call.treedefs, strict=True)
    ):
        expected = _meta(values[start : start + count])
        if tree is None:
            flat.extend([None] * count)
        else:
            leaves, got_def = tree_flatten(tree)
            if got_def != treedef:
                raise TypeError(
                    f"{name}: cotangent {index} has structure {got_def}, but the argument has "
                    f"{treedef}"
                )
            flat.extend(_check_leaves(name, f"cotangent {index}", leaves, expected, treedef))
        start += count
    return flat


class custom_jvp:  # noqa: N801 (JAX's name)
    """``g = custom_jvp(fun, nondiff_argnums=())``, then ``g.defjvp(rule)`` (or ``defjvps``).

    ``rule(*nondiff_args, primals, tangents) -> (primal_out, tangent_out)``, with ``primals`` and
    ``tangents`` tuples over the differentiable arguments (zeros where a tangent is zero). Forward
    mode calls the rule; reverse mode (``grad``, ``vjp``, ``Tensor.backward``) transposes it, which
    is right only when ``tangent_out`` is linear in the tangents, as a JVP is. Written in
    ``chainrule.numpy`` ops, the rule differentiates again (``hessian``, grad of grad).

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> @cr.custom_jvp
    ... def log1pexp(x):
    ...     return cnp.log1p(cnp.exp(x))
    >>> @log1pexp.defjvp
    ... def _(primals, tangents):
    ...     (x,), (t,) = primals, tangents
    ...     return log1pexp(x), t / (1.0 + cnp.exp(-x))
    >>> cr.grad(lambda x: cnp.sum(log1pexp(x)))(np.array([0.0, 800.0]))
    array([0.5, 1. ])
    """

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.jvp = None
        self.__name__ = _name(fun)
        self._prim = Primitive(
            f"custom_jvp({self.__name__})", self._forward, self._vjp, self._jvp, _no_flops
        )

    def defjvp(self, jvp):
        """Set the JVP rule; returns it, so that ``@f.defjvp`` works as a decorator."""
        self.jvp = jvp
        return jvp

    def defjvps(self, *rules):
        """One rule per differentiable argument, ``rule(tangent, primal_out, *primals)`` giving
        that argument's contribution to the output tangent (``None``: it contributes nothing)."""

        def jvp(*all_args):
            primals, tangents = all_args[-2], all_args[-1]
            out = self.fun(*_merge(self.nondiff_argnums, all_args[:-2], primals))
            tangent_out = None
            for rule, tangent in zip(rules, tangents, strict=True):
                if rule is None:
                    continue
                term = rule(tangent, out, *primals)
                tangent_out = term if tangent_out is None else tangent_out + term
            if tangent_out is None:
                tangent_out = ops.zeros_like(out)
            return out, tangent_out

        self.jvp = jvp

    def __get__(self, instance, owner=None):
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args):
        if not _has_tracer(args):
            return self.fun(*args)
        if self.jvp is None:
            raise TypeError(f"custom_jvp {self.__name__}: no rule; call defjvp(rule) first")
        return _call(self._prim, args, self.nondiff_argnums, f"custom_jvp {self.__name__}")

    def _forward(self, *leaves, call):
        return _record_output(call, self.fun(*call.rebuild(leaves)))

    def _tangent_out(self, call, primal_leaves, tangent_leaves):
        """The rule's output tangent, checked and packed like the output."""
        name = f"custom_jvp {self.__name__}"
        primals = call.diff_trees(primal_leaves)
        tangents = call.diff_trees(tangent_leaves)
        result = self.jvp(*call.static, primals, tangents)  # type: ignore[misc]
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise TypeError(
                f"{name}: the JVP rule must return a pair (primal_out, tangent_out), got "
                f"{type(result).__name__}"
            )
        leaves, treedef = tree_flatten(result[1])
        if treedef != call.out_def:
            raise TypeError(
                f"{name}: tangent_out has structure {treedef}, but the output has {call.out_def}"
            )
        leaves = _check_leaves(name, "tangent_out", leaves, call.out_meta, treedef)
        leaves = [
            ops.zeros_like(raw(p)) if t is None else t
            for t, p in zip(leaves, unpack_leaves(_zeros_packed(call), call.out_meta), strict=True)
        ]
        return pack_leaves(leaves)

    def _jvp(self, tangents, out, *primals, call):
        tangents = [
            ops.zeros_like(p) if t is None else t for t, p in zip(tangents, primals, strict=True)
        ]
        return self._tangent_out(call, primals, tangents)

    def _vjp(self, cotangent, out, *values, call):
        # The rule is linear in the tangents: its transpose is the VJP of the tangent map, one
        # reverse pass through the rule at fresh zero tangents (the primals held constant).
        from .api import vjp  # noqa: PLC0415  (api is loaded already; keeps this module light)

        zeros = [ops.zeros_like(v) for v in values]
        _, pullback = vjp(lambda *t: self._tangent_out(call, values, t), *zeros)
        return list(pullback(cotangent))


def _zeros_packed(call):
    meta = call.out_meta
    if len(meta) == 1:
        return xp.zeros(meta[0][0], meta[0][1])
    size = sum(int(xp.prod(shape)) if shape else 1 for shape, _ in meta)
    return xp.zeros((size,), xp.result_type(*[dtype for _, dtype in meta]))


def _merge(nondiff_argnums, static, primals):
    """The full argument list from the static and the differentiable arguments."""
    total = len(static) + len(primals)
    nums = {n % total for n in nondiff_argnums}
    static_iter, primal_iter = iter(static), iter(primals)
    return [next(static_iter) if i in nums else next(primal_iter) for i in range(total)]
