"""Data-parallel training on MPI: the communicator, same answer on 1 and 2 ranks, faults, resume.

Every MPI test launches ``mpirun -n 2 --oversubscribe`` on a small script (MPI cannot be started
and stopped inside the pytest process). They need Open MPI and mpi4py, which
``scripts/setup_mpi.sh`` installs; without them they are skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from chainrule.distributed import mpi_available

ROOT = Path(__file__).resolve().parents[2]


def _find_mpirun() -> str | None:
    beside_python = Path(sys.executable).parent / "mpirun"
    return str(beside_python) if beside_python.exists() else shutil.which("mpirun")


MPIRUN = _find_mpirun()

needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not mpi_available(),
    reason="needs Open MPI (mpirun) and mpi4py: run scripts/setup_mpi.sh",
)

#: Faults must end the job within this many seconds (the issue's bound).
FAULT_SECONDS = 30


#: A healthy two-rank run here takes a few seconds; this is the bound for a busy CI machine.
RUN_SECONDS = 120


def mpirun(ranks: int, args, *, cwd, timeout=RUN_SECONDS):
    """Run ``args`` on ``ranks`` MPI ranks; returns (exit status, output, seconds).

    A job still running after ``timeout`` seconds gets SIGTERM, which mpirun passes on to its
    ranks (SIGKILL would orphan them), and the test fails saying it hung.
    """
    command = [MPIRUN, "-n", str(ranks), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-run-as-root")
    # Waiting ranks yield their core: this machine's cores may be shared with other work.
    command += ["--mca", "mpi_yield_when_idle", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"mpirun -n {ranks} {' '.join(map(str, args))} hung for {timeout} s:\n{output}")
    return process.returncode, output, time.perf_counter() - started


def write_script(folder: Path, name: str, source: str) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return str(path)


# ------------------------------------------------------------------------------------------------
# The communicator's collectives
# ------------------------------------------------------------------------------------------------

COLLECTIVES = """
    import sys
    import numpy as np
    import fakedevice
    from chainrule.distributed import MPICommunicator

    comm = MPICommunicator()
    out = {}
    out["sum"] = comm.allreduce_sum(np.arange(5.0) * (comm.rank + 1))
    out["sum32"] = comm.allreduce_sum(np.ones((2, 3), dtype=np.float32) * (comm.rank + 1))
    out["scalar"] = comm.allreduce_sum(np.float64(comm.rank + 0.5))
    strided = np.arange(12.0).reshape(3, 4)[:, ::2] * (comm.rank + 1)
    out["strided"] = comm.allreduce_sum(strided)
    # Only the root's shape and dtype count: the others pass a placeholder.
    payload = np.arange(6, dtype=np.float32).reshape(2, 3) + 7 if comm.is_root else np.zeros(1)
    out["broadcast"] = comm.broadcast(payload)
    out["broadcast_from_1"] = comm.broadcast(np.full(2, float(comm.rank)), root=1)
    # A GPU array (here a stand-in with CuPy's protocol) is staged through host memory and comes
    # back as its own type.
    on_device = comm.allreduce_sum(fakedevice.DeviceArray(np.full(3, comm.rank + 1.0)))
    assert type(on_device) is fakedevice.DeviceArray, type(on_device)
    out["device_sum"] = on_device.get()
    comm.barrier()
    out["bytes"] = np.array(comm.bytes_reduced)
    out["meta"] = np.array([comm.rank, comm.size, int(comm.is_root)])
    np.savez(f"{sys.argv[1]}-{comm.rank}.npz", **out)
"""


FAKE_DEVICE = """
    import numpy as np


    class DeviceArray:  # the parts of a CuPy array the communicator uses
        def __init__(self, host):
            self.host = np.array(host)

        @property
        def __cuda_array_interface__(self):
            return {"shape": self.host.shape, "typestr": self.host.dtype.str, "version": 3}

        def get(self):
            return self.host.copy()


    def asarray(host):
        return DeviceArray(host)
