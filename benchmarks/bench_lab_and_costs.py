"""Timings the test suite must not depend on: the quick lab's wall time and the gradient-cost
slopes of ``chainrule compare --gradient-cost``.

Run with ``python benchmarks/bench_lab_and_costs.py``. It prints:

(a) seconds for ``chainrule lab all --quick`` (the goal: under 60 s on this kind of machine);
(b) the log-log slope of time(one full gradient) / time(one loss) against the parameter count P,
    for backprop and for central finite differences, from P = 30 to 300 (theory: about 0 for
    backprop, whose gradient costs a constant number of loss evaluations, and about 1 for finite
    differences, which makes 2P of them); the goal is an FD slope above 0.5 and backprop's at
    least 0.4 below it.

Method: one process, timings from ``time.perf_counter``; the slopes come from
:func:`chainrule.training.compare.gradient_cost` with its repeats (the median of each point).
The machine is shared and noisy: rerun before trusting a missed goal.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time

from chainrule.apps.lab.cli import add_lab_parser, run_lab
from chainrule.training.compare import gradient_cost

LAB_GOAL_SECONDS = 60.0


def lab_seconds() -> tuple[float, int]:
    parser = argparse.ArgumentParser(prog="chainrule")
    add_lab_parser(parser.add_subparsers(dest="command"))
    with tempfile.TemporaryDirectory() as out:
        args = parser.parse_args(["lab", "all", "--quick", "--out", out, "--seed", "0"])
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            status = run_lab(args)
        return time.perf_counter() - started, status


def main() -> None:
    seconds, status = lab_seconds()
    met = "met" if status == 0 and seconds < LAB_GOAL_SECONDS else "NOT MET"
    print(f"(a) chainrule lab all --quick: {seconds:.1f} s, exit {status} (goal < 60 s: {met})")
    _, slopes = gradient_cost(
        (30, 300), methods=("backprop", "finite_differences"), time_cap=5.0, repeats=3
    )
    fd, backprop = slopes["finite_differences"], slopes["backprop"]
    met = "met" if fd > 0.5 and backprop < fd - 0.4 else "NOT MET"
    print(
        f"(b) slope of gradient time / loss time against P (30 -> 300): finite differences "
        f"{fd:.2f}, backprop {backprop:.2f} (goal: FD > 0.5, backprop < FD - 0.4: {met})"
    )


if __name__ == "__main__":
    main()
