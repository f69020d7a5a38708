"""The engine's fast paths give exactly what the general paths give.

Tensor operators skip ``core.apply`` when every operand is a same-level tensor or a plain constant
and no observer or anomaly mode is on; the reverse pass frees each node's saved inputs as soon as
it is processed; recorded ops are stamped with the in-place epoch instead of being looked up in a
table. Each test pins one of those shortcuts to the behaviour of the slow, obvious path.
"""

from __future__ import annotations

import gc
import operator
import warnings
import weakref

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.engine import core
from chainrule.engine.primitives import BROADCAST_TO, reductions
from chainrule.engine.reverse import backward_pass
from chainrule.engine.tensor import current_epoch

BINARY = [operator.add, operator.sub, operator.mul, operator.truediv]
OPERAND_KINDS = [
    "tensor-tensor",
    "tensor-float",
    "float-tensor",
    "array-tensor",
    "tensor-broadcast-array",
]


def _operands(kind, rng, dtype):
    a = rng.uniform(0.5, 2.0, (3, 4)).astype(dtype)
    b = rng.uniform(0.5, 2.0, (3, 4)).astype(dtype)
    x = cr.Tensor(a, requires_grad=True)
    y = cr.Tensor(b, requires_grad=True)
    if kind == "tensor-tensor":
        return (x, y), (x, y)
    if kind == "tensor-float":
        return (x, 1.5), (x,)
    if kind == "float-tensor":
        return (1.5, y), (y,)
    if kind == "array-tensor":
        return (a.copy(), y), (y,)
    return (x, b[0].copy()), (x,)  # (3, 4) against (4,)


def _run(op, kind, dtype, general):
    """Value and gradients of sum(op(left, right) ** 2), on the fast path or the general one."""
    rng = np.random.default_rng(7)
    (left, right), leaves = _operands(kind, rng, dtype)
    if general:  # any observer turns the fast path off
        with core.observe(lambda *args: None):
            out = op(left, right)
            loss = (out * out).sum()
            loss.backward()
    else:
        out = op(left, right)
        loss = (out * out).sum()
        loss.backward()
    return out.data, [leaf.grad for leaf in leaves], out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", OPERAND_KINDS)
@pytest.mark.parametrize("op", BINARY, ids=lambda f: f.__name__)
def test_binary_operator_fast_path_matches_the_general_path(op, kind, dtype):
    fast_value, fast_grads, fast_out = _run(op, kind, dtype, general=False)
    slow_value, slow_grads, _ = _run(op, kind, dtype, general=True)
    np.testing.assert_array_equal(fast_value, slow_value)
    assert fast_value.dtype == slow_value.dtype == dtype
    for fast, slow in zip(fast_grads, slow_grads, strict=True):
        np.testing.assert_array_equal(fast, slow)
        assert fast.dtype == dtype
    assert fast_out.requires_grad and not fast_out.is_leaf


def test_matmul_and_negation_fast_paths_match_the_general_path():
    rng = np.random.default_rng(3)
    w_data, x_data = rng.standard_normal((4, 3)), rng.standard_normal((5, 4))

    def run(general):
        w = cr.Tensor(w_data, requires_grad=True)
        if general:
            with core.observe(lambda *args: None):
                loss = cnp.sum(-(x_data @ w) @ w.T)
                loss.backward()
        else:
            loss = cnp.sum(-(x_data @ w) @ w.T)
            loss.backward()
        return loss.item(), w.grad

    fast, slow = run(False), run(True)
    assert fast[0] == slow[0]
    np.testing.assert_array_equal(fast[1], slow[1])


def test_fast_path_reports_shape_errors_with_the_op_name():
    with pytest.raises(ValueError, match=r"chainrule\.multiply.*\(3,\).*\(4,\)"):
        cr.Tensor(np.ones(3), requires_grad=True) * cr.Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"chainrule\.matmul"):
        cr.Tensor(np.ones((2, 3))) @ np.ones((4, 2))


def test_operators_do_not_record_under_no_grad_or_without_inputs_that_require_grad():
    x = cr.Tensor([1.0, 2.0], requires_grad=True)
    with cr.no_grad():
        y = x * 3.0 + x
    assert not y.requires_grad and y.is_leaf
    z = cr.Tensor([1.0, 2.0]) * cr.Tensor([3.0, 4.0])
    assert not z.requires_grad and z.is_leaf


def test_operators_between_levels_take_the_general_path():
    # Inside grad, w is a level-0 tensor and z a higher-level one: the product belongs to z's level.
    w = cr.Tensor(np.array([2.0, 3.0]), requires_grad=True)
    gradient = cr.grad(lambda z: cnp.sum(z * w * z))(np.array([1.0, 1.0]))
    np.testing.assert_allclose(core.raw(gradient), [4.0, 6.0])
    # ... and that gradient is itself recorded at level 0, so w gets a gradient through it.
    cnp.sum(gradient).backward()
    np.testing.assert_allclose(w.grad, [2.0, 2.0])


