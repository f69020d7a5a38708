"""Captured steps as CUDA graphs: the CPU-checkable plumbing always, the GPU behaviour on a GPU.

Without CuPy and a CUDA device the GPU tests skip ("needs CuPy and a CUDA device"); the CPU tests
use a stand-in for ``cupy.ndarray`` (as ``tests/backend/test_device.py`` does) to check that only
device arrays take the graph path, that signatures, verification and errors work on that path,
and that the matmul rebinding of a capture is undone.
"""

import contextlib
import gc

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.backend.capture import CaptureError, capture
from chainrule.backend.cuda import cublas
from chainrule.backend.cuda import graph as cuda_graph
from chainrule.backend.device import cuda_available
from chainrule.backend.precision import matmul_precision, round_to_tf32
from chainrule.engine import arraylib
from chainrule.engine.core import forward_of, state
from chainrule.engine.primitives import TABLE

cuda = pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")


class _FakeDevice:
    id = 0


class FakeCudaArray:
    """Stands in for ``cupy.ndarray``: a device, a shape, a dtype, and ``get()`` for comparisons."""

    device = _FakeDevice()

    def __init__(self, shape, fill=0.0):
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)
        self.fill = fill

    def get(self):
        return np.full(self.shape, self.fill, np.float32)


FakeCudaArray.__module__ = "cupy._core.core"
FakeCudaArray.__name__ = "ndarray"


class FakeGraphStep:
    def __init__(self, result):
        self.result, self.replayed, self.verified = result, [], False

    def replay(self, leaves):
        self.replayed.append(list(leaves))
        return self.result


@pytest.fixture
def recorded_graphs(monkeypatch):
    """``chainrule.backend.cuda.graph.record_graph`` replaced by a recorder; its replays return what
    the step returned at recording (or ``replay_result`` when set)."""
    calls = []

    def record_graph(step_fn, leaves, treedef, *, copy_outputs):
        result = step_fn(*cr.tree_unflatten(treedef, leaves))
        step = FakeGraphStep(calls_state.get("replay_result", result))
        calls.append({"leaves": list(leaves), "copy_outputs": copy_outputs, "step": step})
        return step, result

    calls_state = {}
    monkeypatch.setattr(cuda_graph, "record_graph", record_graph)
    return calls, calls_state


def test_only_device_arrays_take_the_cuda_graph_path(recorded_graphs):
    calls, _ = recorded_graphs
    device_array = FakeCudaArray((4, 3))
    fast = capture(lambda x, scale: x, (device_array, 2.0), verify=False)
    assert (
        len(calls) == 1 and calls[0]["leaves"] == [device_array, 2.0] and calls[0]["copy_outputs"]
    )
    assert fast(device_array, 2.0) is device_array  # the (fake) graph's replay
    assert fast.stats == {"captures": 1, "replays": 1, "fallbacks": 0}
    cpu = capture(lambda x: x * 2, (np.ones(3),))
    assert len(calls) == 1 and type(next(iter(cpu.tapes.values()))).__name__ == "_Tape"
    fast(FakeCudaArray((5, 3)), 2.0)  # a new device signature records a new graph
    assert len(calls) == 2 and fast.stats["captures"] == 2
    fast(device_array, 3.0)  # so does a new constant
    assert len(calls) == 3


def test_device_signatures_name_the_device_in_errors(recorded_graphs):
    strict = capture(lambda x: x, (FakeCudaArray((4, 3)),), verify=False, on_new_signature="raise")
    expected = (
        r"args\[0\] has shape \(5, 3\) dtype float32 on cuda but the step was recorded with "
        r"shape \(4, 3\) dtype float32 on cuda"
    )
    with pytest.raises(ValueError, match=expected):
        strict(FakeCudaArray((5, 3)))


def test_the_first_graph_replay_is_checked_against_the_eager_step(recorded_graphs):
    _, calls_state = recorded_graphs
    fast = capture(lambda x: {"y": x}, (FakeCudaArray((2,), fill=1.0),))
    assert fast(FakeCudaArray((2,), fill=1.0))["y"].fill == 1.0  # replay == eager: verified
    calls_state["replay_result"] = {"y": FakeCudaArray((2,), fill=5.0)}
    wrong = capture(lambda x: {"y": x}, (FakeCudaArray((2,), fill=1.0),))
    with pytest.raises(
        CaptureError, match=r"output leaf 0 of the replayed step differs.*largest difference 4"
    ):
        wrong(FakeCudaArray((2,), fill=1.0))


