"""``python -m chainrule``: the ``chainrule`` command (see :mod:`chainrule.apps.cli`)."""

from __future__ import annotations

import sys

from .apps.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
