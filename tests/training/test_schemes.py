"""Update schemes in the Trainer (chainrule.training.schemes): LocoProp against backprop and a
hand computation, layer-wise and cyclic updates, derivative-free methods and CMA-ES, MeZO's two
update paths, exact resume, batch-norm statistics, cost accounting and the CLI options."""

import json

import numpy as np
import pytest

import chainrule as cr
from chainrule import data, nn, optim
from chainrule.apps.cli import main
from chainrule.estimators import MeZO, direction
from chainrule.nn.losses import softmax_cross_entropy
from chainrule.training import CheckpointError, Trainer
from chainrule.training.schemes import LocoProp, get_scheme
from chainrule.transforms.pytree import ravel_pytree


def synthetic(n=48, features=5, classes=3, seed=0):
    """A small classification set whose labels depend on the features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))
    w = rng.standard_normal((features, classes))
    return data.Dataset(x, np.argmax(x @ w + 0.3 * rng.standard_normal((n, classes)), axis=1))


def flat(params):
    return ravel_pytree(params)[0]


def trained(model, scheme="simultaneous", lr=0.05, epochs=2):
    """A Trainer after ``epochs`` epochs of plain SGD on the synthetic set (3 steps an epoch)."""
    trainer = Trainer(model, optim.SGD(lr), batch_size=16, log=None, scheme=scheme)
    trainer.fit(synthetic(), epochs=epochs)
    return trainer


def changed_blocks(before, after):
    return sorted(
        block
        for block in before
        if any(not np.array_equal(before[block][k], after[block][k]) for k in before[block])
    )


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# LocoProp
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batchnorm", "gamma"),
    [(False, 1.0), (False, 2.5), (True, 1.0)],
    ids=["plain", "plain-gamma", "batchnorm"],
)
def test_locoprop_s_one_local_sgd_step_is_backprop_with_lr_eta_gamma(batchnorm, gamma):
    eta = 0.05
    sizes = [5, 7, 6, 3]
    initial = flat(nn.MLP(sizes, activation="tanh", batchnorm=batchnorm, seed=1).parameters())
    loco = trained(
        nn.MLP(sizes, activation="tanh", batchnorm=batchnorm, seed=1),
        LocoProp("S", gamma=gamma, local_steps=1),
        lr=eta,
    )
    back = trained(
        nn.MLP(sizes, activation="tanh", batchnorm=batchnorm, seed=1),
        "simultaneous",
        lr=eta * gamma,
    )
    assert loco.step == back.step == 6
    a, b = flat(loco.params), flat(back.params)
    assert a.dtype == np.float64
    moved = np.linalg.norm(b - initial)
    assert moved > 1e-2  # the runs really trained
    assert np.linalg.norm(a - b) <= 1e-12 * moved
    assert np.linalg.norm(a - b) <= 1e-12 * np.linalg.norm(b)


def test_locoprop_s_with_batchnorm_moves_the_linear_layers_as_backprop_at_eta_gamma():
    """One step: the Linear layers' targets are taken through batch norm's batch statistics."""
    eta, gamma = 0.05, 2.5
    train = synthetic(n=16)
    model_options = {"sizes": [5, 7, 6, 3], "activation": "tanh", "batchnorm": True, "seed": 1}
    loco = Trainer(
        nn.MLP(**model_options),
        optim.SGD(eta),
        batch_size=16,
        log=None,
        scheme=LocoProp("S", gamma, 1),
    )
    back = Trainer(nn.MLP(**model_options), optim.SGD(eta * gamma), batch_size=16, log=None)
    loco.train_step(train.features, train.labels)
    back.train_step(train.features, train.labels)
    for block in ("0", "3", "6"):  # the Linear layers (1, 4: batch norm; 2, 5: tanh)
        for key in ("weight", "bias"):
            np.testing.assert_allclose(
                loco.params[block][key], back.params[block][key], rtol=1e-12, atol=1e-15
            )


def test_locoprop_s_with_batchnorm_and_gamma_is_backprop_with_lr_eta_gamma():
    eta, gamma = 0.05, 2.5
    sizes = [5, 7, 6, 3]
    loco = trained(
        nn.MLP(sizes, activation="tanh", batchnorm=True, seed=1),
        LocoProp("S", gamma=gamma, local_steps=1),
        lr=eta,
    )
    back = trained(
        nn.MLP(sizes, activation="tanh", batchnorm=True, seed=1), "simultaneous", lr=eta * gamma
    )
    a, b = flat(loco.params), flat(back.params)
    assert np.linalg.norm(a - b) <= 1e-12 * np.linalg.norm(b)


def test_locoprop_m_local_problems_match_a_hand_computation():
    """One LocoProp-M step with T = 2 local SGD steps on a [5, 7, 3] tanh network, by hand: the
    hidden unit's local gradient is xᵀ(tanh(W x + b) - target) with target tanh(a) - γ·∂L/∂y
    (no tanh' factor); the identity output unit's is the squared-loss one."""
    eta, gamma, steps = 0.05, 2.0, 2
    train = synthetic(n=16)
    x, labels = train.features, train.labels
    model = nn.MLP([5, 7, 3], activation="tanh", seed=3)
    p = model.parameters()
    w0, b0, w2, b2 = p["0"]["weight"], p["0"]["bias"], p["2"]["weight"], p["2"]["bias"]

    a1 = x @ w0 + b0
    y1 = np.tanh(a1)
    logits = y1 @ w2 + b2
    d_logits = (softmax(logits) - np.eye(3)[labels]) / len(labels)
    d_y1 = d_logits @ w2.T

    hidden_target = np.tanh(a1) - gamma * d_y1
    w, b = w0.copy(), b0.copy()
    first_residual = None
    for _ in range(steps):
        residual = np.tanh(x @ w + b) - hidden_target
        if first_residual is None:
            first_residual = residual
        w, b = w - eta * (x.T @ residual), b - eta * residual.sum(axis=0)
    expected_hidden = (w, b)
    # The first local residual is γ·∂L/∂y: the activation's slope has dropped out of the local
    # gradient xᵀ·residual.
    np.testing.assert_allclose(first_residual, gamma * d_y1, rtol=1e-9, atol=1e-15)

    output_target = logits - gamma * d_logits
    w, b = w2.copy(), b2.copy()
    for _ in range(steps):
        residual = y1 @ w + b - output_target
        w, b = w - eta * (y1.T @ residual), b - eta * residual.sum(axis=0)
    expected_output = (w, b)

    trainer = Trainer(
        model,
        optim.SGD(eta),
        batch_size=16,
        log=None,
        scheme=LocoProp("M", gamma=gamma, local_steps=steps),
    )
    loss = trainer.train_step(x, labels)
    assert loss == pytest.approx(
        float(np.mean(-np.log(softmax(logits)[np.arange(16), labels]))), rel=1e-12
    )
    new = trainer.params
    for got, want in zip((new["0"]["weight"], new["0"]["bias"]), expected_hidden, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    for got, want in zip((new["2"]["weight"], new["2"]["bias"]), expected_output, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert trainer.total_cost.local_passes == 2 * steps
    assert (trainer.total_cost.forward_passes, trainer.total_cost.vjp_passes) == (1, 1)


def test_locoprop_m_output_layer_matches_backprop_hidden_layers_do_not():
    eta, gamma = 0.05, 2.0
    train = synthetic(n=16)
    loco = Trainer(
        nn.MLP([5, 7, 3], activation="tanh", seed=3),
        optim.SGD(eta),
        batch_size=16,
        log=None,
        scheme=LocoProp("M", gamma=gamma, local_steps=1),
    )
    back = Trainer(
        nn.MLP([5, 7, 3], activation="tanh", seed=3),
        optim.SGD(eta * gamma),
        batch_size=16,
        log=None,
    )
    loco.train_step(train.features, train.labels)
    back.train_step(train.features, train.labels)
    for key in ("weight", "bias"):
        np.testing.assert_allclose(
            loco.params["2"][key], back.params["2"][key], rtol=1e-12, atol=1e-15
        )
    # The hidden layer's step lacks the tanh' factor: not backprop's (by design).
    assert np.max(np.abs(loco.params["0"]["weight"] - back.params["0"]["weight"])) > 1e-4


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", seed=0)


@pytest.mark.parametrize("variant", ["S", "M"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_locoprop_reduces_the_training_loss_on_digits(digits, variant, activation):
    """Local problems summed over a batch of 32 digits have λmax(XᵀX) ≈ 1.1e3, so the local
    learning rate must stay below ≈ 1.8e-3: lr 1e-3, target step 10, 5 local steps."""
    train = digits.train
    trainer = Trainer(
        nn.MLP([64, 32, 10], activation=activation, seed=0),
        optim.SGD(1e-3),
        batch_size=32,
        log=None,
        scheme=LocoProp(variant, gamma=10.0, local_steps=5),
    )
    before = trainer.evaluate(train)["loss"]
    history = trainer.fit(train, epochs=2)
    after = trainer.evaluate(train)["loss"]
    assert before > 2.0
    assert after < 0.5 * before
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert trainer.total_cost.local_passes == 2 * 5 * trainer.step


def test_locoprop_refuses_other_methods_and_models():
    model = nn.MLP([5, 4, 3], seed=0)
    for method in ("spsa", "forward_mode", "mezo"):
        with pytest.raises(ValueError, match=rf"backprop.*{method}"):
            Trainer(model, optim.SGD(0.1), log=None, method=method, scheme="locoprop-s")
    with pytest.raises(ValueError, match="Dropout"):
        Trainer(nn.MLP([5, 4, 3], dropout=0.5), optim.SGD(0.1), log=None, scheme="locoprop-m")
    with pytest.raises(ValueError, match="gamma"):
        LocoProp("S", gamma=0.0)
    with pytest.raises(ValueError, match="local_steps"):
        LocoProp("M", local_steps=0)


# ------------------------------------------------------------------------------------------------
# Layer-wise and cyclic
# ------------------------------------------------------------------------------------------------


def test_layerwise_with_one_block_is_simultaneous():
    def run(scheme):
        model = nn.Sequential(nn.Linear(5, 3, seed=2))
        trainer = Trainer(
            model, optim.SGD(0.1, momentum=0.9), batch_size=16, log=None, scheme=scheme
        )
        trainer.fit(synthetic(), epochs=2)
        return trainer

    layerwise, simultaneous = run("layerwise"), run("simultaneous")
    assert layerwise.step == 6
    np.testing.assert_allclose(
        flat(layerwise.params), flat(simultaneous.params), rtol=1e-14, atol=1e-15
    )
    assert [r["train_loss"] for r in layerwise.history] == pytest.approx(
        [r["train_loss"] for r in simultaneous.history], rel=1e-13
    )


def test_layerwise_updates_lower_blocks_against_the_updated_upper_ones():
    lr = 0.3
    train = synthetic(n=16)
    x, labels = train.features, train.labels
    model = nn.MLP([5, 4, 3], activation="tanh", seed=4)
    start = model.parameters()

    def loss(params):
        return softmax_cross_entropy(model.apply(params, x, train=True), labels)

    # By hand: the output block "2" first, then block "0" at the already-updated block "2".
    g_top = cr.grad(loss)(start)["2"]
    top = {k: start["2"][k] - lr * g_top[k] for k in g_top}
    g_bottom = cr.grad(loss)({"0": start["0"], "2": top})["0"]
    bottom = {k: start["0"][k] - lr * g_bottom[k] for k in g_bottom}
    g_stale = cr.grad(loss)(start)["0"]
    assert np.max(np.abs(g_bottom["weight"] - g_stale["weight"])) > 1e-4  # the order matters here

    trainer = Trainer(model, optim.SGD(lr), batch_size=16, log=None, scheme="layerwise")
    reported = trainer.train_step(x, labels)
    assert reported == pytest.approx(float(loss(start)), rel=1e-14)  # the loss at the step's θ
    for block, want in (("0", bottom), ("2", top)):
        for key in want:
            np.testing.assert_allclose(
                trainer.params[block][key], want[key], rtol=1e-13, atol=1e-15
            )
    assert (trainer.total_cost.forward_passes, trainer.total_cost.vjp_passes) == (2, 2)


def test_cyclic_changes_one_block_per_step_from_the_output_down():
    train = synthetic(n=16)
    lr = 0.2
    model = nn.MLP([5, 4, 4, 3], activation="tanh", seed=5)  # parameter blocks "0", "2", "4"

    def loss(params):
        return softmax_cross_entropy(model.apply(params, train.features, train=True), train.labels)

    trainer = Trainer(model, optim.SGD(lr), batch_size=16, log=None, scheme="cyclic")
    order = []
    for _ in range(7):
        before = trainer.params
        g = cr.grad(loss)(before)
        trainer.train_step(train.features, train.labels)
        blocks = changed_blocks(before, trainer.params)
        assert len(blocks) == 1, blocks
        block = blocks[0]
        order.append(block)
        for key in g[block]:
            np.testing.assert_allclose(
                trainer.params[block][key],
                before[block][key] - lr * g[block][key],
                rtol=1e-13,
                atol=1e-15,
            )
    assert order == ["4", "2", "0", "4", "2", "0", "4"]
    assert trainer.total_cost.vjp_passes == 7


# ------------------------------------------------------------------------------------------------
# Derivative-free methods and CMA-ES
# ------------------------------------------------------------------------------------------------


def test_derivative_free_scheme_refuses_gradient_methods():
    for method in ("backprop", "forward_mode", "forward_gradient"):
        with pytest.raises(ValueError, match=rf"derivative_free.*{method}"):
            Trainer(
                nn.MLP([5, 4, 3]), optim.SGD(0.1), log=None, method=method, scheme="derivative_free"
            )


@pytest.mark.parametrize(
    "method", ["spsa", "mezo", "es", "evolution_strategies", "finite_differences", "fd"]
)
def test_derivative_free_scheme_trains_with_loss_only_methods(method):
    model = nn.MLP([5, 4, 3], activation="tanh", seed=0)
    start = flat(model.parameters())
    trainer = Trainer(
        model, optim.SGD(0.01), batch_size=16, log=None, method=method, scheme="derivative_free"
    )
    trainer.fit(synthetic(), epochs=1)
    cost = trainer.total_cost
    assert trainer.step == 3
    assert (
        cost.loss_evaluations > 0 and cost.vjp_passes == cost.jvp_passes == cost.forward_passes == 0
    )
    assert not np.array_equal(flat(trainer.params), start)
    assert np.isfinite(trainer.history[0]["train_loss"])


def test_cmaes_reduces_the_loss_of_a_small_problem():
    train = synthetic(n=40, features=3, classes=2, seed=1)
    model = nn.MLP([3, 5, 2], activation="tanh", seed=0)  # P = 32
    trainer = Trainer(model, optim.SGD(0.1), batch_size=40, log=None, scheme="cmaes")
    before = trainer.evaluate(train)["loss"]
    trainer.fit(train, epochs=25)
    after = trainer.evaluate(train)["loss"]
    assert after < 0.5 * before
    population = trainer.scheme.strategy.popsize
    assert trainer.total_cost.loss_evaluations == 25 * (population + 1)  # + the loss at the mean
    assert trainer.total_cost.vjp_passes == 0
    # θ is the distribution's mean and the model holds it after fit.
    np.testing.assert_array_equal(
        flat(model.parameters()), np.asarray(trainer.scheme.strategy.mean)
    )


def test_cmaes_refuses_checkpoints_and_methods(tmp_path):
    train = synthetic(n=16, features=3, classes=2)
    with pytest.raises(
        CheckpointError, match="cmaes.*checkpoint"
    ):  # at construction or at the first save
        Trainer(
            nn.MLP([3, 2, 2], seed=0),
            optim.SGD(0.1),
            batch_size=16,
            log=None,
            scheme="cmaes",
            run_dir=tmp_path,
        ).fit(train, epochs=1)
    assert not list(tmp_path.rglob("*.npz")) and not list(tmp_path.rglob("*.safetensors"))
    with pytest.raises(ValueError, match="cmaes"):
        Trainer(nn.MLP([3, 2, 2]), optim.SGD(0.1), log=None, method="spsa", scheme="cmaes")


# ------------------------------------------------------------------------------------------------
# MeZO's two update paths
# ------------------------------------------------------------------------------------------------


def hand_mezo(model, train, steps, lr, eps, momentum, key_of_step):
    """MeZO-SGD written out on the flat θ: z materialized, θ ± eps·z as new vectors, (momentum)
    SGD on g·z. Returns the parameters and each step's loss (the mean of the two evaluations)."""
    theta, unravel = ravel_pytree(model.parameters())
    theta = theta.copy()

    def loss(vector):
        return float(
            softmax_cross_entropy(
                model.apply(unravel(vector), train.features, train=True), train.labels
            )
        )

    velocity, losses = np.zeros_like(theta), []
    for step in range(steps):
        z = flat(direction(key_of_step(step), 0, unravel(theta), "gaussian"))
        upper, lower = loss(theta + eps * z), loss(theta + (-eps) * z)
        losses.append((upper + lower) / 2)
        gradient = ((upper - lower) / (2 * eps)) * z
        if momentum:
            velocity = momentum * velocity + gradient
            gradient = velocity
        theta = theta - lr * gradient
    return unravel(theta), losses


@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["in-place", "materialized"])
def test_mezo_in_the_trainer_matches_hand_written_mezo_sgd(momentum):
    """The in-place path restores θ after θ + eps·z - 2·eps·z + eps·z only to a few ulps, and
    those ulps reach the coefficient (f₊ - f₋)/(2·eps) amplified by |f|/eps: the parameters
    agree to ~1e-12 of the step they took (measured: 7e-13), the losses to a few ulps."""
    train = synthetic(n=16)
    lr, eps, steps = 0.05, 1e-3, 3
    model = nn.MLP([5, 6, 3], activation="tanh", seed=7)
    start = flat(model.parameters()).copy()
    trainer = Trainer(
        model,
        optim.SGD(lr, momentum=momentum),
        batch_size=16,
        log=None,
        method=MeZO(eps=eps),
        seed=11,
    )
    keys, losses = [], []
    leaves_before = [leaf for block in trainer.params.values() for leaf in block.values()]
    for _ in range(steps):
        keys.append(trainer._step_key())  # the step's random key, a function of (seed, step)
        losses.append(trainer.train_step(train.features, train.labels))
    leaves_after = [leaf for block in trainer.params.values() for leaf in block.values()]
    same_arrays = all(a is b for a, b in zip(leaves_before, leaves_after, strict=True))
    # Plain SGD: θ is updated in place (the same arrays); with momentum: new arrays each step.
    assert same_arrays == (momentum == 0.0)
    assert ("velocity" in trainer.opt_state) == (momentum != 0.0)
    reference, reference_losses = hand_mezo(
        nn.MLP([5, 6, 3], activation="tanh", seed=7),
        train,
        steps,
        lr,
        eps,
        momentum,
        keys.__getitem__,
    )
    got, want = flat(trainer.params), flat(reference)
    moved = np.max(np.abs(want - start))
    assert moved > 1e-2
    assert np.max(np.abs(got - want)) <= 1e-11 * moved
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-13)
    assert trainer.total_cost.loss_evaluations == 2 * steps