@pytest.mark.skipif(arraylib.cupy_module() is not None, reason="CuPy is installed here")
def test_device_arrays_without_cupy_are_a_clear_error():
    with pytest.raises(CaptureError, match="CuPy arrays were passed but CuPy cannot be imported"):
        capture(lambda x: x, (FakeCudaArray((2,)),))


def test_the_simulated_device_has_no_graphs_to_capture_into():
    from chainrule.backend.device import to_device
    from chainrule.backend.simulated_cuda import simulate_cuda

    with simulate_cuda():
        on_device = to_device(np.ones((2, 3), np.float32), "cuda")
        with pytest.raises(CaptureError, match="has no CUDA streams, memory pools or graphs"):
            capture(lambda x: x * 2, (on_device,))


def test_cpu_tapes_return_their_buffers_with_copy_outputs_false():
    fast = capture(lambda x: x * 2, (np.ones(3),), copy_outputs=False)
    first = fast(np.ones(3))
    second = fast(np.full(3, 5.0))
    assert second is first and np.array_equal(first, np.full(3, 10.0))  # one buffer, overwritten


def _raised(error):
    def step_function_of_the_user():
        raise error

    try:
        step_function_of_the_user()
    except Exception as caught:
        return cuda_graph.capture_error(caught)
    raise AssertionError("not raised")  # pragma: no cover


def test_capture_errors_say_what_happened_and_where():
    refused = _raised(
        NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
    )
    assert "calls cuBLAS through CuPy in step_function_of_the_user" in str(refused)
    assert "cupy.dot, tensordot, einsum" in str(refused)
    synced = _raised(
        RuntimeError("the current stream is capturing, so D2H transfers are disallowed")
    )
    assert "synchronised the host with the device" in str(synced) and ".item(), float()" in str(
        synced
    )
    cuda_status = _raised(
        RuntimeError(
            "cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing"
        )
    )
    assert "synchronised" in str(cuda_status)
    other = _raised(ValueError("shapes differ"))
    assert "raised ValueError: shapes differ in step_function_of_the_user" in str(other)


def test_matmul_through_cublas_rebinds_device_products_and_restores(monkeypatch):
    seen = []
    monkeypatch.setattr(
        cublas, "matmul", lambda x, y, precision: seen.append(precision) or "through cuBLAS"
    )
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with cuda_graph.matmul_through_cublas():
        forward = forward_of(TABLE["matmul"])
        assert state.hooked  # the operators' numpy.matmul fast path stands aside
        assert forward(FakeCudaArray((2, 3)), FakeCudaArray((3, 4))) == "through cuBLAS"
        np.testing.assert_array_equal(forward(a, b), np.matmul(a, b))  # NumPy: as before
    with matmul_precision("tf32"), cuda_graph.matmul_through_cublas():
        forward_of(TABLE["matmul"])(FakeCudaArray((2, 3)), FakeCudaArray((3, 4)))
        a_fine = np.full((2, 3), 1 + 2.0**-12, np.float32)
        np.testing.assert_array_equal(
            forward_of(TABLE["matmul"])(a_fine, b), np.matmul(round_to_tf32(a_fine), b)
        )
    assert seen == ["highest", "tf32"]
    assert forward_of(TABLE["matmul"]) is np.matmul and not state.hooked
    with pytest.raises(ZeroDivisionError):
        with cuda_graph.matmul_through_cublas():
            raise ZeroDivisionError
    assert forward_of(TABLE["matmul"]) is np.matmul and not state.hooked


# ------------------------------------------------------------------------------------------------
# The order of a capture and of a replay, against a stand-in CuPy that logs what it is asked
# ------------------------------------------------------------------------------------------------


