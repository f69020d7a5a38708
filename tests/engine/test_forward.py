"""Forward mode, batching and linearize, over the engine's primitive grid.

``tests/engine/test_primitives.py`` already checks every row of the grid's JVP and VJP against
central differences and against each other (``check_grads(modes=("rev", "fwd"), order=2)``). Here
the same grid checks what forward mode adds on top:

* **batching**: ``jacfwd`` (all basis tangents in one pass) and ``jacrev`` (all basis cotangents in
  one sweep) equal the Jacobian built column by column from unbatched ``jvp`` calls, so every
  batching rule agrees with the rules it carries;
* **second order, batched**: ``jacfwd(jacrev)``, ``jacrev(jacrev)`` and ``jacrev(jacfwd)`` of a
  scalar projection equal the Hessian built from unbatched ``jvp(grad)`` calls;
* **linearize** equals ``jvp``.

Then the batching layer is tested on its own (per-example semantics of odd indices, matmul ranks,
broadcasting), and ``check_grads`` is shown to catch wrong rules.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.engine import ops
from chainrule.engine.batching import GENERIC_RULES, Batched
from chainrule.engine.core import new_level, observe
from chainrule.engine.primitives import TABLE, defprim
from primitive_grid import GRID  # the engine's grid: one source of primitive cases

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _basis_tangents(args):
    """Every unit tangent of the arguments, one tuple of arrays per input coordinate."""
    for k, arg in enumerate(args):
        for i in range(arg.size):
            tangents = [np.zeros_like(a) for a in args]
            tangents[k].reshape(-1)[i] = 1.0
            yield tuple(tangents)


def _columns_from_jvps(f, args):
    """The Jacobian of every output leaf as (*out.shape, n_total), from unbatched jvps."""
    columns = [cr.tree_leaves(cr.jvp(f, args, t)[1]) for t in _basis_tangents(args)]
    out_leaves = cr.tree_leaves(f(*args))
    return [
        np.stack([np.broadcast_to(col[j], np.shape(leaf)) for col in columns], axis=-1)
        for j, leaf in enumerate(out_leaves)
    ]


def _as_columns(jacobian, f, args):
    """A jacfwd/jacrev result (argnums a tuple) -> per output leaf an array (*out.shape,
    n_total)."""
    blocks = cr.tree_leaves(jacobian)
    out_leaves = cr.tree_leaves(f(*args))
    assert len(blocks) == len(out_leaves) * len(args)
    result = []
    for j, leaf in enumerate(out_leaves):
        out_shape = np.shape(leaf)
        pieces = []
        for k, arg in enumerate(args):
            block = blocks[j * len(args) + k]
            assert np.shape(block) == out_shape + arg.shape
            pieces.append(np.reshape(block, out_shape + (arg.size,)))
        result.append(np.concatenate(pieces, axis=-1))
    return result


def _scalar_projection(f, args, seed=3):
    """sum over output leaves of <w, leaf>, with fixed random weights: a scalar to take Hessians
    of."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(np.shape(leaf)) for leaf in cr.tree_leaves(f(*args))]

    def g(*a):
        total = 0.0
        for leaf, w in zip(cr.tree_leaves(f(*a)), weights, strict=True):
            total = total + cnp.sum(leaf * w)
        return total

    return g


def _assert_close(actual, expected, tol=1e-9):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------
# The grid
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GRID, ids=lambda c: c.id)
def test_batched_jacobians_equal_unbatched_jvps(case):
    args = case.sample()
    f = partial(case.fun, cnp)
    argnums = tuple(range(len(args)))
    expected = _columns_from_jvps(f, args)
    for transform in (cr.jacfwd, cr.jacrev):
        got = _as_columns(transform(f, argnums)(*args), f, args)
        for g, e in zip(got, expected, strict=True):
            _assert_close(g, e)


@pytest.mark.parametrize("case", [c for c in GRID if c.order >= 2], ids=lambda c: c.id)
def test_batched_second_derivatives_equal_unbatched_ones(case):
    args = case.sample()
    g = _scalar_projection(partial(case.fun, cnp), args)
    # Reference: one jvp of the (unbatched) gradient per input coordinate.
    gradient = cr.grad(lambda x: g(x, *args[1:]))
    reference = np.stack(
        [cr.jvp(gradient, (args[0],), (t[0],))[1].reshape(-1) for t in _basis_tangents(args[:1])],
        axis=-1,
    )
    n = args[0].size
    for outer, inner in ((cr.jacfwd, cr.jacrev), (cr.jacrev, cr.jacrev), (cr.jacrev, cr.jacfwd)):
        hessian = outer(inner(g))(*args)
        assert hessian.shape == args[0].shape * 2
        _assert_close(hessian.reshape(n, n), reference, tol=1e-8)


