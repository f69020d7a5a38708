"""Whole Jacobians and Hessians: jacfwd, jacrev, jacobian, hessian, hvp, on arrays and pytrees.

Every Jacobian is compared with central differences, on non-square shapes (3 -> 50, 50 -> 3,
20 -> 20) and on MLP-like functions built from matmul, reductions, indexing and reshapes, so the
batching of every axis-carrying parameter is exercised in both modes.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.transforms import jacobians

RNG = np.random.default_rng(7)
W_TALL_1 = RNG.standard_normal((20, 3))
W_TALL_2 = RNG.standard_normal((10, 20)) / 4
W_WIDE_1 = RNG.standard_normal((10, 8)) / 3
W_WIDE_2 = RNG.standard_normal((3, 8))
W_SQUARE = RNG.standard_normal((5, 5)) / 2


def tall(x):
    """3 -> 50: a two-layer network, its outputs reshaped, transposed, sliced and re-indexed."""
    hidden = cnp.tanh(W_TALL_1 @ x)  # (20,)
    out = cnp.sigmoid(W_TALL_2 @ hidden)  # (10,)
    grid = cnp.reshape(out, (2, 5)) * cnp.sum(x * x)  # (2, 5)
    pieces = [
        cnp.ravel(grid),
        cnp.ravel(cnp.transpose(grid)),
        hidden,
        hidden[[3, 0, 3]] * x,
        x[::-1],
    ]
    return cnp.concatenate(pieces + [cnp.cumsum(out)[:4] - cnp.max(hidden)])  # 10+10+20+3+3+4 = 50


def wide(x):
    """50 -> 3: a batch of 5 rows through a layer, pooled by logsumexp, mixed with indexed
    inputs."""
    rows = cnp.reshape(x, (5, 10))
    hidden = cnp.tanh(rows @ W_WIDE_1)  # (5, 8)
    pooled = cnp.logsumexp(hidden, axis=0)  # (8,)
    mean_row = cnp.mean(hidden, axis=1, keepdims=True)  # (5, 1)
    return W_WIDE_2 @ pooled + x[[0, 7, 49]] * x[10:13] + cnp.sum(mean_row * rows[:, :1])


def square(x):
    """20 -> 20: a Gram matrix's softmax, an einsum, a solve and a product."""
    mat = cnp.reshape(x, (4, 5))
    gram = mat.T @ mat @ W_SQUARE  # (5, 5)
    attention = cnp.softmax(gram, axis=1)
    mixed = cnp.einsum("ij,kj->ik", mat, attention)  # (4, 5)
    solved = cnp.linalg.solve(np.eye(4) * 3 + gram[:4, :4] * 0.1, mixed[:, 0])  # (4,)
    return cnp.concatenate([cnp.ravel(mixed[:, 1:]), solved]) * cnp.prod(cnp.cos(x[:3]))  # 16 + 4


def numerical_jacobian(f, x, step=1e-6):
    x = np.asarray(x, dtype=float)
    out = np.asarray(f(x))
    columns = []
    for i in range(x.size):
        bump = np.zeros(x.size)
        bump[i] = step
        bump = bump.reshape(x.shape)
        columns.append((np.asarray(f(x + bump)) - np.asarray(f(x - bump))) / (2 * step))
    return np.stack(columns, axis=-1).reshape(out.shape + x.shape)


