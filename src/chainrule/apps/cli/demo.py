"""``chainrule demo``: one gradient of a small MLP's loss by reverse mode vs finite differences."""

from __future__ import annotations

import argparse

from .common import non_negative_int, widths


def add_parser(sub):
    demo = sub.add_parser(
        "demo",
        help="gradient of a small MLP loss by reverse mode vs finite differences, with timings",
        description="Compute one gradient of a small MLP's loss by backprop and by central finite "
        "differences, and show how far apart they are and what each cost.",
    )
    demo.add_argument(
        "--hidden", default="32,16", help="hidden layer widths, comma-separated (default: 32,16)"
    )
    demo.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    return demo


def run(args, parser) -> int:
    """Run the demo; a bad ``--hidden`` ends ``parser`` with exit code 2."""
    from ..demo import run_demo

    try:
        hidden = tuple(widths(args.hidden))
    except argparse.ArgumentTypeError as error:
        parser.exit(2, f"chainrule demo: error: {error}\n")
    return run_demo(hidden=hidden, seed=args.seed)
