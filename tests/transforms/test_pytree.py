"""Pytrees: flattening, θ = ravel_pytree(params) and back, and transforms over pytree arguments."""

from __future__ import annotations

from collections import namedtuple

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import chainrule as cr
import chainrule.numpy as cnp

Layer = namedtuple("Layer", ["weight", "bias"])


def nested_params():
    rng = np.random.default_rng(0)
    return {
        "encoder": [
            Layer(rng.standard_normal((3, 2)), rng.standard_normal(2)),
            Layer(rng.standard_normal((2, 2)), None),
        ],
        "head": (rng.standard_normal(2), {"scale": np.array(1.5), "offset": np.float64(-0.5)}),
    }


def assert_trees_equal(actual, expected):
    actual_leaves, actual_def = cr.tree_flatten(actual)
    expected_leaves, expected_def = cr.tree_flatten(expected)
    assert actual_def == expected_def, f"{actual_def} != {expected_def}"
    for got, want in zip(actual_leaves, expected_leaves, strict=True):
        assert np.shape(got) == np.shape(want)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------------
# Flattening and ravel_pytree
# ------------------------------------------------------------------------------------------------


def test_flatten_order_and_structure():
    tree = {"b": [1.0, (2.0, None)], "a": Layer(3.0, 4.0), "c": {}}
    leaves, treedef = cr.tree_flatten(tree)
    assert leaves == [
        3.0,
        4.0,
        1.0,
        2.0,
    ]  # dict keys sorted; None and empty containers hold no leaf
    rebuilt = cr.tree_unflatten(treedef, leaves)
    assert rebuilt == tree and type(rebuilt["a"]) is Layer and rebuilt["c"] == {}
    assert repr(treedef) == "dict(Layer(*, *), list(*, tuple(*, None)), dict())"
    with pytest.raises(ValueError, match="needs 4 leaves, got 3"):
        cr.tree_unflatten(treedef, leaves[:3])


def test_structures_that_differ_compare_unequal():
    def structure(tree):
        return cr.tree_flatten(tree)[1]

    assert structure([1, 2]) == structure([5, 6])
    assert structure([1, 2]) != structure((1, 2))
    assert structure([1, 2]) != structure([1, [2]])
    assert structure({"a": 1}) != structure({"b": 1})
    assert structure(Layer(1, 2)) != structure((1, 2))
    assert structure([1, None]) != structure([1, 2])


def test_ravel_round_trip_on_nested_containers():
    params = nested_params()
    theta, unravel = cr.ravel_pytree(params)
    assert theta.ndim == 1 and theta.size == 6 + 2 + 4 + 2 + 1 + 1
    assert_trees_equal(unravel(theta), params)
    # θ lists the leaves in flattening order.
    expected = np.concatenate([np.ravel(leaf) for leaf in cr.tree_leaves(params)])
    np.testing.assert_array_equal(theta, expected)
    changed = unravel(theta + 1.0)
    np.testing.assert_array_equal(changed["head"][1]["scale"], 2.5)
    assert changed["encoder"][1].bias is None


def test_ravel_round_trip_keeps_mixed_dtypes():
    tree = {
        "single": np.array([1.5, -2.25], dtype=np.float32),
        "double": np.array([[0.1, 0.2]]),
        "count": np.array([3, 4, 5], dtype=np.int64),
        "flag": np.array([True, False]),
    }
    theta, unravel = cr.ravel_pytree(tree)
    assert theta.dtype == np.float64  # the common type holds every leaf exactly
    assert_trees_equal(unravel(theta), tree)


def test_ravel_of_a_single_precision_tree_stays_single_precision():
    tree = [np.ones((2, 2), np.float32), np.zeros(3, np.float32)]
    theta, unravel = cr.ravel_pytree(tree)
    assert theta.dtype == np.float32 and theta.shape == (7,)
    assert_trees_equal(unravel(theta), tree)


def test_ravel_of_empty_and_scalar_trees():
    theta, unravel = cr.ravel_pytree({"nothing": [], "none": None})
    assert theta.shape == (0,)
    assert unravel(theta) == {"nothing": [], "none": None}
    theta, unravel = cr.ravel_pytree(2.5)
    np.testing.assert_array_equal(theta, [2.5])
    assert unravel(np.array([4.0])) == 4.0


