"""Matrix-product precision: full float32 (the default), or TF32 / bfloat16 tensor-core inputs.

On NVIDIA GPUs since Ampere a float32 matrix product can run on tensor cores with its inputs
rounded to TF32 (10 explicit mantissa bits) or bfloat16 (7 bits) and the products summed in
float32: several times faster, at a known loss of precision. ``matmul_precision`` opts in:

>>> import numpy as np, chainrule as cr
>>> from chainrule.backend.precision import matmul_precision, get_matmul_precision
>>> a = np.full((2, 2), 1 + 2.0**-12, np.float32)  # not representable in TF32
>>> with matmul_precision("tf32"):
...     rounded = cr.numpy.matmul(a, np.eye(2, dtype=np.float32))
>>> float(rounded[0, 0]), get_matmul_precision()
(1.0, 'highest')

It is a context manager, and a setter when called alone (``matmul_precision("tf32")`` switches
until ``matmul_precision("highest")``). Modes:

* ``"highest"`` (default): float32 products at float32 precision. The ``matmul`` primitive's
  forward is ``numpy.matmul`` itself, exactly as without this module: the default costs nothing.
* ``"tf32"``: float32 inputs rounded to TF32. On CuPy arrays, ``cublasGemmEx`` with
  ``CUBLAS_COMPUTE_32F_FAST_TF32`` through :mod:`chainrule.backend.cuda.cublas`.
* ``"bf16"``: float32 inputs rounded to bfloat16, ``CUBLAS_COMPUTE_32F_FAST_16BF`` on CuPy arrays
  (which lets cuBLAS down-convert to bfloat16 or TF32: the GPU's error may be smaller than the
  emulation's, not larger than its bound).

How: a non-default mode is the ``"precision"`` layer of the engine's one dispatch mechanism
(:func:`chainrule.engine.core.set_forward_layer`; ``use_namespace`` is the ``"namespace"`` one):
it supplies the forward of the ``matmul`` primitive, wrapping the one the namespace layer gives,
and the Tensor operators' fast paths (which hold ``numpy.matmul`` itself) stand aside while a
layer is on. The table is never changed; leaving the mode turns the layer off, exceptions
included, and modes nest.

Every matmul of the engine goes through that primitive, the VJP and JVP rules' products
(``g @ w.T``, ``x.T @ g``, ``t @ w``) included, so gradients are computed in the same mode.

Only products of two float32 operands change: float64 (and mixed or integer) products stay at
full precision in every mode. On the CPU the mode is *emulated exactly*: the inputs are rounded
to TF32 or bfloat16 (round to nearest, ties to even, on the float32 bit pattern; infinities and
NaNs pass through) and multiplied by a float32 ``numpy.matmul`` (float32 accumulation): the
numerics of the GPU mode, not its speed, which on the CPU is a little lower than plain float32.
(GPU tensor cores may round their inputs differently in the last place, by truncation for one;
the error bounds tested on the GPU allow for that.) Arrays of other namespaces (inside
``use_namespace``) are left to that namespace's own matmul. The switch is process-wide and not
thread-safe, like :func:`chainrule.no_grad`.
"""

from __future__ import annotations

import numpy as _np

from ..engine import arraylib
from ..engine.core import set_forward_layer

__all__ = [
    "MODES",
    "get_matmul_precision",
    "matmul_precision",
    "round_to_bfloat16",
    "round_to_tf32",
]

#: The precision modes, and how many low mantissa bits of a float32 each one drops.
MODES = ("highest", "tf32", "bf16")
_DROPPED_BITS = {"tf32": 13, "bf16": 16}  # float32 keeps 23 explicit bits; TF32 10, bfloat16 7


