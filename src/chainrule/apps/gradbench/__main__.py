"""``python -m chainrule.apps.gradbench``: serve the gradbench protocol on stdin/stdout."""

import sys

from .protocol import main

if __name__ == "__main__":
    sys.exit(main())
