"""The ``chainrule`` command end to end: help, a tiny run, evaluate, bad input, kill and resume."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from chainrule.apps.cli import main

TINY = [
    "--data",
    "moons",
    "--size",
    "240",
    "--hidden",
    "8",
    "--epochs",
    "3",
    "--batch-size",
    "16",
    "--lr",
    "0.3",
]


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def run_cli(capsys, *argv):
    """Run the command in this process: ``(exit code, stdout, stderr)``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse's own exits (help, malformed options)
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run directories land here, not in the repository


# ------------------------------------------------------------------------------------------------
# Help
# ------------------------------------------------------------------------------------------------


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for command in ("demo", "train", "evaluate", "datasets"):
        assert command in out


@pytest.mark.parametrize("command", ["train", "evaluate", "demo", "datasets"])
def test_each_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and f"usage: chainrule {command}" in out
    if command == "train":
        for option in (
            "--data",
            "--hidden",
            "--activation",
            "--optimizer",
            "--lr",
            "--epochs",
            "--seed",
            "--resume",
            "--batch-size",
            "--run-dir",
            "--checkpoint-every",
        ):
            assert option in out, option


def test_datasets_lists_the_builtin_sets(capsys):
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and all(
        name in out for name in ("digits", "mnist1d", "spirals", "moons", "teacher")
    )


def test_demo_still_runs(capsys):
    code, out, _ = run_cli(capsys, "demo", "--hidden", "4")
    assert code == 0 and "agree" in out


# ------------------------------------------------------------------------------------------------
# A tiny run end to end
# ------------------------------------------------------------------------------------------------


def test_train_writes_a_complete_run_directory_and_evaluate_reads_it(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, "--run-dir", run_dir)
    assert code == 0, err
    assert "MLP 2-8-2 relu" in out and "epoch 3/3" in out
    assert "split" in out and "accuracy" in out and "test" in out and "training time" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hidden"] == [8] and config["epochs"] == 3 and config["data"] == "moons"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and all("val_accuracy" in m for m in metrics)
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 * 10 and summary["results"]["test"]["accuracy"] > 0.7
    assert summary["checkpoint"] == "checkpoints/step-00000030.json"

    code, out, _ = run_cli(capsys, "evaluate", run_dir)
    assert code == 0 and "step 30" in out
    test_line = next(line for line in out.splitlines() if line.startswith("test"))
    assert f"{100 * summary['results']['test']['accuracy']:.2f}%" in test_line

    # Resuming a finished run changes nothing in its weights; raising --epochs continues it.
    code, out, _ = run_cli(capsys, "train", "--resume", run_dir, "--quiet")
    assert code == 0 and "already complete" not in out  # --quiet
    code, out, _ = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "4")
    assert code == 0 and "resuming from step 30 (epoch 4, batch 0)" in out and "epoch 4/4" in out
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 4


@pytest.mark.parametrize("method_and_scheme", [["--method", "spsa"], ["--scheme", "layerwise"]])
def test_evaluate_reads_a_run_made_with_another_method_or_scheme(
    capsys, tmp_path, method_and_scheme
):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", *TINY, *method_and_scheme, "--run-dir", run_dir, "--no-plot"
    )
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    code, out, err = run_cli(capsys, "evaluate", run_dir)
    assert code == 0, err
    test_line = next(line for line in out.splitlines() if line.startswith("test"))
    assert f"{100 * summary['results']['test']['accuracy']:.2f}%" in test_line


def test_matmul_precision_is_recorded_used_and_kept(capsys, tmp_path):
    runs = {}
    for mode in ("highest", "bf16"):
        run_dir = tmp_path / mode
        code, out, err = run_cli(
            capsys,
            "train",
            *TINY,
            "--dtype",
            "float32",
            "--matmul-precision",
            mode,
            "--run-dir",
            run_dir,
            "--no-plot",
        )
        assert code == 0, err
        assert ("bf16 matmuls" in out) == (mode == "bf16")
        assert json.loads((run_dir / "config.json").read_text())["matmul_precision"] == mode
        runs[mode] = json.loads((run_dir / "summary.json").read_text())["results"]["train"]["loss"]
        code, out, _ = run_cli(capsys, "evaluate", run_dir)
        train_line = next(line for line in out.splitlines() if line.startswith("train"))
        assert code == 0 and f"{runs[mode]:.4f}" in train_line
    assert runs["bf16"] != runs["highest"]  # rounded inputs: a (slightly) different run
    code, _, err = run_cli(
        capsys, "train", "--resume", tmp_path / "bf16", "--matmul-precision", "tf32"
    )
    assert code == 2 and "--matmul-precision 'tf32' differs from the run's 'bf16'" in err
    config_path = tmp_path / "bf16" / "config.json"
    config_path.write_text(
        json.dumps({**json.loads(config_path.read_text()), "matmul_precision": "fp8"})
    )
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "bf16")
    assert code == 2 and "--matmul-precision must be one of highest, tf32, bf16, got 'fp8'" in err