def test_second_order_derivatives_through_operators():
    f = lambda t: t * t * t - 2.0 * t / (t + 1.0)  # noqa: E731
    t = np.array(1.7)
    exact = 6 * t - 2.0 * (-2.0 / (t + 1.0) ** 3)
    np.testing.assert_allclose(cr.grad(cr.grad(f))(t), exact)
    _, second = cr.jvp(cr.grad(f), (t,), (np.array(1.0),))
    np.testing.assert_allclose(second, exact)
    x = cr.Tensor(t, requires_grad=True)
    f(x).backward(create_graph=True)
    first = x.grad
    x.grad = None
    first.backward()
    np.testing.assert_allclose(x.grad, exact)


def test_observers_and_anomaly_mode_see_ops_that_would_take_the_fast_path():
    seen = []
    x = cr.Tensor(np.ones((2, 2)), requires_grad=True)
    with core.observe(lambda prim, args, params, out: seen.append(prim.name)):
        _ = (x * 2.0 + x) @ x - x / 3.0
    assert seen == ["multiply", "add", "matmul", "divide", "subtract"]
    with cr.detect_anomaly(), np.errstate(divide="ignore"):
        with pytest.raises(cr.AnomalyError, match="divide"):
            _ = x / cr.Tensor(np.zeros((2, 2)))
    assert not core.state.hooked


def test_parameter_updated_in_place_between_steps_keeps_working():
    # Regression: after the first in-place update, looking a tensor up in the table of changed
    # tensors compared tensors with ``==`` (an elementwise array) and backward crashed.
    w = cr.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    for _ in range(3):
        loss = cnp.sum(w * w * 0.5)
        loss.backward()
        with cr.no_grad():
            w -= 0.5 * w.grad
        w.grad = None
    np.testing.assert_allclose(w.data, np.array([1.0, -2.0, 3.0]) * 0.125)


def test_in_place_change_is_caught_in_a_retained_graph():
    x = cr.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    with cr.no_grad():
        x *= 2.0
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()


def test_backward_frees_intermediates_during_the_sweep():
    x = cr.Tensor(np.ones(8), requires_grad=True)
    hidden = [x * 2.0]
    for _ in range(5):
        hidden.append(cnp.exp(hidden[-1] * 0.1))
    loss = hidden[-1].sum()
    refs = [weakref.ref(h) for h in hidden]
    del hidden
    gc.collect()
    assert all(r() is not None for r in refs)  # the graph keeps them alive ...
    loss.backward()
    assert all(r() is None for r in refs)  # ... and backward let them go
    assert loss._args is None


def test_retained_graph_keeps_intermediates():
    x = cr.Tensor(np.ones(3), requires_grad=True)
    hidden = x * 2.0
    ref = weakref.ref(hidden)
    loss = cnp.sum(cnp.exp(hidden))
    del hidden
    loss.backward(retain_graph=True)
    assert ref() is not None
    first = x.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first)


def test_several_roots_where_one_feeds_another():
    x = cr.Tensor([1.0, 2.0], requires_grad=True)
    a = x * x  # a root that is also consumed by the other root
    b = (a * 3.0).sum()
    backward_pass([b, a], [np.array(1.0), np.array([1.0, 1.0])], epoch=current_epoch())
    # d b/dx = 6 x, d sum(a)/dx = 2 x
    np.testing.assert_allclose(x.grad, 8 * np.array([1.0, 2.0]))


def test_the_same_root_twice_adds_its_seeds():
    x = cr.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    backward_pass([y, y], [np.array(1.0), np.array(2.0)], epoch=current_epoch())
    np.testing.assert_allclose(x.grad, 3 * 2 * np.array([1.0, 2.0]))


@pytest.mark.parametrize(
    "value, shape",
    [
        (np.float32(2.0), (3,)),
        (np.array(2.0), (2, 2)),
        (np.ones((1, 1)), (2, 3)),
        (np.ones(1), (0, 4)),
    ],
)
def test_broadcast_of_a_single_value_is_a_read_only_view_like_numpys(value, shape):
    out = BROADCAST_TO.forward(value, shape)
    expected = np.broadcast_to(value, shape)
    np.testing.assert_array_equal(out, expected)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert not out.flags.writeable


@pytest.mark.parametrize("value, shape", [(np.ones((1, 1)), ()), (np.ones(1), (-1,))])
def test_broadcast_fast_path_rejects_what_numpy_rejects(value, shape):
    with pytest.raises(ValueError):
        BROADCAST_TO.forward(value, shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(32, 10), (5, 3), (2, 4, 7), (1, 1)])
