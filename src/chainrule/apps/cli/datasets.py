"""``chainrule datasets``: the built-in data sets (none needs a download)."""

from __future__ import annotations

from .common import say


def add_parser(sub):
    return sub.add_parser(
        "datasets",
        help="list the built-in data sets (none needs a download)",
        description="List the built-in data sets. Any .csv or .npz file works too.",
    )


def cmd_datasets(args) -> int:
    from ...data.sources import DATASETS

    for name, text in DATASETS.items():
        say(f"{name:<10}{text}")
    say(f"{'FILE':<10}a .csv (features + label column) or .npz (arrays x and y) of your own")
    return 0
