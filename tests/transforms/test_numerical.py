"""Finite differences as a gradient method, and ``check_grads`` catching wrong derivative rules."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.engine.primitives import TABLE

X = np.array([0.3, -1.2, 2.0, 0.7])


def f_sin_exp(x):
    return cnp.sum(cnp.sin(x) * cnp.exp(x))


def df_sin_exp(x):
    return (np.cos(x) + np.sin(x)) * np.exp(x)


# ------------------------------------------------------------------------------------------------
# numerical_grad
# ------------------------------------------------------------------------------------------------


def test_central_differences_are_second_order_accurate():
    # (f(x+h) - f(x-h)) / 2h for f = x³ is exactly 3x² + h²; the forward quotient is 3x² + 3xh + h².
    x, h = np.array([0.5, -2.0, 3.0]), 0.125  # h a power of two: the steps are exact
    central = cr.numerical_grad(lambda v: cnp.sum(v**3), x, method="central", eps=h)
    np.testing.assert_allclose(central, 3 * x**2 + h**2, rtol=1e-13)
    forward = cr.numerical_grad(lambda v: cnp.sum(v**3), x, method="forward", eps=h)
    np.testing.assert_allclose(forward, 3 * x**2 + 3 * x * h + h**2, rtol=1e-13)


def test_default_steps_give_the_expected_accuracy():
    exact = df_sin_exp(X)
    central = cr.numerical_grad(f_sin_exp, X)
    forward = cr.numerical_grad(f_sin_exp, X, method="forward")
    central_error = np.max(np.abs(central - exact) / np.abs(exact))
    forward_error = np.max(np.abs(forward - exact) / np.abs(exact))
    assert central_error < 1e-9  # about eps^(2/3)
    assert 1e-10 < forward_error < 1e-6  # about eps^(1/2)
    assert central_error < forward_error / 10


def test_default_steps_scale_with_the_size_of_x():
    # At |x| ~ 1e4 a fixed absolute step of cbrt(eps) would drown in rounding error.
    x = np.array([1.0e4, -3.0e4])
    central = cr.numerical_grad(lambda v: cnp.sum(v**3), x)
    np.testing.assert_allclose(central, 3 * x**2, rtol=1e-9)
    unscaled = cr.numerical_grad(lambda v: cnp.sum(v**3), x, eps=np.finfo(float).eps ** (1 / 3))
    assert np.max(np.abs(unscaled / (3 * x**2) - 1)) > 10 * np.max(np.abs(central / (3 * x**2) - 1))


def test_numerical_grad_in_single_precision():
    x = X.astype(np.float32)
    gradient = cr.numerical_grad(f_sin_exp, x)
    assert gradient.dtype == np.float32
    np.testing.assert_allclose(gradient, df_sin_exp(X), rtol=2e-3, atol=1e-3)


def test_numerical_grad_of_a_pytree_and_of_integer_inputs():
    params = {"w": np.array([[1.0, 2.0]]), "b": [np.array(0.5)]}
    gradient = cr.numerical_grad(lambda p: cnp.sum(p["w"] ** 2) * p["b"][0], params)
    np.testing.assert_allclose(gradient["w"], [[1.0, 2.0]], rtol=1e-9)
    np.testing.assert_allclose(gradient["b"][0], 5.0, rtol=1e-9)
    # Integer inputs are differentiated as the real numbers they stand for.
    gradient = cr.numerical_grad(lambda v: cnp.sum(v * v), np.array([1, 2, -3]))
    assert gradient.dtype == np.float64
    np.testing.assert_allclose(gradient, [2.0, 4.0, -6.0], rtol=1e-9)


@pytest.mark.parametrize("method, calls", [("central", 2 * 7), ("forward", 7 + 1)])
def test_cost_is_one_or_two_evaluations_per_weight(method, calls):
    count = 0

    def fun(v):
        nonlocal count
        count += 1
        return cnp.sum(v**2)

    cr.numerical_grad(fun, np.ones(7), method=method)
    assert count == calls


def test_numerical_grad_rejects_bad_input():
    with pytest.raises(ValueError, match="'central' or 'forward'"):
        cr.numerical_grad(f_sin_exp, X, method="backward")
    with pytest.raises(TypeError, match=r"scalar, got shape \(4,\)"):
        cr.numerical_grad(cnp.sin, X)


def test_numerical_grad_agrees_with_reverse_mode_on_a_small_network():
    rng = np.random.default_rng(5)
    params = {"w1": rng.standard_normal((3, 4)), "w2": rng.standard_normal((4, 2))}
    data, labels = rng.standard_normal((6, 3)), np.array([0, 1, 1, 0, 1, 0])

    def loss(p):
        return cnp.mean(cnp.softmax_cross_entropy(cnp.gelu(data @ p["w1"]) @ p["w2"], labels))

    numeric = cr.ravel_pytree(cr.numerical_grad(loss, params))[0]
    exact = cr.ravel_pytree(cr.grad(loss)(params))[0]
    np.testing.assert_allclose(numeric, exact, rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# check_grads
# ------------------------------------------------------------------------------------------------


def _numbers(message):
    """The two values of <v, J u> that check_grads reports: finite differences, then the mode's."""
    found = re.findall(r"= (-?\d[\d.e+-]*)", message)
    assert len(found) >= 2, message
    return float(found[0]), float(found[1])


