"""A small ctypes binding to cuBLAS, for matrix products that may be captured into a CUDA graph.

Why it exists: CuPy refuses every cuBLAS call while a stream is capturing
(``NotImplementedError: calling cuBLAS API during stream capture is currently unsupported``,
cupy#6290), so a training step whose matmuls go through CuPy cannot become a CUDA graph. cuBLAS
itself supports stream capture once its handle is bound to the capturing stream and to a
workspace the caller owns (``cublasSetStream_v2`` + ``cublasSetWorkspace_v2``; cuBLAS then
allocates nothing during the call). This module does exactly that and no more:

* **Finding the library** (:func:`find_library`): ``$CHAINRULE_CUBLAS_LIBRARY`` if set, else
  the libcublas CuPy already loaded into the process (one copy of cuBLAS, not two), else
  ``nvidia/cublas/lib/libcublas.so.12`` of the ``nvidia-cublas-cu12`` wheel (found through
  ``importlib.util.find_spec("nvidia.cublas")``), else ``ctypes.util.find_library("cublas")``;
  a :class:`CublasLibraryNotFound` error lists what was searched. Loading needs no GPU.
* **Handles** (:func:`current_handle`): one per (device, thread), created lazily. Before each
  call it is bound to the current CuPy stream and to a 32 MiB workspace of that stream (one per
  stream, allocated with ``cupy.cuda.Memory``, owned by the handle): ``cublasSetStream_v2``
  resets the workspace to cuBLAS's own pool, so the workspace is set again after every stream
  change. Streams sharing one workspace could race; streams with their own cannot.
* **matmul** (:func:`matmul`): ``a @ b`` for C- or F-ordered (or transposed-view) float32 /
  float64 CuPy arrays, 1-D operands and broadcast batches included, through
  ``cublas{S,D}gemm_v2`` / ``cublas{S,D}gemmStridedBatched``, or ``cublasGemmEx`` /
  ``cublasGemmStridedBatchedEx`` with ``CUBLAS_COMPUTE_32F_FAST_TF32`` or
  ``CUBLAS_COMPUTE_32F_FAST_16BF`` for the ``"tf32"`` / ``"bf16"`` precisions (float32 storage;
  float64 always at full precision).

The row-major to column-major mapping is a pure function, :func:`gemm_arguments` (shapes and
strides in, gemm arguments out, no CUDA), tested on the CPU against a NumPy emulation of
column-major gemm that reads the operands' raw memory with the leading dimensions it returns.
cuBLAS is column-major and NumPy/CuPy arrays are (mostly) row-major: for ``C = A @ B`` written
row-major, the same bytes read column-major are ``C^T = B^T A^T``, so gemm is called with the
operands swapped. **cuBLAS's A is the user's b and cuBLAS's B is the user's a**; the fields of
:class:`GemmArguments` are named from cuBLAS's side (``transa``, ``lda``, ``stride_a`` describe
the user's ``b``). A transposed operand (an F-ordered array, a ``.T`` view) is passed with the
transpose flag instead of copied; an operand that no leading dimension describes (non-unit
strides on both axes, negative strides, a broadcast inside a matrix, batch axes that no single
stride steps through) is copied to a C-ordered array first.

Enum values and prototypes are those of ``cublas_api.h`` (cuBLAS 12) and ``library_types.h``;
status codes become :class:`CublasError` naming the call and the status
(``cublasSgemm_v2 failed: CUBLAS_STATUS_INVALID_VALUE (7)``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import threading
import weakref
from dataclasses import dataclass

__all__ = [
    "CublasError",
    "CublasLibraryNotFound",
    "GemmArguments",
    "current_handle",
    "describe",
    "find_library",
    "gemm_arguments",
    "gemm_routine",
    "load_library",
    "matmul",
    "prepare_operands",
]

# ------------------------------------------------------------------------------------------------
# Enums (cublas_api.h of cuBLAS 12; cudaDataType_t from library_types.h)
# ------------------------------------------------------------------------------------------------

CUBLAS_OP_N = 0
CUBLAS_OP_T = 1

CUDA_R_32F = 0
CUDA_R_64F = 1

CUBLAS_COMPUTE_32F = 68
CUBLAS_COMPUTE_32F_FAST_16BF = 75
CUBLAS_COMPUTE_32F_FAST_TF32 = 77

CUBLAS_GEMM_DEFAULT = -1

#: libraryPropertyType_t, for cublasGetProperty.
_MAJOR_VERSION, _MINOR_VERSION, _PATCH_LEVEL = 0, 1, 2

STATUS_NAMES = {
    0: "CUBLAS_STATUS_SUCCESS",
    1: "CUBLAS_STATUS_NOT_INITIALIZED",
    3: "CUBLAS_STATUS_ALLOC_FAILED",
    7: "CUBLAS_STATUS_INVALID_VALUE",
    8: "CUBLAS_STATUS_ARCH_MISMATCH",
    11: "CUBLAS_STATUS_MAPPING_ERROR",
    13: "CUBLAS_STATUS_EXECUTION_FAILED",
    14: "CUBLAS_STATUS_INTERNAL_ERROR",
    15: "CUBLAS_STATUS_NOT_SUPPORTED",
    16: "CUBLAS_STATUS_LICENSE_ERROR",
}

#: Compute type of cublasGemmEx for each float32 precision mode (``None``: plain Sgemm).
PRECISION_COMPUTE_TYPES = {
    "highest": None,
    "tf32": CUBLAS_COMPUTE_32F_FAST_TF32,
    "bf16": CUBLAS_COMPUTE_32F_FAST_16BF,
}

#: The workspace each (handle, stream) owns: 32 MiB is cuBLAS's recommendation on Hopper.
WORKSPACE_BYTES = 32 * 1024 * 1024

#: At most this many per-stream workspaces per handle; older ones are dropped (cudaFree
#: synchronises, so a dropped workspace is never in use by a running kernel).
MAX_WORKSPACES = 8

LIBRARY_ENVIRONMENT_VARIABLE = "CHAINRULE_CUBLAS_LIBRARY"
WHEEL_LIBRARY = os.path.join("lib", "libcublas.so.12")

_INT32_MAX = 2**31 - 1


class CublasError(RuntimeError):
    """A cuBLAS call returned a status other than ``CUBLAS_STATUS_SUCCESS``."""


class CublasLibraryNotFound(OSError):
    """No ``libcublas`` could be found or loaded; the message lists what was searched."""


# ------------------------------------------------------------------------------------------------
# The row-major -> column-major mapping (pure: no CUDA, tested on the CPU)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemmArguments:
    """What one (strided-batched) gemm call needs to compute ``a @ b`` into a C-ordered result.

    ``kind`` is ``"gemm"`` (call cuBLAS), ``"zeros"`` (the contracted axis is empty: fill the
    result with zeros) or ``"empty"`` (the result has no elements). ``copy_a`` / ``copy_b``, when
    not ``None``, is the shape the user's operand must first be made C-contiguous at (its own
    shape, or its batch broadcast out); the caller copies and asks again (see
    :func:`prepare_operands`), and the other fields are then meaningless.

    The gemm fields are cuBLAS's: its A is the user's ``b``, its B the user's ``a`` (row-major
    ``C = a @ b`` is column-major ``C^T = b^T a^T``). ``m`` = columns of the result, ``n`` = rows
    of the result (times the batch when the batch was folded into the rows), ``k`` = the
    contracted length; strides between the matrices of a batch are in elements (0: the same
    matrix for every batch entry). ``gemm_shape`` is the C-ordered buffer the gemm writes (1-D
    operands promoted to matrices); ``result_shape`` is ``numpy.matmul``'s result shape, a
    reshape of it.
    """

    kind: str
    result_shape: tuple
    gemm_shape: tuple = ()
    transa: int = CUBLAS_OP_N
    transb: int = CUBLAS_OP_N
    m: int = 0
    n: int = 0
    k: int = 0
    lda: int = 1
    ldb: int = 1
    ldc: int = 1
    batch_count: int = 1
    stride_a: int = 0
    stride_b: int = 0
    stride_c: int = 0
    copy_a: tuple | None = None
    copy_b: tuple | None = None


def _matrix_layout(rows, cols, row_stride, col_stride):
    """How a (rows, cols) matrix with element strides sits in memory, as cuBLAS can read it.

    ``("row", ld)``: element (i, j) at ``i * ld + j`` (column-major, that is the cols x rows
    transpose with leading dimension ld >= cols); ``("col", ld)``: at ``i + j * ld`` (ld >= rows);
    ``None``: neither (a copy is needed). Strides of length-1 axes do not matter and are chosen
    to fit.
    """
    if rows <= 1 and cols <= 1:
        return ("row", max(cols, 1))
    if rows <= 1:  # one row: only the column stride matters
        if col_stride == 1:
            return ("row", max(cols, 1))
        return ("col", col_stride) if col_stride >= 1 else None
    if cols <= 1:  # one column: only the row stride matters
        return ("row", row_stride) if row_stride >= 1 else None
    if col_stride == 1 and row_stride >= cols:
        return ("row", row_stride)
    if row_stride == 1 and col_stride >= rows:
        return ("col", col_stride)
    return None


def _batch_stride(batch_shape, operand_batch_shape, operand_batch_strides):
    """One element stride that steps through the operand's matrices over the broadcast batch
    (0: every entry is the same matrix), or ``None`` when no single stride does."""
    offset = len(batch_shape) - len(operand_batch_shape)
    steps = []  # (length, stride) of every batch axis longer than 1
    for axis, length in enumerate(batch_shape):
        if length <= 1:
            continue
        own = axis - offset
        broadcast = own < 0 or operand_batch_shape[own] == 1
        steps.append((length, 0 if broadcast else operand_batch_strides[own]))
    if not steps:
        return 0
    strides = [stride for _, stride in steps]
    if all(stride == 0 for stride in strides):
        return 0
    if any(stride <= 0 for stride in strides):
        return None
    for (_, outer), (inner_length, inner) in zip(steps[:-1], steps[1:], strict=True):
        if outer != inner * inner_length:
            return None
    return strides[-1]


def _contiguous_strides(shape):
    """Element strides of a C-ordered array of ``shape``."""
    strides, step = [], 1
    for length in reversed(tuple(shape)):
        strides.append(step)
        step *= max(length, 1)
    return tuple(reversed(strides))


def _element_strides(strides, itemsize):
    if any(stride % itemsize for stride in strides):
        return None
    return tuple(stride // itemsize for stride in strides)


def _broadcast_batch(a_batch, b_batch, a_shape, b_shape):
    ndim = max(len(a_batch), len(b_batch))
    padded_a = (1,) * (ndim - len(a_batch)) + tuple(a_batch)
    padded_b = (1,) * (ndim - len(b_batch)) + tuple(b_batch)
    shape = []
    for left, right in zip(padded_a, padded_b, strict=True):
        if left != right and 1 not in (left, right):
            raise ValueError(
                f"matmul: batch axes of shapes {tuple(a_shape)} and {tuple(b_shape)} do not "
                "broadcast"
            )
        shape.append(right if left == 1 else left)
    return tuple(shape)


def gemm_arguments(a_shape, a_strides, b_shape, b_strides, itemsize) -> GemmArguments:
    """The cuBLAS gemm arguments of ``a @ b`` (``numpy.matmul`` semantics) into a new C-ordered
    result, from the operands' shapes and byte strides (see :class:`GemmArguments`).

    >>> import numpy as np
    >>> a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    >>> g = gemm_arguments(a.shape, a.strides, b.shape, b.strides, 4)
    >>> (g.kind, g.transa, g.transb, g.m, g.n, g.k, g.lda, g.ldb, g.ldc)
    ('gemm', 0, 0, 5, 4, 3, 5, 3, 5)
    >>> g = gemm_arguments(a.T.shape, a.T.strides, b.T.shape, b.T.strides, 4)  # (3,4) @ (5,3)
    Traceback (most recent call last):
    ValueError: matmul: shapes (3, 4) and (5, 3) do not match: 4 (last axis of a) != 5 (...)
    >>> c = np.ones((4, 5), np.float32).T  # a (5, 4) transposed view: the T flag, no copy
    >>> g = gemm_arguments(b.shape, b.strides, c.shape, c.strides, 4)  # (3,5) @ (5,4)
    >>> (g.transa, g.transb, g.m, g.n, g.k, g.lda, g.ldb, g.copy_a, g.copy_b)
    (1, 0, 4, 3, 5, 5, 5, None, None)
    """
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    if not a_shape or not b_shape:
        raise ValueError(
            f"matmul: operands must have at least one axis, got shapes {a_shape} and {b_shape}"
        )
    a_elements = _element_strides(a_strides, itemsize)
    b_elements = _element_strides(b_strides, itemsize)
    # 1-D operands become a row (a) or a column (b), whose extra axis is dropped from the result.
    a_vector, b_vector = len(a_shape) == 1, len(b_shape) == 1
    if a_vector:
        a_core, a_core_strides = (1, a_shape[0]), (0, None if a_elements is None else a_elements[0])
        a_batch, a_batch_strides = (), ()
    else:
        a_core = a_shape[-2:]
        a_core_strides = (None, None) if a_elements is None else a_elements[-2:]
        a_batch, a_batch_strides = a_shape[:-2], (() if a_elements is None else a_elements[:-2])
    if b_vector:
        b_core, b_core_strides = (b_shape[0], 1), (None if b_elements is None else b_elements[0], 0)
        b_batch, b_batch_strides = (), ()
    else:
        b_core = b_shape[-2:]
        b_core_strides = (None, None) if b_elements is None else b_elements[-2:]
        b_batch, b_batch_strides = b_shape[:-2], (() if b_elements is None else b_elements[:-2])
    rows, inner = a_core
    inner_b, cols = b_core
    if inner != inner_b:
        raise ValueError(
            f"matmul: shapes {a_shape} and {b_shape} do not match: {inner} (last axis of a) != "
            f"{inner_b} (second-to-last axis of b)"
        )
    batch_shape = _broadcast_batch(a_batch, b_batch, a_shape, b_shape)
    result_shape = batch_shape + (() if a_vector else (rows,)) + (() if b_vector else (cols,))
    gemm_shape = batch_shape + (rows, cols)
    batch = 1
    for length in batch_shape:
        batch *= length
    if batch * rows * cols == 0:
        return GemmArguments("empty", result_shape, gemm_shape)
    if inner == 0:
        return GemmArguments("zeros", result_shape, gemm_shape)

    def operand(core, core_strides, own_batch, own_batch_strides, own_shape, vector):
        """``((order, ld, batch stride), None)`` for an operand cuBLAS can read as it is, else
        ``(None, shape to copy it to)``: its own shape, or its batch broadcast out when no single
        stride would step through the copy's matrices either."""
        full_shape = batch_shape + tuple(core)
        layout = None if None in core_strides else _matrix_layout(*core, *core_strides)
        if vector:
            return ((layout[0], layout[1], 0), None) if layout else (None, tuple(own_shape))
        stride = (
            None if layout is None else _batch_stride(batch_shape, own_batch, own_batch_strides)
        )
        if stride is not None:
            return (layout[0], layout[1], stride), None
        copied = _batch_stride(batch_shape, own_batch, _contiguous_strides(own_shape)[:-2])
        return None, (tuple(own_shape) if copied is not None else full_shape)

    a_info, copy_a = operand(a_core, a_core_strides, a_batch, a_batch_strides, a_shape, a_vector)
    b_info, copy_b = operand(b_core, b_core_strides, b_batch, b_batch_strides, b_shape, b_vector)
    if copy_a is not None or copy_b is not None:
        return GemmArguments("copy", result_shape, gemm_shape, copy_a=copy_a, copy_b=copy_b)
    (a_order, a_ld, a_stride), (b_order, b_ld, b_stride) = a_info, b_info
    # Fold a broadcast b into a's rows: (batch, rows, k) @ (k, cols) is one (batch*rows, k) @ (k,
    # cols) product when a's matrices follow one another row after row.
    if batch > 1 and b_stride == 0 and a_order == "row" and a_stride == rows * a_ld:
        rows_total, batch_count, a_stride = batch * rows, 1, 0
    else:
        rows_total, batch_count = rows, batch
    # cuBLAS's A is the user's b (k x cols): row-major it reads column-major as the cols x k
    # matrix op(A) must be (no transpose); column-major it is k x cols and needs the transpose.
    transa = CUBLAS_OP_N if b_order == "row" else CUBLAS_OP_T
    # cuBLAS's B is the user's a (rows x k), the same way round: op(B) must be k x rows.
    transb = CUBLAS_OP_N if a_order == "row" else CUBLAS_OP_T
    lda, ldb = b_ld, a_ld
    arguments = GemmArguments(
        "gemm",
        result_shape,
        gemm_shape,
        transa=transa,
        transb=transb,
        m=cols,
        n=rows_total,
        k=inner,
        lda=lda,
        ldb=ldb,
        ldc=cols,
        batch_count=batch_count,
        stride_a=b_stride,
        stride_b=a_stride,
        stride_c=rows * cols if batch_count > 1 else 0,
    )
    too_large = [
        name
        for name in ("m", "n", "k", "lda", "ldb", "ldc", "batch_count")
        if getattr(arguments, name) > _INT32_MAX
    ]
    if too_large:
        raise NotImplementedError(
            f"matmul: shapes {a_shape} @ {b_shape} need {', '.join(too_large)} beyond 32-bit int, "
            "which the cuBLAS calls bound here (the 32-bit API, not the _64 one) cannot take"
        )
    return arguments


