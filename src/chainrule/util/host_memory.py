"""Keep freed host memory in the process for the next step, instead of handing it back to the OS.

Why: a gradient call or a training step allocates and frees arrays of the same sizes again and
again, and a reverse-mode tape holds many of them at once. glibc's ``malloc`` gives the free top
of its heap back to the OS whenever it exceeds the *trim threshold*, and serves blocks above the
*mmap threshold* with fresh mappings. Both thresholds adjust themselves (to the largest freed
mapping and twice that: 128 KiB and 256 KiB after a 128 KiB array is freed), so a tape of a few
hundred KiB or more is returned to the OS at the end of each call and faulted back page by page
on the next, the kernel zeroing every 4 KiB page on first touch (about 2.5 us each on the
benchmark machine). Measured there (``docs/benchmarks.md``): the eager gradient of gradbench's
ode at n = 10,000, s = 100 took 39,060 page faults and 114 ms per call, 40 ms with freed memory
kept; the digits training step fell into that mode or not depending on the order of earlier
allocations, 222 faults and 1.67x hand-written NumPy against 3 faults and 1.09x.

What this module does: fix the mmap threshold at glibc's largest (32 MiB), so that arrays up to
that size come from the heap, and raise the trim threshold to a limit (by default an eighth of
the machine's memory, at most the 2 GiB that ``mallopt`` takes; a larger setting is capped
there), so that up to that much free heap stays mapped for the next call. It changes the whole
process's allocator, as NumPy's own hugepage advice does at import, and only on glibc; elsewhere
it does nothing. A process then stays at its peak resident size between steps instead of
dropping below it; it never needs more than that peak.

The engine applies :func:`apply_default_policy` once, at the first backward pass; set the
environment variable ``CHAINRULE_KEEP_FREED_MEMORY`` to ``0`` to leave the allocator as it is,
or to a size (``512M``, ``2G``, a number of bytes) for another limit.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys

#: The environment variable read by :func:`apply_default_policy`.
ENVIRONMENT_VARIABLE = "CHAINRULE_KEEP_FREED_MEMORY"

# mallopt's parameter numbers (glibc's malloc.h) and the largest value its int argument takes.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1


def _default_limit() -> int:
    """An eighth of the machine's memory, at most what mallopt takes (1 GiB where unknown)."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 1 << 30
    return min(_INT_MAX, physical // 8) if physical > 0 else 1 << 30


#: How much free heap stays mapped by default: an eighth of the memory, at most 2 GiB - 1.
DEFAULT_LIMIT = _default_limit()

#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``): blocks up to
#: this size are served from the heap, whose freed memory the trim threshold keeps.
MMAP_THRESHOLD = 32 << 20

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

_kept: list = [None]  # the limit set by this module, once set


def _mallopt():
    """glibc's ``mallopt``, or None where the C library has none (macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def keep_freed_memory(limit: int = DEFAULT_LIMIT) -> bool:
    """Keep up to ``limit`` bytes of freed heap mapped, and serve blocks up to 32 MiB from the
    heap (see the module docstring). Returns whether the allocator took the setting: False off
    glibc (musl's ``mallopt`` refuses, macOS has none). Process-wide, and not undone: glibc has
    no call that restores its self-adjusting thresholds once they are set."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= _INT_MAX:
        raise ValueError(
            f"keep_freed_memory: limit must be bytes in [0, {_INT_MAX}], got {limit!r}"
        )
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success and 0 where it refuses.
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, limit)):
        return False
    _kept[0] = limit
    return True


def kept_limit() -> int | None:
    """The limit :func:`keep_freed_memory` set in this process, or None while it has set none."""
    return _kept[0]


def parse_size(text: str) -> int:
    """A size written as bytes or with a binary suffix: ``"1048576"``, ``"512M"``, ``"2G"``.

    >>> parse_size("512M")
    536870912
    >>> parse_size("64k")
    65536
    """
    stripped = text.strip().upper().removesuffix("B").removesuffix("I")
    number, suffix = stripped, ""
    if stripped[-1:] in ("K", "M", "G"):
        number, suffix = stripped[:-1], stripped[-1]
    try:
        value = float(number) * _SUFFIXES[suffix]
    except ValueError:
        raise ValueError(
            f"not a size: {text!r} (write bytes, or a number with K, M or G)"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a size: {text!r} (a size is a finite number, 0 or more)")
    return int(value)


def apply_default_policy() -> bool:
    """:func:`keep_freed_memory` with the limit that ``CHAINRULE_KEEP_FREED_MEMORY`` names
    (:data:`DEFAULT_LIMIT` when unset; ``0``, ``off``, ``no`` or ``false`` leave the allocator
    alone).
    Returns whether a limit was set. A value that is not a size raises a ValueError naming the
    variable."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE)
    if setting is None or not setting.strip():
        return keep_freed_memory(DEFAULT_LIMIT)
    if setting.strip().lower() in ("0", "off", "no", "false"):
        return False
    try:
        limit = parse_size(setting)
    except ValueError as error:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={setting!r}: {error}") from None
    return keep_freed_memory(min(limit, _INT_MAX))
