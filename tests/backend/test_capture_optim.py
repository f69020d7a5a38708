"""Optimizers and learning-rate schedules inside a captured step (``chainrule.backend.capture``).

The optimizer's step counter stays an array: Adam's bias corrections and every schedule are array
expressions of it, so a captured ``nn.MLP`` training step records no guard and each replay gives
the eager step's bits. Schedules still answer a Python float for a Python int.
"""

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim
from chainrule.backend.capture import capture
from chainrule.nn.losses import get_loss

REPLAYS = 8

# Steps 0..8 are used (one recorded, eight replayed): each schedule changes its rate inside them.
OPTIMIZERS = {
    "adam": lambda: optim.Adam(1e-2),
    "adamw": lambda: optim.AdamW(3e-3, b1=0.8, b2=0.99, weight_decay=0.05),
    "rmsprop-momentum": lambda: optim.RMSProp(1e-3, momentum=0.5, weight_decay=1e-4),
    "sgd-nesterov": lambda: optim.SGD(0.05, momentum=0.9, nesterov=True),
    "sgd-stepdecay": lambda: optim.SGD(optim.StepDecay(0.1, step_size=3, gamma=0.5), momentum=0.9),
    "sgd-cosine": lambda: optim.SGD(optim.Cosine(0.1, total_steps=5, final_lr=0.01)),
    "sgd-warmup-constant": lambda: optim.SGD(
        optim.LinearWarmup(optim.Constant(0.1), warmup_steps=4)
    ),
    "sgd-warmup-cosine": lambda: optim.SGD(
        optim.LinearWarmup(optim.Cosine(0.1, total_steps=6), warmup_steps=3), momentum=0.5
    ),
    "sgd-spsa-gain": lambda: optim.SGD(optim.SPSAGain(0.3, offset=2)),
    "adam-cosine": lambda: optim.Adam(optim.Cosine(1e-2, total_steps=4)),
}


def _batch(rng, dtype, n=32, features=64, classes=10):
    return rng.standard_normal((n, features)).astype(dtype), rng.integers(0, classes, n)


def _loss_and_grads(model):
    cross_entropy = get_loss("cross_entropy")

    def loss_and_grads(params, x, y):
        return cr.value_and_grad(lambda p: cross_entropy(model.apply(p, x, train=True), y))(params)

    return loss_and_grads


def _train_step(model, optimizer):
    loss_and_grads = _loss_and_grads(model)

    def step(params, state, x, y):
        loss, grads = loss_and_grads(params, x, y)
        params, state = optimizer.update(grads, state, params)
        return params, state, loss

    return step


def _guards(captured):
    (tape,) = captured.tapes.values()
    return [description for description, *_ in tape.guards]


