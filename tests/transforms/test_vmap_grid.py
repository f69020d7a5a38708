"""Every case of the primitive grid under ``vmap``: the batched forward, the batched gradient
(``vmap(grad)``: the derivative rules read batched primals) and the batched JVP equal a Python
loop over the examples, in float64.

This is the table walk that keeps every entry's batching rule, and every derivative rule's use of
primal values (:func:`chainrule.engine.core.strip`), right under ``vmap``. Cases whose output
shape depends on the values (a boolean mask taken from the data) cannot be batched: they must
fail with an error that says so.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from primitive_grid import GRID  # the engine's grid: one source of primitive cases

BATCH = 3
#: Cases whose output shape depends on the data, refused under vmap (as in JAX) with an error
#: naming the function: case id -> the error's pattern.
DATA_DEPENDENT_SHAPES = {
    "getitem[bool from data](2x3x4)": r"chainrule\.getitem: a boolean mask .* \(vmap\)",
    "linalg.lstsq(4x3,4)": r"chainrule\.linalg\.lstsq: not batched under vmap",
    "linalg.lstsq(4x3,4x2)": r"chainrule\.linalg\.lstsq: not batched under vmap",
}


def _batch(case):
    """BATCH samples of the case's arguments, stacked along a new leading axis."""
    samples = [case.sample(seed) for seed in range(BATCH)]
    return tuple(np.stack(column) for column in zip(*samples, strict=True))


def _close(batched, looped, what):
    """``batched`` (a pytree of stacked leaves) against the per-example pytrees ``looped``."""
    batched_leaves = cr.tree_leaves(batched)
    looped_leaves = [cr.tree_leaves(tree) for tree in looped]
    assert len(batched_leaves) == len(looped_leaves[0]), what
    for i, leaf in enumerate(batched_leaves):
        np.testing.assert_allclose(
            np.asarray(leaf),
            np.stack([leaves[i] for leaves in looped_leaves]),
            rtol=1e-10,
            atol=1e-12,
            err_msg=f"{what}, output leaf {i}",
        )


@pytest.mark.parametrize("case", GRID, ids=lambda case: case.id)
def test_vmap_forward_gradient_and_jvp_match_a_loop(case):
    fun = lambda *args: case.fun(cnp, *args)  # noqa: E731
    stacked = _batch(case)
    examples = [tuple(arg[b] for arg in stacked) for b in range(BATCH)]
    if case.id in DATA_DEPENDENT_SHAPES:
        with pytest.raises(ValueError, match=DATA_DEPENDENT_SHAPES[case.id]):
            cr.vmap(fun)(*stacked)
        return
    _close(cr.vmap(fun)(*stacked), [fun(*args) for args in examples], "forward")

    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(np.shape(leaf)) for leaf in cr.tree_leaves(fun(*examples[0]))]
    argnums = tuple(range(len(stacked)))

    def loss(*args):
        leaves = cr.tree_leaves(fun(*args))
        return sum(cnp.sum(leaf * w) for leaf, w in zip(leaves, weights, strict=True))

    batched = cr.vmap(cr.grad(loss, argnums=argnums))(*stacked)
    looped = [cr.grad(loss, argnums=argnums)(*args) for args in examples]
    _close(batched, looped, "gradient")

    tangents = tuple(rng.standard_normal(arg.shape) for arg in stacked)

    def tangent_out(*args_and_tangents):
        n = len(stacked)
        return cr.jvp(fun, args_and_tangents[:n], args_and_tangents[n:])[1]

    batched_jvp = cr.vmap(tangent_out)(*stacked, *tangents)
    looped_jvp = [tangent_out(*args, *(t[b] for t in tangents)) for b, args in enumerate(examples)]
    _close(batched_jvp, looped_jvp, "jvp")
