"""``python -m chainrule.apps.cli``: the ``chainrule`` command, as ``python -m chainrule`` is."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
