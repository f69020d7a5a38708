"""The ``chainrule`` command. ``chainrule demo`` is the README's main job."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="chainrule", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="gradient of a small MLP loss by reverse mode vs finite differences, with timings"
    )
    demo.add_argument("--hidden", default="32,16", help="hidden layer widths, comma-separated")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(hidden=tuple(int(h) for h in args.hidden.split(",") if h), seed=args.seed)
    return 2


if __name__ == "__main__":
    sys.exit(main())