def prepare_operands(a, b, xp):
    """``(a, b, arguments)`` ready for one gemm: operands that no gemm arguments describe are
    copied (C-ordered, batch broadcast out where needed) with the array module ``xp`` (NumPy in
    the CPU tests, CuPy on the GPU), then the arguments are worked out again."""
    arguments = gemm_arguments(a.shape, a.strides, b.shape, b.strides, a.itemsize)
    if arguments.kind != "copy":
        return a, b, arguments
    if arguments.copy_a is not None:
        a = xp.ascontiguousarray(xp.broadcast_to(a, arguments.copy_a))
    if arguments.copy_b is not None:
        b = xp.ascontiguousarray(xp.broadcast_to(b, arguments.copy_b))
    arguments = gemm_arguments(a.shape, a.strides, b.shape, b.strides, a.itemsize)
    if arguments.kind == "copy":  # pragma: no cover  (C-ordered operands always fit)
        raise RuntimeError(f"matmul: no gemm layout for C-ordered shapes {a.shape} and {b.shape}")
    return a, b, arguments


def gemm_routine(dtype_name: str, precision: str, batched: bool) -> str:
    """The cuBLAS function :func:`matmul` calls for this dtype, precision mode and batching."""
    if precision not in PRECISION_COMPUTE_TYPES:
        raise ValueError(
            f"matmul: precision must be one of {sorted(PRECISION_COMPUTE_TYPES)}, got {precision!r}"
        )
    if dtype_name == "float64":  # no reduced-precision mode for float64: always full precision
        return "cublasDgemmStridedBatched" if batched else "cublasDgemm_v2"
    if dtype_name != "float32":
        raise TypeError(
            f"matmul: the cuBLAS binding takes float32 or float64 arrays, got {dtype_name}"
        )
    if PRECISION_COMPUTE_TYPES[precision] is None:
        return "cublasSgemmStridedBatched" if batched else "cublasSgemm_v2"
    return "cublasGemmStridedBatchedEx" if batched else "cublasGemmEx"


