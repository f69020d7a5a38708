"""Devices: where arrays live (``"cpu"``, or ``"cuda"`` with CuPy), and moving them.

>>> import numpy as np, chainrule as cr
>>> from chainrule.backend.device import device, current_device, to_device, to_numpy
>>> current_device().name
'cpu'
>>> with device("cpu"):
...     moved = to_device({"w": np.ones(2)}, "cpu")
>>> to_numpy(moved["w"])
array([1., 1.])

The engine's primitives call NumPy's functions, which dispatch to CuPy for CUDA arrays, so a
computation runs on the device its inputs are on; inputs on two devices in one operation are an
error naming the operation and both devices (see :func:`chainrule.engine.core.apply`). The device
lookup itself lives in :mod:`chainrule.engine.arraylib` (``device_of``, ``to_device``), the one
place that knows about CuPy.

``device(name)`` is also a context manager that sets the *default device*, the one that
:func:`array` (and the data, module and checkpoint layers that build arrays through it) put new
arrays on; for a CUDA device it also makes that GPU CuPy's current one, so arrays that CuPy
creates inside the block land on it. ``"cuda"`` needs CuPy and a GPU; without them it is a
``RuntimeError`` saying which is missing. On a GPU the default floating dtype is float32
(:func:`default_float_dtype`, :func:`float_dtype`).

GPU work is asynchronous: a Python timer around a device computation measures the launch, not
the work. :func:`synchronize` waits for the device (a no-op on the CPU), so timings read

>>> import time
>>> from chainrule.backend.device import synchronize
>>> started = time.perf_counter(); synchronize(); seconds = time.perf_counter() - started
"""

from __future__ import annotations

import threading

from ..engine import arraylib
from ..engine.core import Tracer
from ..transforms.pytree import tree_flatten, tree_unflatten

__all__ = [
    "Device",
    "array",
    "current_device",
    "cuda_available",
    "default_float_dtype",
    "device",
    "device_of",
    "float_dtype",
    "scoped_device",
    "synchronize",
    "to_device",
    "to_numpy",
]


class Device:
    """A device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``); entering it makes it the default."""

    __slots__ = ("kind", "index", "_previous")

    def __init__(self, name="cpu"):
        if isinstance(name, Device):
            name = name.name
        self.kind, self.index = arraylib.parse_device(name)
        if self.kind == "cuda":
            arraylib.require_cuda(self.index)
        self._previous = []

    @property
    def name(self) -> str:
        return arraylib.device_name(self.kind, self.index)

    def __repr__(self):
        return f"device({self.name!r})"

    def __eq__(self, other):
        other_name = other.name if isinstance(other, Device) else other
        return isinstance(other_name, str) and arraylib.parse_device(other_name) == (
            self.kind,
            self.index,
        )

    def __hash__(self):
        return hash((self.kind, self.index))

    def __enter__(self):
        # A CUDA device also becomes CuPy's current device, so CuPy's own allocations in the
        # block (zeros, empty, ...) land on it and not on GPU 0.
        cuda_context = None
        if self.kind == "cuda":  # the constructor checked the device; entering is the hot path
            cupy = arraylib.cupy_module() or arraylib.require_cuda(self.index)
            cuda_context = cupy.cuda.Device(self.index)
            cuda_context.__enter__()
        self._previous.append((_state.device, cuda_context))
        _state.device = self
        return self

    def __exit__(self, *exc_info):
        _state.device, cuda_context = self._previous.pop()
        if cuda_context is not None:
            cuda_context.__exit__(*exc_info)
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


def scoped_device() -> Device | None:
    """The device of the innermost ``with device(...)`` block, ``None`` outside every block
    (where :func:`current_device` answers the CPU by default, this says no one chose)."""
    return _state.device


