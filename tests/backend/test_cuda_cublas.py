"""The cuBLAS binding's CPU-checkable parts: the row-major -> column-major gemm arguments, the
library search and its errors, status codes, handle binding and the argument order of each call.

The gemm arguments are checked against a NumPy emulation of column-major (strided-batched)
gemm that reads each operand's *raw memory* with the leading dimensions and batch strides
returned, with cuBLAS's constraints on them (``lda >= max(1, rows)`` ...) asserted and every
read kept inside the operand's own bytes: every layout (C, F, ``.T`` views, padded and strided
slices, negative strides, 1-D operands, broadcast batches) must give ``numpy.matmul``'s result
exactly (small integer values, so that sums are exact in any order).
"""

import ctypes
import itertools
import os

import numpy as np
import pytest

from chainrule.backend.cuda import cublas
from chainrule.backend.cuda.cublas import (
    CUBLAS_OP_N,
    CUBLAS_OP_T,
    gemm_arguments,
    gemm_routine,
    prepare_operands,
)

READ_MAPPED_LIBRARIES = cublas._mapped_libraries  # the fixture below replaces the module's

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # NumPy < 2
    byte_bounds = np.byte_bounds


# ------------------------------------------------------------------------------------------------
# A column-major gemm on raw memory
# ------------------------------------------------------------------------------------------------


def _raw_memory(array):
    """The bytes ``array`` may touch as a flat array of its dtype, and the index of its first
    element in it (what a device pointer to the array gives cuBLAS)."""
    low, high = byte_bounds(array)
    buffer = (ctypes.c_char * (high - low)).from_address(low)
    flat = np.frombuffer(buffer, dtype=array.dtype)
    first = (array.__array_interface__["data"][0] - low) // array.itemsize
    return flat, first


def _read(memory, first, trans, rows, cols, ld, offset):
    """op(X), ``rows`` x ``cols``, of a column-major matrix stored at ``first + offset`` with
    leading dimension ``ld`` (stored as rows x cols for N, cols x rows for T)."""
    stored_rows, stored_cols = (rows, cols) if trans == CUBLAS_OP_N else (cols, rows)
    assert ld >= max(1, stored_rows), "cuBLAS would reject this leading dimension"
    index = first + offset + np.arange(stored_rows)[:, None] + np.arange(stored_cols)[None, :] * ld
    assert index.min() >= 0 and index.max() < memory.size, "read outside the operand's memory"
    matrix = memory[index].astype(np.float64)
    return matrix if trans == CUBLAS_OP_N else matrix.T


def emulate_gemm(arguments, gemm_a, gemm_b):
    """cuBLAS's C = op(A) op(B) for each batch entry (A is the user's b, B the user's a), into a
    C-ordered buffer of ``gemm_shape``, reshaped to the matmul result shape."""
    g = arguments
    memory_a, first_a = _raw_memory(gemm_a)
    memory_b, first_b = _raw_memory(gemm_b)
    assert g.ldc >= max(1, g.m)
    size = int(np.prod(g.gemm_shape))
    out = np.full(size, np.nan)
    written = np.zeros(size, dtype=int)
    for entry in range(g.batch_count):
        op_a = _read(memory_a, first_a, g.transa, g.m, g.k, g.lda, entry * g.stride_a)
        op_b = _read(memory_b, first_b, g.transb, g.k, g.n, g.ldb, entry * g.stride_b)
        index = entry * g.stride_c + np.arange(g.m)[:, None] + np.arange(g.n)[None, :] * g.ldc
        out[index] = op_a @ op_b
        written[index] += 1
    assert (written == 1).all(), "the gemm must write every result element exactly once"
    return out.reshape(g.gemm_shape).reshape(g.result_shape)


def matmul_through_emulation(a, b):
    a_ready, b_ready, arguments = prepare_operands(a, b, np)
    if arguments.kind == "empty":
        return np.zeros(arguments.result_shape), arguments
    if arguments.kind == "zeros":
        return np.zeros(arguments.result_shape), arguments
    return emulate_gemm(arguments, b_ready, a_ready), arguments


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


