"""The one place that knows which array module does the arithmetic, and on which device.

Everything else in chainrule reaches array math through ``xp`` (and the few helpers here). The
primitives bind NumPy's functions directly, because on the CPU a namespace wrapper costs more
than a small array operation; NumPy's functions accept CuPy arrays too (CuPy implements
``__array_ufunc__`` and ``__array_function__``), so the same table computes on either device.

Device lookup lives here alone (:func:`device_of`, :func:`namespace_of`, :func:`to_device`): a
NumPy array is on ``"cpu"``, a CuPy array on ``"cuda"`` (``"cuda:N"`` for device N > 0). CuPy is
imported lazily, only when a CUDA array or device is asked for, so a machine without it never
pays for the import. :mod:`chainrule.backend.device` builds the user-facing API on these helpers.

Another array-API namespace (``array_api_strict``, for one) can take NumPy's place for a block of
code with :func:`chainrule.backend.namespace.use_namespace`: the primitives then compute with the
forwards their table entries build for that namespace (through the engine's one dispatch
mechanism, :func:`chainrule.engine.core.set_forward_layer`), and the few generic calls of the
engine (the names below: ``ns``, ``asarray``, ``plain_asarray``, ``as_dtype``,
``is_float_dtype``) are that namespace's until the block ends. Outside such a block those names
are NumPy's own functions, so the NumPy path pays nothing for the switch.
"""

from __future__ import annotations

import numpy as _numpy

#: The array module every primitive computes with on the CPU hot path.
xp = _numpy

#: The concrete array type of the backend.
ndarray = _numpy.ndarray

# ``ndarray`` subclasses that :func:`asarray` hands back as they are, instead of a base-class view:
# the recording arrays of :mod:`chainrule.backend.capture` must stay themselves through the engine.
_KEPT_TYPES: set = set()


def keep_array_type(array_type) -> None:
    """Let :func:`asarray` pass arrays of ``array_type`` (an ``ndarray`` subclass) through."""
    _KEPT_TYPES.add(array_type)


def asarray(value, dtype=None):
    """Turn ``value`` into a backend array without copying when it already is one.

    A CuPy array stays a CuPy array (on its device).
    """
    kind = type(value)
    if kind is not ndarray and (kind in _KEPT_TYPES or _is_cuda_type(kind)):
        return value if dtype is None or value.dtype == dtype else value.astype(dtype)
    return xp.asarray(value, dtype=dtype)


def is_array(value) -> bool:
    return isinstance(value, ndarray) or _is_cuda_type(type(value))


def is_float_dtype(dtype) -> bool:
    # The dtype's kind letter: "f" real floating, "c" complex (cheaper than issubdtype).
    return xp.dtype(dtype).kind in "fc"


#: The namespace of the engine's generic calls (zeros and ones for seeds and cotangents, the
#: sums and masks of a few derivative rules): NumPy, or the one ``use_namespace`` made active.
#: Read it as ``backend.ns`` at call time, never import the name.
ns = _numpy

#: ``xp.asarray`` without :func:`asarray`'s kept types: what ``chainrule.numpy.asarray`` calls.
plain_asarray = _numpy.asarray

#: A dtype in the active namespace's terms, from a name, a Python type or a NumPy dtype.
as_dtype = _numpy.dtype


def default_float_dtype():
    return xp.float64


# ------------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------------

_cupy = None  # the module once imported; False when the import failed


