"""Devices: where arrays live (``"cpu"``, or ``"cuda"`` with CuPy), and moving them.

>>> import numpy as np, chainrule as cr
>>> from chainrule.device import device, current_device, to_device, to_numpy
>>> current_device().name
'cpu'
>>> with device("cpu"):
...     moved = to_device({"w": np.ones(2)}, "cpu")
>>> to_numpy(moved["w"])
array([1., 1.])

The engine's primitives call NumPy's functions, which dispatch to CuPy for CUDA arrays, so a
computation runs on the device its inputs are on; inputs on two devices in one operation are an
error naming the operation and both devices (see :func:`chainrule.core.apply`). The device
lookup itself lives in :mod:`chainrule.backend` (``device_of``, ``to_device``), the one place
that knows about CuPy.

``device(name)`` is also a context manager that sets the *default device*, the one that
:func:`array` (and the data, module and checkpoint layers that build arrays through it) put new
arrays on. ``"cuda"`` needs CuPy and a GPU; without them it is a ``RuntimeError`` saying which is
missing. On a GPU the default floating dtype is float32 (:func:`default_float_dtype`).
"""

from __future__ import annotations

import threading

from . import backend
from .core import Tracer
from .pytree import tree_flatten, tree_unflatten

__all__ = [
    "Device",
    "array",
    "current_device",
    "cuda_available",
    "default_float_dtype",
    "device",
    "device_of",
    "to_device",
    "to_numpy",
]


class Device:
    """A device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``); entering it makes it the default."""

    __slots__ = ("kind", "index", "_previous")

    def __init__(self, name="cpu"):
        if isinstance(name, Device):
            name = name.name
        self.kind, self.index = backend.parse_device(name)
        if self.kind == "cuda":
            backend.require_cuda(self.index)
        self._previous = []

    @property
    def name(self) -> str:
        return backend.device_name(self.kind, self.index)

    def __repr__(self):
        return f"device({self.name!r})"

    def __eq__(self, other):
        other_name = other.name if isinstance(other, Device) else other
        return isinstance(other_name, str) and backend.parse_device(other_name) == (self.kind, self.index)

    def __hash__(self):
        return hash((self.kind, self.index))

    def __enter__(self):
        self._previous.append(_state.device)
        _state.device = self
        return self

    def __exit__(self, *exc_info):
        _state.device = self._previous.pop()
        return False


class _DefaultDevice(threading.local):
    def __init__(self):
        self.device = None  # None: the CPU, without building a Device at import


_state = _DefaultDevice()


def device(name="cpu") -> Device:
    """The device ``name``; use it in ``with`` to make it the default device of the block."""
    return Device(name)


def current_device() -> Device:
    """The default device: the innermost ``with device(...)``, else the CPU."""
    return _state.device or Device("cpu")


def cuda_available() -> bool:
    """Whether CuPy is installed and sees at least one CUDA device."""
    return backend.cuda_device_count() > 0


def device_of(value) -> str:
    """Name of the device ``value`` (an array, a Tensor or another tracer) lives on."""
    while isinstance(value, Tracer):
        value = value._unwrap()
    return backend.device_of(value)


def default_float_dtype(where=None):
    """float32 on a GPU (its fast path), the backend's default (float64) on the CPU."""
    target = current_device() if where is None else Device(where)
    return backend.xp.float32 if target.kind == "cuda" else backend.default_float_dtype()


def array(value, dtype=None, device=None):
    """``value`` as an array on ``device`` (default: the current default device)."""
    target = current_device() if device is None else Device(device)
    if target.kind == "cpu":
        return backend.asarray(backend.to_device(value, "cpu"), dtype)
    moved = backend.to_device(value, target.name)
    return moved if dtype is None else moved.astype(dtype, copy=False)


def to_device(tree, name):
    """Every array leaf of ``tree`` on device ``name`` (Tensors through :meth:`Tensor.to`)."""
    target = Device(name).name
    leaves, treedef = tree_flatten(tree)
    moved = []
    for leaf in leaves:
        if hasattr(leaf, "to") and isinstance(leaf, Tracer):
            moved.append(leaf.to(target))
        elif backend.is_array(leaf) or hasattr(leaf, "dtype"):
            moved.append(backend.to_device(leaf, target))
        else:
            moved.append(leaf)
    return tree_unflatten(treedef, moved)


def to_numpy(tree):
    """Every array leaf of ``tree`` (Tensors included) as a NumPy array on the host."""
    leaves, treedef = tree_flatten(tree)
    out = []
    for leaf in leaves:
        while isinstance(leaf, Tracer):
            leaf = leaf._unwrap()
        out.append(backend.to_numpy(leaf) if backend.is_array(leaf) or hasattr(leaf, "dtype") else leaf)
    return tree_unflatten(treedef, out)