def test_ravel_of_a_very_deep_tree():
    tree = np.array([1.0, 2.0])
    depth = 5000
    for level in range(depth):
        tree = [tree, {"leaf": np.array([float(level)])}]
    theta, unravel = cr.ravel_pytree(tree)
    assert theta.shape == (2 + depth,)
    rebuilt = unravel(theta)
    assert cr.tree_flatten(rebuilt)[1] == cr.tree_flatten(tree)[1]  # deep comparison, no recursion
    doubled = cr.tree_map(lambda a, b: a + b, rebuilt, tree)
    np.testing.assert_array_equal(cr.ravel_pytree(doubled)[0], 2 * theta)
    assert repr(cr.tree_flatten(tree)[1]).startswith("list(list(list(")


def test_unravel_checks_the_length():
    _, unravel = cr.ravel_pytree(nested_params())
    with pytest.raises(ValueError, match=r"shape \(16,\), got \(15,\)"):
        unravel(np.zeros(15))


def test_tree_map_over_several_trees_and_structure_mismatch():
    a = {"x": np.array([1.0, 2.0]), "y": [np.array(3.0)]}
    b = {"x": np.array([10.0, 20.0]), "y": [np.array(30.0)]}
    assert_trees_equal(
        cr.tree_map(lambda p, q: p + q, a, b), {"x": np.array([11.0, 22.0]), "y": [np.array(33.0)]}
    )
    with pytest.raises(ValueError, match="structures differ"):
        cr.tree_map(lambda p, q: p + q, a, {"x": np.zeros(2), "y": np.zeros(1)})


@given(
    leaves=st.lists(
        hnp.arrays(
            st.sampled_from([np.float64, np.float32, np.int32]),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
            elements={"allow_nan": False, "allow_infinity": False, "allow_subnormal": False},
        ),
        max_size=5,
    ),
    container=st.sampled_from(["list", "tuple", "dict", "nested"]),
)
def test_ravel_round_trip_on_any_leaves(leaves, container):
    if container == "list":
        tree = leaves
    elif container == "tuple":
        tree = tuple(leaves)
    elif container == "dict":
        tree = {f"k{i}": leaf for i, leaf in enumerate(leaves)}
    else:
        tree = {"first": leaves[:1], "rest": (leaves[1:], {"none": None})}
    theta, unravel = cr.ravel_pytree(tree)
    assert theta.shape == (sum(np.size(leaf) for leaf in leaves),)
    assert_trees_equal(unravel(theta), tree)


# ------------------------------------------------------------------------------------------------
# Transforms over pytrees
# ------------------------------------------------------------------------------------------------


def mlp_loss(params, inputs):
    hidden = cnp.tanh(inputs @ params["encoder"][0].weight + params["encoder"][0].bias)
    out = hidden @ params["encoder"][1].weight
    return (
        cnp.sum(out * params["head"][0]) * params["head"][1]["scale"] + params["head"][1]["offset"]
    )


INPUTS = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])


def test_grad_over_a_pytree_has_the_same_structure_and_matches_finite_differences():
    params = nested_params()
    gradient = cr.grad(mlp_loss)(params, INPUTS)
    assert cr.tree_flatten(gradient)[1] == cr.tree_flatten(params)[1]
    assert type(gradient["encoder"][0]) is Layer and gradient["encoder"][1].bias is None
    numeric = cr.numerical_grad(lambda p: mlp_loss(p, INPUTS), params)
    np.testing.assert_allclose(
        cr.ravel_pytree(gradient)[0], cr.ravel_pytree(numeric)[0], rtol=1e-7, atol=1e-9
    )
    assert gradient["head"][1]["offset"] == 1.0
    cr.check_grads(mlp_loss, (params, INPUTS), modes=("rev", "fwd"), order=2)


def test_grad_with_respect_to_theta_through_unravel():
    params = nested_params()
    theta, unravel = cr.ravel_pytree(params)
    by_theta = cr.grad(lambda t: mlp_loss(unravel(t), INPUTS))(theta)
    by_tree = cr.ravel_pytree(cr.grad(mlp_loss)(params, INPUTS))[0]
    np.testing.assert_allclose(by_theta, by_tree, rtol=1e-13)


