"""The functional transforms: grad, value_and_grad, vjp, jvp, and their nestings.

Higher derivatives are checked against closed forms, through every nesting: reverse over reverse
(grad of grad), forward over reverse (jvp of grad), reverse over forward (grad of jvp) and forward
over forward.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp

X = np.array([0.3, -1.2, 2.0])


# ------------------------------------------------------------------------------------------------
# First derivatives and what the transforms return
# ------------------------------------------------------------------------------------------------


def test_grad_returns_a_plain_array_of_the_input_shape():
    gradient = cr.grad(lambda x: cnp.sum(cnp.sin(x) * x))(X)
    assert type(gradient) is np.ndarray and gradient.shape == X.shape
    np.testing.assert_allclose(gradient, np.cos(X) * X + np.sin(X))


def test_grad_of_a_scalar_input_is_a_zero_dim_array():
    gradient = cr.grad(lambda t: t**3)(np.array(2.0))
    assert type(gradient) is np.ndarray and gradient.shape == () and gradient == 12.0
    assert cr.grad(lambda t: t * t)(3.0) == 6.0  # Python floats are accepted as well


def test_value_and_grad_returns_both():
    value, gradient = cr.value_and_grad(lambda x: cnp.sum(x**2))(X)
    assert value == pytest.approx(np.sum(X**2))
    assert not isinstance(value, cr.Tensor)
    np.testing.assert_allclose(gradient, 2 * X)


def test_grad_with_respect_to_a_later_argument_and_keyword_arguments():
    def f(x, y, scale=1.0):
        return scale * cnp.sum(x * y * y)

    y = np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(cr.grad(f, argnums=1)(X, y, scale=2.0), 2.0 * 2 * X * y)
    np.testing.assert_allclose(cr.grad(f, argnums=-1)(X, y), 2 * X * y)
    np.testing.assert_allclose(cr.grad(f, argnums=-2)(X, y), y * y)


def test_grad_of_a_function_that_ignores_its_input_is_zero():
    gradient = cr.grad(lambda x: cnp.sum(np.ones(3)))(X)
    np.testing.assert_array_equal(gradient, np.zeros(3))
    gradient = cr.grad(lambda x, y: cnp.sum(y * 2.0), argnums=0)(X, X)
    np.testing.assert_array_equal(gradient, np.zeros(3))


def test_vjp_returns_one_cotangent_per_primal_and_may_be_called_again():
    def f(x, y):
        return x * y, cnp.sum(x)

    y = np.array([2.0, 0.5, -1.0])
    out, vjp_fun = cr.vjp(f, X, y)
    np.testing.assert_allclose(out[0], X * y)
    assert out[1] == pytest.approx(X.sum())
    ct_x, ct_y = vjp_fun((np.ones(3), np.array(2.0)))
    np.testing.assert_allclose(ct_x, y + 2.0)
    np.testing.assert_allclose(ct_y, X)
    ct_x, ct_y = vjp_fun((np.array([1.0, 0.0, 0.0]), np.array(0.0)))  # the graph is kept
    np.testing.assert_allclose(ct_x, [y[0], 0.0, 0.0])
    np.testing.assert_allclose(ct_y, [X[0], 0.0, 0.0])


def test_vjp_cotangent_must_match_the_output():
    _, vjp_fun = cr.vjp(cnp.sin, X)
    with pytest.raises(
        ValueError, match=r"cotangent of shape \(2,\) for an output of shape \(3,\)"
    ):
        vjp_fun(np.ones(2))


def test_jvp_is_the_directional_derivative():
    direction = np.array([1.0, 0.0, -2.0])
    out, tangent = cr.jvp(lambda x: cnp.exp(x) * x, (X,), (direction,))
    np.testing.assert_allclose(out, np.exp(X) * X)
    np.testing.assert_allclose(tangent, np.exp(X) * (1 + X) * direction)


def test_jvp_with_several_primals_and_a_constant_output():
    out, tangent = cr.jvp(lambda x, y: (x * y, np.ones(2)), (X, 2.0 * X), (np.ones(3), np.zeros(3)))
    np.testing.assert_allclose(out[0], 2 * X * X)
    np.testing.assert_allclose(tangent[0], 2 * X)
    np.testing.assert_array_equal(tangent[1], np.zeros(2))


def test_jvp_and_vjp_agree_on_a_jacobian():
    # <v, J u> is the same number whichever side the Jacobian is applied from.
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3))

    def f(x):
        return cnp.tanh(w @ x) * cnp.sum(x * x)

    u, v = rng.standard_normal(3), rng.standard_normal(4)
    _, ju = cr.jvp(f, (X,), (u,))
    _, vjp_fun = cr.vjp(f, X)
    (vj,) = vjp_fun(v)
    assert np.dot(v, ju) == pytest.approx(np.dot(vj, u), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Second and third derivatives against closed forms
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "f, second",
    [
        (lambda x: x**3, lambda x: 6 * x),
        (lambda x: cnp.sin(x) * cnp.exp(x), lambda x: 2 * np.cos(x) * np.exp(x)),
        (lambda x: cnp.tanh(x), lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
        (lambda x: cnp.log(x * x + 1), lambda x: 2 * (1 - x**2) / (1 + x**2) ** 2),
        (lambda x: cnp.sigmoid(x), lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s) * (1 - 2 * s)),
        (lambda x: cnp.sqrt(x * x + 4.0), lambda x: 4.0 / (x * x + 4.0) ** 1.5),
        (lambda x: x / (1 + x * x), lambda x: 2 * x * (x * x - 3) / (1 + x * x) ** 3),
    ],
    ids=["cube", "sin*exp", "tanh", "log(x²+1)", "sigmoid", "sqrt(x²+4)", "x/(1+x²)"],
)
@pytest.mark.parametrize("x", [-1.3, 0.4, 2.1])
def test_second_derivative_by_every_nesting(f, second, x):
    x = np.array(x)
    expected = second(x)
    one = np.array(1.0)
    reverse_over_reverse = cr.grad(cr.grad(f))(x)
    forward_over_reverse = cr.jvp(cr.grad(f), (x,), (one,))[1]
    reverse_over_forward = cr.grad(lambda t: cr.jvp(f, (t,), (one,))[1])(x)
    forward_over_forward = cr.jvp(lambda t: cr.jvp(f, (t,), (one,))[1], (x,), (one,))[1]
    tensor = cr.Tensor(x, requires_grad=True)
    f(tensor).backward(create_graph=True)
    first = tensor.grad
    tensor.grad = None
    first.backward()
    for name, got in [
        ("grad(grad)", reverse_over_reverse),
        ("jvp(grad)", forward_over_reverse),
        ("grad(jvp)", reverse_over_forward),
        ("jvp(jvp)", forward_over_forward),
        ("backward(create_graph=True)", tensor.grad),
    ]:
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-12), name


def test_third_and_fourth_derivatives():
    f = lambda x: x**4 + cnp.sin(x)  # noqa: E731
    x = np.array(0.7)
    assert cr.grad(cr.grad(cr.grad(f)))(x) == pytest.approx(24 * 0.7 - np.cos(0.7))
    assert cr.grad(cr.grad(cr.grad(cr.grad(f))))(x) == pytest.approx(24 + np.sin(0.7))


def test_hessian_vector_products_of_a_coupled_function():
    # f(x) = (x·x)², ∇f = 4 (x·x) x, H = 4 (x·x) I + 8 x xᵀ
    def f(x):
        return cnp.sum(x * x) ** 2

    v = np.array([1.0, -2.0, 0.5])
    hessian = 4 * X.dot(X) * np.eye(3) + 8 * np.outer(X, X)
    expected = hessian @ v
    np.testing.assert_allclose(cr.jvp(cr.grad(f), (X,), (v,))[1], expected, rtol=1e-12)
    np.testing.assert_allclose(
        cr.grad(lambda x: cnp.sum(cr.grad(f)(x) * v))(X), expected, rtol=1e-12
    )
    np.testing.assert_allclose(cr.grad(lambda x: cr.jvp(f, (x,), (v,))[1])(X), expected, rtol=1e-12)
    _, vjp_fun = cr.vjp(cr.grad(f), X)
    np.testing.assert_allclose(vjp_fun(v)[0], expected, rtol=1e-12)  # H is symmetric


def test_hessian_of_a_matrix_function():
    # f(A) = log det A for symmetric positive definite A: ∇f = A⁻ᵀ, d∇f[V] = -A⁻¹ V A⁻¹ (transposed)
    a = np.array([[3.0, 0.5, 0.2], [0.5, 2.0, 0.1], [0.2, 0.1, 1.5]])
    v = np.array([[0.1, -0.2, 0.0], [0.3, 0.0, 0.5], [0.0, 0.2, -0.1]])
    inverse = np.linalg.inv(a)
    gradient = cr.grad(lambda m: cnp.log(cnp.linalg.det(m)))(a)
    np.testing.assert_allclose(gradient, inverse.T, rtol=1e-12)
    _, hvp = cr.jvp(cr.grad(lambda m: cnp.log(cnp.linalg.det(m))), (a,), (v,))
    np.testing.assert_allclose(hvp, -(inverse @ v @ inverse).T, rtol=1e-10)


def test_nested_transforms_keep_their_perturbations_apart():
    # d/dx [x · d/dy (x + y)] = d/dx [x · 1] = 1; mixing the two levels would give 2.
    def outer(x):
        inner = cr.grad(lambda y: x + y)(np.array(1.0))
        return x * inner

    assert cr.grad(outer)(np.array(3.0)) == 1.0
    # d/dx [x · d/dy (x · y)] = d/dx x² = 2x
    assert cr.grad(lambda x: x * cr.grad(lambda y: x * y)(np.array(1.0)))(np.array(3.0)) == 6.0
    _, tangent = cr.jvp(
        lambda x: x * cr.jvp(lambda y: x * y, (np.array(1.0),), (np.array(1.0),))[1],
        (np.array(3.0),),
        (np.array(1.0),),
    )
    assert tangent == 6.0


def test_grad_inside_eager_tensor_code():
    # A functional gradient taken on a value computed from an eager Tensor records onto it.
    w = cr.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    inner_grad = cr.grad(lambda x: cnp.sum(x * x * w))(np.array([2.0, 3.0]))  # 2 x w
    assert isinstance(inner_grad, cr.Tensor)
    np.testing.assert_allclose(inner_grad.numpy(), [2.0, -6.0])
    inner_grad.sum().backward()  # d/dw sum(2 x w) = 2 x
    np.testing.assert_allclose(w.grad, [4.0, 6.0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_value_and_grad_of_a_numpy_scalar_loss_seeds_one_in_its_dtype_and_returns_arrays(dtype):
    # A scalar loss comes out of NumPy as a scalar (np.float32, ...): the value handed back is a
    # 0-d array of that dtype, and the seed of the pass is 1 in it (the gradient keeps the
    # parameter's dtype, and equals the one a non-scalar seed path gives).
    x = np.array([1.0, -2.0, 3.0], dtype=dtype)
    value, gradient = cr.value_and_grad(lambda v: cnp.sum(v * v))(x)
    assert type(value) is np.ndarray and value.shape == () and value.dtype == x.dtype
    assert value == np.sum(x * x)
    assert gradient.dtype == x.dtype
    np.testing.assert_array_equal(gradient, 2 * x)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_grad_of_a_function_with_a_non_floating_output_names_the_dtype(dtype):
    with pytest.raises(TypeError, match=f"floating-point output, got dtype {np.dtype(dtype)}"):
        cr.grad(lambda v: cnp.sum(v).astype(dtype))(np.array([1.0, 2.0]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_seed_of_a_traced_output_is_one_of_its_shape_and_dtype(dtype):
    # An inner grad's output is a tracer of the outer level (grad of grad, hvp, nested descents):
    # its seed is 1 of the shape and dtype the tracer shows, whether the plain array under it has
    # that shape (a Dual, a Tensor) or carries a batch axis (under vmap).
    from chainrule.engine.batching import Batched
    from chainrule.engine.forward import Dual
    from chainrule.transforms.api import _nested_seed

    for traced in [
        Dual(np.asarray(2.0, dtype), np.asarray(1.0, dtype), 99),
        Dual(dtype(2.0), dtype(1.0), 99),
        Dual(np.full((1,), 2.0, dtype), np.ones((1,), dtype), 99),
        Batched(np.full((3,), 2.0, dtype), 99),
    ]:
        seed = _nested_seed(traced)
        assert isinstance(seed, np.ndarray) and seed.dtype == dtype
        assert seed.shape == traced.shape
        np.testing.assert_array_equal(seed, np.ones(seed.shape, dtype))
    # The nested passes that use it: exact second derivatives in every dtype.
    x = np.asarray([0.5, 1.5], dtype)
    hess_diag = cr.grad(lambda a: cnp.sum(cr.grad(lambda b: cnp.sum(b * b * b))(a)))(x)
    assert hess_diag.dtype == dtype
    np.testing.assert_array_equal(hess_diag, (6 * x).astype(dtype))