class _LoggingCupy:
    """Just enough of CuPy's stream, pool, graph and runtime API for
    :mod:`chainrule.backend.cuda.graph`; every call that CUDA would order on a stream is logged with
    the stream it went to."""

    def __init__(self):
        self.log = []
        self.streams = [_LoggedStream(self, 0)]  # the stack of current streams: legacy first
        self.allocators = ["default"]
        self.device = 0
        cupy = self

        class cuda:  # noqa: N801  (stands in for the cupy.cuda module)
            class Stream(_LoggedStream):
                def __init__(self, non_blocking=False):
                    assert non_blocking, "the capture stream must not sync with the legacy stream"
                    _LoggedStream.__init__(self, cupy, 100 + len(cupy.log))

            class MemoryPool:
                def malloc(
                    self, size
                ):  # pragma: no cover  (never called: the log says who allocates)
                    raise AssertionError

            @staticmethod
            @contextlib.contextmanager
            def using_allocator(allocator):
                cupy.allocators.append("private pool")
                try:
                    yield
                finally:
                    cupy.allocators.pop()

            @staticmethod
            def get_current_stream():
                return cupy.streams[-1]

            @staticmethod
            @contextlib.contextmanager
            def Device(device_id):  # noqa: N802
                saved, cupy.device = cupy.device, device_id
                cupy.log.append(("device", device_id))
                try:
                    yield
                finally:
                    cupy.device = saved

            class runtime:  # noqa: N801
                @staticmethod
                def getDevice():  # noqa: N802
                    return cupy.device

                @staticmethod
                def memcpyAsync(dst, src, size, kind, stream):  # noqa: N802
                    cupy.log.append(("memcpyAsync", dst, src, size, kind, stream))

        self.cuda = cuda

    def where(self):
        return self.streams[-1].ptr


class _LoggedStream:
    def __init__(self, cupy, ptr):
        self.cupy, self.ptr = cupy, ptr

    def __enter__(self):
        self.cupy.streams.append(self)
        return self

    def __exit__(self, *exc_info):
        self.cupy.streams.pop()

    def record(self):
        self.cupy.log.append(("record", self.ptr))
        return ("event", self.ptr)

    def wait_event(self, event):
        self.cupy.log.append(("wait", self.ptr, event))

    def synchronize(self):
        self.cupy.log.append(("synchronize", self.ptr))

    def is_capturing(self):
        return False

    def begin_capture(self):
        self.cupy.log.append(("begin_capture", self.ptr))

    def end_capture(self):
        self.cupy.log.append(("end_capture", self.ptr))
        return _LoggedGraph(self.cupy)


class _LoggedGraph:
    def __init__(self, cupy):
        self.cupy = cupy

    def launch(self, stream=None):
        self.cupy.log.append(("launch", self.cupy.where() if stream is None else stream.ptr))


class _Flags:
    def __init__(self, c_contiguous):
        self.c_contiguous = c_contiguous


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


class LoggedDeviceArray(FakeCudaArray):
    """A device array whose copies and writes are logged with the stream they go to."""

    def __init__(self, cupy, name, ptr, shape=(2, 3), c_contiguous=True):
        super().__init__(shape)
        self.cupy, self.name = cupy, name
        self.data, self.flags = _Pointer(ptr), _Flags(c_contiguous)
        self.nbytes = int(np.prod(shape)) * 4

    def copy(self):
        self.cupy.log.append(("copy", self.name, self.cupy.where(), self.cupy.allocators[-1]))
        return LoggedDeviceArray(self.cupy, f"copy of {self.name}", 0)

    def __setitem__(self, index, value):
        self.cupy.log.append(("setitem", self.name, value.name, self.cupy.where()))


LoggedDeviceArray.__module__ = "cupy._core.core"
LoggedDeviceArray.__name__ = "ndarray"


class _LoggedHandle:
    def __init__(self, cupy):
        self.cupy = cupy

    def workspace(self, stream_pointer):
        self.cupy.log.append(("workspace", stream_pointer, self.cupy.where()))
        return "workspace"


@pytest.fixture
def logging_cupy(monkeypatch):
    cupy = _LoggingCupy()
    monkeypatch.setattr(arraylib, "cupy_module", lambda: cupy)
    monkeypatch.setattr(cublas, "current_handle", lambda: _LoggedHandle(cupy))
    return cupy