"""


@needs_mpi
def test_collectives_sum_broadcast_and_count_bytes(tmp_path):
    write_script(tmp_path, "fakedevice.py", FAKE_DEVICE)
    script = write_script(tmp_path, "collectives.py", COLLECTIVES)
    status, output, _ = mpirun(2, [sys.executable, script, str(tmp_path / "out")], cwd=tmp_path)
    assert status == 0, output
    for rank in range(2):
        with np.load(tmp_path / f"out-{rank}.npz", allow_pickle=False) as got:
            assert got["meta"].tolist() == [rank, 2, int(rank == 0)]
            np.testing.assert_array_equal(got["sum"], np.arange(5.0) * 3)
            assert got["sum32"].dtype == np.float32 and got["sum32"].shape == (2, 3)
            np.testing.assert_array_equal(got["sum32"], np.full((2, 3), 3.0))
            assert got["scalar"].shape == () and got["scalar"] == 2.0
            np.testing.assert_array_equal(got["strided"], np.arange(12.0).reshape(3, 4)[:, ::2] * 3)
            assert got["broadcast"].dtype == np.float32
            np.testing.assert_array_equal(got["broadcast"], np.arange(6).reshape(2, 3) + 7)
            np.testing.assert_array_equal(got["broadcast_from_1"], [1.0, 1.0])
            np.testing.assert_array_equal(got["device_sum"], [3.0, 3.0, 3.0])
            # payload bytes passed to allreduce_sum: 5*8 + 6*4 + 8 + 6*8 + 3*8
            assert int(got["bytes"]) == 40 + 24 + 8 + 48 + 24


def test_single_process_import_needs_no_mpi(tmp_path):
    """chainrule, its Trainer and the distributed package import without starting MPI."""
    code = (
        "import sys, chainrule, chainrule.training, chainrule.distributed\n"
        "from chainrule.training.parallel import LocalCommunicator\n"
        "assert 'mpi4py.MPI' not in sys.modules, 'MPI was started on import'\n"
        "print('ok')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0 and "ok" in completed.stdout, completed.stderr


# ------------------------------------------------------------------------------------------------
# Faults: a failing rank ends the whole job, quickly, and says which rank it was
# ------------------------------------------------------------------------------------------------

FAULTS = """
    import os, signal, sys, time
    import numpy as np
    from chainrule.distributed import MPICommunicator

    comm = MPICommunicator()
    mode = sys.argv[1]

    def work():
        for step in range(1000):
            if comm.rank == 1 and step == 3:
                if mode == "raise":
                    raise RuntimeError("the data loader broke")
                if mode == "status":
                    return 2  # a command that caught its own error
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
            comm.allreduce_sum(np.ones(10))
            time.sleep(0.01)
        return 0

    if mode == "uncaught":
        comm.allreduce_sum(np.ones(10))
        if comm.rank == 1:
            raise ValueError("uncaught on this rank")
        comm.allreduce_sum(np.ones(10))
    else:
        sys.exit(comm.run(work))
