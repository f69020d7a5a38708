"""``chainrule lab``: the experiments that measure the complexity argument (see :mod:`..lab`)."""

from __future__ import annotations


def add_parser(sub):
    from ..lab.cli import add_lab_parser

    return add_lab_parser(sub)


def run(args) -> int:
    from ..lab.cli import run_lab

    return run_lab(args)
