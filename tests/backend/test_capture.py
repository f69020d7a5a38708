"""``chainrule.backend.capture`` on the CPU: a recorded step replays to the eager step's results."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.backend.capture import CaptureError, capture

SIZES = (64, 32, 10)


def _mlp_params(rng, sizes=SIZES, dtype=np.float32):
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype)
    return params


def _loss(params, x, y):
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = cnp.maximum(h, 0)
    return cnp.mean(cnp.softmax_cross_entropy(h, y))


def sgd_step(params, x, y, lr=0.1):
    loss, grads = cr.value_and_grad(_loss)(params, x, y)
    return {k: params[k] - lr * grads[k] for k in params}, loss


def _batch(rng, n=32, features=64, classes=10, dtype=np.float32):
    return rng.standard_normal((n, features)).astype(dtype), rng.integers(0, classes, n)


def test_replayed_sgd_steps_follow_the_eager_steps():
    rng = np.random.default_rng(0)
    params = _mlp_params(rng)
    fast = capture(sgd_step, (params, *_batch(rng)))
    tape = next(iter(fast.tapes.values()))
    assert tape.calls and not tape.guards  # the label range check is not a guard
    eager, replayed = dict(params), dict(params)
    for _ in range(6):
        x, y = _batch(rng)
        eager, eager_loss = sgd_step(eager, x, y)
        replayed, replayed_loss = fast(replayed, x, y)
        np.testing.assert_allclose(replayed_loss, eager_loss, rtol=1e-5)
        for key in eager:
            assert replayed[key].dtype == eager[key].dtype
            np.testing.assert_allclose(replayed[key], eager[key], rtol=1e-5, atol=1e-6)
    assert fast.stats == {"captures": 1, "replays": 6, "fallbacks": 0}
    assert not np.allclose(replayed["w0"], params["w0"])  # training did move the weights


def test_decorator_records_at_first_call_and_results_are_fresh_arrays():
    @capture
    def step(w, x):
        return w - 0.5 * cr.grad(lambda w: cnp.sum(cnp.tanh(x @ w) ** 2))(w)

    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    first = step(w, x)
    assert step.stats["captures"] == 1 and step.stats["replays"] == 0
    second = step(first, x)
    third = step(second, x)
    assert step.stats["replays"] == 2
    assert not np.shares_memory(second, third)
    np.testing.assert_allclose(third, step.step_fn(step.step_fn(first, x), x), rtol=1e-12)


def test_new_shape_records_a_second_tape():
    rng = np.random.default_rng(2)
    params = _mlp_params(rng)
    fast = capture(sgd_step, (params, *_batch(rng, n=32)))
    x, y = _batch(rng, n=17)
    replayed, loss = fast(params, x, y)
    eager, eager_loss = sgd_step(params, x, y)
    assert fast.stats["captures"] == 2 and len(fast.tapes) == 2
    np.testing.assert_allclose(loss, eager_loss, rtol=1e-6)
    x, y = _batch(rng, n=32)  # back to the first signature: its tape replays
    fast(params, x, y)
    assert fast.stats["replays"] == 1


def test_repeated_calls_match_the_last_tape_only_when_everything_agrees():
    """A repeated call skips the full flatten when the arguments have the last tape's structure,
    shapes, dtypes and constants; any difference goes through the full signature lookup."""
    rng = np.random.default_rng(9)
    params = _mlp_params(rng)
    x, y = _batch(rng)
    fast = capture(sgd_step, (params, x, y, 0.1))
    variants = [
        (params, x, y, 0.1),
        (params, x, y, 0.5),  # another constant
        ({**params, "w0": params["w0"].astype(np.float64)}, x, y, 0.1),  # another dtype
        ([params[k] for k in params], x, y, 0.1),  # another container: an eager error
        (params, x[:8], y[:8], 0.1),  # another shape
        ({k: params[k] for k in list(params)[:2]}, x, y, 0.1),  # fewer keys
        (params, x, y, 0.1),  # back to the first tape
    ]
    for args in variants:
        try:
            expected = sgd_step(*args)
        except Exception as error:  # the captured step must fail the same way
            with pytest.raises(type(error)):
                fast(*args)
            continue
        got = fast(*args)
        for key in expected[0]:
            np.testing.assert_allclose(got[0][key], expected[0][key], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5)
    assert fast.stats["fallbacks"] == 0


def test_reused_buffers_replay_the_same_bits_step_after_step():
    """Buffer reuse shares the memory of dead intermediates; an Adam step (a dozen elementwise
    temporaries per parameter) replayed for several steps gives the bits it gives without it."""
    rng = np.random.default_rng(11)
    params = _mlp_params(rng)
    x, y = _batch(rng)
    adam = cr.optim.Adam(1e-2)

    def adam_step(params, state, x, y):
        loss, grads = cr.value_and_grad(_loss)(params, x, y)
        params, state = adam.update(grads, state, params)
        return params, state, loss

    state = adam.init(params)
    shared = capture(adam_step, (params, state, x, y))
    separate = capture(adam_step, (params, state, x, y), reuse_buffers=False)
    assert next(iter(shared.tapes.values())).reused > 0
    assert next(iter(separate.tapes.values())).reused == 0
    a = b = (params, state)
    for _ in range(4):
        *a, loss_a = shared(*a, x, y)
        *b, loss_b = separate(*b, x, y)
        for leaf_a, leaf_b in zip(cr.tree_leaves(a), cr.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(leaf_a, leaf_b)
        np.testing.assert_array_equal(loss_a, loss_b)
    assert shared.stats["fallbacks"] == 0


def _nested_cases():
    def f(a):
        return cnp.sum(cnp.sin(a) * a + a * a)

    grad_f = cr.grad(f)
    v = np.array([0.5, -1.0, 2.0, 0.25])
    return {
        "grad of grad": cr.grad(lambda a: cnp.sum(grad_f(a))),
        "hvp": lambda a: cr.jvp(grad_f, (a,), (v,))[1],
        "hessian": cr.hessian(f),
    }


@pytest.mark.parametrize("case", ["grad of grad", "hvp", "hessian"])
def test_repeated_and_dead_calls_of_nested_derivatives_are_dropped_and_the_bits_stay(case):
    """Nested derivatives recompute what the forward pass computed (sin x, cos x, products),
    and compute primal values nothing returns: the tape drops both, and the replays give the
    eager bits exactly."""
    function = _nested_cases()[case]
    x = np.linspace(0.1, 1.0, 4)
    deduped = capture(function, (x,))
    kept = capture(function, (x,), dedupe=False, prune=False)
    tape, full = next(iter(deduped.tapes.values())), next(iter(kept.tapes.values()))
    assert tape.deduped > 0 and tape.pruned > 0
    assert full.deduped == 0 and full.pruned == 0
    assert len(tape.calls) == len(full.calls) - tape.deduped - tape.pruned
    for point in (np.linspace(-2.0, 3.0, 4), np.array([0.0, -0.0, 1e-300, -7.5])):
        expected = function(point)
        np.testing.assert_array_equal(deduped(point), expected)
        np.testing.assert_array_equal(kept(point), expected)
    assert deduped.stats["fallbacks"] == 0


def test_a_repeated_call_on_a_buffer_changed_in_between_is_kept():
    """``b * 3`` before and after ``b`` changes in place are two values: neither that, nor the
    same product by 0.0 and by -0.0 (equal numbers, different bits), is merged."""

    def step(x):
        b = x + 1.0
        before = b * 3.0
        b *= 2.0  # a second write to b
        after = b * 3.0
        once, again = x * 0.5, x * 0.5  # one value: the second call is dropped
        return before, after, x * 0.0, x * -0.0, (x + 1.0) * 3.0, once - again * 2.0

    x = np.array([1.0, -2.0, 3.0])
    fast = capture(step, (x,))
    for point in (np.array([4.0, 5.0, -6.0]), np.array([0.5, 0.0, -1.0])):
        got, expected = fast(point), step(point)
        for got_leaf, expected_leaf in zip(got, expected, strict=True):
            np.testing.assert_array_equal(got_leaf, expected_leaf)
            np.testing.assert_array_equal(np.signbit(got_leaf), np.signbit(expected_leaf))
    tape = next(iter(fast.tapes.values()))
    # Only x * 0.5 is one value twice (the second x + 1.0 cannot take b, written twice).
    assert tape.deduped == 1


def test_a_product_by_one_reads_its_operand_and_keeps_every_bit():
    """``x * 1`` is ``x`` bit for bit (-0.0, inf, NaN): the tape drops it and its readers read
    ``x``; a product that changes the dtype (float32 by a float64 one) is kept."""

    def step(x, y):
        seed = np.ones_like(x)  # float64 ones, whose copy the tape drops (they stay recorded)
        widened = y * seed  # float32 by float64 ones: a float64 result, kept
        return (x * 1.0) * 2.0, (1 * x) - 3.0, widened + 0.5, (x * seed) - 1.0

    x, y = np.array([1.0, -2.0, 3.0]), np.array([1.0, 2.0, 3.0], np.float32)
    fast = capture(step, (x, y))
    tape = next(iter(fast.tapes.values()))
    assert tape.deduped == 4  # the ones_like copy, x * 1.0, 1 * x and x * seed
    for point in (np.array([-0.0, np.inf, np.nan]), np.array([5.0, -np.inf, 1e-310])):
        got, expected = fast(point, y), step(point, y)
        for got_leaf, expected_leaf in zip(got, expected, strict=True):
            assert got_leaf.dtype == expected_leaf.dtype
            np.testing.assert_array_equal(got_leaf, expected_leaf)
            np.testing.assert_array_equal(np.signbit(got_leaf), np.signbit(expected_leaf))


def test_a_write_into_an_array_from_outside_the_step_is_kept_though_nothing_returns_it():
    """Running statistics changed in place are a side effect: pruning drops only the calls whose
    results nothing needs, never a write into an array the step did not create."""
    running_captured, running_eager = np.zeros(3), np.zeros(3)

    def make_step(running):
        def step(x):
            np.add(running, x * 0.1, out=running)  # into an outside array, not returned
            _ = np.exp(x) * 3.0  # nothing needs this: pruned
            return x * 2.0

        return step

    # The check of the first replay runs the step once more; its write is put back.
    fast, eager = capture(make_step(running_captured)), make_step(running_eager)
    for point in ([1.0, 2.0, 3.0], [0.5, -1.0, 4.0], [2.0, 2.0, -2.0]):
        point = np.array(point)
        np.testing.assert_array_equal(fast(point), eager(point))
        np.testing.assert_array_equal(running_captured, running_eager)
    tape = next(iter(fast.tapes.values()))
    assert tape.pruned == 2  # the exp and its product
    assert fast.stats["fallbacks"] == 0


def test_new_shape_or_dtype_can_raise_naming_the_argument():
    rng = np.random.default_rng(3)
    params = _mlp_params(rng)
    fast = capture(sgd_step, (params, *_batch(rng, n=32), 0.1), on_new_signature="raise")
    x, y = _batch(rng, n=8)
    with pytest.raises(
        ValueError, match=r"args\[1\] has shape \(8, 64\).*recorded with shape \(32, 64\)"
    ):
        fast(params, x, y, 0.1)
    x, y = _batch(rng, n=32, dtype=np.float64)
    with pytest.raises(
        ValueError, match=r"args\[1\] has shape \(32, 64\) dtype float64.*dtype float32"
    ):
        fast(params, x, y, 0.1)
    with pytest.raises(ValueError, match=r"args\[3\] has constant 0.5 .*constant 0.1"):
        fast(params, *_batch(rng), 0.5)
    with pytest.raises(ValueError, match="structure"):
        fast(params, *_batch(rng))


def _branchy(x):
    # A Python branch on a value of the data: the tape holds only the branch seen when recording.
    if cnp.sum(x) > 0:
        return x * 2.0
    return x - 1.0


def test_a_data_dependent_branch_is_guarded():
    fast = capture(_branchy, (np.ones(3),))
    assert len(next(iter(fast.tapes.values())).guards) == 1
    np.testing.assert_allclose(fast(np.full(3, 2.0)), 4.0)  # same branch: replayed
    np.testing.assert_allclose(fast(-np.ones(3)), -2.0)  # other branch: redone eagerly
    assert fast.stats == {"captures": 1, "replays": 1, "fallbacks": 1}
    strict = capture(_branchy, (np.ones(3),), on_guard_failure="raise")
    with pytest.raises(CaptureError, match=r"bool\(\).*data-dependent Python branch"):
        strict(-np.ones(3))


def test_a_value_hidden_from_the_tape_fails_the_first_replay_check():
    def step(x):
        frozen = np.asarray(x).copy()  # a plain copy: arithmetic on it is invisible to the tape
        return x * 0.0 + frozen

    fast = capture(step, (np.ones(4),))
    with pytest.raises(CaptureError, match="output leaf 0 .* differs from the eager step"):
        fast(np.arange(4.0))


def test_gather_and_scatter_add_replay_with_new_indices():
    def step(w, index):
        return cr.grad(lambda w: cnp.sum(w[index] ** 2))(w)

    w = np.arange(5.0)
    fast = capture(step, (w, np.array([0, 0, 3])))
    for index in ([1, 4, 4], [2, 2, 2], [0, 1, 3]):
        index = np.array(index)
        np.testing.assert_allclose(fast(w, index), step(w, index))
    assert fast.stats["replays"] == 3 and fast.stats["fallbacks"] == 0


def test_writes_into_recorded_arrays_replay():
    def step(x):
        out = np.zeros_like(x)  # ones_like/zeros_like of a recording array is recorded too
        np.copyto(out, x * 2.0, where=x > 0)
        out[0] = x[1]
        doubled = np.empty_like(x)
        doubled.fill(3.0)
        return out + doubled

    fast = capture(step, (np.array([1.0, -2.0, 3.0]),))
    for values in ([4.0, 5.0, -6.0], [-1.0, -1.0, 2.0]):
        x = np.array(values)
        np.testing.assert_allclose(fast(x), step(x))
    assert fast.stats["replays"] == 2


def test_jvp_and_reductions_replay():
    def step(x, t):
        value, tangent = cr.jvp(lambda x: cnp.max(cnp.exp(x), axis=0) + cnp.sum(x * x), (x,), (t,))
        return value, tangent

    rng = np.random.default_rng(4)
    fast = capture(step, (rng.standard_normal((3, 4)), rng.standard_normal((3, 4))))
    for _ in range(3):
        x, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        for got, expected in zip(fast(x, t), step(x, t), strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_tracers_and_nested_captures_are_refused():
    fast = capture(lambda x: x * 2.0)
    with pytest.raises(CaptureError, match="tracer"):
        fast(cr.Tensor(np.ones(2)))

    inner = capture(lambda x: x + 1.0)
    outer = capture(lambda x: inner(x) * 2.0)
    with pytest.raises(CaptureError, match="while another one is being recorded"):
        outer(np.ones(2))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="on_new_signature"):
        capture(lambda x: x, on_new_signature="sometimes")
    with pytest.raises(TypeError, match="example_args must be the tuple"):
        capture(lambda x: x, np.ones(2))


def test_a_module_and_optimizer_step_replays_without_falling_back():
    """nn.MLP + optim.SGD with momentum, captured whole: the optimizer's step counter stays an
    array for a constant learning rate, so no Python decision guards the replay."""
    from chainrule import nn, optim
    from chainrule.nn.losses import get_loss

    model = nn.MLP([64, 32, 10], seed=0)
    cross_entropy = get_loss("cross_entropy")
    optimizer = optim.SGD(0.1, momentum=0.9)

    def step(params, state, x, y):
        loss, grads = cr.value_and_grad(lambda p: cross_entropy(model.apply(p, x, train=True), y))(
            params
        )
        params, state = optimizer.update(grads, state, params)
        return params, state, loss

    rng = np.random.default_rng(0)
    params = model.parameters()
    state = optimizer.init(params)
    fast = capture(step, (params, state, *_batch(rng, dtype=np.float64)))
    eager, replayed = (params, state), (params, state)
    for _ in range(5):
        x, y = _batch(rng, dtype=np.float64)
        *eager, eager_loss = step(*eager, x, y)
        *replayed, replayed_loss = fast(*replayed, x, y)
        assert float(replayed_loss) == float(eager_loss)
    assert fast.stats == {"captures": 1, "replays": 5, "fallbacks": 0}
    assert int(replayed[1]["step"]) == int(eager[1]["step"]) == 5
    np.testing.assert_array_equal(cr.ravel_pytree(replayed[0])[0], cr.ravel_pytree(eager[0])[0])
