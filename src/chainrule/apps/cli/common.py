"""What the subcommands share: the one-line-error parser, option types, device options, output."""

from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def widths(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}"
        ) from None


def label_column(text: str):
    try:
        return int(text)
    except ValueError:
        return text


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


def say(text="", file=None):
    """One line of the command's output, flushed at once (a long run shows its progress)."""
    print(text, file=file or sys.stdout, flush=True)