CASES = {"3->50": (tall, 3), "50->3": (wide, 50), "20->20": (square, 20)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jacfwd_equals_jacrev_equals_finite_differences(name):
    f, n = CASES[name]
    x = np.random.default_rng(1).standard_normal(n) * 0.7
    expected = numerical_jacobian(f, x)
    assert expected.shape == (np.size(f(x)), n)
    forward = cr.jacfwd(f)(x)
    reverse = cr.jacrev(f)(x)
    assert forward.shape == reverse.shape == expected.shape
    assert type(forward) is np.ndarray and type(reverse) is np.ndarray
    np.testing.assert_allclose(forward, reverse, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(forward, expected, rtol=1e-6, atol=1e-7)
    for mode in ("auto", "fwd", "rev"):
        np.testing.assert_allclose(cr.jacobian(f, mode=mode)(x), forward, rtol=1e-10, atol=1e-12)
    for chunk in (1, 7, 1000):  # several passes of `chunk` directions give the same matrix
        np.testing.assert_allclose(
            cr.jacfwd(f, chunk_size=chunk)(x), forward, rtol=1e-12, atol=1e-14
        )
        np.testing.assert_allclose(
            cr.jacrev(f, chunk_size=chunk)(x), forward, rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jacfwd_blocks_are_fresh_arrays_that_a_caller_may_write(dtype):
    # The basis of a single input leaf is copied from a kept identity: writing into one result
    # (here the basis itself, handed back by the identity function) must leave the next alone.
    x = np.arange(3, dtype=dtype)
    first = cr.jacfwd(lambda v: v)(x)
    assert first.dtype == dtype and first.flags.writeable
    first[:] = 7
    second = cr.jacfwd(lambda v: v)(x)
    np.testing.assert_array_equal(second, np.eye(3, dtype=dtype))
    assert second.dtype == dtype and not np.shares_memory(first, second)
    value, jacobian = jacobians.forward_jacobian(lambda v: v * 2, (x,))
    np.testing.assert_array_equal(jacobian, 2 * np.eye(3, dtype=dtype))


def test_jacfwd_in_chunks_matches_one_pass_bit_for_bit_over_two_leaves():
    # Chunks that cover one leaf's directions and miss the other's fill zeros for the missing
    # block; the one-pass layout (a scalar output needs no transpose) gives the same bits.
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(4)

    def f(a, b):
        return {"s": cnp.sum(cnp.sin(a)) * cnp.sum(b * b), "v": cnp.tanh(a[0] * b[:3])}

    whole = cr.jacfwd(f, argnums=(0, 1))(a, b)
    for chunk in (1, 2, 5, 6, 9, 10, 100):
        chunked = cr.jacfwd(f, argnums=(0, 1), chunk_size=chunk)(a, b)
        for key in ("s", "v"):
            for got, want in zip(chunked[key], whole[key], strict=True):
                assert got.shape == want.shape
                np.testing.assert_array_equal(got, want)
    assert whole["s"][0].shape == (2, 3) and whole["v"][1].shape == (3, 4)


def test_jacobian_of_matrix_input_and_output_keeps_both_shapes():
    w = RNG.standard_normal((3, 4))
    f = lambda x: cnp.tanh(x @ w)  # (2, 3) -> (2, 4)
    x = RNG.standard_normal((2, 3))
    expected = numerical_jacobian(f, x)
    assert expected.shape == (2, 4, 2, 3)
    np.testing.assert_allclose(cr.jacfwd(f)(x), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(cr.jacrev(f)(x), expected, rtol=1e-6, atol=1e-8)
    scalar = lambda x: cnp.sum(f(x) ** 2)
    assert cr.jacfwd(scalar)(x).shape == cr.jacrev(scalar)(x).shape == (2, 3)
    assert cr.jacrev(lambda s: s * np.arange(3.0))(np.array(2.0)).shape == (3,)


# ------------------------------------------------------------------------------------------------
# Pytrees
# ------------------------------------------------------------------------------------------------


def _mlp_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "layer1": {"w": rng.standard_normal((4, 6)) / 2, "b": rng.standard_normal(6) / 4},
        "layer2": {"w": rng.standard_normal((6, 3)) / 2, "b": rng.standard_normal(3) / 4},
    }


def _mlp(params, inputs):
    hidden = cnp.tanh(inputs @ params["layer1"]["w"] + params["layer1"]["b"])
    return hidden @ params["layer2"]["w"] + params["layer2"]["b"]


INPUTS = np.random.default_rng(3).standard_normal((5, 4))
LABELS = np.array([0, 2, 1, 1, 0])


def _loss(params):
    return cnp.mean(cnp.softmax_cross_entropy(_mlp(params, INPUTS), LABELS))


def test_jacobian_with_respect_to_a_parameter_pytree():
    params = _mlp_params()
    f = lambda p: _mlp(p, INPUTS)  # pytree -> (5, 3)
    theta, unravel = cr.ravel_pytree(params)
    expected_flat = numerical_jacobian(lambda t: f(unravel(t)), theta)  # (5, 3, P)
    for transform in (cr.jacfwd, cr.jacrev, cr.jacobian):
        jac = transform(f)(params)
        assert set(jac) == {"layer1", "layer2"} and set(jac["layer1"]) == {"w", "b"}
        assert jac["layer1"]["w"].shape == (5, 3, 4, 6) and jac["layer2"]["b"].shape == (5, 3, 3)
        flat = np.concatenate([block.reshape(5, 3, -1) for block in cr.tree_leaves(jac)], axis=-1)
        np.testing.assert_allclose(flat, expected_flat, rtol=1e-6, atol=1e-8)


def test_jacobian_of_a_pytree_output_nests_output_then_input():
    f = lambda p, x: {
        "sum": cnp.sum(p["a"] * x),
        "pair": [p["a"][:2] * 2, x * p["b"]],
        "const": np.ones(2),
    }
    params = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array(0.5)}
    x = np.array([0.1, 0.2, 0.3])
    for transform in (cr.jacfwd, cr.jacrev):
        jac = transform(f, argnums=(0, 1))(params, x)
        assert set(jac) == {"sum", "pair", "const"}
        d_sum_params, d_sum_x = jac["sum"]
        np.testing.assert_allclose(d_sum_params["a"], x)
        assert d_sum_params["b"].shape == () and d_sum_params["b"] == 0.0
        np.testing.assert_allclose(d_sum_x, params["a"])
        d_pair0_params, d_pair0_x = jac["pair"][0]
        np.testing.assert_allclose(d_pair0_params["a"], 2 * np.eye(3)[:2])
        assert d_pair0_x.shape == (2, 3) and not d_pair0_x.any()
        np.testing.assert_allclose(jac["pair"][1][0]["b"], x)
        np.testing.assert_allclose(jac["pair"][1][1], 0.5 * np.eye(3))
        assert jac["const"][1].shape == (2, 3) and not jac["const"][1].any()


def test_argnums_selects_arguments():
    f = lambda a, b, c: a * b + c**2
    a, b, c = np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0])
    np.testing.assert_allclose(cr.jacfwd(f, argnums=1)(a, b, c), np.diag(a))
    np.testing.assert_allclose(cr.jacrev(f, argnums=-1)(a, b, c), np.diag(2 * c))
    da, dc = cr.jacobian(f, argnums=(0, 2))(a, b, c)
    np.testing.assert_allclose(da, np.diag(b))
    np.testing.assert_allclose(dc, np.diag(2 * c))


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="floating-point"):
        cr.jacfwd(lambda x: x * 2)(np.array([1, 2]))
    with pytest.raises(TypeError, match="floating-point"):
        cr.jacrev(lambda x: x * 2)(np.array([1, 2]))
    with pytest.raises(ValueError, match="mode"):
        cr.jacobian(lambda x: x, mode="sideways")
    with pytest.raises(ValueError, match="argnums"):
        cr.jacfwd(lambda x: x, argnums=3)(np.ones(2))
    with pytest.raises(ValueError, match="chunk_size"):
        cr.jacfwd(lambda x: x, chunk_size=0)(np.ones(2))


