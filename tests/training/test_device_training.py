"""Training on a device end to end: Trainer, checkpoints, estimators, schemes, data and the CLI's
``--device``, run on the simulated CUDA device (CuPy's placement rules, NumPy arithmetic), so a
host array that would break on a GPU breaks here too. The arithmetic is NumPy's on both sides, so
a float32 run on "cuda" must match a float32 run on the CPU."""

import json

import numpy as np
import pytest

from chainrule import data, nn, optim
from chainrule.apps.cli import main
from chainrule.backend.device import (
    cuda_available,
    device,
    device_of,
    float_dtype,
    scoped_device,
    synchronize,
    to_device,
    to_numpy,
)
from chainrule.backend.simulated_cuda import SimulatedArray, simulate_cuda
from chainrule.distributed.packing import PackedReductions
from chainrule.estimators import SeededGradient, add_direction_, get_method
from chainrule.training import (
    Trainer,
    TrainingDiverged,
    latest_checkpoint,
    load_checkpoint,
    read_jsonl,
)
from chainrule.training.metrics import accuracy
from chainrule.training.parallel import LocalCommunicator
from chainrule.transforms.pytree import tree_leaves


@pytest.fixture
def cuda():
    with simulate_cuda():
        yield


@pytest.fixture(scope="module")
def digits():
    """The digits data, a few hundred training examples of it (every test trains a few steps)."""
    splits = data.load("digits", seed=0)
    return splits.train.subset(np.arange(320), "train"), splits.val


def digits_trainer(device_name, optimizer=None, dtype="float32", model_options=None, **options):
    model = nn.MLP([64, 32, 10], seed=0, **(model_options or {}))
    return Trainer(
        model,
        optimizer or optim.SGD(0.1),
        batch_size=32,
        log=None,
        progress=False,
        device=device_name,
        dtype=dtype,
        **options,
    )


def first_losses(trainer, dataset, steps):
    """The losses of the first ``steps`` updates of epoch 0, batches drawn as ``fit`` draws them."""
    losses = []
    for features, labels in data.batches(
        trainer.place(dataset), trainer.batch_size, trainer.seed, 0
    ):
        losses.append(trainer.train_step(features, labels))
        if len(losses) == steps:
            return losses
    return losses


def on_cuda(tree) -> bool:
    leaves = tree_leaves(tree)
    return bool(leaves) and all(type(leaf) is SimulatedArray for leaf in leaves)


def host_arrays(trainer) -> dict:
    return {name: to_numpy(value) for name, value in trainer.state_arrays().items()}


def strip_times(history):
    return [{key: value for key, value in record.items() if key != "time"} for record in history]


