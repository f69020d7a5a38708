"""The ``chainrule`` command.

    chainrule demo                    why backprop: a gradient by reverse mode vs finite differences
    chainrule train [options]         train an MLP; progress, final table, curves, run directory
    chainrule train --resume RUN_DIR  continue a run from its newest checkpoint (bit for bit)
    chainrule train --device cuda     train on a GPU (CuPy), float32 unless --dtype says otherwise
    chainrule evaluate RUN_DIR        loss and accuracy of a run's newest (or a given) checkpoint
    chainrule compare                 every gradient method and update scheme, under one budget
    chainrule datasets                the data sets that need no download
    chainrule lab                     the experiments behind the complexity argument

Bad input (unknown data set, data that cannot be trained on, a missing or damaged checkpoint, a
checkpoint of another architecture, a non-positive learning rate or batch size...) ends the
command with one line on stderr and exit code 2, before anything already saved is touched.

Each subcommand is one module here (:mod:`.train`, :mod:`.evaluate`, :mod:`.compare`,
:mod:`.datasets`, :mod:`.demo`, :mod:`.lab`) holding its options and the calls into the library;
this one builds the top-level parser from them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import sys

from . import compare, datasets, demo, evaluate, lab, train
from .common import Parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chainrule",
        description="Backpropagation done properly on NumPy: see a gradient computed, train a "
        "network.",
        epilog="Run 'chainrule COMMAND --help' for the options of each command.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full Python traceback on errors"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for command in (demo, train, compare, evaluate, datasets, lab):  # the order --help lists
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.run(args, parser)
    if getattr(args, "distributed", False):
        try:
            from ...distributed import MPICommunicator

            args.communicator = MPICommunicator()
        except ImportError as error:
            print(
                f"chainrule {args.command}: error: --distributed: {error}",
                file=sys.stderr,
                flush=True,
            )
            return 2
        # A rank whose command fails (even cleanly, with status 2) must end the whole job: the
        # other ranks would otherwise wait for it in their next collective forever.
        return args.communicator.run(_run_command, args)
    return _run_command(args)


COMMANDS = {
    "train": train.cmd_train,
    "evaluate": evaluate.cmd_evaluate,
    "datasets": datasets.cmd_datasets,
    "compare": compare.cmd_compare,
    "lab": lab.run,
}


def _run_command(args) -> int:
    """Run ``args.command``; bad input is one line on stderr and exit code 2, a diverged run 1,
    an interrupt 130 (``--traceback`` re-raises instead)."""
    from ...data.datasets import DataError
    from ...training.checkpoint import CheckpointError
    from ...training.recipe import ConfigError
    from ...training.trainer import TrainingDiverged

    try:
        return COMMANDS[args.command](args)
    except (
        DataError,
        ConfigError,
        CheckpointError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
    ) as error:
        if args.traceback:
            raise
        message = (
            str(error) if not isinstance(error, OSError) else f"{error.strerror}: {error.filename}"
        )
        print(f"chainrule {args.command}: error: {message}", file=sys.stderr, flush=True)
        return 2
    except TrainingDiverged as error:
        if args.traceback:
            raise
        print(f"chainrule {args.command}: error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            f"chainrule {args.command}: interrupted; continue with --resume",
            file=sys.stderr,
            flush=True,
        )
        return 130