"""


@needs_mpi
@pytest.mark.parametrize(
    "mode, expected",
    [
        ("raise", "chainrule: rank 1 failed: RuntimeError: the data loader broke"),
        ("uncaught", "chainrule: rank 1 failed: ValueError: uncaught on this rank"),
        ("status", "chainrule: rank 1 failed: exited with status 2"),
        ("kill", "rank 1"),
    ],
)
def test_a_failing_rank_ends_the_job_naming_it(tmp_path, mode, expected):
    script = write_script(tmp_path, "faults.py", FAULTS)
    status, output, seconds = mpirun(
        2, [sys.executable, script, mode], cwd=tmp_path, timeout=FAULT_SECONDS + 5
    )
    assert status != 0, output
    assert seconds < FAULT_SECONDS, f"the job took {seconds:.1f} s to end after rank 1 failed"
    assert expected in output, output


# ------------------------------------------------------------------------------------------------
# Same answer: one process and two ranks end with the same parameters
# ------------------------------------------------------------------------------------------------

#: The methods checked: the exact gradient (θ all-reduced) and stochastic estimates (only their
#: coefficients all-reduced, every rank drawing the same directions from the same key).
SAME_ANSWER_METHODS = ("backprop", "spsa", "mezo", "forward_gradient", "evolution_strategies")

TRAIN = """
    import sys
    import numpy as np
    from chainrule import data, nn, optim, ravel_pytree
    from chainrule.training import Trainer

    out, examples, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    methods = sys.argv[4].split(",")
    distributed = len(sys.argv) > 5 and sys.argv[5] == "--distributed"
    communicator = None
    if distributed:
        from chainrule.distributed import MPICommunicator

        communicator = MPICommunicator()
        communicator.allreduce_calls = 0
        reduce = communicator.allreduce_sum

        def counted_allreduce_sum(array):
            communicator.allreduce_calls += 1
            return reduce(array)

        communicator.allreduce_sum = counted_allreduce_sum


    def counters():  # (bytes, calls) this rank has passed to allreduce_sum so far
        if communicator is None:
            return 0, 0
        return communicator.bytes_reduced, communicator.allreduce_calls


    rng = np.random.default_rng(0)
    features = rng.standard_normal((examples, 5))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int) + (features[:, 2] > 1)
    train = data.Dataset(features, labels, num_classes=3)
    results = {}
    for method in methods:
        # Each rank builds its model with its own seed: the broadcast from rank 0 must win.
        # "NAME+dropout" trains NAME on a model with dropout.
        name, _, extra = method.partition("+")
        rank = 0 if communicator is None else communicator.rank
        model = nn.MLP([5, 16, 3], seed=100 + rank, dropout=0.3 if extra == "dropout" else 0.0)
        trainer = Trainer(model, optim.Adam(0.01), batch_size=batch_size, seed=3, log=None,
                          progress=False, method=name, communicator=communicator)
        before = counters()
        history = trainer.fit(train, epochs=3)
        after = counters()
        theta, _ = ravel_pytree(trainer.params)
        results[f"{method}.theta"] = theta
        results[f"{method}.loss"] = np.array([record["train_loss"] for record in history])
        results[f"{method}.bytes_per_step"] = np.array((after[0] - before[0]) / trainer.step)
        results[f"{method}.allreduces_per_step"] = np.array((after[1] - before[1]) / trainer.step)
    rank = 0 if communicator is None else communicator.rank
    np.savez(f"{out}-{rank}.npz", **results)
