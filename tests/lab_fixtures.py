"""Test helper: one quick run of the whole lab per test session, shared by the lab's tests
(``tests/apps/test_lab.py``) and the browser test (``tests/apps/test_lab_browser.py``)."""

from __future__ import annotations

import argparse
import time

from chainrule.apps.lab.cli import add_lab_parser, run_lab

_CACHE: dict = {}


def quick_lab(tmp_path_factory):
    """``(out_dir, exit_status, seconds, printed)`` of one ``chainrule lab all --quick`` run per
    session."""
    if "run" not in _CACHE:
        import contextlib
        import io

        out = tmp_path_factory.mktemp("lab")
        parser = argparse.ArgumentParser(prog="chainrule")
        add_lab_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["lab", "all", "--quick", "--out", str(out), "--seed", "0"])
        printed = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            status = run_lab(args)
        _CACHE["run"] = (out, status, time.perf_counter() - started, printed.getvalue())
    return _CACHE["run"]
