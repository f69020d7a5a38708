"""The gradient methods behind one interface: exact ones agree, finite differences agree to their
truncation error, the stochastic estimators are unbiased (on a quadratic, where SPSA, MeZO and ES
take exact directional derivatives), their costs match hand counts, MeZO really works in place,
seeded estimates are reproducible, and bad input is refused clearly.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import chainrule.numpy as cnp
from chainrule import nn
from chainrule.estimators import (
    METHODS,
    SPSA,
    Backprop,
    Cost,
    EvolutionStrategies,
    FiniteDifferences,
    ForwardGradient,
    ForwardMode,
    MeZO,
    SeededGradient,
    centred_ranks,
    direction,
    get_method,
    seeded,
)
from chainrule.transforms.pytree import tree_flatten, tree_leaves, tree_map

STOCHASTIC = ("forward_gradient", "spsa", "mezo", "evolution_strategies")


def flat(tree):
    """All leaves of a pytree as one float64 vector (leaf order = tree_flatten order)."""
    return np.concatenate(
        [np.ravel(np.asarray(leaf, dtype=np.float64)) for leaf in tree_leaves(tree)]
    )


def copy_tree(tree):
    return tree_map(lambda leaf: np.array(leaf, copy=True), tree)


# ------------------------------------------------------------------------------------------------
# An MLP classification loss (several leaves, nested dicts), with and without BatchNorm
# ------------------------------------------------------------------------------------------------

MLP_CASES = {
    "tanh": dict(activation="tanh"),
    "tanh_batchnorm": dict(activation="tanh", batchnorm=True),
    "relu_batchnorm": dict(activation="relu", batchnorm=True),
}


def mlp_problem(case, sizes=(4, 6, 5, 3), examples=8, seed=0):
    """``(loss_fn, params, batch)`` for a cross-entropy MLP in float64."""
    model = nn.MLP(list(sizes), seed=seed, **MLP_CASES[case])
    ce = nn.losses.get_loss("cross_entropy")
    rng = np.random.default_rng(seed + 1)
    batch = (rng.normal(size=(examples, sizes[0])), rng.integers(0, sizes[-1], size=examples))

    def loss_fn(params, batch):
        return ce(model.apply(params, batch[0], train=True), batch[1])

    return loss_fn, model.parameters(), batch


@pytest.mark.parametrize("case", sorted(MLP_CASES))
def test_exact_methods_agree_on_an_mlp(case):
    loss_fn, params, batch = mlp_problem(case)
    assert len(tree_leaves(params)) >= 6  # several leaves (BatchNorm adds its weight and bias)
    if "batchnorm" in case:
        assert len(tree_leaves(params)) == 10
    loss_b, grads_b, _ = Backprop()(loss_fn, params, batch)
    scale = np.max(np.abs(flat(grads_b)))
    assert scale > 1e-3  # a gradient worth comparing
    for chunk_size in (1, 7, 1000):
        loss_f, grads_f, _ = ForwardMode(chunk_size=chunk_size)(loss_fn, params, batch)
        assert tree_flatten(grads_f)[1] == tree_flatten(params)[1]
        assert math.isclose(loss_f, loss_b, rel_tol=1e-12)
        leaves = zip(tree_leaves(grads_f), tree_leaves(grads_b), tree_leaves(params), strict=True)
        for leaf_f, leaf_b, leaf_p in leaves:
            assert np.shape(leaf_f) == np.shape(leaf_p) and np.asarray(leaf_f).dtype == np.float64
            np.testing.assert_allclose(leaf_f, leaf_b, rtol=1e-6, atol=1e-12 * scale)
    assert tree_flatten(grads_b)[1] == tree_flatten(params)[1]
    assert isinstance(loss_b, float)


@pytest.mark.parametrize("case", sorted(MLP_CASES))
def test_finite_differences_agree_with_backprop_on_an_mlp(case):
    loss_fn, params, batch = mlp_problem(case)
    loss_b, grads_b, _ = Backprop()(loss_fn, params, batch)
    exact = flat(grads_b)
    errors = {}
    for kind in ("central", "forward"):
        loss_fd, grads_fd, _ = FiniteDifferences(kind=kind)(loss_fn, params, batch)
        assert tree_flatten(grads_fd)[1] == tree_flatten(params)[1]
        errors[kind] = np.linalg.norm(flat(grads_fd) - exact) / np.linalg.norm(exact)
        # central: the mean of f(θ ± h e_i) is f(θ) + O(h²); forward: f(θ) itself
        assert math.isclose(loss_fd, loss_b, rel_tol=1e-9 if kind == "central" else 1e-14)
    assert errors["central"] < 1e-8  # O(h²) with h ~ cbrt(eps): about eps^(2/3)
    assert errors["forward"] < 1e-5  # O(h) with h ~ sqrt(eps): about eps^(1/2)
    assert errors["central"] < errors["forward"] / 10


def test_finite_differences_in_single_precision_use_single_precision_steps():
    def loss_fn(params, batch):
        return cnp.sum(cnp.sin(params["w"]) * params["b"])

    params = {
        "w": np.array([0.3, -1.2, 2.0], np.float32),
        "b": np.array([1.5, 0.5, -2.0], np.float32),
    }
    _, exact, _ = Backprop()(loss_fn, params, None)
    for kind, tolerance in (("central", 1e-3), ("forward", 1e-2)):
        _, grads, _ = FiniteDifferences(kind=kind)(loss_fn, params, None)
        assert all(np.asarray(leaf).dtype == np.float32 for leaf in tree_leaves(grads))
        np.testing.assert_allclose(flat(grads), flat(exact), rtol=tolerance, atol=tolerance)


# ------------------------------------------------------------------------------------------------
# Stochastic estimators on a quadratic: unbiased
# ------------------------------------------------------------------------------------------------


def quadratic_problem(sizes=((2,), (2, 2)), seed=3):
    """f(θ) = 1/2 θᵀAθ + bᵀθ over the leaves of a dict (A symmetric positive definite);
    returns ``(loss_fn, params, true_gradient)``."""
    rng = np.random.default_rng(seed)
    names = [f"leaf{n}" for n in range(len(sizes))]
    params = {name: rng.normal(size=shape) for name, shape in zip(names, sizes, strict=True)}
    size = sum(int(np.prod(shape)) for shape in sizes)
    m = rng.normal(size=(size, size))
    a = m @ m.T / size + np.eye(size)
    b = rng.normal(size=size)

    def loss_fn(params, batch):
        theta = cnp.concatenate([cnp.reshape(params[name], (-1,)) for name in names])
        return 0.5 * theta @ (a @ theta) + b @ theta

    theta0 = flat(params)
    return loss_fn, params, a @ theta0 + b


UNBIASED = {
    "forward_gradient": {},
    "spsa": {"c": 0.05},
    "mezo": {"eps": 1e-2},
    "evolution_strategies": {"population": 2, "sigma": 0.05},
}


@pytest.mark.parametrize("name", sorted(UNBIASED))
def test_stochastic_estimators_are_unbiased_on_a_quadratic(name):
    loss_fn, params, true_gradient = quadratic_problem()
    assert true_gradient.size == 6
    method = get_method(name, **UNBIASED[name])
    samples = 10_000
    estimates = np.empty((samples, true_gradient.size))
    for key in range(samples):
        # MeZO perturbs in place: give it its own copy so every sample starts from the same θ
        point = copy_tree(params) if name == "mezo" else params
        _, grads, _ = method(loss_fn, point, None, key)
        estimates[key] = flat(grads)
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0, ddof=1) / math.sqrt(samples)
    # the check has power: a 25% error in the gradient's length would be far outside 4 SE
    assert np.all(4 * standard_error < 0.25 * np.linalg.norm(true_gradient))
    assert np.all(np.abs(mean - true_gradient) <= 4 * standard_error), (
        mean,
        true_gradient,
        standard_error,
    )
    # and the samples really are random (not the exact gradient every time)
    assert np.all(standard_error > 0)


def test_forward_gradient_second_moment_is_p_plus_two_times_the_squared_gradient():
    # E||(∇f·v) v||² = (P + 2)||∇f||² for v ~ N(0, I): the estimator's variance grows with P.
    loss_fn, params, true_gradient = quadratic_problem(sizes=((4,), (4, 4)), seed=5)
    size = true_gradient.size
    assert size == 20
    method = ForwardGradient()
    samples = 10_000
    squared_norms = np.empty(samples)
    for key in range(samples):
        _, grads, _ = method(loss_fn, params, None, key)
        squared_norms[key] = np.sum(flat(grads) ** 2)
    ratio = squared_norms.mean() / np.sum(true_gradient**2)
    assert abs(ratio - (size + 2)) <= 0.1 * (size + 2), ratio


def test_spsa_perturbation_shrinks_with_the_step():
    method = SPSA(c=0.2, gamma=0.101)
    assert method.perturbation(0) == pytest.approx(0.2)
    assert method.perturbation(9) == pytest.approx(0.2 / 10**0.101)
    sizes = [method.perturbation(step) for step in range(0, 100, 10)]
    assert all(a > b for a, b in zip(sizes, sizes[1:], strict=False))


def test_spsa_directions_are_rademacher_and_the_loss_is_the_mean_of_the_pair():
    def loss_fn(params, batch):
        return cnp.sum(params["w"] ** 3)

    params = {"w": np.array([0.5, -1.0, 2.0, 0.25])}
    method = SPSA(c=0.1, gamma=0.0)
    loss, estimate, _ = method.estimate(loss_fn, params, None, key=4)
    z = direction(4, 0, params, "rademacher")["w"]
    assert set(np.unique(z)) <= {-1.0, 1.0}
    upper, lower = np.sum((params["w"] + 0.1 * z) ** 3), np.sum((params["w"] - 0.1 * z) ** 3)
    assert loss == pytest.approx((upper + lower) / 2, rel=1e-12)
    np.testing.assert_allclose(estimate.coefficients, [(upper - lower) / 0.2], rtol=1e-10)
    _, grads, _ = method(loss_fn, params, None, key=4)
    np.testing.assert_allclose(grads["w"], (upper - lower) / 0.2 * z, rtol=1e-10)


def test_rank_shaped_evolution_strategies_ignore_the_scale_of_the_loss():
    loss_fn, params, true_gradient = quadratic_problem()
    method = EvolutionStrategies(population=8, sigma=0.1, rank_shaping=True)

    def rescaled(params, batch):
        return 3.0 * loss_fn(params, batch) + 7.0

    for key in range(5):
        _, plain, _ = method(loss_fn, params, None, key)
        _, scaled, _ = method(rescaled, params, None, key)
        np.testing.assert_array_equal(flat(plain), flat(scaled))
    # it still points downhill on average
    mean = np.mean([flat(method(loss_fn, params, None, key)[1]) for key in range(200)], axis=0)
    assert mean @ true_gradient > 0.5 * np.linalg.norm(mean) * np.linalg.norm(true_gradient)


def test_centred_ranks():
    ranks = centred_ranks(np.array([[5.0, -1.0], [2.0, 100.0], [0.0, 3.0]]))
    # sorted: -1, 0, 2, 3, 5, 100 -> ranks 0..5 scaled to [-0.5, 0.5] in steps of 0.2
    np.testing.assert_allclose(ranks, [[0.3, -0.5], [-0.1, 0.5], [-0.3, 0.1]])
    assert ranks.sum() == pytest.approx(0.0)
    np.testing.assert_array_equal(centred_ranks(np.array([4.0])), [0.0])


# ------------------------------------------------------------------------------------------------
# MeZO: in place, with no second copy of θ or z
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mezo_round_trip_restores_the_parameters_within_a_few_ulps(dtype):
    rng = np.random.default_rng(11)
    eps = 1e-3
    # magnitudes in [0.5, 2]: eps·z then moves each value by a fraction of itself, and the three
    # in-place additions (+eps z, -2 eps z, +eps z) can only round at that scale.
    away_from_zero = rng.uniform(0.5, 2.0, size=(300, 70)) * rng.choice([-1.0, 1.0], size=(300, 70))
    # more than one chunk of z, so chunks are regenerated consistently
    general = rng.normal(size=seeded.CHUNK + 1234)
    params = {"a": away_from_zero.astype(dtype), "g": general.astype(dtype)}
    before = copy_tree(params)

    def loss_fn(params, batch):
        return float(np.sum(params["a"] ** 2) + np.sum(np.sin(params["g"])))

    loss, estimate, cost = MeZO(eps=eps).estimate(loss_fn, params, None, key=21)
    assert cost.loss_evaluations == 2 and estimate.coefficients.size == 1
    assert all(params[name].dtype == dtype for name in params)
    change = np.abs(params["a"].astype(np.float64) - before["a"])
    assert np.max(change / np.spacing(np.abs(before["a"]))) <= 4
    # near zero a value's own spacing is tiny, but the rounding happens at the size of θ ± eps·z
    z = direction(21, 0, before)["g"].astype(np.float64)
    largest = np.abs(before["g"].astype(np.float64)) + 2 * eps * np.abs(z)
    change = np.abs(params["g"].astype(np.float64) - before["g"])
    assert np.all(change <= 4 * np.spacing(largest.astype(dtype)))


def test_mezo_works_on_the_callers_arrays_and_step_is_sgd_on_the_seeded_estimate():
    loss_fn, params, true_gradient = quadratic_problem()
    leaves_before = tree_leaves(params)
    before = copy_tree(params)
    method = MeZO(eps=1e-2)
    loss, estimate, _ = method.estimate(loss_fn, params, None, key=8)
    assert all(a is b for a, b in zip(tree_leaves(params), leaves_before, strict=True))
    np.testing.assert_allclose(flat(params), flat(before), rtol=1e-15, atol=1e-15)
    expected = flat(before) - 0.1 * flat(estimate.materialize(before))
    step_loss, cost = method.step_(loss_fn, params, None, key=8, lr=0.1)
    assert step_loss == pytest.approx(loss, rel=1e-12)
    assert cost.loss_evaluations == 2 and cost.passes == 2
    assert all(a is b for a, b in zip(tree_leaves(params), leaves_before, strict=True))
    np.testing.assert_allclose(flat(params), expected, rtol=1e-12, atol=1e-12)


def _traced_peak_bytes(call):
    """Peak bytes traced by tracemalloc while ``call()`` runs, above what was allocated before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_mezo_step_holds_no_second_copy_of_theta_or_z():
    rng = np.random.default_rng(2)
    leaves = [rng.normal(size=500_000) for _ in range(4)]
    leaf_bytes = leaves[0].nbytes
    theta_bytes = sum(leaf.nbytes for leaf in leaves)

    def loss_fn(params, batch):  # allocates nothing θ-sized (ravel of a contiguous array is a view)
        return float(sum(np.dot(leaf.ravel(), leaf.ravel()) for leaf in params))

    before = [leaf.copy() for leaf in leaves]
    mezo_peak = _traced_peak_bytes(
        lambda: MeZO(eps=1e-3).step_(loss_fn, leaves, None, key=5, lr=1e-4)
    )
    assert any(np.any(a != b) for a, b in zip(leaves, before, strict=True))  # the step happened
    del before
    # a few chunks of z at most, whatever the size of θ
    assert mezo_peak < leaf_bytes / 4, (mezo_peak, leaf_bytes)
    assert mezo_peak < 4 * seeded.CHUNK * 8
    # the measurement works: SPSA builds θ ± cΔ as new arrays, more than θ's size
    spsa_peak = _traced_peak_bytes(lambda: SPSA()(loss_fn, leaves, None, key=5))
    assert spsa_peak > theta_bytes, (spsa_peak, theta_bytes)


