"""Hostile command lines: every bad value is one line and exit status 2 at parse time, a failure
while running one line and 1 (--debug: the traceback), a run that blows up stops with the step,
the value and a hint, and what was already on disk stays byte for byte; no argument list at all
gives a traceback (hypothesis)."""

import contextlib
import errno
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainrule.apps.cli import build_parser, main
from chainrule.apps.cli.train import _given
from chainrule.training.recipe import ConfigError, make_config

TINY = ["--data", "moons", "--size", "120", "--hidden", "8", "--batch-size", "16", "--lr", "0.3"]


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def one_line(err, command="train"):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"chainrule {command}: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


BAD_TRAIN_VALUES = [
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--seed", "1.5"], "--seed must be a non-negative integer, got '1.5'"),
    (["--seed", "9" * 30], "--seed must be a non-negative integer \\(at most"),
    (["--hidden", "100000000000"], "--hidden: a model with 300,000,000,001 parameters needs"),
    (["--hidden", "4096," * 40 + "4096"], "parameters needs about .* GiB to train"),
    (["--hidden", "64,,32"], "layer widths such as 128,64, got '64,,32'"),
    (["--hidden", "64,0"], "layer widths must be >= 1, got '64,0'"),
    (["--hidden", "64,-3"], "layer widths must be >= 1"),
    (["--hidden", ""], "layer widths"),
    (["--hidden", ","], "layer widths"),
    (["--size", "0"], "--size must be a positive integer, got 0"),
    (["--size", "-5"], "--size must be a positive integer, got -5"),
    (["--data", "digits", "--size", "100"], "--size applies to the generated data sets"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--lr=-1e-3"], "--lr must be a positive number"),  # (-1e-3 alone would read as an option)
    (["--lr", "0"], "--lr must be a positive number, got 0"),
    (["--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--batch-size", "-16"], "--batch-size must be a positive integer"),
    (["--classes", "0"], "--classes must be a positive integer"),
    (["--dropout", "1.5"], "--dropout must be >= 0 and below 1"),
    (["--momentum", "1"], "--momentum must be >= 0 and below 1"),
    (["--val-fraction", "-0.1"], "--val-fraction must be >= 0 and below 1"),
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--gamma", "0"], "--gamma must be a positive number"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be a non-negative integer"),
    (["--step-epochs", "0"], "--step-epochs must be a positive integer"),
    (["--checkpoint-every", "-5"], "--checkpoint-every must be a non-negative integer"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints must be a positive integer"),
    (["--directions", "0"], "--directions must be a positive integer"),
    (["--perturbation", "nan"], "--perturbation must be a finite number"),
    (["--population", "-2"], "--population must be a positive integer"),
    (["--local-steps", "0"], "--local-steps must be a positive integer"),
    (["--target-step", "-1"], "--target-step must be a positive number"),
]


@pytest.mark.parametrize(
    "extra, pattern", BAD_TRAIN_VALUES, ids=[" ".join(extra)[:40] for extra, _ in BAD_TRAIN_VALUES]
)
def test_every_bad_train_value_is_one_line_and_exit_2_before_anything_is_written(
    capsys, tmp_path, extra, pattern
):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, *extra, "--run-dir", run_dir, "--quiet")
    assert code == 2, err
    assert re.search(pattern, one_line(err)), err
    assert not run_dir.exists() and out == ""


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["compare", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["compare", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["compare", "--budget-seconds", "nan"], "--budget-seconds must be a finite number"),
        (["compare", "--budget-passes", "-3"], "--budget-passes must be a positive integer"),
        (["compare", "--hidden", "64,,32"], "layer widths"),
        (["compare", "--time-cap", "0"], "--time-cap must be a positive number"),
        (["demo", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["demo", "--hidden", "64,,32"], "layer widths"),
        (["demo", "--hidden", "100000000000"], "parameters needs about"),
    ],
)
def test_bad_values_of_the_other_commands_are_one_line_and_exit_2(capsys, tmp_path, argv, pattern):
    extra = ["--out", tmp_path / "out"] if argv[0] == "compare" else []
    code, _, err = run_cli(capsys, *argv, *extra)
    assert code == 2, err
    assert re.search(pattern, one_line(err, argv[0])), err
    assert not (tmp_path / "out").exists()


def test_an_absurd_learning_rate_stops_the_run_at_the_step_it_blows_up(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--lr", "1e30", "--epochs", "2", "--run-dir",
                           run_dir, "--quiet", "--no-plot")  # fmt: skip
    assert code == 1, err
    line = one_line(err)
    assert "training diverged at step 2 (epoch 1): the loss" in line
    assert line.endswith("lower the learning rate")