# ------------------------------------------------------------------------------------------------
# Finding and loading libcublas
# ------------------------------------------------------------------------------------------------


def _wheel_directories():
    """Directories of the ``nvidia.cublas`` package (the nvidia-cublas-cu12 wheel), if installed."""
    try:
        spec = importlib.util.find_spec("nvidia.cublas")
    except (ImportError, ValueError):  # no ``nvidia`` namespace package at all
        return []
    if spec is None:
        return []
    return list(spec.submodule_search_locations or [])


def _mapped_libraries(maps_path="/proc/self/maps"):
    """Paths of the libcublas files already mapped into this process (by CuPy, usually)."""
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:  # not Linux
        return []
    paths = []
    for line in lines:  # address perms offset dev inode [path]
        fields = line.split(None, 5)
        path = fields[5].strip() if len(fields) == 6 else ""
        if os.path.basename(path).startswith("libcublas.so") and path not in paths:
            paths.append(path)
    return paths


def library_candidates():
    """``(where, path or name)`` in search order; a name (no slash) is left to the dynamic loader.

    A libcublas already in the process comes before the wheel: a second copy from another
    directory would resolve its ``libcublasLt.so.12`` to the copy already loaded (the loader
    matches sonames), pairing libraries of two cuBLAS versions.
    """
    candidates = []
    configured = os.environ.get(LIBRARY_ENVIRONMENT_VARIABLE)
    if configured:
        candidates.append((f"${LIBRARY_ENVIRONMENT_VARIABLE}", configured))
    for path in _mapped_libraries():
        candidates.append(("the libcublas already loaded in this process", path))
    for directory in _wheel_directories():
        candidates.append(("the nvidia-cublas-cu12 wheel", os.path.join(directory, WHEEL_LIBRARY)))
    found = ctypes.util.find_library("cublas")
    if found:
        candidates.append(('ctypes.util.find_library("cublas")', found))
    return candidates