"""


def _train_both_ways(tmp_path, examples, batch_size, methods):
    script = write_script(tmp_path, "train.py", TRAIN)
    args = [str(examples), str(batch_size), ",".join(methods)]
    # One process, no MPI at all: the plain single-process path (seed 100 for rank 0's model).
    local = subprocess.run(
        [sys.executable, script, str(tmp_path / "local"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert local.returncode == 0, local.stderr
    status, output, _ = mpirun(
        2, [sys.executable, script, str(tmp_path / "mpi"), *args, "--distributed"], cwd=tmp_path
    )
    assert status == 0, output
    load = lambda name: dict(np.load(tmp_path / f"{name}.npz", allow_pickle=False))
    return load("local-0"), load("mpi-0"), load("mpi-1")


@pytest.fixture(scope="module")
def same_answer_runs(tmp_path_factory):
    # 103 examples in batches of 25: the last global batch (3) splits unevenly (2 + 1), so the
    # shares' weights matter.
    return _train_both_ways(tmp_path_factory.mktemp("same-answer"), 103, 25, SAME_ANSWER_METHODS)


@needs_mpi
def test_one_rank_and_two_ranks_reach_the_same_parameters(same_answer_runs):
    local, rank0, rank1 = same_answer_runs
    for method in SAME_ANSWER_METHODS:
        theta = local[f"{method}.theta"]
        np.testing.assert_array_equal(rank0[f"{method}.theta"], rank1[f"{method}.theta"])
        np.testing.assert_allclose(
            rank0[f"{method}.theta"], theta, rtol=1e-9, atol=1e-12, err_msg=method
        )
        np.testing.assert_allclose(
            rank0[f"{method}.loss"], local[f"{method}.loss"], rtol=1e-9, err_msg=method
        )


@needs_mpi
def test_one_allreduce_per_step_and_only_scalars_for_seeded_estimates(same_answer_runs):
    local, rank0, _ = same_answer_runs
    parameters = local["backprop.theta"].size
    for method in SAME_ANSWER_METHODS:
        assert rank0[f"{method}.allreduces_per_step"] == 1, (
            method,
            rank0[f"{method}.allreduces_per_step"],
        )
    # Backprop all-reduces the θ-sized gradient (float64) every step; the seeded estimators only
    # their coefficients and the loss: a few bytes, whatever the size of θ.
    assert 8 * parameters <= rank0["backprop.bytes_per_step"] <= 8 * (parameters + 4)
    for method in ("spsa", "mezo", "forward_gradient"):
        assert rank0[f"{method}.bytes_per_step"] <= 64, (method, rank0[f"{method}.bytes_per_step"])


@needs_mpi
def test_a_global_batch_smaller_than_the_ranks_leaves_one_rank_empty(tmp_path):
    # 101 examples in batches of 25: the last global batch holds one example, so rank 1's share
    # of it is empty and must contribute nothing (not the NaN mean of no examples).
    local, rank0, rank1 = _train_both_ways(tmp_path, 101, 25, ("backprop", "spsa"))
    for method in ("backprop", "spsa"):
        np.testing.assert_array_equal(rank0[f"{method}.theta"], rank1[f"{method}.theta"])
        np.testing.assert_allclose(
            rank0[f"{method}.theta"], local[f"{method}.theta"], rtol=1e-9, atol=1e-12
        )


@needs_mpi
def test_dropout_masks_are_the_ones_one_process_draws(tmp_path):
    # Each rank draws the whole global batch's masks from the step's generator and keeps its rows.
    local, rank0, rank1 = _train_both_ways(tmp_path, 103, 25, ("backprop+dropout", "spsa+dropout"))
    for method in ("backprop+dropout", "spsa+dropout"):
        np.testing.assert_array_equal(rank0[f"{method}.theta"], rank1[f"{method}.theta"])
        np.testing.assert_allclose(
            rank0[f"{method}.theta"], local[f"{method}.theta"], rtol=1e-9, atol=1e-12
        )


# ------------------------------------------------------------------------------------------------
# A job that fails mid-run resumes from rank 0's last checkpoint and ends where an unbroken run does
# ------------------------------------------------------------------------------------------------

RESUMABLE = """
    import sys
    import numpy as np
    from chainrule import data, nn, optim, ravel_pytree
    from chainrule.training import Trainer

    out, run_dir, fail_at_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    communicator = None
    if len(sys.argv) > 4 and sys.argv[4] == "--distributed":
        from chainrule.distributed import MPICommunicator

        communicator = MPICommunicator()
    rank = 0 if communicator is None else communicator.rank


    class FailingTrainer(Trainer):
        def train_step(self, features, labels):
            if rank == 1 and self.step == fail_at_step:
                raise RuntimeError(f"injected fault at step {self.step}")
            return super().train_step(features, labels)


    rng = np.random.default_rng(1)
    features = rng.standard_normal((96, 4))
    train = data.Dataset(features, (features.sum(axis=1) > 0).astype(int))
    trainer = FailingTrainer(nn.MLP([4, 12, 2], seed=0), optim.SGD(0.1, momentum=0.9),
                             batch_size=16, seed=5, run_dir=run_dir, checkpoint_every=2, log=None,
                             progress=False, communicator=communicator)
    trainer.fit(train, epochs=3, resume=True)
    theta, _ = ravel_pytree(trainer.params)
    np.savez(f"{out}-{rank}.npz", theta=theta, step=np.array(trainer.step))