def test_a_run_that_blows_up_later_leaves_its_checkpoints_byte_identical(capsys, tmp_path):
    run_dir = tmp_path / "run"
    # One sound epoch at lr 0.3; from the second epoch on the step schedule makes it 3e29.
    schedule = ["--schedule", "step", "--step-epochs", "1", "--gamma", "1e30"]
    argv = ["train", *TINY, *schedule, "--run-dir", run_dir, "--quiet", "--no-plot"]
    code, _, err = run_cli(capsys, *argv, "--epochs", "1")
    assert code == 0, err
    before = snapshot(run_dir / "checkpoints")
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3", "--no-plot")
    assert code == 1, err
    line = one_line(err)
    assert re.search("training diverged at step [0-9]+ \\(epoch 2\\): the loss [0-9.e+]+ ", line)
    assert line.endswith("lower the learning rate"), line
    assert snapshot(run_dir / "checkpoints") == before


@pytest.mark.parametrize("value", ["NaN", "-1", "true", '"12"', "Infinity", "1e400"])
def test_a_bad_counter_in_a_resumed_checkpoint_is_one_line_naming_it(capsys, tmp_path, value):
    run_dir = tmp_path / "run"
    argv = ["train", *TINY, "--epochs", "1", "--run-dir", run_dir, "--quiet", "--no-plot"]
    assert run_cli(capsys, *argv)[0] == 0
    newest = sorted((run_dir / "checkpoints").glob("step-*.json"))[-1]
    text = newest.read_text()
    meta = json.loads(text)
    newest.write_text(text.replace(f'"step": {meta["step"]}', f'"step": {value}'))
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "2")
    assert code == 2, err
    assert "has an invalid step: " in one_line(err)
    assert snapshot(run_dir) == before


def test_a_failure_while_running_is_one_line_and_exit_1_and_debug_shows_it(
    capsys, tmp_path, monkeypatch
):
    from chainrule.training import trainer

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "save_checkpoint", disk_full)
    argv = ["train", *TINY, "--epochs", "1", "--quiet", "--no-plot"]
    code, _, err = run_cli(capsys, *argv, "--run-dir", tmp_path / "a")
    assert code == 1, err
    line = one_line(err)
    assert "OSError: [Errno 28] No space left on device (run with --debug" in line
    for debug in (["--debug", *argv], [*argv, "--debug"], ["--traceback", *argv]):
        with pytest.raises(OSError, match="No space left"):
            main([*debug, "--run-dir", str(tmp_path / debug[0].strip("-"))])
        capsys.readouterr()


def test_debug_shows_the_traceback_of_bad_input(capsys, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        main(["train", "--resume", str(tmp_path / "nowhere"), "--debug"])
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in one_line(err)


# ------------------------------------------------------------------------------------------------
# Random argument lists: never a traceback
# ------------------------------------------------------------------------------------------------

COMMANDS = ["train", "compare", "evaluate", "demo", "datasets", "lab", "trian", ""]
OPTIONS = [
    "--data", "--size", "--hidden", "--seed", "--lr", "--epochs", "--batch-size", "--dropout",
    "--momentum", "--gamma", "--classes", "--val-fraction", "--test-fraction", "--weight-decay",
    "--warmup-epochs", "--step-epochs", "--checkpoint-every", "--keep-checkpoints", "--method",
    "--scheme", "--directions", "--perturbation", "--population", "--local-steps",
    "--target-step", "--optimizer", "--schedule", "--activation", "--device", "--dtype",
    "--resume", "--run-dir", "--budget-seconds", "--budget-passes", "--time-cap", "--params",
    "--methods", "--schemes", "--nesterov", "--no-nesterov", "--batchnorm", "--debug",
    "--quiet", "--matmul-precision", "--label-column", "--task", "--scale", "-h",
]  # fmt: skip
VALUES = [
    "-1", "0", "1", "2", "-5", "1e30", "1e-30", "nan", "inf", "-inf", "NaN", "1.5", "0.5",
    "100000000000", "9" * 40, "64,,32", "64,0", ",", "", " ", "8", "8,4", "digits", "moons",
    "sgd", "adam", "relu", "cuda", "cpu", "float16", "x", "--", "-", "\x00", "é", "1_000",
    "0x10", "+3", "1e400",
]  # fmt: skip
token = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(VALUES), st.text(max_size=8))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(st.just([]), st.sampled_from(COMMANDS).map(lambda c: [c] if c else [])),
    st.lists(token, max_size=8),
)
def test_random_argument_lists_never_give_a_traceback(command, rest):
    argv = [*command, *rest]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_info:
            assert exit_info.code in (0, 2), (argv, err.getvalue())
            assert "Traceback" not in err.getvalue(), argv
            if exit_info.code == 2:
                assert err.getvalue().count("\n") == 1, (argv, err.getvalue())
            return
        if args.command == "train":
            try:  # the checks that follow parsing, on what was given (no data are loaded)
                make_config(**_given(args))
            except ConfigError as error:
                assert "\n" not in str(error), argv
