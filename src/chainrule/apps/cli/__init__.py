"""The ``chainrule`` command.

    chainrule demo                    why backprop: a gradient by reverse mode vs finite differences
    chainrule train [options]         train an MLP; progress, final table, curves, run directory
    chainrule train --resume RUN_DIR  continue a run from its newest checkpoint (bit for bit)
    chainrule train --device cuda     train on a GPU (CuPy), float32 unless --dtype says otherwise
    chainrule evaluate RUN_DIR        loss and accuracy of a run's newest (or a given) checkpoint
    chainrule compare                 every gradient method and update scheme, under one budget
    chainrule datasets                the data sets that need no download
    chainrule lab                     the experiments behind the complexity argument

Every option is checked when the arguments are parsed, with its range or form (integers that must
not be negative, widths of at least 1, a model whose parameters would not fit in memory, a
learning rate that is not finite and positive...). Bad input, there or later (an unknown data
set, data that cannot be trained on, a missing, damaged or hostile checkpoint, a checkpoint of
another architecture), ends the command with one line ``chainrule COMMAND: error: ...`` on
stderr and exit code 2, before anything already saved is touched. A failure while running (a
run that diverges, memory that runs out, a file that cannot be written) is one line and exit
code 1. ``--debug`` (before or after the command) shows the full traceback instead.

Each subcommand is one module here (:mod:`.train`, :mod:`.evaluate`, :mod:`.compare`,
:mod:`.datasets`, :mod:`.demo`, :mod:`.lab`) holding its options and the calls into the library;
this one builds the top-level parser from them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import sys

from . import compare, datasets, demo, evaluate, lab, train
from .common import Parser, add_debug_argument, one_line

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chainrule",
        description="Backpropagation done properly on NumPy: see a gradient computed, train a "
        "network.",
        epilog="Run 'chainrule COMMAND --help' for the options of each command.",
    )
    add_debug_argument(parser, top=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for command in (demo, train, compare, evaluate, datasets, lab):  # the order --help lists
        add_debug_argument(command.add_parser(sub))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _run_command(args, lambda args: demo.run(args, parser))
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


def _say_error(args, message: str) -> None:
    """The one line of an error (a line break in it written as ``\\n``)."""
    print(f"chainrule {args.command}: error: {one_line(message)}", file=sys.stderr, flush=True)


def _run_command(args, command=None) -> int:
    """Run ``args.command``; bad input is one line on stderr and exit code 2, a failure while
    running (a diverged run, memory that runs out...) one line and 1, an interrupt 130
    (``--debug`` re-raises instead)."""
    from ...data.datasets import DataError
    from ...training.checkpoint import CheckpointError
    from ...training.recipe import ConfigError
    from ...training.trainer import TrainingDiverged

    try:
        return (command or COMMANDS[args.command])(args)
    except (
        DataError,
        ConfigError,
        CheckpointError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
    ) as error:
        if args.debug:
            raise
        message = (
            str(error) if not isinstance(error, OSError) else f"{error.strerror}: {error.filename}"
        )
        _say_error(args, message)
        return 2
    except KeyboardInterrupt:
        print(
            f"chainrule {args.command}: interrupted; continue with --resume",
            file=sys.stderr,
            flush=True,
        )
        return 130
    except MemoryError:
        if args.debug:
            raise
        _say_error(args, "out of memory; use a smaller model, data set or batch size")
        return 1
    except Exception as error:  # noqa: BLE001 - a diverged run, a failed write: one line, 1
        if args.debug:
            raise
        text = str(error) or type(error).__name__
        if not isinstance(error, TrainingDiverged):  # that one names the step, value and hint
            text = f"{type(error).__name__}: {text} (run with --debug for the traceback)"
        _say_error(args, text)
        return 1
