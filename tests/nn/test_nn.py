"""chainrule.nn: modules as named pytrees, both calling styles, layer gradients, losses."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule import nn, optim

RNG = np.random.default_rng(1234)


def test_parameters_form_a_named_pytree_that_ravels_to_theta():
    model = nn.MLP([4, 5, 3], activation="tanh", seed=0)
    params = model.parameters()
    assert sorted(params) == ["0", "2"]  # the activation at index 1 has no parameters
    assert params["0"]["weight"].shape == (4, 5) and params["0"]["bias"].shape == (5,)
    assert params["2"]["weight"].shape == (5, 3)
    theta, unravel = cr.ravel_pytree(params)
    assert theta.shape == (4 * 5 + 5 + 5 * 3 + 3,) == (model.num_parameters(),)
    rebuilt = unravel(theta)
    assert np.array_equal(rebuilt["2"]["weight"], params["2"]["weight"])


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (nn.MLP([3, 8, 2], seed=s).parameters() for s in (7, 7, 8))
    assert np.array_equal(a["0"]["weight"], b["0"]["weight"])
    assert not np.array_equal(a["0"]["weight"], c["0"]["weight"])


def test_tensor_style_and_functional_style_agree_on_value_and_gradient():
    model = nn.MLP([3, 6, 4], activation="gelu", seed=1)
    x = RNG.standard_normal((7, 3))
    labels = np.array([0, 1, 2, 3, 0, 1, 2])
    loss = nn.softmax_cross_entropy(model(x), labels)
    loss.backward()
    tensor_grads = model.grads()

    def loss_fn(params):
        return nn.softmax_cross_entropy(model.apply(params, x), labels)

    value, grads = cr.value_and_grad(loss_fn)(model.parameters())
    assert np.isclose(float(loss), float(value), rtol=0, atol=1e-14)
    for layer in ("0", "2"):
        for name in ("weight", "bias"):
            np.testing.assert_allclose(
                tensor_grads[layer][name], grads[layer][name], rtol=1e-12, atol=1e-14
            )
    model.zero_grad()
    assert np.all(model.grads()["0"]["weight"] == 0)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu", "identity"])
def test_mlp_gradients_match_finite_differences(activation):
    model = nn.MLP([3, 5, 4, 2], activation=activation, seed=2)
    x = RNG.standard_normal((6, 3))
    labels = np.array([0, 1, 1, 0, 1, 0])
    cr.check_grads(
        lambda p, x: nn.softmax_cross_entropy(model.apply(p, x), labels),
        (model.parameters(), x),
        modes=("rev", "fwd"),
        order=1,
    )


def test_mlp_second_derivatives_match_finite_differences():
    model = nn.MLP([2, 3, 2], activation="tanh", seed=3)
    x = RNG.standard_normal((4, 2))
    cr.check_grads(
        lambda p: cnp.sum(model.apply(p, x) ** 2),
        (model.parameters(),),
        modes=("rev", "fwd"),
        order=2,
    )


def test_softmax_module_rows_sum_to_one_and_gradients_check():
    layer = nn.Softmax()
    x = RNG.standard_normal((3, 4))
    out = layer.apply({}, x)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
    cr.check_grads(
        lambda x: layer.apply({}, x) * np.arange(4.0), (x,), modes=("rev", "fwd"), order=2
    )


def test_linear_layer_gradient_and_shape_error():
    layer = nn.Linear(3, 2, seed=0)
    x = RNG.standard_normal((5, 3))
    cr.check_grads(lambda p, x: layer.apply(p, x), (layer.parameters(), x), modes=("rev", "fwd"))
    with pytest.raises(ValueError, match=r"Linear\(3, 2\) got input of shape \(5, 4\)"):
        layer.apply(layer.parameters(), np.ones((5, 4)))


def test_batchnorm_vjp_across_the_batch_matches_finite_differences():
    bn = nn.BatchNorm1d(3)
    params = {"weight": RNG.uniform(0.5, 1.5, 3), "bias": RNG.standard_normal(3)}
    x = RNG.standard_normal((6, 3)) * 2 + 1
    weights = RNG.standard_normal((6, 3))  # a generic linear functional of the output

    def fun(params, x):
        return cnp.sum(bn.apply(params, x, train=True) * weights)

    cr.check_grads(fun, (params, x), modes=("rev", "fwd"), order=2)
    # Batch statistics couple the examples: the gradient reaching x sums to zero per feature,
    # and changing one example changes every example's output.
    grad_x = cr.grad(fun, argnums=1)(params, x)
    np.testing.assert_allclose(grad_x.sum(axis=0), 0.0, atol=1e-12)
    jac_row = cr.grad(lambda x: bn.apply(params, x, train=True)[5, 0])(x)
    assert np.all(np.abs(jac_row[:5, 0]) > 1e-6)


def test_batchnorm_running_statistics_and_train_eval_modes():
    bn = nn.BatchNorm1d(2, momentum=0.1)
    x = np.array([[1.0, 10.0], [3.0, 14.0], [5.0, 18.0], [7.0, 22.0]])
    out = bn.apply(bn.parameters(), x, train=True)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    evaluated = bn(x).numpy()
    np.testing.assert_allclose(evaluated, (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5))
    assert int(bn.num_batches_tracked) == 1  # evaluation leaves the statistics alone
    cr.check_grads(lambda p, x: bn.apply(p, x), (bn.parameters(), x), modes=("rev", "fwd"))
    with pytest.raises(ValueError, match="at least 2 examples"):
        bn.apply(bn.parameters(), x[:1], train=True)


def test_layernorm_normalises_each_example_and_gradients_check():
    ln = nn.LayerNorm(4)
    x = RNG.standard_normal((3, 4)) * 5 + 2
    out = ln.apply(ln.parameters(), x)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-12)
    params = {"weight": RNG.uniform(0.5, 1.5, 4), "bias": RNG.standard_normal(4)}
    cr.check_grads(
        lambda p, x: ln.apply(p, x) * np.arange(1.0, 5.0),
        (params, x),
        modes=("rev", "fwd"),
        order=2,
    )


def test_dropout_is_seeded_scaled_and_identity_in_eval():
    layer = nn.Dropout(0.25)
    x = np.ones((200, 50))
    a = layer.apply({}, x, train=True, rng=np.random.default_rng(5))
    b = layer.apply({}, x, train=True, rng=np.random.default_rng(5))
    c = layer.apply({}, x, train=True, rng=np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, 1.0 / 0.75}
    assert abs((a == 0).mean() - 0.25) < 0.01
    assert np.array_equal(layer.apply({}, x, train=False), x)
    # With the mask fixed by the seed, dropout is linear and its gradient is the mask.
    x = RNG.standard_normal((4, 3))
    cr.check_grads(
        lambda x: layer.apply({}, x, train=True, rng=np.random.default_rng(0)),
        (x,),
        modes=("rev", "fwd"),
    )
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)


def test_module_modes_propagate_to_children():
    model = nn.MLP([3, 4, 2], batchnorm=True, dropout=0.5)
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    x = RNG.standard_normal((5, 3))
    assert np.array_equal(model(x).numpy(), model(x).numpy())  # eval: deterministic
    model.train()
    assert all(m.training for m in model.modules())


def test_load_state_dict_rejects_other_architecture_without_changing_anything():
    model = nn.MLP([4, 8, 3], seed=0)
    other = nn.MLP([4, 16, 3], seed=1)
    before = model.state_dict()
    with pytest.raises(
        ValueError, match=r"parameter '0.weight' has shape \(4, 16\), expected \(4, 8\)"
    ):
        model.load_state_dict(other.state_dict())
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="missing parameter '1.bias'"):
        nn.MLP([4, 8, 3], batchnorm=True).load_state_dict(model.state_dict())
    with_bn = nn.MLP([4, 8, 3], batchnorm=True)
    state = with_bn.state_dict()
    del state["buffers.1.running_mean"]
    with pytest.raises(ValueError, match="missing buffer '1.running_mean'"):
        with_bn.load_state_dict(state)
    twin = nn.MLP([4, 8, 3], seed=5)
    twin.load_state_dict(model.state_dict())
    assert np.array_equal(twin.parameters()["2"]["weight"], model.parameters()["2"]["weight"])


def test_custom_module_registers_parameters_and_children():
    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(np.array([2.0]))
            self.inner = nn.Linear(2, 1, seed=0)

        def forward(self, params, x, ctx):
            return self.inner.apply(params["inner"], x, ctx=ctx) * params["scale"]

    module = Affine()
    assert sorted(module.parameters()) == ["inner", "scale"]
    x = RNG.standard_normal((3, 2))
    cr.check_grads(lambda p: cnp.sum(module.apply(p, x)), (module.parameters(),), modes=("rev",))

    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="super"):
        Forgetful()


def test_initialisers_have_their_variances():
    rng = np.random.default_rng(0)
    shape = (300, 200)
    assert abs(nn.glorot_uniform(rng, shape).var() * (300 + 200) / 2 - 1) < 0.05
    assert abs(nn.glorot_normal(rng, shape).var() * (300 + 200) / 2 - 1) < 0.05
    assert abs(nn.he_uniform(rng, shape).var() * 300 / 2 - 1) < 0.05
    assert abs(nn.he_normal(rng, shape).var() * 300 / 2 - 1) < 0.05
    limit = np.sqrt(6 / 500)
    assert np.abs(nn.glorot_uniform(rng, shape)).max() <= limit
    with pytest.raises(ValueError, match="unknown initialiser"):
        nn.Linear(2, 2, init="lecun")


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------


def test_mse_by_hand_and_reductions():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[1.0, 0.0], [0.0, 1.0]])
    per_example = np.array([(0 + 4) / 2, (9 + 16) / 2])
    np.testing.assert_allclose(nn.mse(pred, target, reduction="none"), per_example)
    assert float(nn.mse(pred, target)) == pytest.approx(per_example.mean())
    assert float(nn.mse(pred, target, reduction="sum")) == pytest.approx(per_example.sum())
    assert float(nn.mse(np.array([[2.0], [4.0]]), np.array([1.0, 1.0]))) == pytest.approx(
        (1 + 9) / 2
    )
    cr.check_grads(lambda p: nn.mse(p, target), (pred,), modes=("rev", "fwd"), order=2)
    with pytest.raises(ValueError, match="reduction"):
        nn.mse(pred, target, reduction="max")


def test_softmax_cross_entropy_by_hand_stable_and_checked():
    logits = RNG.standard_normal((5, 4))
    labels = np.array([0, 3, 2, 1, 3])
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(5), labels]
    np.testing.assert_allclose(
        nn.softmax_cross_entropy(logits, labels, reduction="none"), expected, rtol=1e-12
    )
    assert float(nn.cross_entropy(logits, labels, reduction="sum")) == pytest.approx(expected.sum())
    huge = np.array([[1e4, -1e4, 0.0]])
    assert float(nn.softmax_cross_entropy(huge, np.array([1]))) == pytest.approx(2e4)
    cr.check_grads(
        lambda z: nn.softmax_cross_entropy(z, labels), (logits,), modes=("rev", "fwd"), order=2
    )
    for bad in (np.array([0, 3, 2, 1, 4]), np.array([0, 3, -1, 1, 3])):
        with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
            nn.softmax_cross_entropy(logits, bad)


def test_binary_logistic_is_the_logistic_regression_cost_and_stable():
    z = np.array([-3.0, -0.5, 0.0, 2.0])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    sigma = 1 / (1 + np.exp(-z))
    expected = -(y * np.log(sigma) + (1 - y) * np.log(1 - sigma))
    np.testing.assert_allclose(nn.binary_logistic(z, y, reduction="none"), expected, rtol=1e-12)
    assert float(nn.binary_logistic(np.array([800.0]), np.array([0.0]))) == pytest.approx(800.0)
    assert float(nn.binary_logistic(np.array([-800.0]), np.array([0.0]))) == pytest.approx(
        0.0, abs=1e-300
    )
    cr.check_grads(lambda z: nn.binary_logistic(z, y), (z,), modes=("rev", "fwd"), order=2)
    with pytest.raises(ValueError, match="0 or 1"):
        nn.binary_logistic(z, np.array([0.0, 2.0, 1.0, 0.0]))


def test_pytorch_style_training_with_a_bound_optimizer_fits_xor():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    model = nn.MLP([2, 8, 2], activation="tanh", seed=0)
    optimizer = optim.Adam(lr=0.05).bind(model)
    first = None
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.softmax_cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        first = float(loss) if first is None else first
    assert float(loss) < 0.01 < first
    assert np.array_equal(np.argmax(model(x).numpy(), axis=1), labels)
