"""``checkpoint`` (``remat``): trade compute for memory by re-running a function in the backward
pass instead of storing its intermediates, with ``jax.checkpoint``'s names.

Backprop stores, for every recorded op, the inputs its VJP rule will read: for an L-layer MLP
that is O(L) activations. A checkpointed function is recorded as *one* node holding only its
inputs and output; its VJP rule re-runs the function under a fresh reverse level, rebuilding the
intermediates just for the time of its own backward, and pulls the cotangent through them. The
recomputation performs the very same operations on the very same values, so the gradients are
bit for bit those of the unchecked function. Split a chain of L layers into about √L checkpointed
segments and the peak falls from O(L) to O(√L) stored activations, for one extra forward pass.

It nests: when the rule runs on traced values (grad of grad), the recomputation is traced too.
Forward mode (``jvp``) simply pushes tangents through the function, which stores nothing anyway.

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> block = cr.checkpoint(lambda w, x: cnp.tanh(cnp.tanh(x @ w) @ w))
>>> w, x = np.eye(2) * 0.5, np.ones((3, 2))
>>> g = cr.grad(lambda w: cnp.sum(block(w, x)))(w)
>>> np.array_equal(g, cr.grad(lambda w: cnp.sum(cnp.tanh(cnp.tanh(x @ w) @ w)))(w))
True
"""

from __future__ import annotations

import functools

from ..engine import ops
from ..engine.table import Primitive
from .api import jvp, vjp
from .custom import (
    _call,
    _has_tracer,
    _name,
    _no_flops,
    _record_output,
    pack_leaves,
    unpack_leaves,
)
from .pytree import tree_flatten, tree_unflatten

__all__ = ["checkpoint", "remat"]


class _Checkpointed:
    """A function whose intermediates are recomputed in the backward pass (see the module)."""

    def __init__(self, fun, static_argnums):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.static_argnums = tuple(static_argnums)
        self.__name__ = _name(fun)
        self._prim = Primitive(
            f"checkpoint({self.__name__})", self._forward, self._vjp, self._jvp, _no_flops
        )

    def __get__(self, instance, owner=None):
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args):
        if not _has_tracer(args):
            return self.fun(*args)
        return _call(self._prim, args, self.static_argnums, f"checkpoint {self.__name__}")

    def _forward(self, *leaves, call):
        # Plain values in: nothing is recorded, so nothing but inputs and output is kept.
        return _record_output(call, self.fun(*call.rebuild(leaves)))

    def _vjp(self, cotangent, out, *values, call):
        cotangents = tree_unflatten(call.out_def, unpack_leaves(cotangent, call.out_meta))
        _, pullback = vjp(lambda *leaves: self.fun(*call.rebuild(leaves)), *values)
        return list(pullback(cotangents))

    def _jvp(self, tangents, out, *primals, call):
        tangents = tuple(
            ops.zeros_like(p) if t is None else t for t, p in zip(tangents, primals, strict=True)
        )
        _, tangent_out = jvp(
            lambda *leaves: pack_leaves(_leaves_of(self.fun(*call.rebuild(leaves)))),
            primals,
            tangents,
        )
        return tangent_out


def _leaves_of(tree):
    return tree_flatten(tree)[0]


def checkpoint(fun, *, prevent_cse: bool = True, policy=None, static_argnums=()):
    """``fun`` with its intermediates recomputed in the backward pass instead of stored.

    Honoured: ``static_argnums`` (arguments passed through as constants, never differentiated:
    sizes, flags, modules). ``prevent_cse`` is accepted for JAX compatibility and has nothing to
    do: a checkpoint's recomputation is never merged away (under ``jit``, each checkpointed call
    stays a primitive of its own). ``policy`` (which intermediates to save after all) must be
    ``None``, JAX's default of saving nothing; any other is a
    ``NotImplementedError`` rather than silently ignored. Usable as ``@checkpoint`` too.
    """
    del prevent_cse
    if policy is not None:
        raise NotImplementedError(
            "checkpoint: only policy=None (save nothing, recompute everything) is supported"
        )
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    return _Checkpointed(fun, static_argnums)


#: ``jax.remat``'s name for :func:`checkpoint`.
remat = checkpoint
