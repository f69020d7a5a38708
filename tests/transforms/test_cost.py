"""The cost side: counting passes and FLOPs, the mode-choosing cost model, and chain bracketing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.transforms.chain import (
    bracketing_flops,
    format_bracketing,
    forward_bracketing,
    optimal_bracketing,
    reverse_bracketing,
)

# ------------------------------------------------------------------------------------------------
# count()
# ------------------------------------------------------------------------------------------------

X = np.arange(15.0).reshape(5, 3) / 10
W = np.arange(12.0).reshape(3, 4) / 7
PRODUCT_FLOPS = 2 * 5 * 3 * 4  # one (5, 3) @ (3, 4)


def test_count_of_a_plain_evaluation():
    with cr.count() as c:
        cnp.sum(cnp.tanh(cnp.matmul(X, W)))
    assert dict(c.primitives) == {"matmul": 1, "tanh": 1, "sum": 1}
    assert c.matmul_flops == PRODUCT_FLOPS
    assert c.flops == PRODUCT_FLOPS + 20 + 20  # tanh and sum: one FLOP per element
    assert c.passes["forward"] == c.passes["jvp"] == c.passes["vjp"] == 0  # no transform, no pass
    assert c.evaluations == 3


def test_count_of_a_gradient():
    with cr.count() as c:
        cr.grad(lambda w: cnp.sum(X @ w))(W)
    assert c.primitives["matmul"] == 2  # forward, and X^T @ g for the weight
    assert c.matmul_flops == 2 * PRODUCT_FLOPS
    assert (c.passes["forward"], c.passes["vjp"], c.passes["jvp"]) == (1, 1, 0)
    assert c.directions["vjp"] == 1


def test_count_of_jacobians_in_both_modes():
    f = lambda x: x @ W  # (5, 3) -> (5, 4): 15 inputs, 20 outputs
    with cr.count() as forward:
        cr.jacfwd(f)(X)
    # one batched pass: the primal product, then t @ W for all 15 tangents at once
    assert forward.primitives["matmul"] == 2
    assert forward.matmul_flops == PRODUCT_FLOPS + 15 * PRODUCT_FLOPS
    assert (forward.passes["forward"], forward.passes["jvp"], forward.directions["jvp"]) == (
        1,
        1,
        15,
    )
    assert forward.passes["vjp"] == 0
    with cr.count() as reverse:
        cr.jacrev(f)(X)
    assert reverse.primitives["matmul"] == 2
    assert reverse.matmul_flops == PRODUCT_FLOPS + 20 * PRODUCT_FLOPS  # g @ W^T for 20 cotangents
    assert (reverse.passes["forward"], reverse.passes["vjp"], reverse.directions["vjp"]) == (
        1,
        1,
        20,
    )
    with cr.count() as chunked:
        cr.jacfwd(f, chunk_size=4)(X)
    assert (chunked.passes["forward"], chunked.passes["jvp"], chunked.directions["jvp"]) == (
        4,
        4,
        15,
    )
    assert chunked.matmul_flops == 4 * PRODUCT_FLOPS + 15 * PRODUCT_FLOPS


def test_counts_nest_and_print():
    with cr.count() as outer:
        cr.jvp(cnp.sin, (np.ones(3),), (np.ones(3),))
        with cr.count() as inner:
            cr.numerical_grad(lambda v: cnp.sum(cnp.multiply(v, v)), np.ones(4))
    assert inner.passes["forward"] == 8  # central differences: 2 evaluations per coordinate
    assert outer.passes["forward"] == 9 and outer.passes["jvp"] == 1
    assert outer.primitives["multiply"] >= inner.primitives["multiply"] == 8
    text = str(outer)
    assert "9 forward" in text and "1 jvp (1 directions)" in text and "multiply" in text
    assert "Count(" in repr(outer) and outer.as_dict()["passes"]["forward"] == 9


def test_counting_stops_at_the_end_of_the_block():
    with cr.count() as c:
        cnp.exp(np.ones(3))
    cnp.exp(np.ones(3))
    cr.grad(lambda v: cnp.sum(v))(np.ones(2))
    assert c.primitives["exp"] == 1 and c.passes["forward"] == 0


# ------------------------------------------------------------------------------------------------
# The cost model behind jacobian(mode="auto")
# ------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
W_IN, W_OUT = RNG.standard_normal((100, 3)), RNG.standard_normal((500, 100)) / 10


def tall(x):  # 3 -> 500
    return cnp.tanh(W_OUT @ cnp.tanh(W_IN @ x))


def wide(x):  # 500 -> 3
    return cnp.tanh(W_IN.T @ cnp.tanh(W_OUT.T @ x))


def test_the_cost_model_picks_forward_for_tall_and_reverse_for_wide():
    plan = cr.explain_jacobian(tall, np.ones(3))
    assert (plan.mode, plan.n_in, plan.n_out) == ("fwd", 3, 500)
    assert plan.fwd_flops < plan.rev_flops and plan.fwd_seconds < plan.rev_seconds
    # the two matrix products dominate: each direction costs about their FLOPs, in either mode
    products = 2 * 100 * 3 + 2 * 500 * 100
    assert products <= plan.tangent_flops <= 1.05 * products
    assert plan.fwd_flops == plan.primal_flops + 3 * plan.tangent_flops
    assert plan.rev_flops == plan.primal_flops + 500 * plan.cotangent_flops
    text = str(plan)
    assert (
        "chose forward mode" in text
        and "3 input directions" in text
        and "MiB" in text
        and " ms" in text
    )
    plan = cr.explain_jacobian(wide, np.ones(500))
    assert (plan.mode, plan.n_in, plan.n_out) == ("rev", 500, 3)
    assert "chose reverse mode" in str(plan)
    # Same FLOPs both ways: forward mode, which has less interpreter overhead and keeps no graph.
    assert cr.explain_jacobian(cnp.sin, np.ones(4)).mode == "fwd"


def test_the_cost_model_respects_a_memory_limit():
    def deep(x):  # 40 -> 10, with 60 wide intermediate values for reverse mode to keep
        h = cnp.outer(x, np.ones(1000))
        for _ in range(60):
            h = cnp.tanh(h)
        return cnp.sum(h, axis=1)[:10]

    x = np.ones(40)
    plan = cr.explain_jacobian(deep, x)
    assert plan.mode == "rev" and plan.rev_bytes > plan.fwd_bytes  # fewer FLOPs, more memory
    limit = (plan.fwd_bytes + plan.rev_bytes) // 2
    limited = cr.explain_jacobian(deep, x, memory_limit=limit)
    assert limited.mode == "fwd" and "over the limit" in limited.reason
    with cr.count() as c:
        jac = cr.jacobian(deep, memory_limit=limit)(x)
    assert c.passes["jvp"] == 1 and c.passes["vjp"] == 0
    np.testing.assert_allclose(jac, cr.jacrev(deep)(x), rtol=1e-12)
    # A limit that neither mode meets changes nothing.
    assert cr.explain_jacobian(deep, x, memory_limit=1).mode == "rev"


def test_auto_mode_runs_the_chosen_mode_once():
    with cr.count() as c:
        cr.jacobian(wide)(np.ones(500))  # reverse: the cost model's recording is reused
    assert (c.passes["forward"], c.passes["vjp"], c.passes["jvp"]) == (1, 1, 0)
    with cr.count() as c:
        cr.jacobian(tall)(np.ones(3))  # forward: one recording to decide, one batched pass
    assert (c.passes["forward"], c.passes["vjp"], c.passes["jvp"]) == (2, 0, 1)


def test_pytree_sizes_enter_the_cost_model():
    loss = lambda p, x: cnp.sum(cnp.tanh(x @ p["w"] + p["b"]))
    params = {"w": np.ones((20, 10)), "b": np.ones(10)}
    plan = cr.explain_jacobian(loss, params, np.ones(20))
    assert (plan.n_in, plan.n_out) == (210, 1)
    params = {"w": np.ones((200, 100)), "b": np.ones(100)}
    plan = cr.explain_jacobian(loss, params, np.ones(200))
    assert (plan.mode, plan.n_in, plan.n_out) == ("rev", 20100, 1)


# ------------------------------------------------------------------------------------------------
# Chains: the cheapest bracketing by dynamic programming
# ------------------------------------------------------------------------------------------------


def _all_bracketings(first, last):
    """Every full bracketing of J_last ... J_first (for the brute-force comparison)."""
    if first == last:
        return [first]
    trees = []
    for k in range(first, last):
        for left in _all_bracketings(k + 1, last):
            for right in _all_bracketings(first, k):
                trees.append((left, right))
    return trees


def test_the_number_of_bracketings_is_catalan():
    for length in range(1, 9):
        assert len(_all_bracketings(1, length)) == math.comb(2 * (length - 1), length - 1) // length


@pytest.mark.parametrize("length", range(1, 9))
def test_dynamic_programme_equals_brute_force(length):
    rng = np.random.default_rng(length)
    for _ in range(12):
        dims = [int(d) for d in rng.choice([1, 2, 3, 5, 8, 13, 50, 200, 1000], size=length + 1)]
        flops, tree = optimal_bracketing(dims)
        brute = min(bracketing_flops(dims, t) for t in _all_bracketings(1, length))
        assert flops == brute == bracketing_flops(dims, tree)


def test_pure_orders_cost_what_their_formulas_say():
    dims = [7, 3, 11, 2, 5]
    length = len(dims) - 1
    forward = sum(2 * dims[i] * dims[i - 1] * dims[0] for i in range(2, length + 1))
    reverse = sum(2 * dims[length] * dims[i] * dims[i - 1] for i in range(1, length))
    assert bracketing_flops(dims, forward_bracketing(length)) == forward
    assert bracketing_flops(dims, reverse_bracketing(length)) == reverse
    assert format_bracketing(forward_bracketing(4)) == "J4 (J3 (J2 J1))"
    assert format_bracketing(reverse_bracketing(4)) == "((J4 J3) J2) J1"


def test_the_optimum_is_forward_for_few_inputs_reverse_for_a_scalar_mixed_for_wide_narrow_wide():
    growing = [2, 10, 50, 200, 1000]  # n0 << nL
    assert optimal_bracketing(growing)[1] == forward_bracketing(4)
    scalar_out = [1000, 200, 50, 10, 1]  # a loss
    assert optimal_bracketing(scalar_out)[1] == reverse_bracketing(4)
    for length in range(2, 9):  # any chain ending in a scalar: reverse is optimal
        dims = [int(d) for d in np.random.default_rng(length).integers(2, 100, size=length)] + [1]
        assert optimal_bracketing(dims)[0] == bracketing_flops(dims, reverse_bracketing(length))
    wide_narrow_wide = [100, 100, 2, 100, 100]
    flops, tree = optimal_bracketing(wide_narrow_wide)
    assert tree not in (forward_bracketing(4), reverse_bracketing(4))
    assert tree == ((4, 3), (2, 1))  # meet at the narrow point
    assert flops < bracketing_flops(wide_narrow_wide, forward_bracketing(4)) / 10
    assert flops < bracketing_flops(wide_narrow_wide, reverse_bracketing(4)) / 10


def _chain_functions(dims, seed=0):
    rng = np.random.default_rng(seed)
    fns = []
    for n_in, n_out in zip(dims[:-1], dims[1:], strict=True):
        weight = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        fns.append(lambda x, w=weight: cnp.tanh(w @ x))
    return fns


@pytest.mark.parametrize("dims", [[3, 20, 40, 60], [60, 40, 20, 1], [30, 30, 2, 30, 30]])
def test_chain_jacobian_in_every_order_equals_the_jacobian_of_the_composition(dims):
    fns = _chain_functions(dims)

    def composed(x):
        for fn in fns:
            x = fn(x)
        return x

    x = np.random.default_rng(1).standard_normal(dims[0])
    expected = cr.jacrev(composed)(x)
    results = {
        order: cr.chain_jacobian(fns, x, order=order) for order in ("optimal", "forward", "reverse")
    }
    for order, result in results.items():
        np.testing.assert_allclose(result.jacobian, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.value, composed(x), rtol=1e-12)
        assert result.dims == dims and result.order == order
        assert result.product_flops == result.flops[order]
    best = results["optimal"]
    assert best.flops["optimal"] <= min(best.flops["forward"], best.flops["reverse"])
    assert len(best.factor_modes) == len(dims) - 1 and set(best.factor_modes) <= {"fwd", "rev"}
    text = str(best)
    assert "optimal" in text and "forward" in text and "reverse" in text and "x optimal" in text


def test_chain_factors_use_the_cheaper_mode():
    result = cr.chain_jacobian(_chain_functions([600, 2, 600]), np.ones(600))
    assert result.factor_modes == [
        "rev",
        "fwd",
    ]  # 600 -> 2 pulls back 2 rows; 2 -> 600 pushes 2 columns
    assert result.dims == [600, 2, 600] and result.jacobian.shape == (600, 600)


def test_chain_jacobian_of_one_function_and_matrix_shapes():
    w = np.arange(6.0).reshape(2, 3)
    result = cr.chain_jacobian([lambda x: x @ w], np.ones((4, 2)))
    assert result.jacobian.shape == (4, 3, 4, 2) and result.flops["optimal"] == 0
    np.testing.assert_allclose(result.jacobian, cr.jacfwd(lambda x: x @ w)(np.ones((4, 2))))
    with pytest.raises(ValueError, match="order"):
        cr.chain_jacobian([cnp.sin], np.ones(2), order="sideways")


def test_brute_force_helper_and_dp_agree_on_ties():
    # all-equal dimensions: every bracketing costs the same; the DP still returns a valid one
    dims = [4] * 6
    flops, tree = optimal_bracketing(dims)
    costs = {bracketing_flops(dims, t) for t in _all_bracketings(1, 5)}
    assert costs == {flops}
    assert sorted(int(c) for c in format_bracketing(tree) if c.isdigit()) == [1, 2, 3, 4, 5]
    assert list(itertools.islice(_all_bracketings(1, 3), 2)) == [((3, 2), 1), (3, (2, 1))]


def test_auto_mode_remembers_its_decision_per_signature():
    jac = cr.jacobian(wide)
    with cr.count() as first:
        jac(np.ones(500))
    with cr.count() as again:
        expected = jac(np.full(500, 0.5))
    assert (
        first.passes["forward"] == again.passes["forward"] == 1
    )  # reverse: one recording either way
    assert list(jac.decisions.values()) == ["rev"]
    np.testing.assert_allclose(expected, cr.jacrev(wide)(np.full(500, 0.5)), rtol=1e-12)
    tall_jac = cr.jacobian(tall)
    with cr.count() as first:
        tall_jac(np.ones(3))
    with cr.count() as again:
        tall_jac(np.ones(3))
    assert (first.passes["forward"], again.passes["forward"]) == (
        2,
        1,
    )  # no second recording to decide
    tall_jac(np.ones((3,)).astype(np.float32))  # a new dtype: decided afresh
    assert len(tall_jac.decisions) == 2