def _round_mantissa(x, dropped):
    """``x`` (float32) rounded to nearest, ties to even, keeping ``23 - dropped`` mantissa bits.

    Works on the bit pattern: adding half an ulp of the shorter format minus one, plus the bit
    that decides ties, then clearing the dropped bits, rounds the magnitude correctly (a carry
    into the exponent is the correct rounding up, to infinity past the largest finite value).
    NaNs are kept as they are (the carry could otherwise turn them into infinities). Built from
    ufuncs and views only (no ``np.asarray``), so a captured CPU step records it.
    """
    if x.dtype != _np.float32:
        x = x.astype(_np.float32)
    bits = x.view(_np.uint32)
    tie_bit = (bits >> _np.uint32(dropped)) & _np.uint32(1)
    rounded = (bits + (_np.uint32((1 << (dropped - 1)) - 1) + tie_bit)) & _np.uint32(
        ~((1 << dropped) - 1) & 0xFFFFFFFF
    )
    return _np.where(_np.isnan(x), x, rounded.view(_np.float32))


def round_to_tf32(x):
    """float32 ``x`` rounded to TF32 (10 explicit mantissa bits), still stored as float32.

    >>> import numpy as np
    >>> round_to_tf32(np.float32([1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-20]))
    array([1.       , 1.0019531, 1.0009766], dtype=float32)
    """
    return _round_mantissa(x, _DROPPED_BITS["tf32"])


def round_to_bfloat16(x):
    """float32 ``x`` rounded to bfloat16 (7 explicit mantissa bits), still stored as float32."""
    return _round_mantissa(x, _DROPPED_BITS["bf16"])


_ROUNDING = {"tf32": round_to_tf32, "bf16": round_to_bfloat16}


def _is_cupy_array(value) -> bool:
    kind = type(value)
    return kind.__name__ == "ndarray" and getattr(kind, "__module__", "").startswith("cupy")


def _precision_forward(mode, base_forward):
    """The matmul forward of ``mode``: cuBLAS on CuPy float32, the emulation on other float32
    arrays of the backend (NumPy, and the simulated CUDA device's), and ``base_forward`` (the one
    in place before) for everything else."""
    rounding = _ROUNDING[mode]
    float32 = _np.dtype(_np.float32)

    def forward(x, y):
        if x.dtype != float32 or y.dtype != float32:
            return base_forward(x, y)
        if _is_cupy_array(x) and _is_cupy_array(y):
            from .cuda import cublas  # noqa: PLC0415  (CUDA only; loads libcublas on first use)

            return cublas.matmul(x, y, precision=mode)
        if arraylib.is_array(x) and arraylib.is_array(y):
            return _np.matmul(rounding(x), rounding(y))
        return base_forward(x, y)

    forward.__name__ = f"matmul_{mode}"
    forward.__qualname__ = forward.__name__
    return forward


class _PrecisionState:
    __slots__ = ("mode",)

    def __init__(self):
        self.mode = "highest"


_state = _PrecisionState()


def _precision_supplier(mode):
    """The ``"precision"`` layer's supplier for ``mode``: matmul's forward in that mode, built
    on the forward the layers below supply; every other primitive as it is."""

    def supplier(prim, forward):
        return _precision_forward(mode, forward) if prim.name == "matmul" else forward

    return supplier


def get_matmul_precision() -> str:
    """The precision mode in force: ``"highest"``, ``"tf32"`` or ``"bf16"``."""
    return _state.mode


def _switch(mode):
    """Put ``mode`` in force; returns what to hand :func:`_restore` to undo it."""
    supplier = None if mode == "highest" else _precision_supplier(mode)
    saved = (_state.mode, set_forward_layer("precision", supplier))
    _state.mode = mode
    return saved


def _restore(saved):
    _state.mode, supplier = saved
    set_forward_layer("precision", supplier)


class matmul_precision:
    """Set the matmul precision mode (``"highest"``, ``"tf32"``, ``"bf16"``; see the module
    docstring): now, and until the end of the ``with`` block when used as a context manager."""

    __slots__ = ("mode", "_saved")

    def __init__(self, mode: str):
        if mode not in MODES:
            raise ValueError(f"matmul_precision: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._saved = _switch(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        _restore(self._saved)
        return False

    def __repr__(self):
        return f"matmul_precision({self.mode!r})"
