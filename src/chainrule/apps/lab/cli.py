"""``chainrule lab NAME``: run one experiment of the lab (or ``all``) and write the report.

``add_lab_parser(subparsers)`` adds the subcommand to the ``chainrule`` parser and ``run_lab(args)``
runs it. Each experiment prints its tables and, line by line, every measured figure next to its
theoretical value; then ``DIR/report.html`` (self-contained), ``DIR/results.json`` and the pictures
are written. An experiment that raises is reported as failed (in the terminal and in the report) and
the others still run; the exit status is then 1. A figure that misses its theoretical range does not
fail the command: the report says so and why.

Timings run with the BLAS limited to one thread (through threadpoolctl, when installed): on a
small shared machine a multi-threaded BLAS spends more time waiting for its threads than computing
small products, which would distort every ratio the lab measures.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback

from . import EXPERIMENTS, run_experiment
from .common import ExperimentResult, lab_command, machine_info
from .report import write_report

DEFAULT_OUT = "runs/lab"


def add_lab_parser(subparsers):
    """Add ``lab`` to an ``argparse`` subparsers object; returns the new parser."""
    parser = subparsers.add_parser(
        "lab",
        help="answer the five questions about backpropagation by experiment; writes an HTML report",
        description=(
            "Run one experiment of the lab, or all five, print each measured figure next to its "
            "theoretical value, and write DIR/report.html (self-contained), DIR/results.json and "
            "the plots as PNG. Experiments: " + ", ".join(EXPERIMENTS) + "."
        ),
    )
    parser.add_argument(
        "name", choices=[*EXPERIMENTS, "all"], help="the experiment, or all of them"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced run (all five in under a minute), as the tests use",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of every experiment (default: 0)"
    )
    return parser


def _single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 (optional, ships with scikit-learn)
    except ImportError:
        return contextlib.nullcontext(), "as installed (threadpoolctl missing)"
    return threadpool_limits(limits=1, user_api="blas"), "1 thread (threadpoolctl)"


def _failed(name, error, quick, seed) -> ExperimentResult:
    from . import experiment_module  # noqa: PLC0415

    try:
        question = experiment_module(name).QUESTION
    except Exception:  # the module itself may be what failed to import
        question = "(the experiment could not be imported)"
    return ExperimentResult(
        name=name,
        question=question,
        command=lab_command(name, quick, seed),
        answer=f"This experiment failed to run: {type(error).__name__}: {error}",
        notes=["".join(traceback.format_exception_only(type(error), error)).strip()],
        quick=quick,
    )


def print_result(result: ExperimentResult, stream=None) -> None:
    stream = stream or sys.stdout
    print(f"\n== {result.name}: {result.question}", file=stream)
    for table in result.tables:
        print(table.text(), file=stream)
    for check in result.checks:
        print("  " + check.line(), file=stream)
        if not check.matches and check.why_not:
            print(f"    why: {check.why_not}", file=stream)
    print(f"  ({result.seconds:.1f} s)", file=stream)


def run_lab(args) -> int:
    """Run ``args.name`` (an experiment or ``all``) and write the report into ``args.out``."""
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    quick = bool(getattr(args, "quick", False))
    seed = int(getattr(args, "seed", 0))
    limiter, blas_threads = _single_threaded_blas()
    results = []
    failures = 0
    started = time.perf_counter()
    with limiter:
        for name in names:
            try:
                result = run_experiment(name, quick=quick, seed=seed)
            except Exception as error:  # report it and go on with the other experiments
                failures += 1
                print(f"\n== {name}: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
                traceback.print_exc()
                result = _failed(name, error, quick, seed)
            else:
                print_result(result)
            results.append(result)
    machine = machine_info()
    machine["BLAS threads"] = blas_threads
    machine["lab command"] = (
        f"chainrule lab {args.name} --out {args.out}{' --quick' if quick else ''} --seed {seed}"
    )
    machine["lab seconds"] = round(time.perf_counter() - started, 1)
    written = write_report(results, args.out, machine)
    matched = sum(c.matches for r in results for c in r.checks)
    total = sum(len(r.checks) for r in results)
    print(
        f"\n{matched} of {total} measured figures match the theory; see the report for the others."
    )
    print(f"report: {written['html']}\nraw figures: {written['json']}")
    if failures:
        print(f"{failures} experiment(s) failed", file=sys.stderr)
    return 1 if failures else 0


def main(argv=None) -> int:
    """``python -m chainrule.apps.lab.cli NAME ...`` (the same as ``chainrule lab NAME ...``)."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="chainrule")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    return run_lab(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
