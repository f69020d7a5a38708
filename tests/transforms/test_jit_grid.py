"""Every case of the primitive grid under ``jit``: the replayed forward, the replayed gradient
(``jit(grad)``: the derivative rules staged into the program), and forward and reverse mode
through the replayed program (``jvp(jit)``, ``grad(jit)``) equal the eager results bit for bit,
on values other than the ones the program was staged from.

This is the table walk that keeps every primitive's rules stageable: a rule that read a primal
value into Python, or built a constant from one, would be frozen at the staged value and differ
here. Cases whose output shape depends on the values cannot be staged: they must fail with an
error that says so.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.transforms import jit as jit_module
from primitive_grid import GRID  # the engine's grid: one source of primitive cases

#: Cases whose output shape depends on the data: case id -> (error type, pattern).
DATA_DEPENDENT_SHAPES = {
    "getitem[bool from data](2x3x4)": (cr.ConcretizationError, r"jit of .*boolean mask"),
    "linalg.lstsq(4x3,4)": (ValueError, r"chainrule\.linalg\.lstsq: .*jit"),
    "linalg.lstsq(4x3,4x2)": (ValueError, r"chainrule\.linalg\.lstsq: .*jit"),
}


def _equal(got, expected, what):
    got_leaves, expected_leaves = cr.tree_leaves(got), cr.tree_leaves(expected)
    assert len(got_leaves) == len(expected_leaves), what
    for i, (a, b) in enumerate(zip(got_leaves, expected_leaves, strict=True)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{what}, leaf {i}")


def _equal_compiled(jitted, args, expected):
    """The compiled function of ``jitted``'s program, called directly on ``args``'s arrays,
    gives ``expected`` (not a fallback to the interpreter after an error in the generated
    code)."""
    (program,) = {id(entry[0]): entry[0] for entry in jitted._programs.values()}.values()
    assert program.replay is not None
    inputs = [leaf for leaf in cr.tree_leaves(args) if hasattr(leaf, "shape")]
    _equal(program.replay(*inputs), cr.tree_leaves(expected), "the compiled function")


@pytest.fixture(params=["interpreted", "compiled"])
def replay(request, monkeypatch):
    """Each case twice: replayed equation by equation, and compiled into one function from the
    first replay on (as a program is after ``_COMPILE_AFTER`` replays)."""
    if request.param == "compiled":
        monkeypatch.setattr(jit_module, "_COMPILE_AFTER", 1)
    return request.param


@pytest.mark.parametrize("case", GRID, ids=lambda case: case.id)
def test_jit_forward_gradient_and_jvp_equal_eager_bit_for_bit(case, replay):
    fun = lambda *args: case.fun(cnp, *args)  # noqa: E731
    staged_on, args = case.sample(0), case.sample(1)
    if case.id in DATA_DEPENDENT_SHAPES:
        error, pattern = DATA_DEPENDENT_SHAPES[case.id]
        with pytest.raises(error, match=pattern):
            cr.jit(fun)(*staged_on)
        return
    jitted = cr.jit(fun)
    _equal(jitted(*staged_on), fun(*staged_on), "forward, staging call")
    _equal(jitted(*args), fun(*args), "forward, replayed")
    compiled = [program.replay is not None for program, _ in jitted._programs.values()]
    assert all(compiled) if replay == "compiled" else not any(compiled)
    if replay == "compiled":  # the generated function itself, not a fallback to the interpreter
        _equal_compiled(jitted, args, fun(*args))

    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(np.shape(leaf)) for leaf in cr.tree_leaves(fun(*args))]
    argnums = tuple(range(len(args)))

    def loss(*args):
        leaves = cr.tree_leaves(fun(*args))
        return sum(cnp.sum(leaf * w) for leaf, w in zip(leaves, weights, strict=True))

    gradient = cr.jit(cr.grad(loss, argnums=argnums))
    gradient(*staged_on)
    _equal(gradient(*args), cr.grad(loss, argnums=argnums)(*args), "jit(grad), replayed")
    if replay == "compiled":
        _equal_compiled(gradient, args, cr.grad(loss, argnums=argnums)(*args))

    def jitted_loss(*args):
        leaves = cr.tree_leaves(jitted(*args))
        return sum(cnp.sum(leaf * w) for leaf, w in zip(leaves, weights, strict=True))

    _equal(
        cr.grad(jitted_loss, argnums=argnums)(*args),
        cr.grad(loss, argnums=argnums)(*args),
        "grad(jit)",
    )
    tangents = tuple(rng.standard_normal(np.shape(arg)) for arg in args)
    _equal(cr.jvp(jitted, args, tangents), cr.jvp(fun, args, tangents), "jvp(jit)")
    assert jitted.trace_count == 1 and gradient.trace_count == 1