# ------------------------------------------------------------------------------------------------
# Costs against hand counts
# ------------------------------------------------------------------------------------------------


def counts(cost):
    return (cost.loss_evaluations, cost.forward_passes, cost.jvp_passes, cost.vjp_passes)


def test_costs_match_hand_counts():
    loss_fn, params, batch = mlp_problem("tanh")
    size = flat(params).size
    assert size == 83

    def run(method):
        point = copy_tree(params) if isinstance(method, MeZO) else params
        return method(loss_fn, point, batch, key=1)[2]

    assert counts(run(FiniteDifferences("central"))) == (2 * size, 0, 0, 0)
    assert counts(run(FiniteDifferences("forward"))) == (size + 1, 0, 0, 0)
    assert counts(run(Backprop())) == (0, 1, 0, 1)
    for chunk_size in (1, 7, 83, 128):
        assert counts(run(ForwardMode(chunk_size))) == (0, math.ceil(size / chunk_size), size, 0)
    for directions in (1, 3):
        cost = run(ForwardGradient(directions))
        assert cost.jvp_passes == directions and cost.vjp_passes == 0 and cost.loss_evaluations == 0
    for pairs in (1, 4):
        assert counts(run(SPSA(pairs=pairs))) == (2 * pairs, 0, 0, 0)
    for population in (1, 5):
        assert counts(run(EvolutionStrategies(population=population))) == (2 * population, 0, 0, 0)
    assert counts(run(MeZO())) == (2, 0, 0, 0)
    cost = run(FiniteDifferences("forward"))
    assert cost.passes == size + 1
    assert cost.flops is None and cost.peak_bytes is None and cost.seconds >= 0
    assert cost.as_dict()["passes"] == size + 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_measured_costs_are_filled(name):
    loss_fn, params, batch = mlp_problem("tanh")
    point = copy_tree(params) if name == "mezo" else params
    _, _, cost = get_method(name)(loss_fn, point, batch, key=0, measure=True)
    assert isinstance(cost.flops, int) and cost.flops > 0
    assert isinstance(cost.peak_bytes, int) and cost.peak_bytes >= 0
    assert cost.seconds > 0
    if name in STOCHASTIC:
        _, _, estimate_cost = get_method(name).estimate(loss_fn, point, batch, key=0, measure=True)
        assert estimate_cost.flops > 0 and estimate_cost.peak_bytes >= 0