# ------------------------------------------------------------------------------------------------
# Exact resume, batch-norm statistics, costs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_options", "momentum", "options"),
    [
        ({"batchnorm": True}, 0.5, {"method": "spsa"}),
        ({}, 0.5, {"scheme": LocoProp("S", gamma=2.0, local_steps=3)}),
        ({}, 0.5, {"scheme": "layerwise", "method": "spsa"}),
        ({"batchnorm": True}, 0.0, {"method": "mezo"}),
    ],
    ids=["spsa-batchnorm", "locoprop-s", "layerwise-spsa", "mezo-in-place"],
)
def test_interrupted_run_resumes_bit_for_bit(tmp_path, model_options, momentum, options):
    train = synthetic(n=40)

    def trainer(run_dir):
        return Trainer(
            nn.MLP([5, 6, 3], activation="tanh", seed=2, **model_options),
            optim.SGD(0.02, momentum=momentum),
            batch_size=16,
            log=None,
            seed=3,
            run_dir=run_dir,
            **options,
        )

    whole = trainer(tmp_path / "whole")
    whole.fit(train, epochs=3)
    first = trainer(tmp_path / "cut")
    first.fit(train, epochs=3, max_steps=4)  # killed mid-epoch 2 (3 steps per epoch)
    assert first.step == 4
    second = trainer(tmp_path / "cut")
    second.fit(train, epochs=3, resume=True)
    assert second.step == whole.step == 9
    np.testing.assert_array_equal(flat(second.params), flat(whole.params))
    np.testing.assert_array_equal(
        flat(second.model.named_buffers()), flat(whole.model.named_buffers())
    )
    assert second.history == [
        {**record, "time": second.history[i]["time"]} for i, record in enumerate(whole.history)
    ]
    assert second.total_cost.loss_evaluations == whole.total_cost.loss_evaluations