# ------------------------------------------------------------------------------------------------
# Second order
# ------------------------------------------------------------------------------------------------


def test_hessian_is_symmetric_and_equals_finite_differences_of_the_gradient():
    params = _mlp_params(1)
    theta, unravel = cr.ravel_pytree(params)
    loss = lambda t: _loss(unravel(t))
    hessian = cr.hessian(loss)(theta)
    assert hessian.shape == (theta.size, theta.size)
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-10, atol=1e-12)
    gradient = cr.grad(loss)
    expected = numerical_jacobian(gradient, theta)
    np.testing.assert_allclose(hessian, expected, rtol=1e-5, atol=1e-7)
    for outer, inner in ((cr.jacrev, cr.jacrev), (cr.jacfwd, cr.jacfwd), (cr.jacrev, cr.jacfwd)):
        np.testing.assert_allclose(outer(inner(loss))(theta), hessian, rtol=1e-9, atol=1e-11)


def test_hessian_of_a_pytree_has_blocks_for_every_pair_of_leaves():
    params = _mlp_params(2)
    hessian = cr.hessian(_loss)(params)
    block = hessian["layer1"]["w"]["layer2"]["b"]
    assert block.shape == (4, 6, 3)
    mirrored = hessian["layer2"]["b"]["layer1"]["w"]
    np.testing.assert_allclose(np.moveaxis(mirrored, 0, -1), block, rtol=1e-9, atol=1e-12)


