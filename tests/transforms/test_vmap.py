"""``vmap``: its axis specs, how it composes with the other transforms, and its errors.

(Every primitive under vmap, forward, gradient and JVP, is checked by the table walk in
``test_vmap_grid.py``.)"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp

RNG = np.random.default_rng(0)


def _mlp_params(sizes=(8, 16, 5)):
    rng = np.random.default_rng(1)
    return {
        "w": [rng.normal(size=(a, b)) * 0.4 for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
        "b": [rng.normal(size=b) * 0.1 for b in sizes[1:]],
    }


def _example_loss(params, x, label):
    """Cross-entropy of a ReLU MLP on ONE example: x of shape (8,), an integer label."""
    h = x
    for i, (w, b) in enumerate(zip(params["w"], params["b"], strict=True)):
        h = h @ w + b
        if i < len(params["w"]) - 1:
            h = cnp.relu(h)
    return cnp.softmax_cross_entropy(h, label)


def test_per_example_gradients_of_an_mlp_equal_a_loop_of_grad():
    params = _mlp_params()
    x, labels = RNG.normal(size=(7, 8)), RNG.integers(0, 5, size=7)
    per_example = cr.vmap(cr.grad(_example_loss), in_axes=(None, 0, 0))(params, x, labels)
    for i in range(7):
        one = cr.grad(_example_loss)(params, x[i], labels[i])
        for got, want in zip(cr.tree_leaves(per_example), cr.tree_leaves(one), strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-14)
    # Their mean is the gradient of the mean loss over the batch.
    mean_loss = lambda p: cnp.mean(cr.vmap(_example_loss, in_axes=(None, 0, 0))(p, x, labels))  # noqa: E731
    batch_grad = cr.grad(mean_loss)(params)
    for got, want in zip(cr.tree_leaves(per_example), cr.tree_leaves(batch_grad), strict=True):
        np.testing.assert_allclose(got.mean(axis=0), want, rtol=1e-12, atol=1e-14)


def test_in_axes_and_out_axes_move_the_batch_axis():
    a, b = RNG.normal(size=(3, 4)), RNG.normal(size=(3,))
    out = cr.vmap(lambda u, v: u * v, in_axes=(1, None))(a, b)  # a batch of 4 columns
    np.testing.assert_allclose(out, (a * b[:, None]).T)
    out = cr.vmap(lambda u, v: u * v, in_axes=(1, None), out_axes=1)(a, b)
    np.testing.assert_allclose(out, a * b[:, None])
    out = cr.vmap(lambda u: cnp.sum(u), in_axes=-1)(a)
    np.testing.assert_allclose(out, a.sum(axis=0))
    both = cr.vmap(lambda u: (u, cnp.sum(u)), out_axes=(1, 0))(a)
    np.testing.assert_allclose(both[0], a.T)
    np.testing.assert_allclose(both[1], a.sum(axis=1))


def test_in_axes_as_a_pytree_prefix():
    tree = {"x": RNG.normal(size=(5, 3)), "scale": np.array(2.0), "pair": [np.ones(5), np.ones(2)]}

    def fun(t):
        return t["x"] * t["scale"] + t["pair"][0] + cnp.sum(t["pair"][1])

    spec = {"x": 0, "scale": None, "pair": [0, None]}
    out = cr.vmap(fun, in_axes=(spec,))(tree)
    np.testing.assert_allclose(out, tree["x"] * 2.0 + 1.0 + 2.0)
    Point = namedtuple("Point", "x y")
    point = Point(RNG.normal(size=(4, 2)), RNG.normal(size=(2,)))
    out = cr.vmap(lambda p: p.x - p.y, in_axes=(Point(0, None),))(point)
    np.testing.assert_allclose(out, point.x - point.y)


def test_keyword_arguments_are_batched_along_axis_0_as_in_jax():
    a, b = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    out = cr.vmap(lambda u, scale=None: u * scale, in_axes=(1,))(a.T.copy(), scale=b)
    np.testing.assert_allclose(out, a * b)
    with pytest.raises(ValueError, match=r"argument 0 has size 2, keyword argument 'scale' has"):
        cr.vmap(lambda u, scale=None: u * scale)(np.ones((2, 3)), scale=np.ones((3, 3)))


def test_outputs_keep_their_pytree_and_unbatched_outputs_are_broadcast():
    x = RNG.normal(size=(3, 2))
    out = cr.vmap(lambda u: {"same": np.ones(2), "double": 2 * u})(x)
    np.testing.assert_allclose(out["same"], np.ones((3, 2)))
    np.testing.assert_allclose(out["double"], 2 * x)
    constant = cr.vmap(lambda u: np.arange(2.0), in_axes=None, axis_size=4)(x)
    assert constant.shape == (4, 2)
    kept = cr.vmap(lambda u: (u, np.arange(2.0)), out_axes=(0, None))(x)
    np.testing.assert_allclose(kept[1], np.arange(2.0))


def test_nested_vmap_is_a_batch_of_batches():
    a, b = RNG.normal(size=(3, 5)), RNG.normal(size=(4, 5))
    pairwise = cr.vmap(cr.vmap(lambda u, v: cnp.dot(u, v), in_axes=(None, 0)), in_axes=(0, None))
    np.testing.assert_allclose(pairwise(a, b), a @ b.T, rtol=1e-12)
    stack = RNG.normal(size=(2, 3, 4))
    np.testing.assert_allclose(cr.vmap(cr.vmap(cnp.max))(stack), stack.max(axis=-1))


def test_vmap_composes_with_jvp_jacobians_hessians_and_grad_outside():
    xs = RNG.normal(size=(4, 3))
    fun = lambda z: cnp.sin(z) * cnp.maximum(z, 0.0)  # noqa: E731
    for transform in (cr.jacrev, cr.jacfwd):
        batched = cr.vmap(transform(fun))(xs)
        np.testing.assert_allclose(batched, np.stack([transform(fun)(z) for z in xs]))
    scalar = lambda z: cnp.sum(cnp.tanh(z) ** 3)  # noqa: E731
    np.testing.assert_allclose(
        cr.vmap(cr.hessian(scalar))(xs), np.stack([cr.hessian(scalar)(z) for z in xs])
    )
    tangents = RNG.normal(size=(4, 3))
    pushed = cr.vmap(lambda z, t: cr.jvp(fun, (z,), (t,))[1])(xs, tangents)
    np.testing.assert_allclose(
        pushed, np.stack([cr.jvp(fun, (z,), (t,))[1] for z, t in zip(xs, tangents, strict=True)])
    )
    # grad outside vmap: the batched function differentiated as a whole.
    total = lambda z: cnp.sum(cr.vmap(scalar)(z))  # noqa: E731
    np.testing.assert_allclose(cr.grad(total)(xs), 3 * np.tanh(xs) ** 2 / np.cosh(xs) ** 2)
    # grad of grad under vmap: per-example second derivatives of a 1-d function.
    second = cr.vmap(cr.grad(cr.grad(lambda t: cnp.sin(t) * t)))(np.linspace(-1, 1, 5))
    t = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(second, 2 * np.cos(t) - t * np.sin(t), rtol=1e-12)


def test_vmap_of_the_tensor_api():
    w = cr.tensor(RNG.normal(size=3), requires_grad=True)
    xs = RNG.normal(size=(4, 3))
    losses = cr.vmap(lambda x: cnp.sum(cnp.tanh(w * x)))(xs)
    cnp.sum(losses).backward()
    np.testing.assert_allclose(w.grad, (xs / np.cosh(w.data * xs) ** 2).sum(axis=0), rtol=1e-12)


def test_batch_sizes_that_disagree_name_the_arguments_and_sizes():
    with pytest.raises(
        ValueError, match=r"different sizes: argument 0 has size 3, argument 1 has size 4"
    ):
        cr.vmap(lambda u, v: u + v)(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"axis_size is 5.*argument 0 has size 3"):
        cr.vmap(lambda u: u, axis_size=5)(np.ones(3))
    with pytest.raises(ValueError, match=r"argument 1 leaf 1 has size 2"):
        cr.vmap(lambda u, t: u + t[1])(np.ones((3, 2)), [np.ones((3, 2)), np.ones((2, 2))])


def test_bad_axis_specs_are_errors_naming_the_argument():
    def per_row(u):
        return u

    with pytest.raises(ValueError, match=r"vmap of per_row: argument 0 has 2 dimension\(s\), so"):
        cr.vmap(per_row, in_axes=2)(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"in_axes has 1 entries but the function got 2"):
        cr.vmap(lambda u, v: u, in_axes=(0,))(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"argument 0 is a float without axes"):
        cr.vmap(lambda u: u)(1.0)
    with pytest.raises(ValueError, match=r"argument 0 is an array of shape \(3,\), but its axis "):
        cr.vmap(lambda u: u, in_axes=({"a": 0},))(np.ones(3))
    with pytest.raises(TypeError, match=r"an axis spec must be an int, None"):
        cr.vmap(lambda u: u, in_axes=("0",))(np.ones(3))
    with pytest.raises(TypeError, match=r"not a list"):
        cr.vmap(lambda u: u, in_axes=[0])(np.ones(3))
    with pytest.raises(ValueError, match=r"no argument is batched.*axis_size"):
        cr.vmap(lambda u: u, in_axes=None)(np.ones(3))
    with pytest.raises(ValueError, match=r"out_axes 3 is out of range for output leaf 0"):
        cr.vmap(lambda u: u, out_axes=3)(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"output leaf 0 depends on the batch.*out_axes is None"):
        cr.vmap(lambda u: u, out_axes=None)(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"keyword argument 'v' is a int without axes"):
        cr.vmap(lambda u, v=1: u)(np.ones(3), v=2)
    with pytest.raises(TypeError, match=r"output leaf 0 is a str"):
        cr.vmap(lambda u: "text")(np.ones(3))


def test_python_control_flow_on_a_batched_value_is_a_clear_error():
    with pytest.raises(TypeError, match=r"no single truth value.*where"):
        cr.vmap(lambda u: u if cnp.sum(u) > 0 else -u)(np.ones((3, 2)))
    # The batched way: where.
    xs = np.array([[1.0, 2.0], [-3.0, 1.0]])
    out = cr.vmap(lambda u: cnp.where(cnp.sum(u) > 0, u, -u))(xs)
    np.testing.assert_allclose(out, [[1.0, 2.0], [3.0, -1.0]])


def test_per_example_gradients_at_float32_keep_the_dtype():
    params = {k: [a.astype(np.float32) for a in v] for k, v in _mlp_params().items()}
    x = RNG.normal(size=(4, 8)).astype(np.float32)
    labels = RNG.integers(0, 5, size=4)
    grads = cr.vmap(cr.grad(_example_loss), in_axes=(None, 0, 0))(params, x, labels)
    assert all(leaf.dtype == np.float32 for leaf in cr.tree_leaves(grads))


def test_indices_and_stop_gradient_computed_from_batched_values():
    xs = RNG.normal(size=(4, 5))
    weights = np.arange(5.0)
    # sort reads each example's order from its values: a batch of index arrays.
    sorted_loss = lambda x: cnp.sum(cnp.sort(x) * weights)  # noqa: E731
    np.testing.assert_allclose(cr.vmap(cnp.sort)(xs), np.sort(xs, axis=1))
    np.testing.assert_allclose(
        cr.vmap(cr.grad(sorted_loss))(xs), np.stack([cr.grad(sorted_loss)(x) for x in xs])
    )
    picks = RNG.integers(0, 5, size=(4, 3))
    np.testing.assert_allclose(
        cr.vmap(lambda x, i: x[i])(xs, picks), np.take_along_axis(xs, picks, 1)
    )
    np.testing.assert_allclose(
        cr.vmap(lambda x, i: cnp.take(x, i))(xs, picks), np.take_along_axis(xs, picks, 1)
    )
    gathered = cr.vmap(cr.grad(lambda x, i: cnp.sum(x[i] ** 2)))(xs, picks)
    expected = np.stack(
        [cr.grad(lambda x, i: cnp.sum(x[i] ** 2))(x, i) for x, i in zip(xs, picks, strict=True)]
    )
    np.testing.assert_allclose(gathered, expected)
    # stop_gradient keeps the batch and cuts the derivative, inside and outside vmap.
    frozen = lambda x: cnp.sum(cnp.stop_gradient(x) * x)  # noqa: E731
    np.testing.assert_allclose(cr.vmap(cr.grad(frozen))(xs), xs)
    np.testing.assert_allclose(cr.grad(lambda z: cnp.sum(cr.vmap(frozen)(z)))(xs), xs)