def test_default_run_directory_is_new_each_time(capsys, tmp_path):
    assert run_cli(capsys, "train", *TINY, "--quiet", "--no-plot")[0] == 0
    assert run_cli(capsys, "train", *TINY, "--quiet", "--no-plot")[0] == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(name.startswith("moons-") for name in runs)


# ------------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line, nothing saved is touched
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--data", "cifar10"], "unknown dataset 'cifar10'"),
        (["--lr", "0"], "--lr must be a positive number, got 0"),
        (["--lr", "-0.5"], "--lr must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--batch-size", "-8"], "--batch-size must be a positive integer"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--hidden", "8,x"], "layer widths"),
        (["--optimizer", "lbfgs"], "invalid choice"),
        (["--dropout", "1.0"], "--dropout must be >= 0 and below 1"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(capsys, tmp_path, extra, pattern):
    code, _, err = run_cli(capsys, "train", *TINY, *extra, "--run-dir", tmp_path / "run")
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "run").exists()


def write_csv(path, rows):
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("lengths", "features have 40 rows but labels have 39"),
        ("label_range", r"label 2 at row 5 is outside \[0, 2\)"),
        ("negative", "label -1 at row 3 is negative"),
        ("nan", "NaN or Inf"),
        ("inf", "NaN or Inf"),
    ],
)
def test_bad_data_files_exit_2(capsys, tmp_path, kind, pattern):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = np.arange(40) % 2
    extra = []
    if kind == "lengths":
        np.savez(tmp_path / "d.npz", x=x, y=y[:-1])
        source = tmp_path / "d.npz"
    else:
        if kind == "label_range":
            y[5] = 2
            extra = ["--classes", "2"]
        elif kind == "negative":
            y[3] = -1
        elif kind == "nan":
            x[7, 1] = np.nan
        else:
            x[7, 1] = np.inf
        source = write_csv(
            tmp_path / "d.csv", [[*row, label] for row, label in zip(x, y, strict=True)]
        )
    code, _, err = run_cli(capsys, "train", "--data", source, *extra, "--run-dir", tmp_path / "run")
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "run").exists()


def test_existing_run_directory_is_never_overwritten(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--run-dir", run_dir, "--quiet")[0] == 0
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", *TINY, "--run-dir", run_dir)
    assert_one_line_error(code, err, "already exists and is not empty; continue it with --resume")
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--hidden", "16")
    assert_one_line_error(code, err, "--hidden \\[16\\] differs from the run's \\[8\\]")
    assert snapshot(run_dir) == before


def test_missing_and_corrupted_checkpoints_exit_2_and_stay_as_they_are(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "nowhere")
    assert_one_line_error(code, err, "run directory .*nowhere' does not exist")
    run_dir = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--run-dir", run_dir, "--quiet")[0] == 0
    code, _, err = run_cli(
        capsys, "evaluate", run_dir, "--checkpoint", run_dir / "checkpoints" / "step-00000999.json"
    )
    assert_one_line_error(code, err, "checkpoint .*step-00000999.json' does not exist")

    newest = run_dir / "checkpoints" / "step-00000030.safetensors"
    damaged = bytearray(newest.read_bytes())
    damaged[-100] ^= 0x01  # in the arrays' data (a damaged header is refused before, unread)
    newest.write_bytes(bytes(damaged))
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "5")
    assert_one_line_error(
        code, err, "step-00000030.safetensors' is corrupted \\(SHA-256 does not match"
    )
    code, _, err = run_cli(capsys, "evaluate", run_dir)
    assert_one_line_error(code, err, "corrupted")
    assert snapshot(run_dir) == before
    (run_dir / "config.json").write_text('{"format": "chainrule-run/1", "data": ')
    code, _, err = run_cli(capsys, "train", "--resume", run_dir)
    assert_one_line_error(code, err, "config.json' is corrupted \\(invalid JSON")


