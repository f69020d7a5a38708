"""Files written atomically and JSON read with errors that name the file.

Each file is written to a temporary name in the same folder, flushed to disk and renamed over its
final name (``os.replace``, atomic on POSIX). A process killed at any instant therefore leaves
either the previous file or the new one, never a half-written file under a real name; only the
temporary (a ``.NAME.*.tmp`` beside it) can be left behind.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "value.json"
>>> write_json(path, {"b": 1, "a": [2, 3]})
>>> read_json(path)
{'a': [2, 3], 'b': 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give (mkstemp's are owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temp, _FILE_MODE)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every platform
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, value) -> None:
    """``value`` as indented JSON with sorted keys, atomically; NaN and Inf are refused (they are
    not JSON), before anything is written."""
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n")


def read_json(path, what: str = "file", error: type[Exception] = ValueError):
    """The JSON value in ``path``. A missing, unreadable or invalid file raises ``error`` (the
    caller's own exception class, so that its callers catch one type) with one line naming
    ``what`` and the path, not a traceback from deep inside :mod:`json`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as reason:
        raise error(f"cannot read {what} {str(path)!r}: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as reason:
        raise error(
            f"{what} {str(path)!r} is corrupted (invalid JSON: {reason.msg} at line "
            f"{reason.lineno})"
        ) from None
