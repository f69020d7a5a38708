"""Helpers below every other layer: the standard library and NumPy only, no chainrule imports.

:mod:`.files` writes files atomically (a reader sees the old file or the new one, never a mix)
and reads JSON with one-line errors that name the file. :mod:`.host_memory` keeps freed heap
memory mapped for the next step (glibc's ``mallopt``), which the engine applies at its first
backward pass.
"""

from .files import atomic_write_bytes, atomic_write_text, read_json, write_json

__all__ = ["atomic_write_bytes", "atomic_write_text", "read_json", "write_json"]