def test_checkpoint_from_another_architecture_exits_2(capsys, tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    assert run_cli(capsys, "train", *TINY, "--run-dir", small, "--quiet", "--no-plot")[0] == 0
    assert (
        run_cli(
            capsys,
            "train",
            *TINY,
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--run-dir",
            large,
            "--quiet",
            "--no-plot",
        )[0]
        == 0
    )
    # A newer checkpoint in the large run, made by the small model.
    for suffix in (".json", ".safetensors"):
        source = small / "checkpoints" / f"step-00000030{suffix}"
        (large / "checkpoints" / source.name).write_bytes(source.read_bytes())
    before = snapshot(large)
    code, _, err = run_cli(capsys, "train", "--resume", large, "--epochs", "3")
    assert_one_line_error(
        code, err, "different architecture: .*'0.weight' has shape \\(2, 8\\), expected \\(2, 16\\)"
    )
    code, _, err = run_cli(capsys, "evaluate", large)
    assert_one_line_error(code, err, "different architecture")
    assert snapshot(large) == before


# ------------------------------------------------------------------------------------------------
# SIGKILL mid-epoch, then --resume: bit-identical final weights
# ------------------------------------------------------------------------------------------------


def test_run_killed_mid_epoch_resumes_to_bit_identical_weights(tmp_path):
    # 292 steps per epoch, a checkpoint every 25: the kill lands far from an epoch's end.
    args = (
        "--data digits --hidden 32 --epochs 4 --batch-size 4 --lr 0.02 --dropout 0.1 "
        "--momentum 0.9 --checkpoint-every 25 --quiet --no-plot"
    ).split()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "chainrule", "train", *args]
    reference = subprocess.Popen(
        [*command, "--run-dir", str(tmp_path / "reference")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    victim_dir = tmp_path / "victim"
    victim = subprocess.Popen(
        [*command, "--run-dir", str(victim_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first = victim_dir / "checkpoints" / "step-00000025.json"
    deadline = time.monotonic() + 120
    while not first.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read().decode()
    assert not (victim_dir / "summary.json").exists()  # it really was cut short

    resumed = subprocess.run(
        [*command[:-2], "--no-plot", "--resume", str(victim_dir)],
        env=env,
        capture_output=True,
        text=True,
    )
    out, err = reference.communicate()
    assert reference.returncode == 0, err.decode()
    assert resumed.returncode == 0, resumed.stderr
    where = re.search(r"resuming from step (\d+) \(epoch (\d+), batch (\d+)\)", resumed.stdout)
    assert where, resumed.stdout
    step, batch = int(where.group(1)), int(where.group(3))
    assert step % 25 == 0 and 0 < batch < 292  # from a checkpoint in the middle of an epoch
    want = json.loads((tmp_path / "reference" / "summary.json").read_text())
    got = json.loads((victim_dir / "summary.json").read_text())
    assert want["steps"] == got["steps"] == 4 * 292
    a = load_file(tmp_path / "reference" / want["checkpoint"].replace(".json", ".safetensors"))
    b = load_file(victim_dir / got["checkpoint"].replace(".json", ".safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert want["results"] == got["results"]


def test_resume_before_the_first_checkpoint_starts_over_and_matches(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run_cli(
            capsys, "train", *TINY, "--dropout", "0.2", "--run-dir", run_dir, "--quiet", "--no-plot"
        )[0]
        == 0
    )
    first = load_file(run_dir / "checkpoints" / "step-00000030.safetensors")
    # As if killed after writing config.json but before any checkpoint (plus a stray temporary).
    for path in list((run_dir / "checkpoints").iterdir()) + [
        run_dir / "metrics.jsonl",
        run_dir / "summary.json",
    ]:
        path.unlink()
    (run_dir / "checkpoints" / ".step-00000010.safetensors.abc.tmp").write_bytes(b"half written")
    code, out, err = run_cli(capsys, "train", "--resume", run_dir, "--no-plot")
    assert code == 0, err
    assert "resuming from the start" in out
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names[-1] == "step-00000030.safetensors"
    assert not any(p.name.endswith(".tmp") for p in (run_dir / "checkpoints").iterdir())
    stored = load_file(run_dir / "checkpoints" / "step-00000030.safetensors")
    assert all(np.array_equal(stored[name], first[name]) for name in first)
