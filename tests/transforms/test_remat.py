"""checkpoint / remat: bit-identical gradients in float64, second order, misuse."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.transforms.numerical import numerical_grad

RNG = np.random.default_rng(1)
WS = [RNG.normal(size=(4, 4)) * 0.5 for _ in range(6)]
X = RNG.normal(size=(5, 4))


def _block(ws, x):
    for w in ws:
        x = cnp.tanh(x @ w)
    return x


def _loss(ws, x, checkpointed, segments=3):
    if not checkpointed:
        return cnp.sum(_block(ws, x) ** 2)
    size = len(ws) // segments
    for k in range(segments):
        x = cr.checkpoint(_block)(ws[k * size : (k + 1) * size], x)
    return cnp.sum(x**2)


def test_gradients_bit_for_bit():
    plain = cr.grad(_loss, (0, 1))(WS, X, False)
    checked = cr.grad(_loss, (0, 1))(WS, X, True)
    for a, b in zip(plain[0], checked[0], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain[1], checked[1])


def test_plain_call_and_tensor_backward():
    np.testing.assert_array_equal(cr.checkpoint(_block)(WS, X), _block(WS, X))
    t = cr.tensor(X.copy(), requires_grad=True)
    cnp.sum(cr.checkpoint(_block)(WS, t) ** 2).backward()
    np.testing.assert_array_equal(t.grad, cr.grad(lambda x: _loss(WS, x, False))(X))


def test_second_order_through_checkpoint():
    def outer(x, checkpointed):
        g = cr.grad(lambda x: _loss(WS[:2], x, checkpointed, segments=2))(x)
        return cnp.sum(g**2)

    x = X[:2]
    got = cr.grad(outer)(x, True)
    np.testing.assert_allclose(got, cr.grad(outer)(x, False), rtol=1e-12)
    np.testing.assert_allclose(got, numerical_grad(lambda x: outer(x, False), x), rtol=1e-6)
    h = cr.hessian(lambda x: _loss(WS[:2], x, True, segments=2))(x[0])
    np.testing.assert_allclose(h, cr.hessian(lambda x: _loss(WS[:2], x, False))(x[0]), rtol=1e-12)


def test_forward_mode_and_pytree_output_and_static_argnums():
    def f(n, x):
        return {"a": cnp.sin(x) ** n, "b": cnp.sum(x)}

    g = cr.checkpoint(f, static_argnums=(0,))
    t = RNG.normal(size=3)
    x = RNG.normal(size=3)
    got = cr.jvp(lambda x: g(3, x), (x,), (t,))
    want = cr.jvp(lambda x: f(3, x), (x,), (t,))
    np.testing.assert_allclose(got[1]["a"], want[1]["a"], rtol=1e-13)
    np.testing.assert_allclose(got[1]["b"], want[1]["b"], rtol=1e-13)
    loss = lambda x: cnp.sum(g(3, x)["a"]) * g(3, x)["b"]  # noqa: E731
    np.testing.assert_allclose(cr.grad(loss)(x), numerical_grad(loss, x), rtol=1e-7)


def test_remat_is_checkpoint_and_policy_is_refused():
    assert cr.remat is cr.checkpoint
    with pytest.raises(NotImplementedError, match="policy"):
        cr.checkpoint(_block, policy=lambda *a: True)
    with pytest.raises(TypeError, match="static_argnums|nondiff|traced"):
        cr.grad(lambda x: cnp.sum(cr.checkpoint(_block, static_argnums=1)(WS, x)))(X)


def test_checkpoint_sequential_functional_and_tensor_style():
    from chainrule import nn

    model = nn.MLP([4, 6, 6, 6, 3], activation="tanh", seed=0)
    checked = nn.checkpoint_sequential(model, 2)
    params = model.parameters()
    x = RNG.normal(size=(5, 4))

    def loss(m):
        return lambda p: cnp.sum(m.apply(p, x) ** 2)

    for a, b in zip(
        cr.tree_leaves(cr.grad(loss(model))(params)),
        cr.tree_leaves(cr.grad(loss(checked))(params)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    cnp.sum(checked(x) ** 2).backward()
    got = [t.grad.copy() for t in cr.tree_leaves(checked.named_tensors())]
    model.zero_grad()
    cnp.sum(model(x) ** 2).backward()
    want = [t.grad for t in cr.tree_leaves(model.named_tensors())]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="segments"):
        nn.checkpoint_sequential(model, 0)
    with pytest.raises(TypeError, match="Sequential"):
        nn.checkpoint_sequential(nn.Tanh(), 2)
