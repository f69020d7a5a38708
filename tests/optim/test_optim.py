"""chainrule.optim: update rules against hand-computed steps, schedules, the object form."""

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim


def steps(opt, grads, params):
    """Apply ``opt`` once per gradient in ``grads``; return the parameters after each step."""
    state = opt.init(params)
    out = []
    for g in grads:
        params, state = opt.update(g, state, params)
        out.append(params)
    return out, state


def test_plain_gradient_descent_step():
    (after,), state = steps(
        optim.GradientDescent(0.1), [{"w": np.array([2.0, -4.0])}], {"w": np.array([1.0, 1.0])}
    )
    np.testing.assert_array_equal(after["w"], [1.0 - 0.2, 1.0 + 0.4])
    assert int(state["step"]) == 1 and sorted(state) == ["step"]


def test_momentum_and_nesterov_by_hand():
    g1, g2 = np.array([1.0]), np.array([3.0])
    params = np.array([0.0])
    (p1, p2), _ = steps(optim.Momentum(0.1, momentum=0.5), [g1, g2], params)
    # v1 = 1, p1 = -0.1; v2 = 0.5 + 3 = 3.5, p2 = -0.1 - 0.35
    np.testing.assert_allclose([p1[0], p2[0]], [-0.1, -0.45])
    (p1, p2), _ = steps(optim.Nesterov(0.1, momentum=0.5), [g1, g2], params)
    # v1 = 1, step g + μ v1 = 1.5; v2 = 3.5, step 3 + 1.75 = 4.75
    np.testing.assert_allclose([p1[0], p2[0]], [-0.15, -0.15 - 0.475])


def test_weight_decay_is_added_to_the_gradient_in_sgd():
    (after,), _ = steps(optim.SGD(0.1, weight_decay=0.5), [np.array([1.0])], np.array([2.0]))
    np.testing.assert_allclose(after, [2.0 - 0.1 * (1.0 + 0.5 * 2.0)])


def test_adam_two_steps_by_hand():
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    grads = [np.array([0.5]), np.array([-1.0])]
    (p1, p2), state = steps(optim.Adam(lr, b1, b2, eps), grads, np.array([1.0]))
    m, v, p = 0.0, 0.0, 1.0
    expected = []
    for t, g in enumerate([0.5, -1.0], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        expected.append(p)
    np.testing.assert_allclose([p1[0], p2[0]], expected, rtol=1e-14)
    np.testing.assert_allclose(state["m"], [m]) and np.testing.assert_allclose(state["v"], [v])
    assert (
        abs(p1[0] - (1.0 - lr)) < 1e-9
    )  # Adam's first step has size lr whatever the gradient's scale


def test_adamw_decays_decoupled_and_adam_couples():
    grad, param, lr, wd = np.array([0.0]), np.array([2.0]), 0.1, 0.5
    (after,), _ = steps(optim.AdamW(lr, weight_decay=wd), [grad], param)
    np.testing.assert_allclose(
        after, [2.0 - lr * wd * 2.0]
    )  # zero gradient: only the decay moves it
    (coupled,), _ = steps(optim.Adam(lr, weight_decay=wd), [grad], param)
    np.testing.assert_allclose(
        coupled, [2.0 - lr], rtol=1e-7
    )  # the decay became a gradient, normalised


def test_rmsprop_by_hand():
    (p1, p2), _ = steps(
        optim.RMSProp(0.01, decay=0.9, eps=1e-8),
        [np.array([2.0]), np.array([2.0])],
        np.array([0.0]),
    )
    s1 = 0.1 * 4.0
    s2 = 0.9 * s1 + 0.1 * 4.0
    np.testing.assert_allclose(p1, [-0.01 * 2 / (math.sqrt(s1) + 1e-8)])
    np.testing.assert_allclose(p2, p1 - 0.01 * 2 / (math.sqrt(s2) + 1e-8))


@pytest.mark.parametrize(
    "opt",
    [
        optim.SGD(0.05, momentum=0.9),
        optim.Nesterov(0.05),
        optim.Adam(0.1),
        optim.AdamW(0.1, weight_decay=1e-4),
        optim.RMSProp(0.05),
    ],
    ids=lambda o: o.name,
)
def test_optimizers_work_the_same_on_a_pytree_and_on_theta(opt):
    params = {"a": np.array([1.0, -2.0]), "b": {"c": np.array([[0.5]])}}
    theta, unravel = cr.ravel_pytree(params)
    loss = lambda p: sum(float(np.sum((leaf - 3.0) ** 2)) for leaf in cr.tree_leaves(p))
    grad = lambda p: cr.tree_map(lambda leaf: 2 * (leaf - 3.0), p)
    tree_state, flat_state = opt.init(params), opt.init(theta)
    start = loss(params)
    for _ in range(500):
        params, tree_state = opt.update(grad(params), tree_state, params)
        theta, flat_state = opt.update(grad(theta), flat_state, theta)
    np.testing.assert_allclose(cr.ravel_pytree(params)[0], theta, rtol=1e-12)
    assert loss(params) < 1e-3 * start  # and every one of them gets close to the minimum


def test_update_leaves_its_inputs_unchanged():
    params = {"w": np.array([1.0, 2.0])}
    grads = {"w": np.array([0.5, 0.5])}
    opt = optim.SGD(0.1, momentum=0.9)
    state = opt.init(params)
    state_copy = cr.tree_map(np.copy, state)
    new_params, new_state = opt.update(grads, state, params)
    np.testing.assert_array_equal(params["w"], [1.0, 2.0])
    np.testing.assert_array_equal(state["velocity"]["w"], state_copy["velocity"]["w"])
    assert new_params["w"] is not params["w"]


def test_gradient_structure_mismatch_is_an_error():
    opt = optim.SGD(0.1)
    with pytest.raises(ValueError, match="gradient of shape"):
        opt.update({"w": np.ones(3)}, opt.init({"w": np.ones(2)}), {"w": np.ones(2)})


def test_gradient_tree_of_another_structure_is_an_error_naming_both():
    opt = optim.Adam(0.1)
    params = {"w": np.ones(2), "b": np.ones(1)}
    with pytest.raises(ValueError, match="gradient structure .* does not match parameter"):
        opt.update({"w": np.ones(2)}, opt.init(params), params)


def test_update_takes_tensors_and_numbers_as_leaves():
    # Leaves that are not NumPy arrays are made arrays first (a Tensor's data, a number; a list
    # is a pytree node, not a leaf), and the step is the one the same arrays give, bit for bit.
    opt = optim.Adam(0.1)
    params = {"w": cr.Tensor(np.array([1.0, 2.0])), "b": 0.5}
    grads = {"w": cr.Tensor(np.array([0.25, -1.0])), "b": 3.0}
    as_arrays = {"w": np.array([1.0, 2.0]), "b": np.array(0.5)}
    grad_arrays = {"w": np.array([0.25, -1.0]), "b": np.array(3.0)}
    got, got_state = opt.update(grads, opt.init(params), params)
    want, want_state = opt.update(grad_arrays, opt.init(as_arrays), as_arrays)
    for key in want:
        assert type(got[key]) is type(want[key])
        np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(got_state["m"][key], want_state["m"][key])


def test_bound_optimizer_checks_gradient_shapes_and_reads_missing_grads_as_zero():
    w = cr.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = cr.Tensor(np.array([3.0]), requires_grad=True)
    bound = optim.SGD(0.5, momentum=0.9).bind({"w": w, "b": b})
    w.grad = np.array([1.0, -1.0])  # b.grad stays None: no step for b, but a state entry
    bound.step()
    np.testing.assert_array_equal(w.data, [0.5, 2.5])
    np.testing.assert_array_equal(b.data, [3.0])
    np.testing.assert_array_equal(bound.state["velocity"]["w"], [1.0, -1.0])
    w.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\) for a parameter of shape"):
        bound.step()
    np.testing.assert_array_equal(w.data, [0.5, 2.5])  # nothing was changed by the failed step


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_learning_rate_is_rejected(lr):
    with pytest.raises(ValueError, match="learning rate must be a positive number"):
        optim.SGD(lr)
    with pytest.raises(ValueError, match="learning rate"):
        optim.Adam(lr)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="b2"):
        optim.Adam(0.1, b2=1.0)