def test_cross_entropy_rules_on_numpy_arrays_match_the_general_rule_bit_for_bit(dtype, shape):
    """The cross-entropy rules write their NumPy first-order case into one buffer; an observer
    sends the same derivatives through the rules' general form, which must give the same bits
    (large logits included, where the softmax saturates)."""
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    logits.flat[0] = 80.0
    labels = rng.integers(0, shape[-1], shape[:-1])

    def loss(z):
        return cnp.mean(cnp.softmax_cross_entropy(z, labels))

    fast = cr.grad(loss)(logits)
    with core.observe(lambda *event: None):
        general = cr.grad(loss)(logits)
    assert fast.dtype == general.dtype == dtype
    assert fast.tobytes() == general.tobytes()
    # Forward mode reads the same rule (its tangent times softmax - onehot).
    tangent = rng.standard_normal(shape).astype(dtype)
    _, fast_jvp = cr.jvp(loss, (logits,), (tangent,))
    with core.observe(lambda *event: None):
        _, general_jvp = cr.jvp(loss, (logits,), (tangent,))
    assert np.asarray(fast_jvp).tobytes() == np.asarray(general_jvp).tobytes()


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_backward_of_a_one_entry_tensor_seeds_one_of_its_shape_and_dtype(shape, dtype):
    # The implicit seed of backward() (a tensor of one entry) is 1 in the tensor's own dtype
    # and shape: the leaf's gradient is then exactly the derivative, in the leaf's dtype.
    x = cr.Tensor(np.full(shape, 2.0, dtype), requires_grad=True)
    (x * x * 3.0).backward()
    assert x.grad.dtype == dtype and x.grad.shape == shape
    np.testing.assert_array_equal(x.grad, np.full(shape, 12.0, dtype))


def _general_grad(loss, *args):
    """``grad(loss)`` with an observer on: the rules' general path, no fast path or memo."""
    with core.observe(lambda *event: None):
        return cr.grad(loss)(*args)


def test_cross_entropy_rule_reads_the_softmax_its_forward_kept():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    out = reductions._xent_forward(logits, labels)
    kept = reductions._SOFTMAX_MEMO[0]
    assert kept[0]() is out and kept[1] is logits and kept[2] is labels
    recomputed = reductions._xent_dlogits(logits, labels)  # no out: the softmax computed again
    from_memo = reductions._xent_dlogits(logits, labels, out)
    assert from_memo.tobytes() == recomputed.tobytes()
    assert reductions._SOFTMAX_MEMO[0] is None  # read once
    # The rule takes the kept exp and sums (they are what it divides) ...
    reductions._SOFTMAX_MEMO[0] = (*kept[:3], kept[3] * 2, kept[4])
    doubled = reductions._xent_dlogits(logits, labels, out)
    onehot = np.arange(4) == labels[:, None]
    np.testing.assert_allclose(doubled, 2 * (recomputed + onehot) - onehot, rtol=1e-6)
    # ... for that forward's out, logits and labels only: with a copy of any the softmax is
    # computed afresh, and the kept one stays for its own rule.
    for args in [
        (logits, labels, out.copy()),
        (logits.copy(), labels, out),
        (logits, labels.copy(), out),
    ]:
        reductions._SOFTMAX_MEMO[0] = kept
        assert reductions._xent_dlogits(*args).tobytes() == recomputed.tobytes()
        assert reductions._SOFTMAX_MEMO[0] is kept
    reductions._SOFTMAX_MEMO[0] = None


def test_the_kept_softmax_goes_when_its_output_goes():
    # An evaluation of a large batch must not keep its softmax alive until the next cross-entropy.
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 7, 50)
    logits = rng.standard_normal((50, 7))
    out = reductions._xent_forward(logits, labels)
    exp = weakref.ref(reductions._SOFTMAX_MEMO[0][3])
    del out
    gc.collect()
    assert reductions._SOFTMAX_MEMO[0] is None and exp() is None
    with cr.no_grad():  # the same through the public function, on a Tensor
        losses = cnp.softmax_cross_entropy(cr.Tensor(logits), labels)
    assert reductions._SOFTMAX_MEMO[0] is not None
    del losses
    gc.collect()
    assert reductions._SOFTMAX_MEMO[0] is None
    # A training step's rule reads the softmax and lets it go, the loss still alive.
    z = cr.Tensor(rng.standard_normal((50, 7)), requires_grad=True)
    loss = cnp.mean(cnp.softmax_cross_entropy(z, labels))
    assert reductions._SOFTMAX_MEMO[0] is not None
    loss.backward()
    assert reductions._SOFTMAX_MEMO[0] is None
    # 0-d labels give a NumPy scalar out, which takes no weak reference: nothing is kept.
    reductions._xent_forward(rng.standard_normal(7), np.array(3))
    assert reductions._SOFTMAX_MEMO[0] is None


