"""``chainrule compare``: every gradient method and update scheme side by side, under one budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_device_arguments,
    add_options,
    non_negative_int,
    positive_float,
    positive_int,
    run_device,
    say,
    widths,
)

COMPARE_METHODS = "backprop,forward_mode,finite_differences,forward_gradient,spsa,mezo,es"


def add_parser(sub):
    compare = sub.add_parser(
        "compare",
        help="every gradient method and update scheme side by side, under the same budget",
        description="Train each (method, scheme) pair on the same data, model and seed under the "
        "same\nwall-clock (or pass) budget and print one table, with loss-vs-time and "
        "loss-vs-passes plots;\nor, with --gradient-cost, time one full gradient by each method "
        "as P grows.",
        epilog="examples:\n"
        "  chainrule compare --data digits --hidden 32 --methods backprop,forward_gradient,spsa "
        "--schemes simultaneous,layerwise,locoprop-s --budget-seconds 20\n"
        "  chainrule compare --gradient-cost --params 1e2,1e3,1e4,1e5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(compare)
    _add_gradient_cost_arguments(compare)
    compare.add_argument(
        "--out", metavar="DIR", default="runs/compare", help="where the table, JSON and PNG go"
    )
    add_device_arguments(compare)
    return compare


def _add_run_arguments(compare):
    """What is compared: data, model, methods, schemes, the budget and the learning rates."""
    compare.add_argument(
        "--data", default="digits", help="data set, as for train (default: digits)"
    )
    compare.add_argument(
        "--hidden", default="32", help="hidden widths, comma-separated (default: 32)"
    )
    compare.add_argument("--activation", default="relu", help="hidden activation (default: relu)")
    compare.add_argument(
        "--batchnorm", action="store_true", help="batch norm after each hidden Linear"
    )
    compare.add_argument(
        "--methods",
        help="comma-separated gradient methods (default: all seven; with --gradient-cost: "
        "backprop, forward_mode, finite_differences)",
    )
    compare.add_argument(
        "--schemes",
        default="simultaneous,layerwise,locoprop-s",
        help="comma-separated update schemes",
    )
    add_options(
        compare,
        [
            ("--budget-seconds", positive_float, "S", "training seconds per pair (default: 60)"),
            ("--budget-passes", positive_int, "N", "network passes per pair instead of seconds"),
        ],
    )
    compare.add_argument("--batch-size", type=positive_int, default=32, help="(default: 32)")
    compare.add_argument("--seed", type=non_negative_int, default=0, help="(default: 0)")
    compare.add_argument(
        "--lr",
        action="append",
        default=[],
        metavar="METHOD=LR",
        help="learning rate for one method, e.g. --lr spsa=0.001 "
        "(repeatable; defaults in docs/methods.md)",
    )


def _add_gradient_cost_arguments(compare):
    """``--gradient-cost`` and what it measures."""
    compare.add_argument(
        "--gradient-cost", action="store_true", help="time one gradient per method as P grows"
    )
    compare.add_argument(
        "--params", default="1e2,1e3,1e4,1e5", help="--gradient-cost: parameter counts"
    )
    compare.add_argument(
        "--time-cap",
        type=positive_float,
        default=3.0,
        help="--gradient-cost: seconds before extrapolating",
    )


def _names(text: str, what: str) -> list[str]:
    from ...training.recipe import ConfigError

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"--{what} needs at least one name")
    return names


def cmd_compare(args) -> int:
    out = Path(args.out)
    device = run_device(args.device or "cpu")
    if args.gradient_cost:
        return _gradient_cost(args, out, device)
    return _compare_training(args, out, device)


def _gradient_cost(args, out: Path, device) -> int:
    """``--gradient-cost``: time one full gradient by each method as the parameter count grows."""
    from ...training.compare import THEORY, gradient_cost, plot_gradient_cost
    from ...training.recipe import ConfigError
    from ...util.files import write_json

    if device.kind != "cpu" or args.dtype is not None:
        raise ConfigError(
            "--gradient-cost times gradients on the CPU; leave out --device and --dtype"
        )
    try:
        targets = [float(part) for part in _names(args.params, "params")]
    except ValueError:
        raise ConfigError(f"--params must be numbers like 1e2,1e3, got {args.params!r}") from None
    if any(not t >= 10 for t in targets):
        raise ConfigError("--params must all be at least 10")
    methods = _names(args.methods or "backprop,forward_mode,finite_differences", "methods")
    say("one full gradient of an MLP loss, time relative to one loss evaluation:")
    points, slopes = gradient_cost(
        targets, methods, time_cap=args.time_cap, seed=args.seed, log=say
    )
    for name, slope in slopes.items():
        shown = "n/a (fewer than two measured points)" if slope is None else f"{slope:.2f}"
        say(f"log-log slope {name:<20} {shown}   theory {THEORY.get(name, '-')}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "gradient_cost.json",
        {"points": [{**p.__dict__, "ratio": p.ratio} for p in points], "slopes": slopes},
    )
    plot_gradient_cost(points, slopes, out / "gradient_cost.png")
    say(f"wrote {out / 'gradient_cost.json'} and {out / 'gradient_cost.png'}")
    return 0


def _budget(args) -> tuple[float | None, str]:
    """``(seconds or None, the budget in words)``: ``--budget-passes``, else ``--budget-seconds``
    (default 60), each checked positive."""
    from ...training.recipe import ConfigError

    if args.budget_seconds is not None and args.budget_passes is not None:
        raise ConfigError("give --budget-seconds or --budget-passes, not both")
    budget_seconds = args.budget_seconds if args.budget_passes is None else None
    if budget_seconds is None and args.budget_passes is None:
        budget_seconds = 60.0
    if budget_seconds is not None and not budget_seconds > 0:
        raise ConfigError(f"--budget-seconds must be positive, got {budget_seconds}")
    if args.budget_passes is not None and args.budget_passes <= 0:
        raise ConfigError(f"--budget-passes must be positive, got {args.budget_passes}")
    budget = (
        f"{budget_seconds:g} s" if budget_seconds is not None else f"{args.budget_passes} passes"
    )
    return budget_seconds, budget


def _learning_rates(items) -> dict:
    """``{method: lr}`` from the ``--lr METHOD=LR`` options."""
    from ...training.recipe import ConfigError

    rates = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--lr takes METHOD=LR, got {item!r}") from None
    return rates


def _compare_training(args, out: Path, device) -> int:
    """Train every (method, scheme) pair under the same budget; one table, JSON and plot."""
    from ...training.compare import compare_training, format_runs, plot_runs
    from ...training.recipe import ConfigError, build_data, make_config
    from ...util.files import atomic_write_bytes, write_json

    budget_seconds, budget = _budget(args)
    rates = _learning_rates(args.lr)
    try:
        hidden = widths(args.hidden)
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"--hidden: {error}") from None
    config = make_config(data=args.data, hidden=hidden, seed=args.seed, batch_size=args.batch_size)
    splits = build_data(config)
    sizes = [splits.train.num_features, *hidden, splits.train.num_outputs]
    say(
        f"{args.data}: MLP {'-'.join(str(n) for n in sizes)}, "
        f"batch {args.batch_size}, seed {args.seed}, budget {budget} per pair, on {device.name}"
    )
    try:
        runs = compare_training(
            splits,
            hidden,
            _names(args.methods or COMPARE_METHODS, "methods"),
            _names(args.schemes, "schemes"),
            budget_seconds=budget_seconds,
            budget_passes=args.budget_passes,
            batch_size=args.batch_size,
            seed=args.seed,
            learning_rates=rates,
            activation=args.activation,
            batchnorm=args.batchnorm,
            device=device.name,
            dtype=args.dtype,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    table = format_runs(runs)
    say(table)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "compare.json", {"config": vars(args), "runs": [run.as_dict() for run in runs]}
    )
    atomic_write_bytes(out / "compare.txt", (table + "\n").encode())
    plot_runs(runs, out / "compare.png", f"{args.data}: same budget ({budget}) per pair")
    say(f"wrote {out / 'compare.json'}, {out / 'compare.txt'} and {out / 'compare.png'}")
    return 0
