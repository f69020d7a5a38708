"""Files written atomically; files and JSON read with bounds and errors that name the file.

Each file is written to a temporary name in the same folder, flushed to disk and renamed over its
final name (``os.replace``, atomic on POSIX). A process killed at any instant therefore leaves
either the previous file or the new one, never a half-written file under a real name; only the
temporary (a ``.NAME.*.tmp`` beside it) can be left behind.

Reading is bounded: :func:`open_regular` opens only a regular file (never through a symlink, so a
link to ``/dev/zero`` or a FIFO is refused without reading a byte), :func:`read_bounded` refuses a
file larger than its limit before reading it, and :func:`read_json` also refuses JSON nested
deeper than ``max_depth`` (checked by scanning the brackets, before :mod:`json` recurses) and the
non-standard constants NaN and Infinity.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "value.json"
>>> write_json(path, {"b": 1, "a": [2, 3]})
>>> read_json(path)
{'a': [2, 3], 'b': 1}
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import tempfile
from pathlib import Path

#: Largest JSON file :func:`read_json` reads by default (a run's metadata is kilobytes).
JSON_SIZE_LIMIT = 64 * 2**20
#: Deepest nesting of arrays and objects :func:`read_json` accepts by default.
JSON_DEPTH_LIMIT = 64


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


def open_regular(path, what: str = "file", error: type[Exception] = ValueError):
    """``(binary file object, size)`` of ``path``, which must be a regular file: a symlink, a
    device, a FIFO or a folder raises ``error`` naming ``what`` and the path, and nothing is read
    (``O_NOFOLLOW`` and ``O_NONBLOCK`` at the open, ``fstat`` of the open file afterwards, so the
    file checked is the file read)."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise error(f"{what} {str(path)!r} is a symbolic link, not a regular file")
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except OSError as reason:
        raise error(f"cannot read {what} {str(path)!r}: {reason.strerror}") from None
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode):
        os.close(handle)
        raise error(f"{what} {str(path)!r} is not a regular file")
    return os.fdopen(handle, "rb"), info.st_size


def read_bounded(path, limit: int, what: str = "file", error: type[Exception] = ValueError):
    """The bytes of the regular file ``path`` (see :func:`open_regular`), refused with ``error``
    when it holds more than ``limit`` bytes, before any is read."""
    stream, size = open_regular(path, what, error)
    with stream:
        if size > limit:
            raise error(f"{what} {str(path)!r} is too large ({size:,} bytes; at most {limit:,})")
        data = stream.read(limit + 1)
    if len(data) > limit:  # grew while we read it
        raise error(f"{what} {str(path)!r} is too large (more than {limit:,} bytes)")
    return data


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in the JSON ``text`` (brackets inside strings do
    not count), found without recursion.

    >>> json_depth('{"a": [1, [2]], "b": "[[["}')
    3
    """
    bare = _STRING.sub("", text)
    steps = (1 if m.group() in "[{" else -1 for m in _BRACKET.finditer(bare))
    return max(itertools.accumulate(steps, initial=0))


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(
    text: str,
    what: str = "JSON",
    error: type[Exception] = ValueError,
    max_depth: int = JSON_DEPTH_LIMIT,
    constants: bool = False,
):
    """``json.loads(text)``, with nesting deeper than ``max_depth`` refused as ``error`` (one line
    naming ``what``), never a RecursionError; so are the constants NaN and Infinity, unless
    ``constants`` (for a caller that checks every number itself and names the field)."""
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{what} is nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(text, parse_constant=None if constants else _refuse_constant)
    except json.JSONDecodeError as reason:
        raise error(
            f"{what} is corrupted (invalid JSON: {reason.msg} at line {reason.lineno})"
        ) from None
    except (ValueError, RecursionError) as reason:
        raise error(f"{what} is corrupted (invalid JSON: {reason})") from None


def read_json(
    path,
    what: str = "file",
    error: type[Exception] = ValueError,
    max_bytes: int = JSON_SIZE_LIMIT,
    max_depth: int = JSON_DEPTH_LIMIT,
    constants: bool = False,
):
    """The JSON value in ``path``. A missing, unreadable, oversized (over ``max_bytes``), too
    deeply nested (over ``max_depth``) or invalid file, or one that is not a regular file, raises
    ``error`` (the caller's own exception class, so that its callers catch one type) with one line
    naming ``what`` and the path, not a traceback from deep inside :mod:`json`. NaN and Infinity
    are refused unless ``constants`` (see :func:`parse_json`)."""
    path = Path(path)
    data = read_bounded(path, max_bytes, what, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as reason:
        raise error(f"cannot read {what} {str(path)!r}: {reason}") from None
    return parse_json(text, f"{what} {str(path)!r}", error, max_depth, constants)
