"""What the subcommands share: the one-line-error parser, option types, device options, output."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and exit code 2)."""

    def error(self, message):
        # "argument --lr: must be ..." reads "--lr must be ..." (the option, then its range).
        message = re.sub(r"^argument ([-\w/]+): must ", r"\1 must ", message)
        message = one_line(message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(message) -> str:
    """``message`` on one line: line breaks (a value typed with one, say) written as ``\\n``."""
    return str(message).strip().replace("\r", "\\r").replace("\n", "\\n")


def add_debug_argument(parser, top=False):
    """``--debug`` (and its older name ``--traceback``): show the full Python traceback of an
    error instead of its one line. On a subcommand its default is left unset, so that it does
    not override the same option given before the subcommand."""
    default = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--debug",
        "--traceback",
        dest="debug",
        action="store_true",
        default=default,
        help="show the full Python traceback on errors" if top else argparse.SUPPRESS,
    )


#: Largest integer an option takes (what NumPy's int64 holds).
INT_LIMIT = 2**63 - 1


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not low <= value <= INT_LIMIT:
        bound = "" if value < low else f" (at most {INT_LIMIT})"
        raise argparse.ArgumentTypeError(f"must be {what}{bound}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed, a count that may be zero), checked when the options are parsed."""
    return _integer(text, 0, "a non-negative integer")


def positive_int(text: str) -> int:
    """An integer >= 1 (a size, a number of epochs or examples)."""
    return _integer(text, 1, "a positive integer")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, a step, a budget in seconds)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a penalty)."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1) (a probability, a share of the data)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 0 and below 1, got {text}")
    return value


def widths(text: str) -> list[int]:
    """Comma-separated layer widths, each an integer >= 1 (``64,,32`` and ``64,0`` are refused),
    whose parameters fit in memory even with the smallest input and output
    (:func:`chainrule.training.recipe.check_model_size`)."""
    from ...training.recipe import ConfigError, check_model_size

    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}"
        )
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    try:
        check_model_size([1, *sizes, 1])
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return sizes


def label_column(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def add_options(group, rows):
    """Add one option to ``group`` (a parser or an argument group) per row of ``rows``, in order.

    A row is ``(flag, kind, metavar, help)``: ``kind`` is the option's type (a function such as
    :func:`positive_int`), a tuple of its choices, or ``None`` for a plain string; a ``None``
    metavar leaves argparse's own. Options with an action or a default are added on their own.
    Returns ``group``."""
    for flag, kind, metavar, text in rows:
        if isinstance(kind, tuple):
            group.add_argument(flag, choices=kind, metavar=metavar, help=text)
        else:
            group.add_argument(flag, type=kind, metavar=metavar, help=text)
    return group


def add_device_arguments(group, resumable=False, precision=False):
    """``--device`` and ``--dtype``, shared by ``train`` and ``compare`` (and, for ``train``,
    ``--matmul-precision``)."""
    where = "; a resumed run: where it last ran" if resumable else ""
    group.add_argument(
        "--device",
        metavar="NAME",
        help=f"cpu, cuda or cuda:N (a GPU, through CuPy) (default: cpu{where})",
    )
    group.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="floating dtype of parameters and data "
        "(default: float32 on a GPU, float64 on the CPU)",
    )
    if precision:
        group.add_argument(
            "--matmul-precision",
            choices=("highest", "tf32", "bf16"),
            help="float32 matrix products with TF32 or bfloat16 inputs (tensor cores on a GPU; "
            "on the CPU the same rounding is emulated, for its numerics, not its speed) "
            "(default: highest)",
        )
    return group


def run_device(name: str, recorded: bool = False):
    """The :class:`~chainrule.backend.device.Device` called ``name``; a one-line ``ConfigError``
    when it is unknown or absent (no CuPy, no GPU), raised before anything is written.
    ``recorded``: the name comes from the run's config, not from the command line, and the
    message says so."""
    from ...backend.device import Device
    from ...training.recipe import ConfigError

    try:
        return Device(name)
    except (TypeError, ValueError, RuntimeError) as error:
        if recorded:
            raise ConfigError(
                f"the run ran on {name!r}, which is not available here ({error}); "
                "choose another with --device cpu"
            ) from None
        raise ConfigError(f"--device {name}: {error}") from None


def existing_run_dir(text) -> Path:
    """The run directory ``text`` names; a one-line ``ConfigError`` when there is none."""
    from ...training.recipe import ConfigError

    run_dir = Path(text)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    return run_dir


def build_trainer(config: dict, run_dir, device, /, **options):
    """``(trainer, model, splits)`` of the run ``config``: its data, model, optimizer, gradient
    method and update scheme on ``device``, in that order; ``options`` are the Trainer's other
    keywords (logging, checkpointing, the communicator, the ``config`` a run saves), which
    ``train`` sets and ``evaluate`` leaves at their defaults."""
    from ...training.recipe import (
        build_data,
        build_method,
        build_model,
        build_optimizer,
        build_scheme,
    )
    from ...training.trainer import Trainer

    splits = build_data(config)
    model = build_model(config, splits)
    trainer = Trainer(
        model,
        build_optimizer(config, len(splits.train)),
        task=splits.train.task,
        batch_size=config["batch_size"],
        seed=config["seed"],
        run_dir=run_dir,
        method=build_method(config),
        scheme=build_scheme(config),
        device=device,
        dtype=config["dtype"],
        **options,
    )
    return trainer, model, splits


def say(text="", file=None):
    """One line of the command's output, flushed at once (a long run shows its progress)."""
    print(text, file=file or sys.stdout, flush=True)