def _bits(tree):
    """Every leaf's raw bytes, so that equality means the same bits (and the same dtypes)."""
    return [(leaf.dtype.str, np.asarray(leaf).tobytes()) for leaf in cr.tree_leaves(tree)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_captured_step_replays_bit_identical_without_guards(name, dtype):
    model = nn.MLP([64, 32, 10], seed=0, dtype=dtype)
    optimizer = OPTIMIZERS[name]()
    step = _train_step(model, optimizer)
    rng = np.random.default_rng(0)
    params = model.parameters()
    state = optimizer.init(params)

    first_batch = _batch(rng, dtype)
    fast = capture(step, (params, state, *first_batch))
    # The optimizer adds no guard to those of the loss and gradient alone (the loss's label range
    # check, which holds while the labels are valid): no int(step), no float(lr).
    loss_only = capture(_loss_and_grads(model), (params, *first_batch))
    assert _guards(fast) == _guards(loss_only)

    eager, replayed = (params, state), (params, state)
    rates = []
    for _ in range(REPLAYS):
        rates.append(optimizer.lr(eager[1]))
        x, y = _batch(rng, dtype)
        *eager, eager_loss = step(*eager, x, y)
        *replayed, replayed_loss = fast(*replayed, x, y)
        # The tape runs the eager step's NumPy calls on the same values: the same bits.
        assert _bits(replayed_loss) == _bits(eager_loss)
        assert _bits(replayed) == _bits(eager)
    assert fast.stats == {"captures": 1, "replays": REPLAYS, "fallbacks": 0}
    assert replayed[1]["step"].dtype == np.int64 and int(replayed[1]["step"]) == REPLAYS
    assert all(leaf.dtype == dtype for leaf in cr.tree_leaves(replayed[0]))
    if not isinstance(optimizer.schedule, optim.Constant):
        assert len(set(rates)) > 1  # the schedule did change the rate during the replays
    assert not np.array_equal(cr.ravel_pytree(replayed[0])[0], cr.ravel_pytree(params)[0])


def _cosine(lr, total, final, t):
    progress = min(t, total) / total
    return final + 0.5 * (lr - final) * (1.0 + math.cos(math.pi * progress))


# Each schedule with its formula on a Python int, written out apart from the classes.
CLOSED_FORMS = [
    pytest.param(optim.Constant(0.3), lambda t: 0.3, id="constant"),
    pytest.param(optim.StepDecay(0.1, 7, gamma=0.7), lambda t: 0.1 * 0.7 ** (t // 7), id="step"),
    pytest.param(optim.StepDecay(1.0, 1, gamma=0.9), lambda t: 1.0 * 0.9**t, id="step-every"),
    pytest.param(optim.Cosine(0.1, 37, 0.001), lambda t: _cosine(0.1, 37, 0.001, t), id="cosine"),
    pytest.param(
        optim.LinearWarmup(optim.Constant(0.1), 13),
        lambda t: 0.1 * min(1.0, (t + 1) / 13),
        id="warmup-constant",
    ),
    pytest.param(
        optim.LinearWarmup(optim.Cosine(0.2, 50), 9),
        lambda t: _cosine(0.2, 50, 0.0, t) * min(1.0, (t + 1) / 9),
        id="warmup-cosine",
    ),
    pytest.param(optim.SPSAGain(0.3, offset=9), lambda t: 0.3 / (9.0 + t + 1) ** 0.602, id="spsa"),
]


@pytest.mark.parametrize("schedule, formula", CLOSED_FORMS)
def test_schedule_gives_a_float_for_an_int_and_an_array_for_an_array(schedule, formula):
    steps = range(0, 120)
    for t in steps:
        at_int = schedule(t)
        assert type(at_int) is float and at_int == formula(t)
        at_array = schedule(np.asarray(t, dtype=np.int64))
        assert (
            isinstance(at_array, np.ndarray)
            and at_array.shape == ()
            and at_array.dtype == np.float64
        )
        assert float(at_array) == at_int  # the same bits, not merely close
    many = schedule(np.arange(120))
    assert many.shape == (120,) and many.tolist() == [formula(t) for t in steps]
    rebuilt = optim.schedule_from_config(schedule.config())
    assert rebuilt.config() == schedule.config() and rebuilt(17) == schedule(17)


def test_adam_bias_correction_keeps_the_bits_of_python_powers():
    """Adam's 1-βᵗ from the step array equals the Python-float formula over many steps: the
    correction is taken with float_power, which rounds as Python's ``**``."""
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    opt = optim.Adam(lr, b1, b2, eps)
    rng = np.random.default_rng(3)
    params = rng.standard_normal(7)
    state = opt.init(params)
    m = v = np.zeros(7)
    expected = params
    for t in range(1, 301):
        grad = rng.standard_normal(7)
        params, state = opt.update(grad, state, params)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        expected = expected - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_array_equal(params, expected)
    assert int(state["step"]) == 300


def test_float32_parameters_update_in_float32_as_with_python_scalars():
    """A scheduled rate and Adam's corrections are float64 arrays; rounded to the parameter's
    dtype first, they update float32 parameters with the bits that Python-float scalars give."""
    b1, b2, eps, decay = 0.9, 0.999, 1e-8, 0.1
    schedule = optim.Cosine(0.1, total_steps=3)
    opt = optim.AdamW(schedule, b1, b2, eps, weight_decay=decay)
    rng = np.random.default_rng(5)
    params = rng.standard_normal(6).astype(np.float32)
    state = opt.init(params)
    expected, m, v = params, np.zeros(6, np.float32), np.zeros(6, np.float32)
    for t in range(1, 6):
        grad = rng.standard_normal(6).astype(np.float32)
        params, state = opt.update(grad, state, params)
        lr = schedule(t - 1)  # a Python float, as the rule was written before
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        step = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        expected = expected - step - lr * decay * expected
        assert params.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(params, expected)
    assert state["step"].dtype == np.int64 and state["step"].shape == ()
    assert state["m"].dtype == state["v"].dtype == np.float32


def test_optimizer_state_is_made_like_the_parameters():
    """The state's arrays come from zeros_like of the parameters (so a CuPy parameter gets CuPy
    state); an ndarray subclass kept by the backend shows it on the CPU."""
    from chainrule.engine import arraylib

    class Marked(np.ndarray):
        pass

    arraylib.keep_array_type(Marked)
    try:
        params = {"w": np.ones(3).view(Marked), "b": np.zeros(2).view(Marked)}
        state = optim.Adam(0.1).init(params)
        assert (
            type(state["step"]) is Marked
            and state["step"].dtype == np.int64
            and state["step"].shape == ()
        )
        assert all(
            type(leaf) is Marked for leaf in cr.tree_leaves({k: state[k] for k in ("m", "v")})
        )
    finally:
        arraylib._KEPT_TYPES.discard(Marked)