@pytest.mark.parametrize(
    ("method", "scheme"),
    [
        ("spsa", "simultaneous"),
        ("finite_differences", "derivative_free"),
        ("mezo", "simultaneous"),
        ("evolution_strategies", "simultaneous"),
        ("forward_gradient", "simultaneous"),
        ("backprop", "layerwise"),
        ("backprop", "cyclic"),
        ("backprop", "locoprop-s"),
        ("backprop", "locoprop-m"),
        ("backprop", "cmaes"),
    ],
)
def test_batchnorm_statistics_move_once_per_step(method, scheme):
    model = nn.MLP([5, 6, 4, 3], activation="tanh", batchnorm=True, seed=0)
    trainer = Trainer(model, optim.SGD(0.01), batch_size=16, log=None, method=method, scheme=scheme)
    trainer.fit(synthetic(), epochs=2)
    buffers = model.named_buffers()
    assert trainer.step == 6
    assert sorted(buffers) == ["1", "4"]
    for layer in buffers.values():
        assert int(layer["num_batches_tracked"]) == 6
        assert not np.array_equal(layer["running_mean"], np.zeros_like(layer["running_mean"]))


def test_total_cost_sums_the_methods_counts():
    train = synthetic()  # 3 steps per epoch at batch 16
    steps = 6

    def cost(method="backprop", scheme="simultaneous", sizes=(5, 4, 3)):
        model = nn.MLP(list(sizes), activation="tanh", seed=0)
        trainer = Trainer(
            model, optim.SGD(0.01), batch_size=16, log=None, method=method, scheme=scheme
        )
        trainer.fit(train, epochs=2)
        assert trainer.step == steps
        return model.num_parameters(), trainer.total_cost

    parameters, fd = cost("finite_differences")
    assert fd.loss_evaluations == 2 * parameters * steps
    assert fd.forward_passes == fd.vjp_passes == fd.jvp_passes == 0

    _, backprop = cost()
    assert (backprop.forward_passes, backprop.vjp_passes, backprop.loss_evaluations) == (
        steps,
        steps,
        0,
    )

    _, spsa = cost("spsa")
    assert spsa.loss_evaluations == 2 * steps

    _, forward = cost("forward_mode")
    assert forward.jvp_passes == parameters * steps

    _, layerwise = cost(scheme="layerwise", sizes=(5, 4, 4, 3))  # L = 3 blocks
    assert (layerwise.forward_passes, layerwise.vjp_passes) == (3 * steps, 3 * steps)

    _, cyclic = cost(scheme="cyclic", sizes=(5, 4, 4, 3))
    assert cyclic.vjp_passes == steps
    assert cyclic.seconds > 0


