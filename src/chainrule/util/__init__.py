"""Helpers below every other layer: the standard library and NumPy only, no chainrule imports.

:mod:`.files` writes files atomically (a reader sees the old file or the new one, never a mix)
and reads JSON with one-line errors that name the file. :mod:`.host_memory` keeps freed heap
memory mapped for the next step (glibc's ``mallopt``), which the engine applies at its first
backward pass. :mod:`.lookup` finds a name in a by-name table, with one error message.

The modules load on first use: the engine's first backward pass asks for ``host_memory`` alone,
and should not pay for ``files``' imports (``tempfile``, ``json``: about 13 ms).
"""

from __future__ import annotations

import importlib

#: The names of :mod:`.files` readable from the package, as before it loaded lazily.
_FILES_NAMES = frozenset({"atomic_write_bytes", "atomic_write_text", "read_json", "write_json"})
_SUBMODULES = frozenset({"files", "host_memory", "lookup"})


def __getattr__(name: str):
    if name in _FILES_NAMES:
        return getattr(importlib.import_module(f"{__name__}.files"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _FILES_NAMES | _SUBMODULES)