def layouts(values):
    """``(name, array)``: arrays equal to ``values`` in different memory layouts."""
    yield "C", np.ascontiguousarray(values)
    if values.ndim >= 2:
        yield "F", np.asfortranarray(values)
        yield "T view", np.ascontiguousarray(np.swapaxes(values, -1, -2)).swapaxes(-1, -2)
        padded = np.zeros(values.shape[:-1] + (values.shape[-1] + 3,), values.dtype)
        padded[..., : values.shape[-1]] = values
        yield "padded rows", padded[..., : values.shape[-1]]
        padded_f = np.asfortranarray(
            np.zeros(values.shape[:-2] + (values.shape[-2] + 2, values.shape[-1]), values.dtype)
        )
        padded_f[..., : values.shape[-2], :] = values
        yield "padded columns (F)", padded_f[..., : values.shape[-2], :]
    spread = np.zeros(values.shape[:-1] + (2 * values.shape[-1],), values.dtype)
    spread[..., ::2] = values
    yield "every other element", spread[..., ::2]
    yield "negative strides", np.ascontiguousarray(values[..., ::-1])[..., ::-1]
    if values.ndim >= 3:
        swapped = np.ascontiguousarray(np.swapaxes(values, 0, -3))
        yield "batch axes permuted", np.swapaxes(swapped, 0, -3)