def test_check_grads_passes_on_correct_rules_in_every_mode_and_order():
    cr.check_grads(f_sin_exp, (X,), modes=("rev", "fwd"), order=3)
    cr.check_grads(
        lambda a, b: (a @ b, cnp.tanh(a)), (np.ones((2, 3)) * 0.3, X[:3]), modes=("rev", "fwd")
    )


def test_check_grads_catches_a_wrong_vjp_rule(monkeypatch):
    # 1% too large: reverse mode must fail, forward mode (its own rule) must still pass.
    monkeypatch.setattr(TABLE["sin"], "vjp", (lambda g, out, x: 1.01 * g * cnp.cos(x),))
    with pytest.raises(AssertionError) as error:
        cr.check_grads(f_sin_exp, (X,), modes=("rev",), order=1)
    message = str(error.value)
    assert "rev mode, order 1" in message and "tolerance" in message
    numeric, analytic = _numbers(message)
    assert numeric != analytic
    cr.check_grads(f_sin_exp, (X,), modes=("fwd",), order=1)
    with pytest.raises(AssertionError, match="rev mode"):
        cr.check_grads(f_sin_exp, (X,), modes=("rev", "fwd"), order=1)


def test_the_patched_rule_is_restored_after_the_test():
    # Runs after the test above: the monkeypatched VJP is gone.
    cr.check_grads(f_sin_exp, (X,), modes=("rev", "fwd"), order=2)


def test_check_grads_catches_a_wrong_jvp_rule(monkeypatch):
    monkeypatch.setattr(TABLE["exp"], "jvp", lambda tangents, out, x: tangents[0] * out * 0.9)
    with pytest.raises(AssertionError) as error:
        cr.check_grads(f_sin_exp, (X,), modes=("fwd",), order=1)
    message = str(error.value)
    assert "fwd mode, order 1" in message
    numeric, analytic = _numbers(message)
    assert abs(analytic - numeric) > 1e-3 * abs(numeric)
    cr.check_grads(f_sin_exp, (X,), modes=("rev",), order=1)


def test_check_grads_catches_a_sign_error_in_a_binary_rule(monkeypatch):
    rules = TABLE["subtract"].vjp
    monkeypatch.setattr(
        TABLE["subtract"], "vjp", (rules[0], lambda g, out, x, y: g)
    )  # should be -g
    with pytest.raises(AssertionError, match="rev mode"):
        cr.check_grads(
            lambda a, b: cnp.sum((a - b) ** 2), (X, X[::-1].copy()), modes=("rev",), order=1
        )


def test_check_grads_catches_a_rule_that_is_right_only_to_first_order(monkeypatch):
    # A VJP computed on raw arrays is correct, but invisible to a second differentiation.
    monkeypatch.setattr(TABLE["sin"], "vjp", (lambda g, out, x: g * np.cos(cr.engine.core.raw(x)),))
    cr.check_grads(f_sin_exp, (X,), modes=("rev",), order=1)
    with pytest.raises(AssertionError, match="order 2"):
        cr.check_grads(f_sin_exp, (X,), modes=("rev",), order=2)


def test_check_grads_reports_reverse_and_forward_disagreeing(monkeypatch):
    # Both modes a little off, in opposite directions: with a loosened tolerance each one passes
    # against the finite difference, but the cross-check of reverse against forward does not.
    monkeypatch.setattr(TABLE["exp"], "vjp", (lambda g, out, x: g * out * (1 + 1e-3),))
    monkeypatch.setattr(
        TABLE["exp"], "jvp", lambda tangents, out, x: tangents[0] * out * (1 - 1e-3)
    )
    with pytest.raises(AssertionError, match="by reverse mode = .* but by forward mode = "):
        cr.check_grads(f_sin_exp, (X,), modes=("rev", "fwd"), order=1, rtol=2e-3)


def test_check_grads_cost_does_not_grow_with_the_input_size():
    def counted(size):
        count = 0

        def fun(v):
            nonlocal count
            count += 1
            return cnp.sum(cnp.tanh(v))

        cr.check_grads(fun, (np.linspace(-1, 1, size),), modes=("rev", "fwd"), order=1)
        return count

    assert counted(3) == counted(3000) <= 6


def test_check_grads_in_single_precision_and_on_pytrees():
    x = X.astype(np.float32)
    cr.check_grads(f_sin_exp, (x,), modes=("rev", "fwd"), order=1)
    params = {"w": np.array([[0.5, -1.0], [2.0, 0.1]]), "b": (np.array([0.3, 0.2]),)}
    cr.check_grads(lambda p: cnp.tanh(p["w"] @ p["b"][0]), (params,), modes=("rev", "fwd"), order=2)


def test_check_grads_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'rev' and/or 'fwd'"):
        cr.check_grads(f_sin_exp, (X,), modes=("reverse",))
    with pytest.raises(TypeError, match="floating-point"):
        cr.check_grads(f_sin_exp, (np.arange(3),))
    cr.check_grads(f_sin_exp, X)  # a single array is taken as the one argument
