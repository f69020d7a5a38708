"""Progress display: a tqdm bar over an epoch's batches when the output is a terminal.

Without a terminal (CI logs, pipes) no bar is drawn; the trainer prints one line per epoch instead.
"""

from __future__ import annotations

import sys


class NullBar:
    def update(self, n=1, **postfix):
        pass

    def close(self):
        pass


class Bar:
    def __init__(self, total, initial, desc, stream):
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            file=stream,
            leave=False,
            dynamic_ncols=True,
            unit="batch",
        )

    def update(self, n=1, **postfix):
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def close(self):
        self._bar.close()


def progress_enabled(setting, stream=None) -> bool:
    """``setting`` True/False forces the bar; ``None`` draws it only on a terminal."""
    stream = stream or sys.stderr
    if setting is None:
        return bool(getattr(stream, "isatty", lambda: False)())
    return bool(setting)


def make_bar(enabled: bool, total: int, initial: int = 0, desc: str = "", stream=None):
    if not enabled:
        return NullBar()
    try:
        return Bar(total, initial, desc, stream or sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        return NullBar()