def test_cross_entropy_gradient_with_the_kept_softmax_matches_the_general_rule_bit_for_bit():
    rng = np.random.default_rng(6)
    # Rows with +inf, NaN and all -inf logits: their peaks are guarded in the forward, so the
    # rule computes the softmax itself (all NaN rows), as the general rule does.
    logits = rng.standard_normal((5, 3))
    logits[1, 0], logits[2], logits[3, 1] = np.inf, -np.inf, np.nan
    labels = np.array([0, 1, 2, 0, 2])
    other = rng.standard_normal((5, 3))

    def single(z):
        return cnp.sum(cnp.softmax_cross_entropy(z, labels))

    def two(z):  # the second forward replaces the first one's softmax before either rule runs
        return cnp.sum(
            cnp.softmax_cross_entropy(z, labels) * cnp.softmax_cross_entropy(z + other, labels)
        )

    # Peaks near the float32 maximum (finite, but their sum would overflow): kept, no warning.
    huge = np.full((5, 3), 3e38, np.float32)
    huge[:, 1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(cnp.softmax_cross_entropy(huge, labels)).all()
        assert np.isfinite(cr.grad(single)(huge)).all()
    for loss, at in [(single, logits), (single, other), (two, other), (single, huge)]:
        with np.errstate(invalid="ignore", divide="ignore"):
            fast = cr.grad(loss)(at)
            general = _general_grad(loss, at)
        np.testing.assert_array_equal(fast, general)
        assert fast.tobytes() == general.tobytes()
    # A retained graph runs the rule twice: the kept softmax is read, never changed.
    z = cr.Tensor(other, requires_grad=True)
    loss = cnp.mean(cnp.softmax_cross_entropy(z, labels))
    loss.backward(retain_graph=True)
    first = z.grad.copy()
    loss.backward()
    np.testing.assert_array_equal(z.grad, 2 * first)
    np.testing.assert_array_equal(
        first, _general_grad(lambda v: cnp.mean(cnp.softmax_cross_entropy(v, labels)), other)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "x_shape, y_shape",
    [((32, 64), (64, 10)), ((3, 5, 4), (4, 2)), ((5, 4), (3, 4, 2)), ((2, 1, 3, 4), (5, 4, 6))],
)
def test_matmul_rules_on_numpy_matrices_match_the_general_rule_bit_for_bit(dtype, x_shape, y_shape):
    """The matmul rules call NumPy themselves on plain matrices (and stacks of them); with an
    observer on, the same derivatives go through the general rule (swapaxes, then matmul)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    y = rng.standard_normal(y_shape).astype(dtype)
    weights = rng.standard_normal(np.matmul(x, y).shape).astype(dtype)

    def loss(a, b):
        return cnp.sum(cnp.sin(a @ b) * weights)

    fast = cr.grad(loss, argnums=(0, 1))(x, y)
    with core.observe(lambda *event: None):
        general = cr.grad(loss, argnums=(0, 1))(x, y)
    for mine, theirs, primal in zip(fast, general, (x, y), strict=True):
        assert mine.shape == primal.shape and mine.dtype == dtype
        assert mine.tobytes() == theirs.tobytes()
    # The Tensor API takes the same rules.
    a, b = cr.Tensor(x, requires_grad=True), cr.Tensor(y, requires_grad=True)
    loss(a, b).backward()
    assert a.grad.tobytes() == fast[0].tobytes() and b.grad.tobytes() == fast[1].tobytes()


@pytest.mark.parametrize("exponent", [0, 0.0, 1, 2, 3.0, -0.5, -2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_power_rule_with_a_python_exponent_matches_the_array_exponent_bit_for_bit(exponent, dtype):
    # A Python number takes the rule's first branch; the same exponent as a 0-d array takes the
    # general one. Zeros in x check the x ** 0 case (derivative 0, not NaN).
    x = np.array([0.0, 0.5, 1.5, 2.0, 3.0], dtype=dtype)
    if exponent in (-0.5, -2):
        x = x[1:]
    as_array = np.asarray(exponent, dtype=dtype)

    def by_number(v):
        return cnp.sum(v**exponent)

    def by_array(v):
        return cnp.sum(v**as_array)

    np.testing.assert_array_equal(cr.grad(by_number)(x), cr.grad(by_array)(x))
    tangent = np.linspace(0.5, 1.5, x.size).astype(dtype)
    number_jvp = cr.jvp(lambda v: v**exponent, (x,), (tangent,))[1]
    array_jvp = cr.jvp(lambda v: v**as_array, (x,), (tangent,))[1]
    np.testing.assert_array_equal(number_jvp, array_jvp)
    assert not np.isnan(number_jvp).any()
