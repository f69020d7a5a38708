"""Modules under ``jit``: a training step of a model stages once and gives the eager step's bits;
the layers whose training pass has an effect a program cannot replay (BatchNorm1d's update of its
running statistics, Dropout's draw from a generator) refuse to be staged in training mode, and
stage in eval mode or without the update."""

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 8)).astype(np.float32)
LABELS = RNG.integers(0, 3, 16)


def _models():
    return {
        "mlp": nn.MLP([8, 16, 3], dtype=np.float32),
        "layernorm, tanh": nn.Sequential(
            nn.Linear(8, 16, seed=0, dtype=np.float32),
            nn.LayerNorm(16, dtype=np.float32),
            nn.Tanh(),
            nn.Linear(16, 3, seed=1, dtype=np.float32),
        ),
    }


def _step_of(model, opt, **apply_options):
    def loss(params, x, labels):
        return nn.softmax_cross_entropy(model.apply(params, x, **apply_options), labels)

    def step(params, state, x, labels):
        value, grads = cr.value_and_grad(loss)(params, x, labels)
        params, state = opt.update(grads, state, params)
        return params, state, value

    return step


@pytest.mark.parametrize("name", sorted(_models()))
def test_a_jitted_model_step_gives_the_eager_bits(name):
    model = _models()[name]
    opt = optim.Adam(1e-2)
    step = _step_of(model, opt)
    jitted = cr.jit(step)
    params = model.parameters()
    eager = staged = (params, opt.init(params))
    for _ in range(3):
        *eager, eager_loss = step(*eager, X, LABELS)
        *staged, staged_loss = jitted(*staged, X, LABELS)
        assert staged_loss == eager_loss
        for got, want in zip(cr.tree_leaves(staged[0]), cr.tree_leaves(eager[0]), strict=True):
            np.testing.assert_array_equal(got, want)
    assert jitted.trace_count == 1


def _batchnorm_model():
    return nn.Sequential(
        nn.Linear(8, 16, seed=0), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3, seed=1)
    )


def test_batchnorm_refuses_to_stage_the_update_of_its_running_statistics():
    model = _batchnorm_model()
    before = {k: v.copy() for k, v in model.named_buffers()["1"].items()}
    params = model.parameters()
    with pytest.raises(ValueError, match=r"BatchNorm1d in training mode under jit.*eval mode"):
        cr.jit(lambda p, x: model.apply(p, x, train=True))(params, X)
    for key, value in model.named_buffers()["1"].items():  # nothing was changed on the way
        np.testing.assert_array_equal(value, before[key])


def test_batchnorm_stages_in_eval_mode_and_without_the_update():
    model = _batchnorm_model()
    params = model.parameters()
    model.apply(params, X, train=True)  # running statistics that are not the initial ones
    evaluate = cr.jit(lambda p, x: model.apply(p, x, train=False))
    np.testing.assert_array_equal(evaluate(params, X), model.apply(params, X, train=False))
    frozen = nn.Context(train=True, update_buffers=False)
    by_batch = cr.jit(lambda p, x: model.apply(p, x, ctx=frozen))
    np.testing.assert_array_equal(by_batch(params, X + 1), model.apply(params, X + 1, ctx=frozen))


def test_dropout_refuses_to_stage_a_mask_draw_and_stages_in_eval_mode():
    model = nn.Sequential(nn.Linear(8, 16, seed=0), nn.Dropout(0.5), nn.Linear(16, 3, seed=1))
    params = model.parameters()
    with pytest.raises(ValueError, match=r"Dropout in training mode under jit.*drawn once"):
        cr.jit(lambda p, x: model.apply(p, x, train=True))(params, X)
    evaluate = cr.jit(lambda p, x: model.apply(p, x, train=False))
    np.testing.assert_array_equal(evaluate(params, X), model.apply(params, X, train=False))


LOSS_CASES = {
    "softmax_cross_entropy": (
        nn.softmax_cross_entropy,
        RNG.standard_normal((4, 3)),
        [np.array([0, 1, 2, 0]), np.array([2, 2, 1, 1]), np.array([1.0, 0.0, 2.0, 2.0])],
    ),
    "binary_logistic": (
        nn.binary_logistic,
        RNG.standard_normal(4),
        [np.array([0.0, 1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 1.0])],
    ),
    "mse": (nn.mse, RNG.standard_normal((4, 2)), [np.ones((4, 2)), np.zeros((4, 2))]),
}


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_labels_and_targets_are_traced_under_jit_not_frozen(name):
    loss, predictions, label_sets = LOSS_CASES[name]
    jitted = cr.jit(loss)
    for labels in label_sets:
        assert jitted(predictions, labels) == loss(predictions, labels)
    assert jitted.trace_count == len({(lab.dtype, lab.shape) for lab in label_sets})


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_vmap_batches_labels_and_targets(name):
    loss, predictions, label_sets = LOSS_CASES[name]
    labels = np.stack(label_sets[:2])
    batched = cr.vmap(loss)(np.stack([predictions, predictions]), labels)
    for i in range(2):
        np.testing.assert_allclose(batched[i], loss(predictions, labels[i]), rtol=1e-15)


def test_batched_labels_are_checked_on_their_values():
    logits = np.stack([LOSS_CASES["softmax_cross_entropy"][1]] * 2)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cr.vmap(nn.softmax_cross_entropy)(logits, np.array([[0, 1, 2, 0], [2, 2, 1, 7]]))
    with pytest.raises(ValueError, match="must be 0 or 1"):
        cr.vmap(nn.binary_logistic)(np.zeros((2, 4)), np.array([[0.0, 1, 1, 0], [2.0, 0, 0, 1]]))


def test_staged_labels_of_a_non_integer_dtype_are_refused():
    logits = LOSS_CASES["softmax_cross_entropy"][1]
    with pytest.raises(ValueError, match="must be integer class indices, got dtype complex128"):
        cr.jit(nn.softmax_cross_entropy)(logits, np.zeros(4, complex))