def test_vjp_and_jvp_over_pytrees():
    params = {"a": np.array([1.0, 2.0]), "b": (np.array(3.0), [np.array([[0.5]])])}

    def f(p):
        return {"sum": cnp.sum(p["a"]) * p["b"][0], "prod": p["a"] * p["b"][1][0][0]}

    out, vjp_fun = cr.vjp(f, params)
    assert out["sum"] == 9.0
    np.testing.assert_array_equal(out["prod"], [0.5, 1.0])
    (cotangent,) = vjp_fun({"sum": np.array(1.0), "prod": np.array([1.0, -1.0])})
    np.testing.assert_allclose(cotangent["a"], [3.0 + 0.5, 3.0 - 0.5])
    np.testing.assert_allclose(cotangent["b"][0], 3.0)
    np.testing.assert_allclose(cotangent["b"][1][0], [[1.0 - 2.0]])
    tangent_in = cr.tree_map(np.ones_like, params)
    out, tangent = cr.jvp(f, (params,), (tangent_in,))
    assert tangent["sum"] == pytest.approx(2 * 3.0 + 3.0)
    np.testing.assert_allclose(tangent["prod"], [1.5, 2.5])
    with pytest.raises(ValueError, match="structure"):
        cr.jvp(f, (params,), ({"a": np.ones(2)},))


def test_has_aux_returns_the_auxiliary_pytree_untraced():
    def loss(w, x):
        prediction = x @ w
        return cnp.sum(prediction**2), {"prediction": prediction, "tag": [np.array(7)]}

    w, x = np.array([1.0, -1.0]), np.array([[1.0, 2.0], [3.0, 5.0]])
    (value, aux), gradient = cr.value_and_grad(loss, has_aux=True)(w, x)
    prediction = x @ w
    assert value == pytest.approx(np.sum(prediction**2))
    assert type(aux["prediction"]) is np.ndarray
    np.testing.assert_array_equal(aux["prediction"], prediction)
    np.testing.assert_array_equal(aux["tag"][0], 7)
    np.testing.assert_allclose(gradient, 2 * x.T @ prediction)
    gradient_only, aux_only = cr.grad(loss, has_aux=True)(w, x)
    np.testing.assert_allclose(gradient_only, gradient)
    np.testing.assert_array_equal(aux_only["prediction"], prediction)
    out, vjp_fun, aux_vjp = cr.vjp(lambda v: loss(v, x), w, has_aux=True)
    np.testing.assert_array_equal(aux_vjp["prediction"], prediction)
    np.testing.assert_allclose(vjp_fun(np.array(1.0))[0], gradient)


def test_argnums_tuples():
    def f(a, b, c):
        return cnp.sum(a * b["x"]) + cnp.sum(c**2) * b["y"]

    a, b, c = (
        np.array([1.0, 2.0]),
        {"x": np.array([3.0, 4.0]), "y": np.array(0.5)},
        np.array([1.0, -1.0]),
    )
    ga, gc = cr.grad(f, argnums=(0, 2))(a, b, c)
    np.testing.assert_allclose(ga, b["x"])
    np.testing.assert_allclose(gc, 2 * c * b["y"])
    (gb,) = cr.grad(f, argnums=(1,))(a, b, c)
    np.testing.assert_allclose(gb["x"], a)
    assert gb["y"] == pytest.approx(2.0)
    value, (ga2, gb2, gc2) = cr.value_and_grad(f, argnums=(0, 1, 2))(a, b, c)
    assert value == pytest.approx(11.0 + 1.0)
    np.testing.assert_allclose(ga2, ga)
    np.testing.assert_allclose(gb2["x"], a)
    np.testing.assert_allclose(gc2, gc)
    (gc_negative,) = cr.grad(f, argnums=(-1,))(a, b, c)
    np.testing.assert_allclose(gc_negative, gc)


def test_grad_over_a_single_precision_pytree():
    params = {"w": np.ones((2, 2), np.float32), "b": [np.zeros(2, np.float32)]}
    gradient = cr.grad(lambda p: cnp.sum(cnp.tanh(p["w"] @ np.ones(2, np.float32) + p["b"][0])))(
        params
    )
    assert gradient["w"].dtype == np.float32 and gradient["b"][0].dtype == np.float32
    np.testing.assert_allclose(gradient["b"][0], np.full(2, 1 - np.tanh(2.0) ** 2), rtol=1e-6)
