"""Reverse mode on eager Tensors: fan-out, deep graphs, second derivatives, dtypes, graph control.

Every expected gradient here is a closed form worked out by hand, never another run of the engine.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp

DEPTH = 100_000


def leaf(value, dtype=np.float64):
    return cr.Tensor(np.asarray(value, dtype=dtype), requires_grad=True)


# ------------------------------------------------------------------------------------------------
# Fan-out: a value feeding several consumers receives the sum of their contributions
# ------------------------------------------------------------------------------------------------


def test_value_used_twice():
    a = leaf([1.5, -2.0])
    (a * a).sum().backward()
    np.testing.assert_allclose(a.grad, 2 * np.array([1.5, -2.0]))


def test_value_used_three_times():
    a = leaf([1.5, -2.0])
    (a * a * a + a).sum().backward()  # d/da (a³ + a) = 3a² + 1
    np.testing.assert_allclose(a.grad, 3 * np.array([1.5, -2.0]) ** 2 + 1)


@pytest.mark.parametrize("uses", [2, 3, 100])
def test_value_used_n_times_through_different_ops(uses):
    value = np.array([0.3, -1.1, 2.0])
    weights = np.linspace(0.5, 2.0, uses)
    a = leaf(value)
    total = cnp.sin(a) * weights[0]
    for w in weights[1:]:
        total = total + cnp.sin(a) * w
    total.sum().backward()
    np.testing.assert_allclose(a.grad, weights.sum() * np.cos(value), rtol=1e-12)


def test_b_is_a_plus_a_and_c_is_b_times_b():
    a = leaf([0.5, -3.0, 2.0])
    b = a + a
    c = b * b  # c = 4a², dc/da = 8a
    c.sum().backward()
    np.testing.assert_allclose(a.grad, 8 * np.array([0.5, -3.0, 2.0]))
    assert b.grad is None and c.grad is None  # only leaves are filled


def test_diamond():
    x_value = 0.7
    x = leaf(x_value)
    top, bottom = cnp.sin(x), cnp.exp(x)
    (top * bottom).backward()  # (sin x e^x)' = (cos x + sin x) e^x
    assert x.grad == pytest.approx((np.cos(x_value) + np.sin(x_value)) * np.exp(x_value), rel=1e-14)


def test_diamond_whose_branches_meet_twice():
    x_value = 1.3
    x = leaf(x_value)
    u, v = x * x, 3 * x
    w = u + v
    z = w * u  # z = x⁴ + 3x³, z' = 4x³ + 9x²
    z.backward()
    assert x.grad == pytest.approx(4 * x_value**3 + 9 * x_value**2, rel=1e-14)


def test_stacked_diamonds_are_linear_time():
    # 60 stacked diamonds have 2**60 paths from the output to the input: a walk that follows
    # paths instead of nodes would never finish.
    a = leaf(2.0)
    y = a
    for _ in range(60):
        y = (y + y) * 0.5
    y.backward()
    assert a.grad == 1.0


def test_fan_out_across_several_leaves():
    a, b = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    (a * b + a / b - b).sum().backward()
    np.testing.assert_allclose(a.grad, [3.0 + 1 / 3.0, -1.0 - 1.0])
    np.testing.assert_allclose(b.grad, [1.0 - 1.0 / 9.0 - 1, 2.0 - 2.0 - 1])


def test_fan_out_through_broadcasting():
    weight = leaf([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    bias = leaf([0.5, -0.5, 1.0])
    out = weight * bias + bias  # bias used twice, both times stretched over rows
    out.sum().backward()
    np.testing.assert_allclose(bias.grad, [1 + 4 + 2, 2 + 5 + 2, 3 + 6 + 2])
    np.testing.assert_allclose(weight.grad, np.broadcast_to([0.5, -0.5, 1.0], (2, 3)))


def test_functional_grad_sums_fan_out_too():
    def f(a):
        b = a + a
        return cnp.sum(b * b) + cnp.sum(a * a * a)

    value = np.array([0.5, -3.0])
    np.testing.assert_allclose(cr.grad(f)(value), 8 * value + 3 * value**2)


# ------------------------------------------------------------------------------------------------
# Deep graphs: no recursion anywhere
# ------------------------------------------------------------------------------------------------


def test_100000_deep_chain_backward_on_tensors():
    factor = 1.00001
    x = leaf(1.0)
    y = x
    for _ in range(DEPTH):
        y = y * factor
    y.backward()
    assert x.grad == pytest.approx(factor**DEPTH, rel=1e-9)


def test_100000_deep_chain_of_general_ops_with_retained_graph():
    x = leaf(0.5)
    y = x
    for _ in range(DEPTH):
        y = cnp.tanh(y)  # through the general dispatch, not the operators' fast path
    y.backward(retain_graph=True)
    first = x.grad
    assert np.isfinite(first) and first > 0
    y.backward()  # the retained graph is walked again, as deep as before
    assert x.grad == pytest.approx(2 * first, rel=1e-12)


def test_100000_deep_chain_functional_grad():
    def f(x):
        for _ in range(DEPTH):
            x = x * 1.00001
        return x

    assert cr.grad(f)(np.array(1.0)) == pytest.approx(1.00001**DEPTH, rel=1e-9)


def test_100000_deep_graph_that_is_never_differentiated_is_freed():
    x = leaf(1.0)
    y = x
    for _ in range(DEPTH):
        y = y + 1.0
    assert y.item() == 1.0 + DEPTH
    del y  # tearing down a 100,000-deep chain of tensors must not overflow the C stack


def test_deep_chain_second_derivative():
    x = leaf(0.5)
    y = x
    steps = 20_000
    for _ in range(steps):
        y = y * 1.0001
    (y * y).backward(create_graph=True)  # (c x)², derivative 2c²x, second derivative 2c²
    first = x.grad
    x.grad = None
    first.backward()
    assert x.grad == pytest.approx(2 * 1.0001 ** (2 * steps), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# Second derivatives against closed forms
# ------------------------------------------------------------------------------------------------


def test_create_graph_gives_a_differentiable_gradient():
    value = np.array([1.5, -2.0])
    x = leaf(value)
    (x**3).sum().backward(create_graph=True)
    first = x.grad
    assert isinstance(first, cr.Tensor) and first.requires_grad
    np.testing.assert_allclose(first.numpy(), 3 * value**2)
    x.grad = None
    first.sum().backward()
    np.testing.assert_allclose(x.grad, 6 * value)


def test_create_graph_mixed_partials():
    x, y = leaf(1.5), leaf(-0.5)
    (x * x * y + cnp.sin(y)).backward(create_graph=True)  # f = x²y + sin y
    dfdx, dfdy = x.grad, y.grad
    assert dfdx.item() == pytest.approx(2 * 1.5 * -0.5) and dfdy.item() == pytest.approx(
        1.5**2 + np.cos(-0.5)
    )
    x.grad = y.grad = None
    dfdx.backward()  # ∂/∂x (2xy) = 2y, ∂/∂y (2xy) = 2x
    assert x.grad == pytest.approx(-1.0) and y.grad == pytest.approx(3.0)
    x.grad = y.grad = None
    dfdy.backward()  # ∂/∂x (x² + cos y) = 2x, ∂/∂y = -sin y
    assert x.grad == pytest.approx(3.0) and y.grad == pytest.approx(-np.sin(-0.5))


def test_create_graph_through_matrix_ops():
    # f(W) = |W x|², ∇f = 2 (W x) xᵀ; sum(∇f) = 2 (1ᵀ W x)(1ᵀ x), whose gradient is 2 (1ᵀx) 1 xᵀ.
    x = np.array([1.0, -2.0, 0.5])
    w = leaf(np.arange(6.0).reshape(2, 3))
    out = w @ x
    (out * out).sum().backward(create_graph=True)
    gradient = w.grad
    np.testing.assert_allclose(gradient.numpy(), 2 * np.outer(w.numpy() @ x, x))
    w.grad = None
    gradient.sum().backward()
    np.testing.assert_allclose(w.grad, 2 * np.outer(np.ones(2), x * x.sum()))


def test_gradient_accumulated_with_create_graph_stays_differentiable():
    x = leaf(2.0)
    (x**3).backward(create_graph=True)
    (x**2).backward(create_graph=True)  # .grad = 3x² + 2x, still a recorded tensor
    total = x.grad
    assert total.item() == pytest.approx(16.0)
    x.grad = None
    total.backward()
    assert x.grad == pytest.approx(6 * 2.0 + 2)


# ------------------------------------------------------------------------------------------------
# dtypes and shapes of gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_have_the_dtype_and_shape_of_their_tensor(dtype):
    rng = np.random.default_rng(0)
    weight = leaf(rng.standard_normal((4, 3)), dtype)
    bias = leaf(rng.standard_normal(3), dtype)
    scale = leaf(1.5, dtype)
    inputs = rng.standard_normal((5, 4)).astype(dtype)
    loss = cnp.mean(cnp.tanh(inputs @ weight + bias) * scale) + cnp.sum(bias**2)
    assert loss.dtype == dtype
    loss.backward()
    for tensor in (weight, bias, scale):
        assert tensor.grad.dtype == dtype
        assert tensor.grad.shape == tensor.shape


def test_float32_parameter_with_float64_data_gets_a_float32_gradient():
    weight = leaf([1.0, 2.0], np.float32)
    data = np.array([0.1, 0.2], dtype=np.float64)  # promotes the forward to float64
    loss = cnp.sum(weight * data)
    assert loss.dtype == np.float64
    loss.backward()
    assert weight.grad.dtype == np.float32
    np.testing.assert_allclose(weight.grad, data.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_gradients_keep_the_dtype(dtype):
    params = {"w": np.ones((2, 3), dtype), "b": np.zeros(3, dtype)}
    grads = cr.grad(lambda p: cnp.sum(cnp.exp(np.ones(2, dtype) @ p["w"] + p["b"])))(params)
    for name in params:
        assert grads[name].dtype == dtype and grads[name].shape == params[name].shape
    np.testing.assert_allclose(grads["b"], np.full(3, np.exp(2.0)), rtol=1e-6)


def test_float32_gradient_is_accurate_to_float32():
    value = np.linspace(-1, 1, 7).astype(np.float32)
    x = leaf(value, np.float32)
    cnp.sum(cnp.sin(x) * x).backward()
    np.testing.assert_allclose(x.grad, np.cos(value) * value + np.sin(value), rtol=1e-6, atol=1e-7)


def test_zero_dimensional_gradients_are_arrays_like_every_other_gradient():
    x = leaf(1.0)
    cnp.sin(x).backward()
    _, vjp_fun = cr.vjp(cnp.sin, np.array(1.0))
    assert isinstance(x.grad, np.ndarray)
    assert isinstance(vjp_fun(np.array(1.0))[0], np.ndarray)


def test_numpy_can_convert_a_scalar_loss():
    loss = (leaf([1.0, 2.0]) * 3).sum()
    assert np.asarray(loss) == 9.0


# ------------------------------------------------------------------------------------------------
# Graph control: retain_graph, no_grad, accumulation, explicit cotangents
# ------------------------------------------------------------------------------------------------


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (cnp.exp(x) * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    np.testing.assert_allclose(first, np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])))
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * first)


def test_grad_accumulates_across_backward_calls_until_zeroed():
    x = leaf([1.0, -1.0])
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [3 + 2, 3 - 2])
    x.zero_grad()
    assert x.grad is None
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_no_grad_stops_recording():
    x = leaf([1.0, 2.0])
    with cr.no_grad():
        y = cnp.sum(cnp.exp(x) * 2 + x)
        assert not y.requires_grad and y.is_leaf
        with cr.enable_grad():
            recorded = (x * x).sum()
        assert recorded.requires_grad
    assert (x * 2).requires_grad  # recording is back on after the block
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    recorded.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(KeyError):
        with cr.no_grad():
            raise KeyError("raised inside the block")
    assert (leaf(1.0) * 2).requires_grad


def test_parameter_update_under_no_grad():
    w = leaf([1.0, 2.0])
    (w * w).sum().backward()
    with cr.no_grad():
        w -= 0.1 * w.grad
    np.testing.assert_allclose(w.numpy(), [0.8, 1.6])
    assert w.requires_grad and w.is_leaf
    w.zero_grad()
    (w * w).sum().backward()  # a graph recorded after the update is fine
    np.testing.assert_allclose(w.grad, [1.6, 3.2])


def test_backward_of_a_non_scalar_with_an_explicit_cotangent():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = x * x
    cotangent = np.array([[1.0, 0.0], [-1.0, 2.0]])
    y.backward(cotangent)
    np.testing.assert_allclose(x.grad, 2 * x.numpy() * cotangent)


def test_only_leaves_that_require_grad_get_a_gradient():
    x, constant = leaf([1.0, 2.0]), cr.Tensor([3.0, 4.0])
    unused = leaf([5.0])
    (x * constant).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 4.0])
    assert constant.grad is None and unused.grad is None


def test_operators_and_methods_record_the_graph():
    value = np.array([[0.5, 1.2, 2.0], [1.5, 0.25, 3.0]])
    x = leaf(value)
    loss = (
        (2.0**x).sum()  # 2^x ln 2
        + (x**3).mean()  # 3x²/6
        + (1.0 / x).sum()  # -1/x²
        + (-x).max()  # -1 at the smallest entry
        + abs(x - 1.0).sum()  # sign(x - 1)
        + (x.T @ np.ones(2)).sum()  # 1
        + x.reshape(6)[::2].sum()  # 1 at even flat positions
        + x.sqrt().log().sum()  # 1/(2x)
    )
    loss.backward()
    expected = (
        2.0**value * np.log(2.0)
        + value**2 / 2
        - 1 / value**2
        + np.sign(value - 1)
        + 1
        + 1 / (2 * value)
    )
    expected[1, 1] -= 1.0
    expected.reshape(-1)[::2] += 1
    np.testing.assert_allclose(x.grad, expected, rtol=1e-13)


def test_comparisons_return_plain_boolean_arrays():
    x = leaf([1.0, 2.0])
    for result in (x < 1.5, x <= 1.0, x > 1.0, x >= 2.0, x == 1.0, x != 1.0):
        assert isinstance(result, np.ndarray) and result.dtype == bool


def test_indexed_assignment_on_a_tensor_without_grad_then_use():
    data = cr.Tensor(np.zeros(3))
    data[1] = 5.0
    x = leaf([1.0, 1.0, 1.0])
    (x * data).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 5.0, 0.0])


def test_detach_cuts_the_graph():
    x = leaf([2.0])
    (x * x.detach()).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0])