SHAPE_PAIRS = [
    ((4, 3), (3, 5)),
    ((1, 3), (3, 5)),
    ((4, 1), (1, 5)),
    ((4, 3), (3, 1)),
    ((1, 1), (1, 1)),
    ((3,), (3, 5)),
    ((4, 3), (3,)),
    ((3,), (3,)),
    ((2, 4, 3), (2, 3, 5)),
    ((2, 4, 3), (3, 5)),
    ((4, 3), (2, 3, 5)),
    ((3,), (2, 3, 5)),
    ((2, 4, 3), (3,)),
    ((2, 1, 4, 3), (3, 3, 5)),
    ((2, 3, 4, 3), (2, 3, 3, 5)),
    ((1, 4, 3), (2, 3, 5)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("a_shape", "b_shape"), SHAPE_PAIRS, ids=lambda shape: "x".join(map(str, shape))
)
def test_every_layout_gives_numpys_matmul_exactly(a_shape, b_shape, dtype):
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    a_values = rng.integers(-4, 5, size=a_shape).astype(dtype)
    b_values = rng.integers(-4, 5, size=b_shape).astype(dtype)
    expected = np.matmul(a_values, b_values)
    for (a_name, a), (b_name, b) in itertools.product(layouts(a_values), layouts(b_values)):
        got, arguments = matmul_through_emulation(a, b)
        assert got.shape == expected.shape, (a_name, b_name)
        assert np.array_equal(got, expected), f"{a_name} @ {b_name}: {arguments}"


def test_transposed_operands_take_the_transpose_flag_instead_of_a_copy():
    a = np.ones((6, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    cases = {
        "C @ C": (a, b, CUBLAS_OP_N, CUBLAS_OP_N, 5, 4),
        "F @ C": (np.asfortranarray(a), b, CUBLAS_OP_N, CUBLAS_OP_T, 5, 6),
        "C @ F": (a, np.asfortranarray(b), CUBLAS_OP_T, CUBLAS_OP_N, 4, 4),
        ".T @ .T": (
            np.ones((4, 6), np.float32).T,
            np.ones((5, 4), np.float32).T,
            CUBLAS_OP_T,
            CUBLAS_OP_T,
            4,
            6,
        ),
        "padded C": (np.ones((6, 9), np.float32)[:, :4], b, CUBLAS_OP_N, CUBLAS_OP_N, 5, 9),
    }
    for name, (left, right, transa, transb, lda, ldb) in cases.items():
        g = gemm_arguments(left.shape, left.strides, right.shape, right.strides, 4)
        assert g.kind == "gemm" and g.copy_a is None and g.copy_b is None, name
        assert (g.transa, g.transb, g.lda, g.ldb) == (transa, transb, lda, ldb), name
        assert (g.m, g.n, g.k, g.ldc) == (5, 6, 4, 5), name


def test_layouts_no_leading_dimension_describes_are_copied():
    values = np.ones((4, 6), np.float32)
    strided = values[:, ::2]  # non-unit strides on both axes
    g = gemm_arguments(strided.shape, strided.strides, (3, 2), (8, 4), 4)
    assert g.kind == "copy" and g.copy_a == (4, 3) and g.copy_b is None
    reversed_rows = values[::-1]
    g = gemm_arguments((5, 4), (16, 4), reversed_rows.shape, reversed_rows.strides, 4)
    assert g.kind == "copy" and g.copy_a is None and g.copy_b == (4, 6)
    inside = np.broadcast_to(np.ones(6, np.float32), (4, 6))  # a broadcast inside the matrix
    g = gemm_arguments(inside.shape, inside.strides, (6, 2), (8, 4), 4)
    assert g.copy_a == (4, 6)


def test_batches_fold_into_rows_or_use_one_stride():
    x, w = np.ones((8, 5, 3), np.float32), np.ones((3, 4), np.float32)
    g = gemm_arguments(x.shape, x.strides, w.shape, w.strides, 4)
    assert (g.batch_count, g.n, g.m, g.k) == (1, 40, 4, 3)  # one (40, 3) @ (3, 4) product
    w_batch = np.ones((8, 3, 4), np.float32)
    g = gemm_arguments(x.shape, x.strides, w_batch.shape, w_batch.strides, 4)
    assert (g.batch_count, g.stride_a, g.stride_b, g.stride_c) == (8, 12, 15, 20)
    g = gemm_arguments(w.T.shape, w.T.strides, w_batch.shape, w_batch.strides, 4)  # (4,3) @ (8,3,4)
    assert (g.batch_count, g.stride_b, g.stride_a) == (8, 0, 12)  # the 2-D operand is broadcast
    mixed_a, mixed_b = np.ones((2, 1, 5, 3), np.float32), np.ones((1, 4, 3, 4), np.float32)
    g = gemm_arguments(mixed_a.shape, mixed_a.strides, mixed_b.shape, mixed_b.strides, 4)
    assert g.copy_a == (2, 4, 5, 3) and g.copy_b == (2, 4, 3, 4)  # no single stride: broadcast out


def test_empty_products_and_errors():
    g = gemm_arguments((0, 3), (12, 4), (3, 5), (20, 4), 4)
    assert g.kind == "empty" and g.result_shape == (0, 5)
    g = gemm_arguments((4, 0), (0, 4), (0, 5), (20, 4), 4)
    assert g.kind == "zeros" and g.result_shape == (4, 5)
    assert matmul_through_emulation(np.ones((2, 0, 3)), np.ones((3, 4)))[0].shape == (2, 0, 4)
    with pytest.raises(ValueError, match=r"shapes \(4, 3\) and \(2, 5\) do not match"):
        gemm_arguments((4, 3), (12, 4), (2, 5), (20, 4), 4)
    with pytest.raises(
        ValueError, match=r"batch axes of shapes \(2, 4, 3\) and \(3, 3, 5\) do not broadcast"
    ):
        gemm_arguments((2, 4, 3), (48, 12, 4), (3, 3, 5), (60, 20, 4), 4)
    with pytest.raises(ValueError, match="at least one axis"):
        gemm_arguments((), (), (3,), (4,), 4)
    with pytest.raises(NotImplementedError, match="beyond 32-bit int"):
        gemm_arguments((2**31, 1), (4, 4), (1, 1), (4, 4), 4)


def test_random_views_match_numpy():
    """Random shapes and random transposes/slices of random sizes, as a sweep beyond the grid."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        batch = tuple(rng.integers(1, 3, size=rng.integers(0, 3)))
        m, k, n = (int(v) for v in rng.integers(1, 5, size=3))
        a = rng.integers(-3, 4, size=batch + (m, k)).astype(np.float32)
        b = rng.integers(-3, 4, size=(k, n)).astype(np.float32)
        if rng.random() < 0.5:
            a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
        if rng.random() < 0.5:
            b = np.asfortranarray(b)
        if rng.random() < 0.3:
            a, b = b.T, np.swapaxes(a, -1, -2)  # (n, k) @ (..., k, m)
        got, _ = matmul_through_emulation(a, b)
        assert np.array_equal(got, np.matmul(a, b))


def test_gemm_routine_per_dtype_precision_and_batching():
    assert gemm_routine("float32", "highest", False) == "cublasSgemm_v2"
    assert gemm_routine("float32", "highest", True) == "cublasSgemmStridedBatched"
    assert gemm_routine("float32", "tf32", False) == "cublasGemmEx"
    assert gemm_routine("float32", "bf16", True) == "cublasGemmStridedBatchedEx"
    assert (
        gemm_routine("float64", "tf32", False) == "cublasDgemm_v2"
    )  # float64 stays full precision
    with pytest.raises(TypeError, match="float32 or float64"):
        gemm_routine("float16", "highest", False)
    with pytest.raises(ValueError, match="precision must be one of"):
        gemm_routine("float32", "fp8", False)


def test_enum_values_are_cublas_apis():
    # cublas_api.h (cuBLAS 12) and library_types.h
    assert (cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T) == (0, 1)
    assert (cublas.CUDA_R_32F, cublas.CUDA_R_64F) == (0, 1)
    assert cublas.CUBLAS_COMPUTE_32F_FAST_TF32 == 77 and cublas.CUBLAS_COMPUTE_32F_FAST_16BF == 75
    assert (
        cublas.CUBLAS_GEMM_DEFAULT == -1 and cublas.STATUS_NAMES[7] == "CUBLAS_STATUS_INVALID_VALUE"
    )


# ------------------------------------------------------------------------------------------------
# The call sequence, against a stand-in library
# ------------------------------------------------------------------------------------------------


class FakeLibrary:
    """Records every cuBLAS call with its arguments; each returns ``status``."""

    def __init__(self, status=0):
        self.calls = []
        self.status = status

    def __getattr__(self, name):
        if not name.startswith("cublas"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, args))
            if name == "cublasCreate_v2" and self.status == 0:
                args[0]._obj.value = 0xC0FFEE  # the handle cuBLAS writes through the pointer
            return self.status

        return call


def _named(routine, args):
    assert len(args) == len(cublas.PROTOTYPES[routine]), "argument count differs from the prototype"
    names = {
        "cublasSgemm_v2": "handle transa transb m n k alpha A lda B ldb beta C ldc",
        "cublasSgemmStridedBatched": (
            "handle transa transb m n k alpha A lda strideA B ldb strideB beta C ldc strideC "
            "batchCount"
        ),
        "cublasGemmEx": (
            "handle transa transb m n k alpha A Atype lda B Btype ldb beta C Ctype ldc "
            "computeType algo"
        ),
        "cublasGemmStridedBatchedEx": (
            "handle transa transb m n k alpha A Atype lda strideA B Btype ldb strideB beta C "
            "Ctype ldc "
            "strideC batchCount computeType algo"
        ),
    }[routine].split()
    return dict(zip(names, args, strict=True))


@pytest.mark.parametrize(
    ("precision", "batched", "routine"),
    [
        ("highest", False, "cublasSgemm_v2"),
        ("highest", True, "cublasSgemmStridedBatched"),
        ("tf32", False, "cublasGemmEx"),
        ("bf16", True, "cublasGemmStridedBatchedEx"),
    ],
)
def test_each_call_passes_its_arguments_in_the_prototypes_order(
    monkeypatch, precision, batched, routine
):
    library = FakeLibrary()
    monkeypatch.setattr(cublas, "load_library", lambda: library)
    a = np.ones((3, 4, 5) if batched else (4, 5), np.float32)
    b = np.ones((3, 5, 6) if batched else (5, 6), np.float32)
    g = gemm_arguments(a.shape, a.strides, b.shape, b.strides, 4)
    assert gemm_routine("float32", precision, g.batch_count > 1) == routine
    cublas._launch(routine, 1234, g, 1000, 2000, 3000, "float32", precision)  # A = b, B = a
    ((name, args),) = library.calls
    named = _named(name, args)
    assert name == routine and named["handle"] == 1234
    assert (named["A"], named["B"], named["C"]) == (1000, 2000, 3000)
    assert (named["m"], named["n"], named["k"], named["lda"], named["ldb"], named["ldc"]) == (
        6,
        4,
        5,
        6,
        5,
        6,
    )
    alpha, beta = (
        ctypes.c_float.from_address(named["alpha"]),
        ctypes.c_float.from_address(named["beta"]),
    )
    assert (alpha.value, beta.value) == (1.0, 0.0)
    if batched:
        assert (named["strideA"], named["strideB"], named["strideC"], named["batchCount"]) == (
            30,
            20,
            24,
            3,
        )
    if "computeType" in named:
        expected = {"tf32": 77, "bf16": 75}[precision]
        assert named["computeType"] == expected and named["algo"] == -1
        assert named["Atype"] == named["Btype"] == named["Ctype"] == cublas.CUDA_R_32F


def test_status_codes_become_errors_naming_the_call_and_status():
    with pytest.raises(
        cublas.CublasError, match=r"cublasSgemm_v2 failed: CUBLAS_STATUS_INVALID_VALUE \(7\)"
    ):
        cublas.check_status(7, "cublasSgemm_v2")
    with pytest.raises(
        cublas.CublasError,
        match=r"cublasCreate_v2 failed: CUBLAS_STATUS_NOT_INITIALIZED \(1\).*driver",
    ):
        cublas.create_handle(FakeLibrary(status=1))
    cublas.check_status(0, "anything")


class _FakeMemory:
    count = 0

    def __init__(self, size):
        _FakeMemory.count += 1
        self.size, self.ptr = size, 0x1000 * _FakeMemory.count


class _FakeCupy:
    class cuda:  # noqa: N801  (stands in for the cupy.cuda module)
        Memory = _FakeMemory


def test_a_handle_binds_each_stream_with_a_workspace_of_its_own():
    library = FakeLibrary()
    handle = cublas.Handle(0, library=library, cupy=_FakeCupy)
    created = library.calls.pop(0)
    assert created[0] == "cublasCreate_v2"
    handle.bind(7)
    handle.bind(7)  # the same stream again: nothing to do
    handle.bind(9)
    handle.bind(7)
    names = [name for name, _ in library.calls]
    assert (
        names == ["cublasSetStream_v2", "cublasSetWorkspace_v2"] * 3
    )  # workspace after every stream change
    workspaces = [args[1] for name, args in library.calls if name == "cublasSetWorkspace_v2"]
    assert workspaces[0] == workspaces[2] != workspaces[1]  # one workspace per stream, kept
    assert all(
        args[2] == cublas.WORKSPACE_BYTES
        for name, args in library.calls
        if name == "cublasSetWorkspace_v2"
    )
    for stream in range(100, 100 + 2 * cublas.MAX_WORKSPACES):
        handle.bind(stream)
    assert (
        len(handle.workspaces) == cublas.MAX_WORKSPACES and handle.bound_stream in handle.workspaces
    )


def test_cupys_own_libcublas_is_loaded_before_the_first_handle(monkeypatch):
    order = []

    class Cuda:
        class runtime:  # noqa: N801
            getDevice = staticmethod(lambda: 0)  # noqa: N815

        @staticmethod
        def get_current_stream():
            return type("Stream", (), {"ptr": 5})()

        def __getattr__(self, name):
            assert name == "cublas"
            order.append("cupy loads its libcublas")
            raise ImportError("CuPy without cuBLAS is no error")

    class Handle:
        def __init__(self, device_id, cupy):
            order.append("handle")

        def bind(self, stream_pointer):
            order.append(("bind", stream_pointer))

    fake_cupy = type("FakeCupy", (), {"cuda": Cuda()})()
    monkeypatch.setattr(cublas, "_require_cupy", lambda: fake_cupy)
    monkeypatch.setattr(cublas, "Handle", Handle)
    monkeypatch.setattr(cublas, "_loaded", {})
    monkeypatch.setattr(cublas, "_handles", cublas._ThreadHandles())
    cublas.current_handle()
    cublas.current_handle()
    assert order == ["cupy loads its libcublas", "handle", ("bind", 5), ("bind", 5)]


# ------------------------------------------------------------------------------------------------
# Finding and loading the library
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_library_anywhere(monkeypatch, tmp_path):
    monkeypatch.delenv(cublas.LIBRARY_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(cublas, "_wheel_directories", lambda: [str(tmp_path / "nvidia" / "cublas")])
    monkeypatch.setattr(cublas.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(cublas, "_mapped_libraries", lambda: [])
    monkeypatch.setattr(cublas, "_loaded", {})
    return tmp_path


def test_a_missing_library_says_what_was_searched(no_library_anywhere):
    expected_path = os.path.join(
        str(no_library_anywhere), "nvidia", "cublas", "lib", "libcublas.so.12"
    )
    with pytest.raises(cublas.CublasLibraryNotFound) as caught:
        cublas.load_library()
    message = str(caught.value)
    assert "$CHAINRULE_CUBLAS_LIBRARY" in message and "not set" in message
    assert f"no file at {expected_path}" in message
    assert 'ctypes.util.find_library("cublas"): nothing found' in message
    assert "pip install nvidia-cublas-cu12" in message


def test_the_search_order_and_a_library_that_does_not_load(no_library_anywhere, monkeypatch):
    wheel_library = no_library_anywhere / "nvidia" / "cublas" / "lib" / "libcublas.so.12"
    wheel_library.parent.mkdir(parents=True)
    wheel_library.write_bytes(b"not a shared library")
    assert cublas.find_library() == str(wheel_library)
    monkeypatch.setattr(cublas.ctypes.util, "find_library", lambda name: "libcublas.so.12")
    assert cublas.find_library() == str(wheel_library)  # the wheel before the system's
    configured = no_library_anywhere / "mine.so"
    configured.write_bytes(b"")
    monkeypatch.setenv(cublas.LIBRARY_ENVIRONMENT_VARIABLE, str(configured))
    assert cublas.find_library() == str(configured)
    with pytest.raises(
        cublas.CublasLibraryNotFound, match=f"found {configured} but could not load it"
    ):
        cublas.load_library()


def test_the_libcublas_already_in_the_process_comes_before_the_wheel(
    no_library_anywhere, monkeypatch
):
    maps = no_library_anywhere / "maps"
    maps.write_text(
        "7f00-7f10 r--p 00000000 08:01 42   /opt/cuda/lib64/libcublasLt.so.12.4.5.8\n"
        "7f10-7f20 r-xp 00000000 08:01 43   /opt/cuda/lib64/libcublas.so.12.4.5.8\n"
        "7f20-7f30 r--p 00001000 08:01 43   /opt/cuda/lib64/libcublas.so.12.4.5.8\n"
        "7f30-7f40 rw-p 00000000 00:00 0 \n"
        "7f40-7f50 r-xp 00000000 08:01 44   /usr/lib/libc.so.6\n"
    )
    assert READ_MAPPED_LIBRARIES(str(maps)) == ["/opt/cuda/lib64/libcublas.so.12.4.5.8"]
    assert READ_MAPPED_LIBRARIES(str(no_library_anywhere / "no maps here")) == []
    wheel_library = no_library_anywhere / "nvidia" / "cublas" / "lib" / "libcublas.so.12"
    wheel_library.parent.mkdir(parents=True)
    wheel_library.write_bytes(b"")
    loaded = no_library_anywhere / "libcublas.so.12.4.5.8"  # what CuPy loaded: one copy, not two
    loaded.write_bytes(b"")
    monkeypatch.setattr(cublas, "_mapped_libraries", lambda: [str(loaded)])
    assert cublas.find_library() == str(loaded)


def test_a_configured_path_that_does_not_exist_is_an_error(no_library_anywhere, monkeypatch):
    missing = str(no_library_anywhere / "nowhere" / "libcublas.so.12")
    monkeypatch.setenv(cublas.LIBRARY_ENVIRONMENT_VARIABLE, missing)
    monkeypatch.setattr(cublas.ctypes.util, "find_library", lambda name: "libcublas.so.12")
    with pytest.raises(
        cublas.CublasLibraryNotFound, match=f"CHAINRULE_CUBLAS_LIBRARY={missing}: no such file"
    ):
        cublas.find_library()


def test_without_the_wheel_the_system_library_is_next(no_library_anywhere, monkeypatch):
    monkeypatch.setattr(cublas, "_wheel_directories", lambda: [])
    monkeypatch.setattr(cublas.ctypes.util, "find_library", lambda name: "libcublas.so.12")
    assert cublas.find_library() == "libcublas.so.12"


def _real_library_or_skip():
    try:
        return cublas.load_library()
    except cublas.CublasLibraryNotFound as error:
        pytest.skip(f"no libcublas here ({str(error)[:80]}...)")


def test_a_real_libcublas_has_every_bound_function():
    """Runs where libcublas is installed (the nvidia-cublas-cu12 wheel, or
    $CHAINRULE_CUBLAS_LIBRARY); needs no GPU: loading, the prototypes and cublasGetProperty work
    without a driver."""
    library = _real_library_or_skip()
    for name, argtypes in cublas.PROTOTYPES.items():
        assert tuple(getattr(library, name).argtypes) == argtypes
    assert cublas.library_version(library).startswith("12.")
    assert cublas.describe()["path"]
    assert cublas.status_name(15) == "CUBLAS_STATUS_NOT_SUPPORTED"