# ------------------------------------------------------------------------------------------------
# The CLI
# ------------------------------------------------------------------------------------------------

QUICK = ["train", "--data", "moons", "--hidden", "8", "--epochs", "1", "--quiet", "--no-plot"]


def test_cli_trains_with_a_method_and_records_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main([*QUICK, "--method", "spsa", "--lr", "0.001", "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["method"], config["scheme"]) == ("spsa", "simultaneous")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] > 0


def test_cli_trains_locoprop_with_its_options(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(
        [
            *QUICK,
            "--scheme",
            "locoprop-m",
            "--lr",
            "0.01",
            "--local-steps",
            "2",
            "--target-step",
            "3",
            "--run-dir",
            str(run_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["scheme"], config["local_steps"], config["target_step"]) == (
        "locoprop-m",
        2,
        3.0,
    )


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--method", "nope"], "--method"),
        (["--scheme", "nope"], "--scheme"),
        (["--scheme", "derivative_free"], "derivative_free"),
        (["--scheme", "cmaes"], "compare"),
        (["--method", "backprop", "--perturbation", "0.1"], "--perturbation"),
    ],
)
def test_cli_refuses_bad_combinations_in_one_line(tmp_path, capsys, arguments, named):
    run_dir = tmp_path / "run"
    code = main([*QUICK, "--run-dir", str(run_dir), *arguments])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("chainrule train: error:")
    assert named in err
    assert not run_dir.exists()


def test_cli_names_the_option_of_a_method_scheme_mismatch(tmp_path, capsys):
    code = main(
        [*QUICK, "--run-dir", str(tmp_path / "run"), "--scheme", "locoprop-s", "--method", "spsa"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--method" in err or "--scheme" in err


def test_cli_method_scheme_mismatch_exits_2_in_one_line(tmp_path, capsys):
    code = main(
        [*QUICK, "--run-dir", str(tmp_path / "run"), "--scheme", "locoprop-s", "--method", "spsa"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "spsa" in err and "backprop" in err
    assert not (tmp_path / "run").exists()


def test_get_scheme_refuses_options_with_an_instance_and_names_bad_options():
    scheme = get_scheme("cyclic")
    assert get_scheme(scheme) is scheme
    with pytest.raises(TypeError, match="get_scheme: a Scheme instance given with options"):
        get_scheme(scheme, gamma=0.5)
    with pytest.raises(TypeError, match="^locoprop-s: "):
        get_scheme("locoprop", sideways=1)
    with pytest.raises(ValueError, match="unknown update scheme 'sideways'"):
        get_scheme("sideways")
