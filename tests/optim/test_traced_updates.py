"""Optimizer updates under the transforms: ``jit`` of a whole training step (the update staged
with the gradient, the step counter traced), gradients through updates (a meta-gradient), and
``vmap`` over an ensemble of parameter sets. On plain arrays the traced update computes what the
eager one does, so a jitted step gives the eager step's bits."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule import optim
from chainrule.optim import schedules

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.1),
    "nesterov": lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: optim.Adam(1e-2),
    "adamw": lambda: optim.AdamW(1e-2),
    "rmsprop": lambda: optim.RMSProp(1e-2, momentum=0.5),
    "adam, cosine": lambda: optim.Adam(schedules.Cosine(0.1, total_steps=10)),
    "sgd, step decay": lambda: optim.SGD(schedules.StepDecay(0.1, step_size=2, gamma=0.5)),
    "sgd, warmup": lambda: optim.SGD(schedules.LinearWarmup(schedules.Constant(0.1), 3)),
    "sgd, spsa gain": lambda: optim.SGD(schedules.SPSAGain(0.1, offset=2.0)),
}


def _problem(dtype=np.float32):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((5, 3)).astype(dtype), "b": np.zeros(3, dtype)}
    return params, rng.standard_normal((8, 5)).astype(dtype), rng.integers(0, 3, 8)


def _loss(params, x, labels):
    return cnp.mean(cnp.softmax_cross_entropy(x @ params["w"] + params["b"], labels))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_jitted_training_step_is_staged_once_and_gives_the_eager_bits(name):
    opt = OPTIMIZERS[name]()
    value_and_grad = cr.value_and_grad(_loss)

    def step(params, state, x, labels):
        loss, grads = value_and_grad(params, x, labels)
        params, state = opt.update(grads, state, params)
        return params, state, loss

    jitted = cr.jit(step)
    params, x, labels = _problem()
    eager = (params, opt.init(params))
    staged = (params, opt.init(params))
    for _ in range(5):
        *eager, eager_loss = step(*eager, x, labels)
        *staged, staged_loss = jitted(*staged, x, labels)
        assert staged_loss == eager_loss
        for key in params:
            assert staged[0][key].dtype == eager[0][key].dtype
            np.testing.assert_array_equal(staged[0][key], eager[0][key])
        for slot, value in eager[1].items():
            for got, want in zip(
                cr.tree_leaves(staged[1][slot]), cr.tree_leaves(value), strict=True
            ):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
    # The step counter is an array of the state: traced, so every step replays one program.
    assert int(staged[1]["step"]) == 5
    assert jitted.trace_count == 1


def test_init_inside_jit_gives_the_eager_state():
    params = _problem()[0]
    opt = optim.Adam(0.1)
    staged = cr.jit(opt.init)(params)
    eager = opt.init(params)
    assert staged["step"].dtype == eager["step"].dtype and int(staged["step"]) == 0
    for slot in ("m", "v"):
        for key in params:
            assert staged[slot][key].shape == params[key].shape
            np.testing.assert_array_equal(staged[slot][key], eager[slot][key])


def _two_updates(opt, seed):
    """(loss, updated): a small softmax regression's loss of ``w``, and ``w`` with its optimizer
    state after two updates by ``opt`` from a fresh state."""
    rng = np.random.default_rng(seed)
    x, labels = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)

    def loss(w):
        return cnp.mean(cnp.softmax_cross_entropy(x @ w, labels))

    def updated(w):
        state = opt.init(w)
        for _ in range(2):
            w, state = opt.update(cr.grad(loss)(w), state, w)
        return w, state

    return loss, updated


@pytest.mark.parametrize("name", ["nesterov", "adam", "rmsprop", "adam, cosine"])
def test_gradients_flow_through_updates(name):
    # A meta-gradient: the loss after two updates, as a function of the starting parameters,
    # differentiated through both gradient computations and both updates (second order).
    loss, updated = _two_updates(OPTIMIZERS[name](), seed=1)
    start = np.random.default_rng(1).standard_normal((4, 3))
    cr.check_grads(lambda w: loss(updated(w)[0]), (start,), modes=("rev", "fwd"), order=1)


def test_a_tensor_that_requires_grad_is_updated_on_the_tape():
    w = cr.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    new_w, _ = optim.SGD(0.5).update({"w": 2 * w}, optim.SGD(0.5).init({"w": w}), {"w": w})
    assert isinstance(new_w["w"], cr.Tensor)
    (new_w["w"] * new_w["w"]).sum().backward()
    # new_w = w - 0.5 * 2w = 0: d(new_w²)/dw = 2·new_w·0 = 0.
    np.testing.assert_array_equal(w.grad, [0.0, 0.0])


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_vmap_updates_an_ensemble_as_a_loop_would(name):
    _, one_member = _two_updates(OPTIMIZERS[name](), seed=2)
    rng = np.random.default_rng(2)
    members = rng.standard_normal((3, 4, 3))
    batched_w, batched_state = cr.vmap(one_member)(members)
    assert batched_w.shape == members.shape
    assert batched_state["step"].shape == (3,)
    for i, member in enumerate(members):
        w, state = one_member(member)
        np.testing.assert_allclose(batched_w[i], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(batched_state["step"][i], state["step"])