def find_library() -> str:
    """The path (or loader name) of the first libcublas candidate that exists. A
    ``$CHAINRULE_CUBLAS_LIBRARY`` naming no file is an error, not a reason to look elsewhere."""
    configured = os.environ.get(LIBRARY_ENVIRONMENT_VARIABLE)
    if configured and os.sep in configured and not os.path.isfile(configured):
        raise CublasLibraryNotFound(
            f"chainrule.backend.cuda.cublas: ${LIBRARY_ENVIRONMENT_VARIABLE}={configured}: no "
            "such file "
            "(unset it to search the nvidia-cublas-cu12 wheel and the system's libraries)"
        )
    candidates = library_candidates()
    for _, path in candidates:
        if os.sep not in path or os.path.isfile(path):
            return path
    searched = [f"${LIBRARY_ENVIRONMENT_VARIABLE} (a path to libcublas.so.12): not set"]
    wheel = [path for where, path in candidates if where == "the nvidia-cublas-cu12 wheel"]
    searched.append(
        "the nvidia-cublas-cu12 wheel (importlib.util.find_spec('nvidia.cublas')): "
        + (f"no file at {', '.join(wheel)}" if wheel else "not installed")
    )
    searched.append('ctypes.util.find_library("cublas"): nothing found')
    raise CublasLibraryNotFound(
        "chainrule.backend.cuda.cublas: libcublas not found; searched "
        + "; ".join(searched)
        + ". Install it with `pip install nvidia-cublas-cu12` (or point "
        f"${LIBRARY_ENVIRONMENT_VARIABLE} at libcublas.so.12)"
    )