def test_finite_difference_flops_over_backprop_flops_grow_like_p():
    ce = nn.losses.get_loss("cross_entropy")
    rng = np.random.default_rng(0)
    ratios, sizes = [], []
    for width in (2, 8, 32):
        model = nn.MLP([5, width, 3], activation="tanh")
        params = model.parameters()
        batch = (rng.normal(size=(16, 5)), rng.integers(0, 3, size=16))

        def loss_fn(params, batch, model=model):
            return ce(model.apply(params, batch[0], train=True), batch[1])

        _, _, fd_cost = FiniteDifferences()(loss_fn, params, batch, measure=True)
        _, _, backprop_cost = Backprop()(loss_fn, params, batch, measure=True)
        ratios.append(fd_cost.flops / backprop_cost.flops)
        sizes.append(flat(params).size)
    assert sizes == [21, 75, 291]
    assert ratios[0] < ratios[1] < ratios[2]
    # roughly proportional to P: 2P evaluations against about three evaluations' worth
    for ratio, size in zip(ratios, sizes, strict=True):
        assert 0.2 < ratio / size < 5, (ratios, sizes)
    growth = ratios[-1] / ratios[0]
    assert 0.5 * sizes[-1] / sizes[0] < growth < 2 * sizes[-1] / sizes[0], (ratios, sizes)