"""


@needs_mpi
def test_a_failed_job_resumes_from_the_last_checkpoint(tmp_path):
    from chainrule.training import list_checkpoints

    script = write_script(tmp_path, "resumable.py", RESUMABLE)
    unbroken = subprocess.run(
        [sys.executable, script, str(tmp_path / "unbroken"), str(tmp_path / "unbroken-run"), "-1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert unbroken.returncode == 0, unbroken.stderr
    run_dir = tmp_path / "run"
    # 6 steps per epoch, a checkpoint every 2: rank 1 raises after 9 updates, before the 10th;
    # rank 0 committed the checkpoint of step 8 before it could join the all-reduce of update 9.
    status, output, seconds = mpirun(
        2,
        [sys.executable, script, str(tmp_path / "first"), str(run_dir), "9", "--distributed"],
        cwd=tmp_path,
        timeout=FAULT_SECONDS + 5,
    )
    assert status != 0 and seconds < FAULT_SECONDS, output
    assert "chainrule: rank 1 failed: RuntimeError: injected fault at step 9" in output
    steps = [int(path.stem.split("-")[1]) for path in list_checkpoints(run_dir / "checkpoints")]
    assert steps and max(steps) == 8, steps  # committed checkpoints only, the newest at step 8
    status, output, _ = mpirun(
        2,
        [sys.executable, script, str(tmp_path / "resumed"), str(run_dir), "-1", "--distributed"],
        cwd=tmp_path,
    )
    assert status == 0, output
    expected = np.load(tmp_path / "unbroken-0.npz")
    for rank in range(2):
        resumed = np.load(tmp_path / f"resumed-{rank}.npz")
        assert int(resumed["step"]) == int(expected["step"]) == 18
        np.testing.assert_allclose(resumed["theta"], expected["theta"], rtol=1e-9, atol=1e-12)
    # Rank 0 alone wrote the run directory: no temporary or duplicate files were left behind.
    names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    suffixes = (".json", ".safetensors")
    assert all(name.startswith("step-") and name.endswith(suffixes) for name in names), names


# ------------------------------------------------------------------------------------------------
# The command: mpirun -n 2 chainrule train ... --distributed
# ------------------------------------------------------------------------------------------------

CLI_OPTIONS = [
    "--data",
    "digits",
    "--hidden",
    "16",
    "--batch-size",
    "50",
    "--seed",
    "0",
    "--no-plot",
]


def _final_parameters(run_dir: Path) -> dict:
    from chainrule.training import latest_checkpoint, load_checkpoint

    arrays, meta = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    return {
        "step": meta["step"],
        **{name: v for name, v in arrays.items() if name.startswith("params.")},
    }


@needs_mpi
def test_the_command_trains_resumes_and_agrees_with_one_process(tmp_path):
    chainrule = [sys.executable, "-m", "chainrule", "train"]
    local = subprocess.run(
        [
            *chainrule,
            *CLI_OPTIONS,
            "--epochs",
            "3",
            "--run-dir",
            str(tmp_path / "local"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert local.returncode == 0, local.stderr
    run_dir = tmp_path / "distributed"
    status, output, _ = mpirun(
        2,
        [*chainrule, *CLI_OPTIONS, "--epochs", "2", "--run-dir", str(run_dir), "--distributed"],
        cwd=tmp_path,
    )
    assert status == 0, output
    assert output.count("split     examples") == 1, output  # rank 0 alone prints the table
    assert (run_dir / "summary.json").is_file()
    # A second job continues the run from rank 0's checkpoint to a third epoch.
    status, output, _ = mpirun(
        2,
        [*chainrule, "--resume", str(run_dir), "--epochs", "3", "--distributed", "--quiet"],
        cwd=tmp_path,
    )
    assert status == 0, output
    expected, got = _final_parameters(tmp_path / "local"), _final_parameters(run_dir)
    assert got["step"] == expected["step"] == 3 * 24
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-12, err_msg=name)


@needs_mpi
def test_the_command_fails_fast_when_one_rank_rejects_its_input(tmp_path):
    # Only rank 0 checks whether the run directory is in use; it refuses, and the job must end
    # rather than leave rank 1 waiting for it.
    run_dir = tmp_path / "used"
    run_dir.mkdir()
    (run_dir / "something").write_text("x")
    command = [sys.executable, "-m", "chainrule", "train", *CLI_OPTIONS, "--epochs", "1"]
    status, output, seconds = mpirun(
        2,
        [*command, "--run-dir", str(run_dir), "--distributed"],
        cwd=tmp_path,
        timeout=FAULT_SECONDS + 5,
    )
    assert status == 2 and seconds < FAULT_SECONDS, output
    assert "already exists and is not empty" in output
    assert "chainrule: rank 0 failed" in output


def test_the_examples_in_docs_distributed_md_run():
    import doctest

    result = doctest.testfile(
        str(ROOT / "docs" / "distributed.md"),
        module_relative=False,
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
    )
    assert result.attempted >= 4 and result.failed == 0