_c_int, _c_void_p, _c_size_t, _c_longlong = (
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_longlong,
)
_GEMM = (_c_void_p, _c_int, _c_int, _c_int, _c_int, _c_int)  # handle, transa, transb, m, n, k
# alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batchCount
_STRIDED_BATCHED = (
    *(_c_void_p, _c_void_p, _c_int, _c_longlong),
    *(_c_void_p, _c_int, _c_longlong),
    *(_c_void_p, _c_void_p, _c_int, _c_longlong, _c_int),
)

#: Argument types of every function bound here, as declared in cublas_api.h. Enums are C ints,
#: ``cudaStream_t`` and device pointers are ``void*``, host scalars (alpha, beta) pointers.
PROTOTYPES = {
    "cublasCreate_v2": (ctypes.POINTER(_c_void_p),),
    "cublasDestroy_v2": (_c_void_p,),
    "cublasSetStream_v2": (_c_void_p, _c_void_p),
    "cublasSetWorkspace_v2": (_c_void_p, _c_void_p, _c_size_t),
    "cublasGetProperty": (_c_int, ctypes.POINTER(_c_int)),
    # alpha, A, lda, B, ldb, beta, C, ldc
    "cublasSgemm_v2": _GEMM
    + (_c_void_p, _c_void_p, _c_int, _c_void_p, _c_int, _c_void_p, _c_void_p, _c_int),
    "cublasDgemm_v2": _GEMM
    + (_c_void_p, _c_void_p, _c_int, _c_void_p, _c_int, _c_void_p, _c_void_p, _c_int),
    # alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batchCount
    "cublasSgemmStridedBatched": _GEMM + _STRIDED_BATCHED,
    "cublasDgemmStridedBatched": _GEMM + _STRIDED_BATCHED,
    # alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo
    "cublasGemmEx": _GEMM
    + (
        _c_void_p,
        _c_void_p,
        _c_int,
        _c_int,
        _c_void_p,
        _c_int,
        _c_int,
        _c_void_p,
        _c_void_p,
        _c_int,
        _c_int,
        _c_int,
        _c_int,
    ),
    # alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC,
    # batchCount, computeType, algo
    "cublasGemmStridedBatchedEx": _GEMM
    + (
        _c_void_p,
        _c_void_p,
        _c_int,
        _c_int,
        _c_longlong,
        _c_void_p,
        _c_int,
        _c_int,
        _c_longlong,
        _c_void_p,
        _c_void_p,
        _c_int,
        _c_int,
        _c_longlong,
        _c_int,
        _c_int,
        _c_int,
    ),
}