def cupy_module():
    """CuPy, imported on first use; ``None`` when it is not installed or cannot load."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: PLC0415  (optional, heavy: only when a GPU is asked for)

            _cupy = cupy
        except Exception:  # ImportError, or a CUDA library that fails to load
            _cupy = False
    return _cupy or None


# Array types that stand for CUDA arrays besides ``cupy.ndarray`` (the simulated device's).
_CUDA_ARRAY_TYPES: set = set()


def _is_cuda_type(kind) -> bool:
    if kind in _CUDA_ARRAY_TYPES:
        return True
    # Without importing CuPy: its array type is ``cupy.ndarray`` (module ``cupy._core.core``).
    module = getattr(kind, "__module__", None)
    return type(module) is str and module.startswith("cupy") and kind.__name__ == "ndarray"


def install_cuda_namespace(namespace, array_type):
    """Make ``namespace`` (a module offering CuPy's API) the CUDA backend and ``array_type`` its
    array type, in place of CuPy; returns the function that undoes it. This is how
    :func:`chainrule.backend.simulated_cuda.simulate_cuda` gives CPU-only machines a "cuda"
    device."""
    global _cupy
    saved = _cupy
    _cupy = namespace
    _CUDA_ARRAY_TYPES.add(array_type)

    def restore():
        global _cupy
        _cupy = saved
        _CUDA_ARRAY_TYPES.discard(array_type)

    return restore


def cuda_device_count() -> int:
    """Number of CUDA devices CuPy sees (0 without CuPy or without a GPU)."""
    cupy = cupy_module()
    if cupy is None:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device
        return 0


def parse_device(name) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` / ``"cuda:1"`` / ``"gpu"`` -> ("cuda", index)."""
    if not isinstance(name, str):
        raise TypeError(
            f"device: expected a name like 'cpu' or 'cuda:0', got {type(name).__name__}"
        )
    kind, _, index = name.strip().lower().partition(":")
    if kind == "gpu":
        kind = "cuda"
    bad_index = (index and not index.isdigit()) or (kind == "cpu" and index not in ("", "0"))
    if kind not in ("cpu", "cuda") or bad_index:
        raise ValueError(f"device: unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return kind, int(index or 0)


def device_name(kind: str, index: int) -> str:
    return "cpu" if kind == "cpu" else ("cuda" if index == 0 else f"cuda:{index}")


def device_of(value) -> str:
    """The device an array lives on: ``"cpu"`` for NumPy arrays and Python numbers."""
    kind = type(value)
    if kind is ndarray or not _is_cuda_type(kind):
        return "cpu"
    return device_name("cuda", int(value.device.id))


def namespace_of(value):
    """The array module of ``value``'s device: NumPy, or CuPy for a CUDA array."""
    if type(value) is ndarray:  # the usual case, without the CUDA type test
        return xp
    return cupy_module() if _is_cuda_type(type(value)) else xp


def namespace_beside(value):
    """The module to build index arrays for ``value`` with: the active namespace inside
    ``use_namespace``, else that of ``value``'s device (NumPy, or CuPy for a GPU array)."""
    return ns if ns is not xp else namespace_of(value)


def require_cuda(index: int = 0):
    """CuPy, after checking that CUDA device ``index`` exists; a clear error otherwise."""
    cupy = cupy_module()
    if cupy is None:
        raise RuntimeError(
            "device 'cuda' needs CuPy (pip install cupy-cuda12x) and an NVIDIA GPU; CuPy is not "
            "installed or failed to load"
        )
    count = cuda_device_count()
    if index >= count:
        raise RuntimeError(
            f"device 'cuda:{index}' is not available: CuPy sees {count} CUDA device(s)"
        )
    return cupy


def to_device(value, name: str):
    """``value`` as an array on device ``name`` (no copy when it is already there)."""
    kind, index = parse_device(name)
    if kind == "cpu":
        if _is_cuda_type(type(value)):
            return value.get()
        return asarray(value)
    cupy = require_cuda(index)
    with cupy.cuda.Device(index):
        return cupy.asarray(value)


def to_numpy(value):
    """A NumPy array of ``value``'s values (a device-to-host copy for a CUDA array)."""
    if _is_cuda_type(type(value)):
        return value.get()
    return _numpy.asarray(value)


# ------------------------------------------------------------------------------------------------
# Another array namespace
# ------------------------------------------------------------------------------------------------


def namespace_name(namespace) -> str:
    return getattr(namespace, "__name__", type(namespace).__name__)