def test_hvp_equals_hessian_times_vector():
    params = _mlp_params(3)
    theta, unravel = cr.ravel_pytree(params)
    loss = lambda t: _loss(unravel(t))
    v = np.random.default_rng(0).standard_normal(theta.size)
    np.testing.assert_allclose(
        cr.hvp(loss, (theta,), (v,)), cr.hessian(loss)(theta) @ v, rtol=1e-9, atol=1e-11
    )
    # On the pytree itself, and with two arguments (a tuple back).
    tangent = unravel(v)
    product = cr.hvp(_loss, (params,), (tangent,))
    np.testing.assert_allclose(
        cr.ravel_pytree(product)[0], cr.hessian(loss)(theta) @ v, rtol=1e-9, atol=1e-11
    )
    f = lambda a, b: cnp.sum(a * a * b)
    a, b = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    ha, hb = cr.hvp(f, (a, b), (np.array([1.0, 0.0]), np.array([0.0, 1.0])))
    np.testing.assert_allclose(ha, [2 * b[0] * 1 + 0, 2 * a[1]])  # d/da (2ab) . (ta, tb)
    np.testing.assert_allclose(hb, [2 * a[0], 0.0])


def test_grad_of_grad_of_grad():
    f = lambda x: cnp.sum(cnp.sin(x) * x**3)
    x = np.array(0.7)
    third = cr.grad(cr.grad(cr.grad(f)))(x)
    s, c = np.sin(x), np.cos(x)
    expected = -c * x**3 - 9 * s * x**2 + 18 * c * x + 6 * s  # d³/dx³ x³ sin x
    np.testing.assert_allclose(third, expected, rtol=1e-12)
    # The same third derivative by every mix of modes.
    np.testing.assert_allclose(cr.jacfwd(cr.jacrev(cr.grad(f)))(x), expected, rtol=1e-12)
    np.testing.assert_allclose(cr.jacrev(cr.jacfwd(cr.jacfwd(f)))(x), expected, rtol=1e-12)


def test_derivatives_of_jacobians():
    """A Jacobian computed inside grad is differentiated like any other value."""
    f = lambda x: cnp.tanh(W_TALL_1 @ x)
    for transform in (cr.jacfwd, cr.jacrev, cr.jacobian):
        penalty = lambda x, t=transform: cnp.sum(t(f)(x) ** 2)
        x = np.array([0.3, -0.2, 0.5])
        np.testing.assert_allclose(
            cr.grad(penalty)(x), cr.numerical_grad(penalty, x), rtol=1e-6, atol=1e-8
        )