_loaded = {}  # "library" -> ctypes.CDLL, "path" -> where it came from
_load_lock = threading.Lock()


def _declare(library, path):
    for name, argtypes in PROTOTYPES.items():
        try:
            function = getattr(library, name)
        except AttributeError:
            raise CublasLibraryNotFound(
                f"chainrule.backend.cuda.cublas: {path} has no {name}; it needs cuBLAS 11 or later "
                "(the nvidia-cublas-cu12 wheel has it)"
            ) from None
        function.argtypes = argtypes
        function.restype = _c_int
    try:  # cuBLAS >= 11.4: the status' own name
        library.cublasGetStatusName.argtypes = (_c_int,)
        library.cublasGetStatusName.restype = ctypes.c_char_p
    except AttributeError:
        pass


def load_library():
    """The loaded libcublas (a ``ctypes.CDLL`` with its prototypes declared), loaded once."""
    library = _loaded.get("library")
    if library is not None:
        return library
    with _load_lock:
        if "library" not in _loaded:
            path = find_library()
            try:
                library = ctypes.CDLL(path)
            except OSError as error:
                raise CublasLibraryNotFound(
                    f"chainrule.backend.cuda.cublas: found {path} but could not load it: {error}"
                ) from error
            _declare(library, path)
            _loaded["path"] = path
            _loaded["library"] = library
    return _loaded["library"]


def status_name(status: int) -> str:
    library = _loaded.get("library")
    name = STATUS_NAMES.get(status)
    if name is None and library is not None and hasattr(library, "cublasGetStatusName"):
        raw = library.cublasGetStatusName(status)
        name = raw.decode() if raw else None
    return name or "unknown cuBLAS status"


def check_status(status: int, call: str) -> None:
    """Raise :class:`CublasError` naming ``call`` and the status unless it is success."""
    if status != 0:
        hint = ""
        if status == 1:
            hint = " (no usable CUDA driver or device, or cuBLAS was not initialised)"
        raise CublasError(f"{call} failed: {status_name(status)} ({status}){hint}")


def library_version(library=None) -> str:
    """``major.minor.patch`` of the loaded libcublas (needs no GPU)."""
    library = library or load_library()
    parts = []
    for prop in (_MAJOR_VERSION, _MINOR_VERSION, _PATCH_LEVEL):
        value = ctypes.c_int()
        check_status(library.cublasGetProperty(prop, ctypes.byref(value)), "cublasGetProperty")
        parts.append(str(value.value))
    return ".".join(parts)


def describe() -> dict:
    """Where libcublas came from and its version (for benchmark reports); loads it if needed."""
    load_library()
    return {"path": _loaded["path"], "version": library_version()}


# ------------------------------------------------------------------------------------------------
# Handles: one per (device, thread), bound to the current stream and a workspace of that stream
# ------------------------------------------------------------------------------------------------