@pytest.mark.parametrize("case", GRID, ids=lambda c: c.id)
def test_linearize_equals_jvp(case):
    args = case.sample()
    f = partial(case.fun, cnp)
    rng = np.random.default_rng(5)
    out, jvp_fun = cr.linearize(f, *args)
    for got, want in zip(cr.tree_leaves(out), cr.tree_leaves(f(*args)), strict=True):
        _assert_close(got, want, tol=1e-12)
    for _ in range(2):  # one recording, several tangents
        tangents = tuple(rng.standard_normal(a.shape) for a in args)
        expected = cr.tree_leaves(cr.jvp(f, args, tangents)[1])
        got = cr.tree_leaves(jvp_fun(*tangents))
        for g, e in zip(got, expected, strict=True):
            assert np.shape(g) == np.shape(e)
            _assert_close(g, e, tol=1e-12)


def test_every_primitive_has_a_batching_rule():
    missing = sorted(name for name, prim in TABLE.items() if prim.batching is None)
    assert not missing, f"no batching rule for {missing}"
    unknown = {prim.batching for prim in TABLE.values() if isinstance(prim.batching, str)}
    assert unknown <= set(GENERIC_RULES), f"unknown generic batching rules {unknown}"


def test_the_grid_batches_every_primitive():
    """Differentiating the grid in both modes evaluates every primitive with a batch axis."""
    seen = set()
    with observe(lambda prim, args, params, out: seen.add(prim.name)):
        for case in GRID:
            args = case.sample()
            cr.jacrev(partial(case.fun, cnp), tuple(range(len(args))))(*args)
    missing = set(TABLE) - seen - {"astype"}  # astype: test_astype_batches below
    assert not missing, sorted(missing)