def test_schedules_by_value():
    assert optim.Constant(0.3)(1000) == 0.3
    step = optim.StepDecay(1.0, step_size=10, gamma=0.5)
    assert [step(t) for t in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cosine = optim.Cosine(1.0, total_steps=10, final_lr=0.1)
    assert (
        cosine(0) == pytest.approx(1.0)
        and cosine(5) == pytest.approx(0.55)
        and cosine(10) == pytest.approx(0.1)
    )
    assert cosine(50) == pytest.approx(0.1)
    warm = optim.LinearWarmup(optim.Cosine(1.0, total_steps=100), warmup_steps=10)
    assert warm(0) == pytest.approx(0.1 * optim.Cosine(1.0, 100)(0))
    assert warm(20) == pytest.approx(optim.Cosine(1.0, 100)(20))
    with pytest.raises(ValueError, match="step_size"):
        optim.StepDecay(0.1, step_size=0)


def test_optimizer_uses_its_schedule_step_by_step():
    opt = optim.SGD(optim.StepDecay(1.0, step_size=1, gamma=0.5))
    params = np.array([0.0])
    outs, state = steps(opt, [np.array([1.0])] * 3, params)
    np.testing.assert_allclose([o[0] for o in outs], [-1.0, -1.5, -1.75])
    assert opt.lr(state) == 0.125


@pytest.mark.parametrize(
    "opt",
    [
        optim.SGD(0.1),
        optim.SGD(
            optim.LinearWarmup(optim.Cosine(0.1, 50), 5),
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4,
        ),
        optim.Adam(optim.StepDecay(0.01, 10, 0.5)),
        optim.AdamW(0.01),
        optim.RMSProp(0.01, momentum=0.5),
    ],
    ids=lambda o: o.name,
)
def test_config_round_trip(opt):
    import json

    rebuilt = optim.optimizer_from_config(json.loads(json.dumps(opt.config())))
    assert type(rebuilt) is type(opt) and rebuilt.config() == opt.config()
    outs_a, _ = steps(opt, [np.array([0.3, -0.2])] * 4, np.array([1.0, 1.0]))
    outs_b, _ = steps(rebuilt, [np.array([0.3, -0.2])] * 4, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(outs_a[-1], outs_b[-1])


def test_bound_optimizer_updates_module_tensors_from_their_grads():
    model = nn.Linear(2, 1, seed=0)
    bound = optim.SGD(0.5).bind(model)
    before = model.parameters()
    x = np.array([[1.0, 2.0]])
    loss = (model(x) ** 2).sum()
    loss.backward()
    grads = model.grads()
    bound.step()
    after = model.parameters()
    np.testing.assert_allclose(after["weight"], before["weight"] - 0.5 * grads["weight"])
    np.testing.assert_allclose(after["bias"], before["bias"] - 0.5 * grads["bias"])
    bound.zero_grad()
    assert all(t.grad is None for t in cr.tree_leaves(model.named_tensors()))
    assert int(bound.state["step"]) == 1 and bound.lr == 0.5
    with pytest.raises(TypeError, match="requires_grad"):
        optim.SGD(0.1).bind({"w": cr.Tensor(np.ones(2))})