def create_handle(library) -> int:
    """A new cuBLAS handle (on the current device) as an integer pointer."""
    handle = _c_void_p()
    check_status(library.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate_v2")
    if not handle.value:
        raise CublasError("cublasCreate_v2 reported success but returned no handle")
    return int(handle.value)


def _destroy_handle(library, pointer):
    library.cublasDestroy_v2(pointer)  # at thread or handle end; a failure there is moot


class Handle:
    """A cuBLAS handle of one device, used by one thread, with a workspace per stream it ran on.

    :meth:`bind` makes the handle compute on a stream (``cublasSetStream_v2``) with that stream's
    workspace (``cublasSetWorkspace_v2``, needed again after every stream change since setting
    the stream resets it): that is what makes calls capturable into a CUDA graph, and what keeps
    two streams from sharing scratch memory.
    """

    def __init__(self, device_id: int, library=None, cupy=None):
        self.library = library or load_library()
        self.cupy = cupy or _require_cupy()
        self.device_id = device_id
        self.pointer = create_handle(self.library)
        self.workspaces = {}  # stream pointer -> cupy.cuda.Memory (raw cudaMalloc, owned here)
        self.bound_stream = None
        # Not at interpreter exit: the CUDA context may already be gone by then.
        weakref.finalize(self, _destroy_handle, self.library, self.pointer).atexit = False

    def workspace(self, stream_pointer: int):
        """The workspace of ``stream_pointer`` (allocated on first use, outside any memory pool)."""
        memory = self.workspaces.get(stream_pointer)
        if memory is None:
            if len(self.workspaces) >= MAX_WORKSPACES:
                oldest = next(key for key in self.workspaces if key != self.bound_stream)
                del self.workspaces[oldest]
            memory = self.cupy.cuda.Memory(WORKSPACE_BYTES)
            self.workspaces[stream_pointer] = memory
        return memory

    def bind(self, stream_pointer: int) -> int:
        """Compute on ``stream_pointer`` from now on (with its workspace); the handle pointer."""
        if stream_pointer != self.bound_stream:
            workspace = self.workspace(stream_pointer)
            check_status(
                self.library.cublasSetStream_v2(self.pointer, stream_pointer), "cublasSetStream_v2"
            )
            check_status(
                self.library.cublasSetWorkspace_v2(self.pointer, workspace.ptr, WORKSPACE_BYTES),
                "cublasSetWorkspace_v2",
            )
            self.bound_stream = stream_pointer
        return self.pointer


class _ThreadHandles(threading.local):
    def __init__(self):
        self.by_device = {}


_handles = _ThreadHandles()


def _require_cupy():
    from ...engine import arraylib  # noqa: PLC0415  (CuPy is imported lazily, by the backend)

    cupy = arraylib.cupy_module()
    if cupy is None:
        raise RuntimeError(
            "chainrule.backend.cuda.cublas needs CuPy (pip install cupy-cuda12x) and an NVIDIA GPU"
        )
    return cupy


def _load_cupys_library_first(cupy):
    """Have CuPy load its own libcublas before this module looks for one, so that both use the
    same copy (see :func:`library_candidates`); CuPy without cuBLAS is no error here."""
    if "library" in _loaded:
        return
    try:
        cupy.cuda.cublas  # noqa: B018  (CuPy loads cupy_backends.cuda.libs.cublas on first access)
    except Exception:  # noqa: BLE001  (then the wheel or the system's library is used)
        pass


def current_handle() -> Handle:
    """This thread's handle on the current device, bound to the current CuPy stream."""
    cupy = _require_cupy()
    device_id = cupy.cuda.runtime.getDevice()
    handle = _handles.by_device.get(device_id)
    if handle is None:
        _load_cupys_library_first(cupy)
        handle = Handle(device_id, cupy=cupy)
        _handles.by_device[device_id] = handle
    handle.bind(cupy.cuda.get_current_stream().ptr)
    return handle


# ------------------------------------------------------------------------------------------------
# matmul
# ------------------------------------------------------------------------------------------------

# Host scalars alpha = 1, beta = 0 (cuBLAS's default host pointer mode reads them at call time,
# which during a capture means they are baked into the graph).
_ONE_F, _ZERO_F = ctypes.c_float(1.0), ctypes.c_float(0.0)
_ONE_D, _ZERO_D = ctypes.c_double(1.0), ctypes.c_double(0.0)
_SCALARS = {
    "float32": (ctypes.addressof(_ONE_F), ctypes.addressof(_ZERO_F)),
    "float64": (ctypes.addressof(_ONE_D), ctypes.addressof(_ZERO_D)),
}


def _extent(array):
    """[first byte, last byte + 1) that ``array`` can touch."""
    start = end = array.data.ptr
    for length, stride in zip(array.shape, array.strides, strict=True):
        if length > 1:
            if stride < 0:
                start += stride * (length - 1)
            else:
                end += stride * (length - 1)
    return start, end + array.itemsize


def _check_operands(cupy, a, b, out):
    if not isinstance(a, cupy.ndarray) or not isinstance(b, cupy.ndarray):
        raise TypeError(
            "chainrule.backend.cuda.cublas.matmul: expected CuPy arrays, got "
            f"{type(a).__name__} and {type(b).__name__}"
        )
    if a.dtype != b.dtype or a.dtype.name not in _SCALARS:
        raise TypeError(
            "chainrule.backend.cuda.cublas.matmul: operands must both be float32 or both "
            "float64, got "
            f"{a.dtype} and {b.dtype} (shapes {a.shape}, {b.shape})"
        )
    device_id = cupy.cuda.runtime.getDevice()
    if a.device.id != device_id or b.device.id != device_id:
        raise ValueError(
            f"chainrule.backend.cuda.cublas.matmul: operands on devices {a.device.id} and "
            f"{b.device.id} but the "
            f"current device is {device_id}; call it under `with cupy.cuda.Device(...)`"
        )
    if out is not None:
        if not isinstance(out, cupy.ndarray) or out.dtype != a.dtype or not out.flags.c_contiguous:
            raise ValueError(
                "chainrule.backend.cuda.cublas.matmul: out must be a C-contiguous CuPy array of "
                "the operands' dtype"
            )
        out_start, out_end = _extent(out)
        for operand in (a, b):
            start, end = _extent(operand)
            if out_start < end and start < out_end:
                raise ValueError(
                    "chainrule.backend.cuda.cublas.matmul: out overlaps an operand; cuBLAS needs "
                    "them apart"
                )


def _aligned(cupy, array):
    return array if array.data.ptr % array.itemsize == 0 else cupy.ascontiguousarray(array)


def matmul(a, b, out=None, *, precision: str = "highest"):
    """``a @ b`` (``numpy.matmul`` semantics) of float32/float64 CuPy arrays through cuBLAS,
    on the current stream, capturable into a CUDA graph.

    ``precision`` ("highest", "tf32", "bf16") picks the cuBLAS compute type for float32 (see the
    module docstring); float64 ignores it and always runs at full precision. ``out``, when
    given, must be C-contiguous with the result's shape and dtype and must not overlap ``a`` or
    ``b``.
    """
    cupy = _require_cupy()
    _check_operands(cupy, a, b, out)
    dtype_name = a.dtype.name
    routine = gemm_routine(dtype_name, precision, batched=False)  # validates the precision
    a, b = _aligned(cupy, a), _aligned(cupy, b)
    a, b, arguments = prepare_operands(a, b, cupy)
    if out is None:
        out = cupy.empty(arguments.result_shape, dtype=a.dtype)
    elif tuple(out.shape) != arguments.result_shape:
        raise ValueError(
            f"chainrule.backend.cuda.cublas.matmul: out has shape {tuple(out.shape)}, the product "
            f"of {a.shape} "
            f"and {b.shape} has {arguments.result_shape}"
        )
    if arguments.kind == "zeros":
        out.fill(0)
    elif arguments.kind == "gemm":
        handle = current_handle().pointer
        routine = gemm_routine(dtype_name, precision, batched=arguments.batch_count > 1)
        _launch(
            routine, handle, arguments, b.data.ptr, a.data.ptr, out.data.ptr, dtype_name, precision
        )
    return out


def _launch(routine, handle, g, a_pointer, b_pointer, c_pointer, dtype_name, precision):
    """One cuBLAS call; ``a_pointer``/``b_pointer`` are cuBLAS's A and B (the user's b and a)."""
    library = load_library()
    alpha, beta = _SCALARS[dtype_name]
    function = getattr(library, routine)
    head = (handle, g.transa, g.transb, g.m, g.n, g.k)
    if routine in ("cublasSgemm_v2", "cublasDgemm_v2"):
        status = function(*head, alpha, a_pointer, g.lda, b_pointer, g.ldb, beta, c_pointer, g.ldc)
    elif routine in ("cublasSgemmStridedBatched", "cublasDgemmStridedBatched"):
        status = function(
            *head,
            alpha,
            a_pointer,
            g.lda,
            g.stride_a,
            b_pointer,
            g.ldb,
            g.stride_b,
            beta,
            c_pointer,
            g.ldc,
            g.stride_c,
            g.batch_count,
        )
    else:
        compute = PRECISION_COMPUTE_TYPES[precision]
        if routine == "cublasGemmEx":
            status = function(
                *head,
                alpha,
                a_pointer,
                CUDA_R_32F,
                g.lda,
                b_pointer,
                CUDA_R_32F,
                g.ldb,
                beta,
                c_pointer,
                CUDA_R_32F,
                g.ldc,
                compute,
                CUBLAS_GEMM_DEFAULT,
            )
        else:
            status = function(
                *head,
                alpha,
                a_pointer,
                CUDA_R_32F,
                g.lda,
                g.stride_a,
                b_pointer,
                CUDA_R_32F,
                g.ldb,
                g.stride_b,
                beta,
                c_pointer,
                CUDA_R_32F,
                g.ldc,
                g.stride_c,
                g.batch_count,
                compute,
                CUBLAS_GEMM_DEFAULT,
            )
    check_status(status, routine)