def test_astype_batches():
    x = np.array([1.0, -2.0, 0.5])
    jac = cr.jacfwd(lambda v: cnp.astype(v, np.float32) * 2)(x)
    assert jac.dtype == np.float32
    np.testing.assert_array_equal(jac, 2 * np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(
        cr.jacrev(lambda v: cnp.astype(v, np.float32) * 2)(x), 2 * np.eye(3)
    )


# ------------------------------------------------------------------------------------------------
# The batching layer on its own: a Batched value behaves like each of its examples
# ------------------------------------------------------------------------------------------------

_MASK = np.array([True, False, True, True])
PER_EXAMPLE = {  # name: (function, per-example shapes of the batched arguments, unbatched extras)
    "separated int arrays": (lambda x: x[[0, 1], :, [1, 3]], [(2, 3, 4)]),
    "int, slice, int array": (lambda x: x[1, :, [0, 0, 2]], [(2, 3, 4)]),
    "ellipsis, int array": (lambda x: x[..., [2, 0]], [(2, 3, 4)]),
    "ellipsis, int array, slice": (lambda x: x[..., [2, 0], :], [(2, 3, 4)]),
    "newaxis, bool mask": (lambda x: x[None, :, _MASK], [(3, 4)]),
    "full bool mask": (lambda x: x[np.arange(12).reshape(3, 4) % 5 == 1], [(3, 4)]),
    "scatter via getitem vjp": (
        lambda g: ops.apply(TABLE["scatter_add"], g, index=([0, 2, 0], slice(None)), shape=(3, 4)),
        [(3, 4)],
    ),
    "scatter broadcast update": (
        lambda g: ops.apply(TABLE["scatter_add"], g, index=(slice(None), 1), shape=(3, 4)),
        [()],
    ),
    "matrix @ batched vector": (lambda v: np.ones((3, 4)) @ v, [(4,)]),
    "batched vector @ matrix": (lambda v: v @ np.arange(12.0).reshape(4, 3), [(4,)]),
    "vector @ batched stack": (lambda m: np.arange(4.0) @ m, [(2, 4, 3)]),
    "batched vector @ stack": (lambda v: v @ np.ones((2, 4, 3)), [(4,)]),
    "stack @ batched vector": (lambda v: np.ones((2, 3, 4)) @ v, [(4,)]),
    "batched matrix @ stack": (lambda m: m @ np.ones((5, 4, 2)), [(3, 4)]),
    "both batched, vector and matrix": (lambda v, m: v @ m, [(4,), (4, 3)]),
    "both batched, stacks": (lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    "broadcast against higher rank": (lambda x: x * np.ones((2, 3, 4)), [(4,)]),
    "scalar example against a matrix": (lambda x: x + np.ones((3, 2)), [()]),
    "where with a wide condition": (lambda x: cnp.where(np.eye(3, dtype=bool), x, 0.0), [(3,)]),
    "broadcast_to a higher rank": (lambda x: cnp.broadcast_to(x, (2, 3, 4)), [(3, 1)]),
    "concatenate with a constant": (
        lambda x: cnp.concatenate([x, np.ones((2, 2))], axis=1),
        [(2, 3)],
    ),
    "einsum with ellipsis-free letters": (
        lambda a, b: cnp.einsum("ij,jk->ki", a, b),
        [(2, 3), (3, 4)],
    ),
    "solve, vector rhs": (lambda b: cnp.linalg.solve(2 * np.eye(3) + 0.1, b), [(3,)]),
    "solve, batched matrix, vector rhs": (lambda a: cnp.linalg.solve(a, np.ones(3)), [(3, 3)]),
    "solve, stacked": (lambda a, b: cnp.linalg.solve(a, b), [(2, 3, 3), (3, 2)]),
    "det of a stack": (lambda a: cnp.linalg.det(a), [(2, 3, 3)]),
    "cumsum and reductions": (
        lambda x: cnp.cumsum(cnp.max(x, axis=1), axis=0) + cnp.logsumexp(x),
        [(3, 4)],
    ),
    "transpose and reshape": (
        lambda x: cnp.reshape(cnp.transpose(x, (2, 0, 1)), (4, -1)),
        [(2, 3, 4)],
    ),
    "softmax cross-entropy": (lambda z: cnp.softmax_cross_entropy(z, np.array([0, 2])), [(2, 3)]),
}


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_batched_value_acts_like_each_example(name):
    fun, shapes = PER_EXAMPLE[name]
    rng = np.random.default_rng(0)
    batch = 3
    stacked = [rng.standard_normal((batch, *shape)) for shape in shapes]
    for value in stacked:  # keep matrices invertible for solve/det
        if value.ndim >= 3 and value.shape[-1] == value.shape[-2]:
            value += 3 * np.eye(value.shape[-1])
    level = new_level()
    out = fun(*[Batched(v, level) for v in stacked])
    assert isinstance(out, Batched) and out.shape == np.shape(fun(*[v[0] for v in stacked]))
    for i in range(batch):
        np.testing.assert_allclose(
            out.value[i], fun(*[v[i] for v in stacked]), rtol=1e-12, atol=1e-12
        )


def test_a_primitive_without_batching_rule_falls_back_to_one_example_at_a_time():
    twice = defprim("_test_twice", lambda x: 2 * x, (lambda g, out, x: 2 * g,), "linear")
    try:
        x = np.array([1.0, 2.0, 3.0])
        np.testing.assert_array_equal(cr.jacfwd(lambda v: ops.apply(twice, v))(x), 2 * np.eye(3))
        np.testing.assert_array_equal(cr.jacrev(lambda v: ops.apply(twice, v))(x), 2 * np.eye(3))
    finally:
        del TABLE["_test_twice"]


def test_jvp_accepts_a_batch_of_tangents():
    x = np.array([0.3, -1.2])
    level = new_level()
    tangents = Batched(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), level)
    _, out = cr.jvp(lambda v: cnp.sin(v) * v[0], (x,), (tangents,))
    jac = cr.jacfwd(lambda v: cnp.sin(v) * v[0])(x)
    np.testing.assert_allclose(out.value, [jac[:, 0], jac[:, 1], jac[:, 0] + jac[:, 1]])


# ------------------------------------------------------------------------------------------------
# linearize
# ------------------------------------------------------------------------------------------------


def test_linearize_replays_only_linear_ops():
    w = np.random.default_rng(0).standard_normal((4, 3))
    f = lambda x: cnp.tanh(w @ cnp.sin(x))
    x = np.array([0.1, 0.5, -0.7])
    out, jvp_fun = cr.linearize(f, x)
    np.testing.assert_allclose(out, f(x))
    with cr.count() as c:
        tangent = jvp_fun(np.array([1.0, 0.0, 2.0]))
    assert c.primitives["sin"] == c.primitives["cos"] == c.primitives["tanh"] == 0  # no primal work
    assert c.primitives["matmul"] == 1 and c.passes["jvp"] == 1 and c.passes["forward"] == 0
    np.testing.assert_allclose(
        tangent, cr.jvp(f, (x,), (np.array([1.0, 0.0, 2.0]),))[1], rtol=1e-12
    )


def test_linearize_on_pytrees_and_constant_outputs():
    params = {"w": np.array([[1.0, 2.0], [0.5, -1.0]]), "b": np.array([0.1, 0.2])}
    f = lambda p, x: {"y": cnp.tanh(p["w"] @ x + p["b"]), "const": np.ones(2), "x": x}
    x = np.array([0.3, -0.4])
    out, jvp_fun = cr.linearize(f, params, x)
    t_params = {"w": np.ones((2, 2)), "b": np.array([1.0, -1.0])}
    t_x = np.array([0.5, 2.0])
    got = jvp_fun(t_params, t_x)
    want = cr.jvp(f, (params, x), (t_params, t_x))[1]
    for key in ("y", "const", "x"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
    np.testing.assert_array_equal(got["const"], np.zeros(2))
    with pytest.raises(ValueError, match="structure"):
        jvp_fun(np.ones(2), t_x)


def test_linearize_inside_grad():
    # d/dx <v, J(x) u> through the recorded linear map: the tape's constants are traced values.
    u, v = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    f = lambda x: cnp.sin(x) * x[0]

    def probe(x):
        _, jvp_fun = cr.linearize(f, x)
        return cnp.sum(jvp_fun(u) * v)

    x = np.array([0.4, 1.1])
    np.testing.assert_allclose(cr.grad(probe)(x), cr.numerical_grad(probe, x), rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# check_grads: JVP against VJP, and order 2 in every combination of modes
# ------------------------------------------------------------------------------------------------


def _primitive_with_rules(name, vjp_factor, jvp_factor):
    """x -> x**3 with deliberately chosen derivative factors (3 x**2 is right)."""
    return defprim(
        name,
        lambda x: x**3,
        (lambda g, out, x: g * vjp_factor(x),),
        lambda ts, out, x: ts[0] * jvp_factor(x),
    )


@pytest.mark.parametrize(
    "name, vjp_factor, jvp_factor, modes, message",
    [
        ("_test_bad_jvp", lambda x: 3 * x * x, lambda x: 2 * x * x, ("fwd",), "fwd mode"),
        ("_test_bad_vjp", lambda x: 2 * x * x, lambda x: 3 * x * x, ("rev",), "rev mode"),
        # Right first derivatives written with raw arrays: second derivatives silently zero.
        (
            "_test_flat_rule",
            lambda x: 3 * ops.raw(x) ** 2,
            lambda x: 3 * ops.raw(x) ** 2,
            ("rev", "fwd"),
            "order 2",
        ),
    ],
)
def test_check_grads_catches_wrong_rules(name, vjp_factor, jvp_factor, modes, message):
    prim = _primitive_with_rules(name, vjp_factor, jvp_factor)
    try:
        x = np.array([0.7, -1.3, 2.0])
        with pytest.raises(AssertionError, match=message):
            cr.check_grads(lambda v: ops.apply(prim, v), (x,), modes=modes, order=2)
    finally:
        del TABLE[name]


def test_check_grads_second_order_mixes_modes():
    """With both modes, order 2 differentiates each first derivative in both modes
    (rev over rev, fwd over rev, rev over fwd, fwd over fwd)."""
    from chainrule.transforms.counting import count

    f = lambda x: cnp.sum(cnp.tanh(x) ** 3) * x
    with count() as c:
        cr.check_grads(f, (np.array([0.3, -0.8, 1.5]),), modes=("rev", "fwd"), order=2)
    assert c.passes["vjp"] >= 4 and c.passes["jvp"] >= 4
    cr.check_grads(f, (np.array([0.3, -0.8, 1.5]),), modes=("fwd",), order=3)


def test_numpy_asarray_of_a_tracer_gives_its_plain_values():
    """np.asarray(tracer) is the values without derivatives (as for a Tensor), not an object array
    built element by element."""
    import chainrule as cr
    import chainrule.numpy as cnp

    seen = {}

    def f(x):
        seen["array"] = np.asarray(cnp.sum(x * x, axis=1, keepdims=True))
        return x * 2

    cr.jvp(f, (np.ones((300, 2)),), (np.ones((300, 2)),))
    assert seen["array"].dtype == np.float64 and seen["array"].shape == (300, 1)
    np.testing.assert_array_equal(seen["array"], np.full((300, 1), 2.0))