def test_a_capture_warms_up_then_captures_on_a_side_stream_in_the_right_order(logging_cupy):
    cupy = logging_cupy

    def step():
        cupy.log.append(("step", cupy.where(), cupy.allocators[-1], gc.isenabled(), state.hooked))
        return {"out": LoggedDeviceArray(cupy, "result", 0x500), "constant": 3}

    assert gc.isenabled()
    graph, warm, static = cuda_graph.capture_graph(step)
    side = graph.stream.ptr
    assert side not in (0, 1) and graph.workspace == "workspace" and graph.pool is not None
    assert gc.isenabled() and not state.hooked and forward_of(TABLE["matmul"]) is np.matmul
    assert cupy.log == [
        ("record", 0),  # the side stream waits for the caller's stream: inputs written there
        ("wait", side, ("event", 0)),
        ("workspace", side, side),  # cuBLAS bound to the side stream before any capture
        ("step", side, "private pool", True, True),  # the warm-up
        ("synchronize", side),
        ("copy", "result", 0, "default"),  # the warm result leaves the private pool
        ("synchronize", 0),  # ... before the capture may reuse its blocks
        ("begin_capture", side),
        ("step", side, "private pool", False, True),  # captured: no cyclic GC meanwhile
        ("end_capture", side),
    ]
    assert warm["out"].name == "copy of result" and warm["constant"] == 3
    assert static["out"].name == "result"


def test_a_failed_capture_still_ends_it_and_restores_everything(logging_cupy, monkeypatch):
    cupy = logging_cupy
    calls = []

    def step():
        calls.append(cupy.where())
        if len(calls) == 2:
            raise RuntimeError(
                "the current stream is capturing, so synchronous API calls are disallowed"
            )
        return LoggedDeviceArray(cupy, "result", 0x500)

    with pytest.raises(CaptureError, match="synchronised the host with the device"):
        cuda_graph.capture_graph(step)
    assert [event[0] for event in cupy.log][-2:] == ["begin_capture", "end_capture"]
    assert gc.isenabled() and not state.hooked and forward_of(TABLE["matmul"]) is np.matmul
    assert cupy.allocators == ["default"] and len(cupy.streams) == 1

    def no_library():
        raise cublas.CublasLibraryNotFound("no libcublas")

    monkeypatch.setattr(cublas, "current_handle", no_library)  # a step without matmuls needs none
    calls.clear()
    graph, _, _ = cuda_graph.capture_graph(lambda: 1.0)
    assert graph.workspace is None


def test_a_replay_copies_inputs_launches_and_copies_outputs_all_on_the_callers_stream(logging_cupy):
    cupy = logging_cupy
    static_x = LoggedDeviceArray(cupy, "static x", 0x100)
    static_w = LoggedDeviceArray(cupy, "static w", 0x200)
    output = LoggedDeviceArray(cupy, "static output", 0x300)
    graph = cuda_graph.CudaGraph(_LoggedGraph(cupy), None, None, None, device_id=0)
    _, out_def = cr.tree_flatten({"scale": 0, "y": 0})  # leaves in key order: scale, y
    step = cuda_graph.GraphStep(graph, [static_x, static_w], [0, 2], [2.0, output], out_def, True)
    x = LoggedDeviceArray(cupy, "x", 0x1100)
    w_transposed = LoggedDeviceArray(cupy, "w.T", 0x1200, c_contiguous=False)
    with _LoggedStream(cupy, 7):
        result = step.replay([x, "constant", w_transposed])
    assert cupy.log == [
        ("memcpyAsync", 0x100, 0x1100, 24, 3, 7),  # C-contiguous: one cudaMemcpyAsync, D2D
        ("setitem", "static w", "w.T", 7),  # strided: a copy kernel
        ("launch", 7),
        ("copy", "static output", 7, "default"),
    ]
    assert result["y"].name == "copy of static output" and result["scale"] == 2.0
    cupy.log.clear()
    step.copy_outputs = False
    fed_back = step.replay([static_x, "constant", static_w])  # a buffer passed as its own input
    assert cupy.log == [("launch", 0)]  # no copy of a buffer onto itself
    assert fed_back["y"] is output
    cupy.log.clear()
    on_device_1 = cuda_graph.CudaGraph(_LoggedGraph(cupy), None, None, None, device_id=1)
    cuda_graph.GraphStep(on_device_1, [], [], [], cr.tree_flatten(())[1], True).replay([])
    assert cupy.log == [("device", 1), ("launch", 0)]


