"""custom_vjp / custom_jvp against central finite differences in float64, and misuse errors."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.transforms.numerical import check_grads, numerical_grad

RNG = np.random.default_rng(0)
X = RNG.normal(size=3)
Y = RNG.normal(size=3)


def _softplus_vjp():
    @cr.custom_vjp
    def softplus(x):
        return cnp.log1p(cnp.exp(x))

    def fwd(x):
        return softplus(x), x

    def bwd(x, g):
        return (g / (1.0 + cnp.exp(-x)),)

    softplus.defvjp(fwd, bwd)
    return softplus


def test_custom_vjp_plain_call_runs_fun():
    calls = []

    @cr.custom_vjp
    def f(x):
        calls.append("fun")
        return x * 2.0

    f.defvjp(lambda x: (calls.append("fwd") or x * 2.0, None), lambda r, g: (2.0 * g,))
    np.testing.assert_allclose(f(X), 2 * X)
    assert calls == ["fun"]


def test_custom_vjp_grad_matches_finite_differences():
    softplus = _softplus_vjp()
    loss = lambda x: cnp.sum(softplus(x) ** 2)  # noqa: E731
    np.testing.assert_allclose(cr.grad(loss)(X), numerical_grad(loss, X), rtol=1e-7)
    check_grads(loss, (X,), order=1, modes=("rev",))


def test_custom_vjp_second_order():
    softplus = _softplus_vjp()
    inner = lambda x: cnp.sum(softplus(x) ** 3)  # noqa: E731
    outer = lambda x: cnp.sum(cr.grad(inner)(x) ** 2)  # noqa: E731
    np.testing.assert_allclose(cr.grad(outer)(X), numerical_grad(outer, X), rtol=1e-6)


def test_custom_vjp_pytrees_and_nondiff_argnums():
    @cr.custom_vjp
    def f(scale, params):
        return {"a": cnp.sin(params["w"]) * scale, "b": params["w"] * params["v"]}

    def fwd(scale, params):
        return f(scale, params), params

    def bwd(scale, params, g):
        w, v = params["w"], params["v"]
        return ({"v": g["b"] * w, "w": g["a"] * scale * cnp.cos(w) + g["b"] * v},)

    f.__init__(f.fun, nondiff_argnums=(0,))
    f.defvjp(fwd, bwd)

    def loss(p):
        out = f(1.5, p)
        return cnp.sum(out["a"] ** 2) + cnp.sum(cnp.tanh(out["b"]))

    params = {"w": X, "v": Y}
    got = cr.grad(loss)(params)
    flat = lambda w: loss({"w": w, "v": Y})  # noqa: E731
    np.testing.assert_allclose(got["w"], numerical_grad(flat, X), rtol=1e-7)
    flat_v = lambda v: loss({"w": X, "v": v})  # noqa: E731
    np.testing.assert_allclose(got["v"], numerical_grad(flat_v, Y), rtol=1e-7)


def test_custom_vjp_tensor_backward():
    softplus = _softplus_vjp()
    t = cr.tensor(X.copy(), requires_grad=True)
    cnp.sum(softplus(t)).backward()
    np.testing.assert_allclose(t.grad, 1 / (1 + np.exp(-X)), rtol=1e-12)


def test_custom_vjp_rule_is_used():
    @cr.custom_vjp
    def clip_gradient(x):
        return x

    clip_gradient.defvjp(lambda x: (x, None), lambda r, g: (cnp.clip(g, -1.0, 1.0),))
    got = cr.grad(lambda x: cnp.sum(5.0 * clip_gradient(x)))(X)
    np.testing.assert_array_equal(got, np.ones(3))


def test_custom_vjp_forward_mode_is_a_type_error():
    softplus = _softplus_vjp()
    with pytest.raises(TypeError, match="forward-mode.*custom_vjp.*softplus"):
        cr.jvp(softplus, (X,), (Y,))


@pytest.mark.parametrize(
    ("bwd", "error", "match"),
    [
        (lambda r, g: (g, g), TypeError, r"softplus.*tuple of 1"),
        (lambda r, g: (g[:2],), ValueError, r"softplus.*shape \(2,\), expected \(3,\)"),
        (lambda r, g: (g.astype(np.float32),), TypeError, r"softplus.*float32.*float64"),
    ],
)
def test_custom_vjp_bad_rule_names_function_and_shapes(bwd, error, match):
    @cr.custom_vjp
    def softplus(x):
        return cnp.log1p(cnp.exp(x))

    softplus.defvjp(lambda x: (softplus(x), None), bwd)
    with pytest.raises(error, match=match):
        cr.grad(lambda x: cnp.sum(softplus(x)))(X)


def test_custom_vjp_without_rules():
    @cr.custom_vjp
    def f(x):
        return x

    with pytest.raises(TypeError, match="defvjp"):
        cr.grad(lambda x: cnp.sum(f(x)))(X)


def _log1pexp_jvp():
    @cr.custom_jvp
    def log1pexp(x, y):
        return cnp.log1p(cnp.exp(x)) * y

    @log1pexp.defjvp
    def rule(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        out = log1pexp(x, y)
        return out, tx * y / (1.0 + cnp.exp(-x)) + ty * cnp.log1p(cnp.exp(x))

    return log1pexp


def test_custom_jvp_every_mode_against_finite_differences():
    f = _log1pexp_jvp()
    loss = lambda x: cnp.sum(cnp.tanh(f(x, Y)))  # noqa: E731
    np.testing.assert_allclose(cr.grad(loss)(X), numerical_grad(loss, X), rtol=1e-7)
    check_grads(loss, (X,), order=2, modes=("fwd", "rev"))
    check_grads(lambda y: cnp.sum(f(X, y) ** 2), (Y,), order=2, modes=("fwd", "rev"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_custom_jvp_rule_is_used_in_reverse_mode():
    f = _log1pexp_jvp()
    got = cr.grad(lambda x: cnp.sum(f(x, np.ones(2))))(np.array([0.0, 800.0]))
    np.testing.assert_allclose(got, [0.5, 1.0])  # the naive formula gives nan at 800


def test_custom_jvp_second_order_and_tensor_backward():
    f = _log1pexp_jvp()
    inner = lambda x: cnp.sum(f(x, Y) ** 3)  # noqa: E731
    outer = lambda x: cnp.sum(cr.grad(inner)(x) ** 2)  # noqa: E731
    np.testing.assert_allclose(cr.grad(outer)(X), numerical_grad(outer, X), rtol=1e-6)
    t = cr.tensor(X.copy(), requires_grad=True)
    cnp.sum(f(t, Y)).backward()
    np.testing.assert_allclose(t.grad, Y / (1 + np.exp(-X)), rtol=1e-12)


def test_custom_jvp_nondiff_argnums_and_defjvps():
    @cr.custom_jvp
    def power(n, x):
        return x**n

    power.__init__(power.fun, nondiff_argnums=(0,))
    power.defjvp(lambda n, p, t: (power(n, p[0]), n * p[0] ** (n - 1) * t[0]))
    loss = lambda x: cnp.sum(power(3, x))  # noqa: E731
    np.testing.assert_allclose(cr.grad(loss)(X), 3 * X**2, rtol=1e-12)

    @cr.custom_jvp
    def mul(x, y):
        return x * y

    mul.defjvps(lambda t, out, x, y: t * y, lambda t, out, x, y: x * t)
    check_grads(lambda x, y: cnp.sum(mul(x, y) ** 2), (X, Y), order=2, modes=("fwd", "rev"))


def test_custom_jvp_bad_rule_names_function_and_shapes():
    @cr.custom_jvp
    def f(x):
        return cnp.sin(x)

    f.defjvp(lambda p, t: (f(p[0]), t[0][:2]))
    with pytest.raises(ValueError, match=r"custom_jvp .*f.*shape \(2,\), expected \(3,\)"):
        cr.jvp(f, (X,), (Y,))
    with pytest.raises(ValueError, match=r"shape \(2,\), expected \(3,\)"):
        cr.grad(lambda x: cnp.sum(f(x)))(X)