# ------------------------------------------------------------------------------------------------
# The Trainer on "cuda"
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_optimizer", [lambda: optim.SGD(0.1, momentum=0.9), lambda: optim.Adam(0.01)]
)
def test_cuda_training_gives_the_cpu_float32_losses(cuda, digits, make_optimizer):
    train, val = digits
    on_cpu = digits_trainer("cpu", make_optimizer())
    on_gpu = digits_trainer("cuda", make_optimizer())  # float32 by default there
    want, got = first_losses(on_cpu, train, 6), first_losses(on_gpu, train, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert on_gpu.device == "cuda" and on_gpu.compute_dtype == "float32"
    assert on_cuda(on_gpu.params) and on_cuda(on_gpu.opt_state)
    want_eval, got_eval = on_cpu.evaluate(val), on_gpu.evaluate(val)
    assert got_eval["accuracy"] == want_eval["accuracy"]
    np.testing.assert_allclose(got_eval["loss"], want_eval["loss"], rtol=1e-5)
    # fit leaves the model's own Tensors on the device, holding the trained values
    on_gpu.fit(train, 1)
    assert on_cuda(on_gpu.model.parameters())
    for mine, trained in zip(
        tree_leaves(on_gpu.model.parameters()), tree_leaves(on_gpu.params), strict=True
    ):
        np.testing.assert_array_equal(mine.get(), trained.get())


def test_default_device_and_dtype(cuda):
    model = nn.MLP([4, 3, 2], seed=0)
    assert Trainer(model, optim.SGD(0.1), log=None).device == "cpu"
    assert Trainer(model, optim.SGD(0.1), log=None).compute_dtype == "float64"  # the CPU keeps it
    with device("cuda"):
        assert scoped_device() == "cuda"
        trainer = Trainer(nn.MLP([4, 3, 2], seed=0), optim.SGD(0.1), log=None)
    assert scoped_device() is None
    assert trainer.device == "cuda" and trainer.compute_dtype == "float32"
    # a model already on the device trains there without being told
    assert Trainer(trainer.model, optim.SGD(0.1), log=None).device == "cuda"
    wide = Trainer(
        nn.MLP([4, 3, 2], seed=0), optim.SGD(0.1), log=None, device="cuda", dtype="float64"
    )
    assert wide.compute_dtype == "float64"


def test_data_stay_on_the_host_when_asked(cuda, digits):
    train, _ = digits
    preloaded = first_losses(digits_trainer("cuda"), train, 3)
    trainer = digits_trainer("cuda", data_on_device=False)
    assert trainer.place(train) is not train  # place() still moves; fit() then does not use it
    losses = []
    for features, labels in data.batches(train, 32, 0, 0):  # host batches, moved by train_step
        losses.append(trainer.train_step(features, labels))
        if len(losses) == 3:
            break
    assert losses == preloaded
    trainer.fit(train, 1)
    assert trainer.step == 10 and on_cuda(trainer.params)  # fit finished the epoch begun above


def test_resume_after_an_interrupt_on_cuda_is_bit_identical(cuda, digits, tmp_path):
    train, val = digits
    layers = {"batchnorm": True, "dropout": 0.1}  # buffers and dropout masks on the device too
    reference = digits_trainer(
        "cuda", optim.Adam(0.01), model_options=layers, run_dir=tmp_path / "ref"
    )
    reference.fit(train, 2, val)
    interrupted = digits_trainer(
        "cuda", optim.Adam(0.01), model_options=layers, run_dir=tmp_path / "run", checkpoint_every=4
    )
    interrupted.fit(train, 2, val, max_steps=13)  # in the middle of the second epoch
    newest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    arrays, meta = load_checkpoint(newest)
    assert meta["device"] == "cuda" and meta["dtype"] == "float32" and meta["step"] == 13
    assert all(type(value) is np.ndarray for value in arrays.values())  # host arrays on disk
    assert arrays["params.0.weight"].dtype == np.float32

    resumed = digits_trainer(
        "cuda", optim.Adam(0.01), model_options=layers, run_dir=tmp_path / "run", checkpoint_every=4
    )
    resumed.fit(train, 2, val, resume=True)
    assert on_cuda(resumed.params) and on_cuda(resumed.opt_state)
    assert on_cuda(resumed.model.named_buffers())
    want, got = host_arrays(reference), host_arrays(resumed)
    assert sorted(want) == sorted(got) and "buffers.1.running_mean" in want
    for name in want:
        assert np.array_equal(want[name], got[name]), name
    assert strip_times(resumed.history) == strip_times(reference.history)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


def test_a_cuda_checkpoint_loads_and_resumes_on_the_cpu(cuda, digits, tmp_path):
    train, val = digits
    reference = digits_trainer("cuda", run_dir=tmp_path / "ref")
    reference.fit(train, 2, val)
    interrupted = digits_trainer("cuda", run_dir=tmp_path / "run")
    interrupted.fit(train, 2, val, max_steps=7)
    # The same float32 run continued on the CPU ends where the uninterrupted GPU run ended.
    on_cpu = digits_trainer("cpu", run_dir=tmp_path / "run")
    on_cpu.fit(train, 2, val, resume=True)
    assert device_of(on_cpu.params["0"]["weight"]) == "cpu"
    want, got = host_arrays(reference), host_arrays(on_cpu)
    for name in want:
        assert np.array_equal(want[name], got[name]), name
    # A float64 CPU trainer loads the float32 values exactly (widened) and evaluates them.
    wide = digits_trainer("cpu", dtype=None, run_dir=tmp_path / "ref")
    assert wide.restore() is not None and wide.compute_dtype == "float64"
    np.testing.assert_array_equal(wide.params["0"]["weight"], reference.params["0"]["weight"].get())
    assert wide.evaluate(val)["accuracy"] == reference.evaluate(val)["accuracy"]


# ------------------------------------------------------------------------------------------------
# Gradient methods and update schemes on "cuda"
# ------------------------------------------------------------------------------------------------

PAIRS = [
    ("spsa", "simultaneous", 0.002),
    ("mezo", "simultaneous", 0.002),
    ("forward_gradient", "simultaneous", 0.002),
    ("evolution_strategies", "simultaneous", 0.02),
    ("forward_mode", "simultaneous", 0.1),
    ("finite_differences", "derivative_free", 0.1),
    ("backprop", "layerwise", 0.1),
    ("spsa", "cyclic", 0.002),
    ("backprop", "locoprop-s", 0.001),
    ("backprop", "locoprop-m", 0.001),
]


def assert_same_run_on_cpu_and_cuda(**trainer_options):
    """Three steps of a small MLP on "cpu" and on "cuda" (float32 both): the same losses and
    weights, the device run's state on the device. Returns the device trainer."""
    splits = data.load("moons", seed=0, size=160)

    def run(where):
        trainer = Trainer(
            nn.MLP([2, 6, 2], seed=0),
            batch_size=16,
            log=None,
            device=where,
            dtype="float32",
            **trainer_options,
        )
        return trainer, first_losses(trainer, splits.train, 3)

    on_cpu, want = run("cpu")
    on_gpu, got = run("cuda")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert on_cuda(on_gpu.params)
    for mine, theirs in zip(tree_leaves(on_gpu.params), tree_leaves(on_cpu.params), strict=True):
        np.testing.assert_allclose(mine.get(), theirs, rtol=1e-5, atol=1e-6)
    return on_gpu


@pytest.mark.parametrize(("method", "scheme", "lr"), PAIRS, ids=[f"{m}-{s}" for m, s, _ in PAIRS])
def test_methods_and_schemes_run_on_the_device(cuda, method, scheme, lr):
    on_gpu = assert_same_run_on_cpu_and_cuda(optimizer=optim.SGD(lr), method=method, scheme=scheme)
    assert on_cuda(on_gpu.opt_state)


class MirroredRanks(PackedReductions, LocalCommunicator):  # packing as MPICommunicator has it
    """Two ranks that happen to hold the same numbers: every sum is twice this rank's buffer. The
    Trainer's data-parallel path runs whole (shards, one all-reduce of host buffers per step)."""

    size = 2

    def allreduce_sum(self, array):
        assert type(array) is np.ndarray  # what MPI is handed: host memory
        return 2 * super().allreduce_sum(array)


@pytest.mark.parametrize("method", ["backprop", "spsa"])
def test_the_data_parallel_step_stages_device_arrays_through_the_host(cuda, method):
    assert_same_run_on_cpu_and_cuda(
        optimizer=optim.SGD(0.01), method=method, communicator=MirroredRanks()
    )


def test_cmaes_refuses_a_device_with_a_clear_error(cuda):
    with pytest.raises(ValueError, match="cmaes scheme runs on the host .* on 'cuda'"):
        Trainer(nn.MLP([2, 3, 2], seed=0), optim.SGD(0.1), log=None, scheme="cmaes", device="cuda")


def test_seeded_directions_are_the_same_on_every_device(cuda):
    params = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "b": np.ones(40000, np.float32)}
    moved = to_device(params, "cuda")
    estimate = SeededGradient(7, [0.5, -2.0], "rademacher")
    for mine, theirs in zip(
        tree_leaves(estimate.materialize(moved)),
        tree_leaves(estimate.materialize(params)),
        strict=True,
    ):
        assert type(mine) is SimulatedArray
        np.testing.assert_array_equal(mine.get(), theirs)
    leaves, host = tree_leaves(moved), [leaf.copy() for leaf in tree_leaves(params)]
    add_direction_(leaves, 3, 0, 0.25)  # in place, a chunk at a time (b spans two chunks)
    add_direction_(host, 3, 0, 0.25)
    for mine, theirs in zip(leaves, host, strict=True):
        np.testing.assert_array_equal(mine.get(), theirs)

    def loss_fn(params, batch):
        return ((params["w"] @ batch) ** 2).sum() + (params["b"] ** 2).mean()

    batch = to_device(np.ones(3, np.float32), "cuda")
    before = to_numpy(moved)
    loss, grads, _ = get_method("mezo")(loss_fn, moved, batch, key=5)
    after = to_numpy(moved)
    assert on_cuda(grads) and np.isfinite(loss)
    for name in before:  # MeZO put the parameters back
        np.testing.assert_allclose(after[name], before[name], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Data, metrics and device helpers
# ------------------------------------------------------------------------------------------------


def test_datasets_move_once_and_batch_on_the_device(cuda):
    host = data.Dataset(np.arange(20.0).reshape(10, 2), np.arange(10) % 3)
    moved = host.to("cuda", "float32")
    assert moved.device == "cuda" and type(moved.features) is SimulatedArray
    assert moved.features.dtype == np.float32 and moved.labels.dtype == np.int64
    assert host.to("cpu") is host and moved.to("cuda", "float32") is moved
    for (x_dev, y_dev), (x_host, y_host) in zip(
        data.batches(moved, 4, 1, 2), data.batches(host, 4, 1, 2), strict=True
    ):
        assert type(x_dev) is SimulatedArray and type(y_dev) is SimulatedArray
        np.testing.assert_array_equal(x_dev.get(), x_host.astype(np.float32))
        np.testing.assert_array_equal(y_dev.get(), y_host)
    assert moved.subset(np.array([0, 2])).device == "cuda"
    # A data set made of device arrays is checked (on a host copy) and stays on the device.
    built = data.Dataset(to_device(np.ones((3, 2)), "cuda"), to_device(np.array([0, 1, 1]), "cuda"))
    assert built.device == "cuda" and built.num_classes == 2
    bad = np.ones((3, 2))
    bad[1, 0] = np.nan
    with pytest.raises(data.DataError, match="NaN or Inf"):
        data.Dataset(to_device(bad, "cuda"), to_device(np.array([0, 1, 1]), "cuda"))
    scaled = data.Standardizer.fit(host.features)(moved)
    assert scaled.device == "cuda"
    np.testing.assert_allclose(
        scaled.features.get(), data.Standardizer.fit(host.features)(host).features, rtol=1e-6
    )
    splits = data.Splits(host, None, host).to("cuda")
    assert splits.train.device == splits.test.device == "cuda" and splits.val is None
    outputs = to_device(np.array([[2.0, 1.0], [0.0, 3.0]]), "cuda")
    assert accuracy(outputs, np.array([0, 0])) == 0.5  # host labels are moved, explicitly


def test_device_helpers(cuda):
    synchronize()  # the CPU: nothing to wait for
    synchronize("cuda")
    assert float_dtype() == np.float64 and float_dtype(where="cuda") == np.float32
    with pytest.raises(TypeError, match="floating dtype"):
        float_dtype("int32")
    moved = to_device({"w": np.ones(2), "step": np.array(3)}, "cuda", dtype="float32")
    assert moved["w"].dtype == np.float32 and moved["step"].dtype == np.array(3).dtype
    back = to_device(moved, "cpu", dtype="float64")
    assert type(back["w"]) is np.ndarray and back["w"].dtype == np.float64


# ------------------------------------------------------------------------------------------------
# Divergence to a huge but finite loss
# ------------------------------------------------------------------------------------------------


def growing_run(**options):
    """Least squares on a weight and a bias with a learning rate past the stability limit: the
    loss grows 441-fold per step ((1 - 4·5.5)²) and stays finite for over a hundred steps."""
    features = np.ones((8, 1))
    targets = np.zeros((8, 1))
    train = data.Dataset(features, targets, task="regression")
    model = nn.MLP([1, 1], seed=0)
    return Trainer(
        model, optim.SGD(5.5), task="regression", batch_size=8, log=None, **options
    ), train


def test_a_huge_finite_loss_is_divergence(tmp_path):
    trainer, train = growing_run(run_dir=tmp_path)
    expected = (
        r"diverged at step 4 \(epoch 4\): the loss 2\.01921e\+08 exceeds 1e\+06 x max\(1, \|first "
        r"loss 2\.35432\|\) = 2\.35432e\+06; lower the learning rate"
    )
    with pytest.raises(TrainingDiverged, match=expected):
        trainer.fit(train, 20)
    assert trainer.step == 3 and trainer.first_loss == pytest.approx(2.35432, rel=1e-5)
    # the reference is part of the checkpoint, so a resumed run keeps the same threshold
    _, meta = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert meta["first_loss"] == trainer.first_loss
    resumed, _ = growing_run(run_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="at step 4"):
        resumed.fit(train, 20, resume=True)
    unguarded, _ = growing_run(divergence_factor=None)
    unguarded.fit(train, 8)  # finite all the way: only NaN and Inf stop it
    assert unguarded.step == 8
    with pytest.raises(ValueError, match="divergence_factor"):
        growing_run(divergence_factor=0.5)


def test_locoprop_m_blowing_up_is_caught():
    splits = data.load("digits", seed=0)
    trainer = Trainer(
        nn.MLP([64, 32, 10], seed=0), optim.SGD(0.1), batch_size=32, log=None, scheme="locoprop-m"
    )
    with pytest.raises(
        TrainingDiverged, match=r"at step \d+ .*exceeds 1e\+06 x max\(1, \|first loss"
    ):
        trainer.fit(splits.train, 1)


# ------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------

TINY = ["--data", "digits", "--hidden", "16", "--epochs", "2", "--batch-size", "64", "--no-plot"]


def test_cli_trains_on_cuda_and_records_it(cuda, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--device", "cuda", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "on cuda (float32)" in out and "test" in out
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (config["device"], config["dtype"]) == ("cuda", "float32")
    assert (summary["device"], summary["dtype"]) == ("cuda", "float32")
    _, meta = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert meta["device"] == "cuda"
    accuracy_on_gpu = summary["results"]["test"]["accuracy"]
    # evaluate: on the run's device by default, or on the CPU
    assert main(["evaluate", str(run_dir)]) == 0
    assert "on cuda" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "on cpu" in out and f"{100 * accuracy_on_gpu:.2f}%" in out
    # a resumed run may move (it keeps its float32), but not change its dtype
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--device", "cpu"]) == 0
    assert "on cpu (float32)" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_dir), "--dtype", "float64"]) == 2
    assert "--dtype 'float64' differs from the run's 'float32'" in capsys.readouterr().err


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_cli_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--device", "cuda", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chainrule train: error: --device cuda:")
    assert "CuPy" in err[0]
    assert not run_dir.exists()
    assert main(["train", *TINY, "--device", "tpu", "--run-dir", str(run_dir)]) == 2
    assert "--device 'tpu' is unknown" in capsys.readouterr().err
    # A run made on a GPU, continued where there is none: the message says what to do.
    with simulate_cuda():
        assert (
            main(["train", *TINY, "--epochs", "1", "--device", "cuda", "--run-dir", str(run_dir)])
            == 0
        )
    capsys.readouterr()
    for argv in (["evaluate", str(run_dir)], ["train", "--resume", str(run_dir), "--epochs", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "the run ran on 'cuda', which is not available here" in err[0]
        assert err[0].endswith("choose another with --device cpu")
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0


def test_cli_compare_on_cuda_leaves_out_cmaes(cuda, tmp_path, capsys):
    out_dir = tmp_path / "compare"
    argv = ["compare", "--data", "moons", "--hidden", "6", "--methods", "backprop,spsa"]
    argv += [
        "--schemes",
        "simultaneous,cmaes",
        "--budget-passes",
        "20",
        "--device",
        "cuda",
        "--out",
        out_dir,
    ]
    assert main([str(arg) for arg in argv]) == 0
    out = capsys.readouterr().out
    assert "on cuda" in out and "CMA-ES runs on the host only" in out
    runs = json.loads((out_dir / "compare.json").read_text())["runs"]
    trained = [run for run in runs if not run["skipped"]]
    assert [(run["method"], run["scheme"]) for run in trained] == [
        ("backprop", "simultaneous"),
        ("spsa", "simultaneous"),
    ]
    assert all(run["passes"] >= 20 and np.isfinite(run["final_loss"]) for run in trained)
    assert main(["compare", "--gradient-cost", "--device", "cuda", "--out", str(out_dir)]) == 2
    assert "--gradient-cost times gradients on the CPU" in capsys.readouterr().err