# ------------------------------------------------------------------------------------------------
# On a GPU (skipped without CuPy or a device)
# ------------------------------------------------------------------------------------------------

SIZES = (64, 32, 10)


def _device_mlp(cupy, rng, sizes=SIZES):
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        params[f"w{i}"] = cupy.asarray(
            (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        )
        params[f"b{i}"] = cupy.zeros(fan_out, np.float32)
    return params


def _outputs(params, x, activation):
    """The MLP's outputs: ``activation`` between the layers."""
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = activation(h)
    return h


def _loss(params, x, target):
    """Mean squared error of a tanh MLP."""
    return cnp.mean((_outputs(params, x, cnp.tanh) - target) ** 2)


def sgd_step(params, x, target, lr=0.1):
    loss, grads = cr.value_and_grad(_loss)(params, x, target)
    return {k: params[k] - lr * grads[k] for k in params}, loss


def _batch(cupy, rng, n=32, sizes=SIZES):
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    target = rng.standard_normal((n, sizes[-1])).astype(np.float32)
    return cupy.asarray(x), cupy.asarray(target)


def _close(got, expected, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(
        arraylib.to_numpy(got), arraylib.to_numpy(expected), rtol=rtol, atol=atol
    )


@cuda
def test_captured_tiny_mlp_step_follows_the_eager_step():
    import cupy

    rng = np.random.default_rng(0)
    params = _device_mlp(cupy, rng)
    fast = capture(sgd_step, (params, *_batch(cupy, rng)))
    assert type(next(iter(fast.tapes.values()))).__name__ == "GraphStep"
    eager, replayed = dict(params), dict(params)
    for _ in range(5):
        x, target = _batch(cupy, rng)
        eager, eager_loss = sgd_step(eager, x, target)
        replayed, replayed_loss = fast(replayed, x, target)
        _close(replayed_loss, eager_loss)
        for key in eager:
            assert arraylib.device_of(replayed[key]) == "cuda" and replayed[key].dtype == np.float32
            _close(replayed[key], eager[key])
    assert fast.stats == {"captures": 1, "replays": 5, "fallbacks": 0}
    assert not np.allclose(arraylib.to_numpy(replayed["w0"]), arraylib.to_numpy(params["w0"]))


def _relu_cross_entropy_step(params, x, labels, lr=0.1):
    """The benchmark's step: a ReLU MLP with the engine's fused softmax cross-entropy."""

    def loss_fn(p):
        return cnp.mean(cnp.softmax_cross_entropy(_outputs(p, x, cnp.relu), labels))

    loss, grads = cr.value_and_grad(loss_fn)(params)
    return {k: params[k] - lr * grads[k] for k in params}, loss


@cuda
def test_captured_relu_cross_entropy_step_follows_the_eager_step():
    import cupy

    rng = np.random.default_rng(2)
    params = _device_mlp(cupy, rng)

    def labelled_batch():
        x, _ = _batch(cupy, rng)
        return x, cupy.asarray(rng.integers(0, SIZES[-1], x.shape[0]))

    fast = capture(_relu_cross_entropy_step, (params, *labelled_batch()))
    eager, replayed = dict(params), dict(params)
    for _ in range(5):
        x, labels = labelled_batch()
        eager, eager_loss = _relu_cross_entropy_step(eager, x, labels)
        replayed, replayed_loss = fast(replayed, x, labels)
        _close(replayed_loss, eager_loss)
        for key in eager:
            _close(replayed[key], eager[key])
    assert fast.stats["fallbacks"] == 0


@cuda
def test_a_new_shape_recaptures_or_raises():
    import cupy

    rng = np.random.default_rng(1)
    params = _device_mlp(cupy, rng)
    fast = capture(sgd_step, (params, *_batch(cupy, rng)))
    x16, t16 = _batch(cupy, rng, n=16)
    new_params, loss = fast(params, x16, t16)
    _close(loss, sgd_step(params, x16, t16)[1])
    assert fast.stats["captures"] == 2 and len(fast.tapes) == 2
    strict = capture(sgd_step, (params, *_batch(cupy, rng)), on_new_signature="raise")
    with pytest.raises(ValueError, match=r"has shape \(16, 64\) dtype float32 on cuda"):
        strict(params, x16, t16)


@cuda
def test_host_reads_and_cupy_cublas_calls_in_a_step_are_capture_errors():
    import cupy

    rng = np.random.default_rng(2)
    params = _device_mlp(cupy, rng)
    batch = _batch(cupy, rng)

    def reads_the_loss(params, x, target):
        new_params, loss = sgd_step(params, x, target)
        return new_params, loss.item()

    with pytest.raises(CaptureError, match=r"synchronised the host with the device.*\.item\(\)"):
        capture(reads_the_loss, (params, *batch))

    def uses_cupy_dot(params, x, target):
        return cupy.dot(x, params["w0"])

    with pytest.raises(CaptureError, match="calls cuBLAS through CuPy"):
        capture(uses_cupy_dot, (params, *batch))
    with pytest.raises(CaptureError, match="is a NumPy ndarray"):
        capture(sgd_step, (params, arraylib.to_numpy(batch[0]), batch[1]))
    assert forward_of(TABLE["matmul"]) is np.matmul and not state.hooked


@cuda
def test_static_outputs_are_returned_without_copies_on_request():
    import cupy

    rng = np.random.default_rng(3)
    params = _device_mlp(cupy, rng)
    fast = capture(sgd_step, (params, *_batch(cupy, rng)), copy_outputs=False)
    first = fast(params, *_batch(cupy, rng))
    first_loss = float(first[1])
    second = fast(params, *_batch(cupy, rng))
    assert second[1] is first[1] and float(first[1]) != first_loss  # overwritten in place


@cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_binding_matches_cupy_on_every_layout(dtype):
    import cupy

    rng = np.random.default_rng(4)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    pairs = [
        ((33, 17), (17, 9)),
        ((17,), (17, 9)),
        ((33, 17), (17,)),
        ((3, 33, 17), (17, 9)),
        ((3, 33, 17), (3, 17, 9)),
    ]
    for a_shape, b_shape in pairs:
        a = cupy.asarray(rng.standard_normal(a_shape).astype(dtype))
        b = cupy.asarray(rng.standard_normal(b_shape).astype(dtype))
        variants = [
            (a, b),
            (cupy.asfortranarray(a), b),
            (a, cupy.asfortranarray(b)),
            (a[..., ::-1], b[::-1]),
        ]
        for left, right in variants:
            _close(
                cublas.matmul(left, right), cupy.matmul(left, right), rtol=tolerance, atol=tolerance
            )


@cuda
def test_the_binding_inside_a_captured_graph():
    import cupy

    rng = np.random.default_rng(5)
    a = cupy.asarray(rng.standard_normal((64, 48)).astype(np.float32))
    b = cupy.asarray(rng.standard_normal((48, 16)).astype(np.float32))
    graph, warm, static = cuda_graph.capture_graph(lambda: cublas.matmul(a, b) * 2)
    _close(warm, cupy.matmul(a, b) * 2)
    for _ in range(3):
        a[...] = cupy.asarray(rng.standard_normal((64, 48)).astype(np.float32))
        graph.launch()
        _close(static, cupy.matmul(a, b) * 2)


@cuda
def test_precision_modes_on_the_gpu_keep_the_emulations_error_bounds():
    import cupy

    rng = np.random.default_rng(6)
    a = rng.standard_normal((256, 512)).astype(np.float32)
    b = rng.standard_normal((512, 128)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    k = a.shape[1]
    accumulation = k * 2.0**-24 / (1 - k * 2.0**-24)
    largest = {}
    for mode, u in (("highest", 0.0), ("tf32", 2.0**-11), ("bf16", 2.0**-8)):
        with matmul_precision(mode):
            got = arraylib.to_numpy(cnp.matmul(cupy.asarray(a), cupy.asarray(b)))
        truncation = 2 * u  # tensor cores may truncate instead of rounding to nearest
        error = np.abs(got - exact)
        assert (error <= (2 * truncation + truncation**2 + accumulation) * scale).all(), mode
        largest[mode] = float((error / scale).max())
    # FAST_16BF may use TF32 instead of bfloat16, and FAST_TF32 may keep some products in full
    # float32: only that a reduced mode is in use somewhere is certain.
    assert max(largest["tf32"], largest["bf16"]) > largest["highest"], largest