def synchronize(where=None) -> None:
    """Wait until the device has finished all the work queued on it: a no-op on the CPU, where
    every operation is done when it returns. Put it before reading a timer around GPU work.
    ``where``: a device name or :class:`Device` (default: the current device)."""
    target = current_device() if where is None else Device(where)
    if target.kind == "cpu":
        return
    handle = arraylib.require_cuda(target.index).cuda.Device(target.index)
    wait = getattr(handle, "synchronize", None)  # the simulated device computes synchronously
    if wait is not None:
        wait()


def cuda_available() -> bool:
    """Whether CuPy is installed and sees at least one CUDA device."""
    return arraylib.cuda_device_count() > 0


def device_of(value) -> str:
    """Name of the device ``value`` (an array, a Tensor or another tracer) lives on."""
    while isinstance(value, Tracer):
        value = value._unwrap()
    return arraylib.device_of(value)


def default_float_dtype(where=None):
    """float32 on a GPU (its fast path), the backend's default (float64) on the CPU."""
    target = current_device() if where is None else Device(where)
    return arraylib.xp.float32 if target.kind == "cuda" else arraylib.default_float_dtype()


def float_dtype(dtype=None, where=None):
    """The floating dtype to compute with: ``dtype`` when given (a name such as ``"float32"``, a
    NumPy dtype or type), else the device's default (:func:`default_float_dtype`). A
    non-floating ``dtype`` is a ``TypeError`` naming it.

    >>> float_dtype("float32"), float_dtype(where="cpu")
    (dtype('float32'), dtype('float64'))
    """
    try:
        chosen = arraylib.xp.dtype(default_float_dtype(where) if dtype is None else dtype)
    except TypeError:
        chosen = None
    if chosen is None or chosen.kind != "f":
        raise TypeError(f"float_dtype: expected a floating dtype such as 'float32', got {dtype!r}")
    return chosen


def array(value, dtype=None, device=None):
    """``value`` as an array on ``device`` (default: the current default device)."""
    target = current_device() if device is None else Device(device)
    if target.kind == "cpu":
        return arraylib.asarray(arraylib.to_device(value, "cpu"), dtype)
    moved = arraylib.to_device(value, target.name)
    return moved if dtype is None else moved.astype(dtype, copy=False)


def to_device(tree, name, dtype=None):
    """Every array leaf of ``tree`` on device ``name`` (Tensors through :meth:`Tensor.to`).

    With ``dtype``, floating array leaves are also cast to it (integer leaves, such as labels
    and step counters, keep theirs; Tensors are moved, not cast). The cast happens on the host
    side of the copy, so narrowing float64 to float32 on the way to a GPU moves half the bytes.
    """
    target = Device(name).name
    cast = None if dtype is None else float_dtype(dtype)
    leaves, treedef = tree_flatten(tree)
    moved = []
    for leaf in leaves:
        if hasattr(leaf, "to") and isinstance(leaf, Tracer):
            moved.append(leaf.to(target))
        elif arraylib.is_array(leaf) or hasattr(leaf, "dtype"):
            moved.append(_move_array(leaf, target, cast))
        else:
            moved.append(leaf)
    return tree_unflatten(treedef, moved)


def _move_array(value, target: str, cast):
    """``value`` on ``target``, floating values cast to ``cast`` (``None``: kept) on the host."""
    if cast is None or arraylib.xp.dtype(value.dtype).kind != "f" or value.dtype == cast:
        return arraylib.to_device(value, target)
    if target == "cpu":
        return arraylib.to_device(value, target).astype(cast)
    if arraylib.device_of(value) == "cpu":
        return arraylib.to_device(arraylib.asarray(value).astype(cast), target)
    return arraylib.to_device(value, target).astype(cast)


def to_numpy(tree):
    """Every array leaf of ``tree`` (Tensors included) as a NumPy array on the host."""
    leaves, treedef = tree_flatten(tree)
    out = []
    for leaf in leaves:
        while isinstance(leaf, Tracer):
            leaf = leaf._unwrap()
        out.append(
            arraylib.to_numpy(leaf) if arraylib.is_array(leaf) or hasattr(leaf, "dtype") else leaf
        )
    return tree_unflatten(treedef, out)