def test_cost_addition():
    first = Cost(
        loss_evaluations=1,
        forward_passes=2,
        jvp_passes=3,
        vjp_passes=4,
        flops=10,
        peak_bytes=100,
        seconds=0.5,
    )
    second = Cost(loss_evaluations=1, vjp_passes=1, flops=5, peak_bytes=300, seconds=0.25)
    total = first + second
    assert (total.loss_evaluations, total.forward_passes, total.jvp_passes, total.vjp_passes) == (
        2,
        2,
        3,
        5,
    )
    assert total.flops == 15 and total.peak_bytes == 300 and total.seconds == 0.75
    assert (Cost(flops=3) + Cost()).flops is None


# ------------------------------------------------------------------------------------------------
# Seeded estimates: reproducible, and their compact form matches the materialised one
# ------------------------------------------------------------------------------------------------

SEEDED_OPTIONS = {
    "forward_gradient": {"directions": 3},
    "spsa": {"pairs": 2},
    "mezo": {},
    "evolution_strategies": {"population": 4},
}


@pytest.mark.parametrize("name", STOCHASTIC)
def test_same_key_same_estimate_different_key_different(name):
    loss_fn, params, batch = mlp_problem("tanh_batchnorm")
    method = get_method(name, **SEEDED_OPTIONS[name])
    first = flat(method(loss_fn, copy_tree(params), batch, 17)[1])
    again = flat(method(loss_fn, copy_tree(params), batch, 17)[1])
    other = flat(method(loss_fn, copy_tree(params), batch, 18)[1])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert np.all(np.isfinite(first)) and np.any(first != 0)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seeded_gradient_materialize_and_add_to_match_the_call(name):
    loss_fn, params, batch = mlp_problem("tanh")
    method = get_method(name, **SEEDED_OPTIONS[name])
    before = copy_tree(params)
    loss_call, grads, _ = method(loss_fn, copy_tree(params), batch, 9)
    loss_est, estimate, _ = method.estimate(loss_fn, copy_tree(params), batch, 9)
    assert isinstance(estimate, SeededGradient) and estimate.key == 9
    expected_coefficients = {
        "forward_gradient": 3,
        "spsa": 2,
        "mezo": 1,
        "evolution_strategies": 4,
    }[name]
    assert estimate.coefficients.shape == (expected_coefficients,)
    assert loss_est == loss_call
    materialized = estimate.materialize(params)
    assert tree_flatten(materialized)[1] == tree_flatten(params)[1]
    np.testing.assert_array_equal(flat(materialized), flat(grads))
    # non-mutating estimators leave θ untouched; MeZO puts it back (checked to the ulp elsewhere)
    if name != "mezo":
        np.testing.assert_array_equal(flat(params), flat(before))
    leaves = [np.array(leaf, copy=True) for leaf in tree_leaves(params)]
    estimate.add_to_(leaves, -0.3)
    np.testing.assert_allclose(
        np.concatenate([leaf.ravel() for leaf in leaves]),
        flat(params) - 0.3 * flat(materialized),
        rtol=1e-13,
        atol=1e-13,
    )


