"""The host allocator's policy: freed memory kept mapped, applied once by the first backward pass.

Each policy test runs in a fresh interpreter: the setting is process-wide and cannot be undone,
and the suite's own process has applied it long before."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from chainrule.util import host_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the policy changes glibc's malloc only")

# Sixteen 400 KB arrays made and freed twenty times: with glibc's own thresholds the heap's free
# top is handed back to the OS after rounds and faulted in again (up to 100 pages an array).
_FAULTS_PER_ROUND = """
import resource, sys
import numpy as np
from chainrule.util import host_memory
if sys.argv[1] == "keep":
    assert host_memory.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # the first rounds map the memory
    arrays = [np.ones(50_000) for _ in range(16)]
    del arrays
before = faults()
for _ in range(20):
    arrays = [np.ones(50_000) for _ in range(16)]
    del arrays
print((faults() - before) / 20)
"""

_LIMIT_AROUND_A_BACKWARD = """
import numpy as np
import chainrule as cr
from chainrule.util import host_memory
before = host_memory.kept_limit()
try:
    cr.grad(lambda x: (x * x).sum())(np.ones(3))
except ValueError as error:
    print("error", error)
else:
    print(before, host_memory.kept_limit())
"""


def _run(code, *args, setting=None):
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENVIRONMENT_VARIABLE}
    if setting is not None:
        env[host_memory.ENVIRONMENT_VARIABLE] = setting
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env
    ).stdout.split()


@needs_glibc
def test_freed_memory_kept_is_not_faulted_in_again():
    default = float(_run(_FAULTS_PER_ROUND, "default")[0])
    kept = float(_run(_FAULTS_PER_ROUND, "keep")[0])
    # How much glibc hands back depends on its state before the loop (about 380 faults a round
    # here); kept, none is faulted in again.
    assert default >= 100
    assert kept <= 2


@needs_glibc
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, ["None", str(host_memory.DEFAULT_LIMIT)]),
        ("", ["None", str(host_memory.DEFAULT_LIMIT)]),
        ("256M", ["None", str(256 << 20)]),
        ("8G", ["None", str(2**31 - 1)]),  # past what mallopt's int takes: capped
        ("0", ["None", "None"]),
        ("off", ["None", "None"]),
    ],
)
def test_the_first_backward_pass_applies_the_setting_of_the_environment(setting, expected):
    assert _run(_LIMIT_AROUND_A_BACKWARD, setting=setting) == expected


def test_a_setting_that_is_not_a_size_is_named_in_the_error():
    words = _run(_LIMIT_AROUND_A_BACKWARD, setting="lots")
    assert words[0] == "error"
    assert host_memory.ENVIRONMENT_VARIABLE in " ".join(words)
    assert "'lots'" in " ".join(words)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1 << 20),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("64k", 64 << 10),
        ("1GiB", 1 << 30),
    ],
)
def test_sizes_are_read_with_binary_suffixes(text, size):
    assert host_memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1M", "inf", "nan", "12X"])
def test_what_is_not_a_size_is_refused(text):
    with pytest.raises(ValueError, match="not a size"):
        host_memory.parse_size(text)


@pytest.mark.parametrize("limit", [-1, 2**31, 1.5, True, "1G"])
def test_a_limit_out_of_malloc_range_is_refused(limit):
    with pytest.raises(ValueError, match="keep_freed_memory: limit"):
        host_memory.keep_freed_memory(limit)


def test_without_mallopt_nothing_is_set(monkeypatch):
    monkeypatch.setattr(host_memory, "_mallopt", lambda: None)
    monkeypatch.setattr(host_memory, "_kept", [None])
    assert host_memory.keep_freed_memory() is False
    assert host_memory.kept_limit() is None


def test_a_refusing_mallopt_sets_nothing(monkeypatch):
    """musl's mallopt exists and returns 0 for every parameter."""
    calls = []
    monkeypatch.setattr(host_memory, "_mallopt", lambda: lambda *args: calls.append(args) or 0)
    monkeypatch.setattr(host_memory, "_kept", [None])
    assert host_memory.keep_freed_memory(1 << 20) is False
    assert host_memory.kept_limit() is None
    assert calls == [(-3, host_memory.MMAP_THRESHOLD)]