def test_seeded_gradient_across_chunks_and_dtypes():
    template = {"big": np.zeros(2 * seeded.CHUNK + 7), "small": np.zeros((3, 2), np.float32)}
    estimate = SeededGradient(123, [0.5, -2.0], "gaussian")
    materialized = estimate.materialize(template)
    assert materialized["small"].dtype == np.float32
    z0, z1 = direction(123, 0, template), direction(123, 1, template)
    np.testing.assert_allclose(
        materialized["big"], 0.5 * z0["big"] - 2.0 * z1["big"], rtol=1e-12, atol=1e-14
    )
    # chunks are distinct draws, not the same chunk repeated
    assert not np.array_equal(z0["big"][: seeded.CHUNK], z0["big"][seeded.CHUNK : 2 * seeded.CHUNK])
    assert abs(np.mean(z0["big"])) < 0.02 and abs(np.std(z0["big"]) - 1) < 0.02
    leaves = [np.ones_like(template["big"]), np.ones_like(template["small"])]
    estimate.add_to_(leaves, 2.0)
    np.testing.assert_allclose(leaves[0], 1 + 2.0 * materialized["big"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(leaves[1], 1 + 2.0 * materialized["small"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="distribution"):
        SeededGradient(1, [1.0], "uniform")


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="unknown gradient method 'adjoint'") as info:
        get_method("adjoint")
    for name in METHODS:
        assert name in str(info.value)


def test_aliases_and_instances():
    assert isinstance(get_method("es"), EvolutionStrategies)
    assert isinstance(get_method("fd", kind="forward"), FiniteDifferences)
    method = SPSA(pairs=3)
    assert get_method(method) is method
    assert method.config() == {"name": "spsa", "c": 0.01, "gamma": 0.101, "pairs": 3}
    with pytest.raises(TypeError, match="options"):
        get_method(method, pairs=2)
    with pytest.raises(TypeError, match="spsa"):
        get_method("spsa", sigma=1.0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_non_scalar_loss_is_refused(name):
    def loss_fn(params, batch):
        return params["w"] * 2.0

    with pytest.raises(TypeError, match=r"scalar.*\(3,\)"):
        get_method(name)(loss_fn, {"w": np.ones(3)}, None, key=0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_integer_parameter_leaves_are_refused(name):
    def loss_fn(params, batch):
        return cnp.sum(params["w"] * 1.0) + cnp.sum(params["v"] * 1.0)

    params = {"v": np.ones(2), "w": np.arange(3)}
    with pytest.raises(TypeError, match="float"):
        get_method(name)(loss_fn, params, None, key=0)


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("forward_mode", {"chunk_size": 0}, "chunk_size must be a positive integer"),
        ("forward_mode", {"chunk_size": True}, "chunk_size must be a positive integer"),
        ("finite_differences", {"kind": "backward"}, "kind must be 'central' or 'forward'"),
        ("finite_differences", {"eps": 0.0}, "eps must be a positive number"),
        ("finite_differences", {"eps": float("inf")}, "eps must be a positive number"),
        ("forward_gradient", {"directions": 0}, "directions must be a positive integer"),
        ("forward_gradient", {"directions": 2.5}, "directions must be a positive integer"),
        ("spsa", {"c": -1.0}, "c must be a positive number"),
        ("spsa", {"gamma": 1.0}, r"gamma must be in \[0, 1\)"),
        ("spsa", {"gamma": float("nan")}, r"gamma must be in \[0, 1\)"),
        ("spsa", {"pairs": 0}, "pairs must be a positive integer"),
        ("mezo", {"eps": 0}, "eps must be a positive number"),
        ("mezo", {"eps": "1e-3"}, "eps must be a positive number"),
        ("evolution_strategies", {"population": -2}, "population must be a positive integer"),
        ("evolution_strategies", {"sigma": float("nan")}, "sigma must be a positive number"),
    ],
)
def test_invalid_hyperparameters_are_refused(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_method(name, **options)


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors, and the parameters left as they were (within the round trip's ulps)
# ------------------------------------------------------------------------------------------------


def test_mezo_restores_the_parameters_when_the_loss_fails():
    params = {"w": np.ones(4)}

    def loss_fn(params, batch):
        return params["w"] * 2.0

    with pytest.raises(TypeError):
        MeZO(eps=1e-3)(loss_fn, params, None, key=0)
    # +eps z then -eps z: back to the originals within the rounding of the round trip
    assert np.max(np.abs(params["w"] - 1.0)) <= 4 * np.spacing(1.0 + 4e-3)


def test_mezo_refuses_an_unwritable_leaf_before_touching_any():
    first = np.ones(4)
    second = np.ones((4, 4))[:, 0]  # not C-contiguous

    def loss_fn(params, batch):
        return float(np.sum(params[0]) + np.sum(params[1]))

    with pytest.raises(ValueError, match="contiguous"):
        MeZO()(loss_fn, [first, second], None, key=0)
    np.testing.assert_array_equal(first, np.ones(4))


def test_numpy_integer_hyperparameters_are_accepted():
    assert get_method("forward_gradient", directions=np.int64(3)).directions == 3
    assert get_method("evolution_strategies", population=np.int32(4)).population == 4


def test_mezo_integer_leaf_error_names_the_dtype():
    with pytest.raises(TypeError, match="int64"):
        MeZO()(lambda p, b: float(np.sum(p["w"])), {"w": np.arange(3)}, None, key=0)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_negative_key_error_names_the_method_and_key(name):
    with pytest.raises(ValueError, match=f"{name}.*key.*-1"):
        get_method(name)(lambda p, b: cnp.sum(p["w"] ** 2), {"w": np.ones(3)}, None, key=-1)
