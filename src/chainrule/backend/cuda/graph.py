"""CUDA graphs of step functions on CuPy arrays: warm up once, capture once, replay many times.

A training step of a small network on a GPU is a few dozen short kernels, each launched from Python:
the launches, not the arithmetic, set its time. A CUDA graph records those launches once (stream
capture) and replays them with one call. :func:`capture_graph` does it for any function of device
arrays; :func:`record_graph` is the GPU branch of :func:`chainrule.backend.capture.capture`, with
static input buffers that every call refreshes in place.

How a capture goes, and why each step is there:

1. **A side stream** (``cupy.cuda.Stream(non_blocking=True)``): CUDA cannot capture the legacy
   default stream, and a non-blocking stream keeps other work on the default stream from joining
   the capture. It first waits for the caller's stream, so inputs written there are visible.
2. **A private memory pool** (``cupy.cuda.MemoryPool()`` made current with
   ``cupy.cuda.using_allocator(pool.malloc)``): the graph's kernels keep reading and writing the
   addresses they were captured with, so those blocks must never be handed to other code. Only
   this capture allocates from this pool; the pool lives as long as the graph.
3. **Matmuls through chainrule's cuBLAS binding** (:func:`matmul_through_cublas`): CuPy refuses
   cuBLAS calls during capture, so for the warm-up and the capture the ``matmul`` primitive
   computes (through the engine's ``"cuda_graph"`` dispatch layer) with
   :func:`chainrule.backend.cuda.cublas.matmul` (in the precision mode in force), whose handle is
   bound to the side stream and to a workspace of its own, allocated before the capture starts.
4. **A warm-up run**, eager, on the side stream with the private pool: kernels get compiled and
   loaded, cuBLAS picks its kernels, the pool gets the blocks the capture will reuse. Its results
   (copied out of the pool on the caller's stream, which is then synchronised, since replays will
   overwrite those blocks) are what the recording call returns.
5. **The capture**: ``stream.begin_capture()`` (CuPy's default, relaxed mode, which lets the pool
   grow with cudaMalloc if it must), one call, ``stream.end_capture()``, with Python's cyclic
   garbage collector off meanwhile (a collected graph or pool would cudaFree, which synchronises
   the device, in the middle of the capture). Nothing runs during a
   capture: a step that reads a device value on the host (``.item()``, ``float()``, ``bool()``,
   an ``if`` on data), copies a host array to the device, or calls cuBLAS through CuPy
   (``cupy.dot``, ``tensordot``, ``einsum``, ``linalg``) cannot be captured, and the error raised
   says which of these happened (:class:`~chainrule.backend.capture.CaptureError`).

A replay (:meth:`GraphStep.replay`) copies the new inputs into the static input buffers on the
caller's current stream (``cudaMemcpyAsync`` for C-contiguous inputs), launches the graph on that
same stream (a graph may be launched on any stream; everything then stays in the caller's stream
order without events), and returns copies of the static outputs, or the static outputs
themselves with ``copy_outputs=False`` (then the next replay overwrites them).

Written for CuPy 14 and CUDA 12 and not yet run on a GPU: ``tests/backend/test_cuda_graph.py``
holds the checks to run on one.
"""

from __future__ import annotations

import contextlib
import gc
import os

import numpy as _np

from ...engine import arraylib
from ...engine.core import Tracer, set_forward_layer
from ...transforms.pytree import tree_flatten, tree_unflatten
from ..errors import CaptureError
from . import cublas

__all__ = ["CudaGraph", "GraphStep", "capture_graph", "matmul_through_cublas", "record_graph"]

_MEMCPY_DEVICE_TO_DEVICE = 3  # cudaMemcpyDeviceToDevice (cupy.cuda.runtime.memcpyDeviceToDevice)


def _require_cupy():
    """CuPy itself: the device namespace must have CUDA streams, memory pools and graphs (the
    simulated CUDA device of :mod:`chainrule.backend.simulated_cuda` has none)."""
    cupy = arraylib.cupy_module()
    if cupy is None:
        raise CaptureError("capture: CuPy arrays were passed but CuPy cannot be imported")
    cuda = getattr(cupy, "cuda", None)
    if not all(hasattr(cuda, name) for name in ("Stream", "MemoryPool", "using_allocator")):
        raise CaptureError(
            f"capture: the CUDA arrays' namespace ({arraylib.namespace_name(cupy)}) has no CUDA "
            "streams, "
            "memory pools or graphs (the simulated CUDA device has none); capturing a step on "
            "device "
            "arrays needs CuPy and a GPU"
        )
    return cupy


def _is_device_array(value) -> bool:
    return arraylib.is_array(value) and arraylib.device_of(value) != "cpu"


def _is_cupy_array(value) -> bool:
    kind = type(value)
    return kind.__name__ == "ndarray" and getattr(kind, "__module__", "").startswith("cupy")


class CudaGraph:
    """A captured graph and what must outlive it: the capture stream, the private memory pool
    holding every buffer the graph touches, and the cuBLAS workspace its matmuls use."""

    __slots__ = ("graph", "stream", "pool", "workspace", "device_id")

    def __init__(self, graph, stream, pool, workspace, device_id):
        self.graph, self.stream, self.pool = graph, stream, pool
        self.workspace, self.device_id = workspace, device_id

    def launch(self, stream=None):
        """Replay the graph on ``stream`` (default: the current stream)."""
        self.graph.launch(stream)


@contextlib.contextmanager
def matmul_through_cublas():
    """Inside the block the ``matmul`` primitive computes float32/float64 CuPy products with
    :func:`chainrule.backend.cuda.cublas.matmul` (capturable), in the precision mode in force;
    other operands keep the forward the layers below supply. This is the ``"cuda_graph"`` layer
    of the engine's dispatch (:func:`chainrule.engine.core.set_forward_layer`); the table is not
    changed, and the Tensor fast paths stand aside meanwhile."""
    from ..precision import get_matmul_precision  # noqa: PLC0415

    precision = get_matmul_precision()

    def supplier(prim, inner):
        if prim.name != "matmul":
            return inner

        def forward(x, y):
            if (
                _is_cupy_array(x)
                and _is_cupy_array(y)
                and x.dtype == y.dtype
                and x.dtype.name in ("float32", "float64")
            ):
                return cublas.matmul(x, y, precision=precision)
            return inner(x, y)

        forward.__name__ = "matmul_through_cublas"
        return forward

    previous = set_forward_layer("cuda_graph", supplier)
    try:
        yield
    finally:
        set_forward_layer("cuda_graph", previous)


def _where(error) -> str:
    """The innermost frame of ``error``'s traceback outside CuPy and this module, for messages."""
    traceback, found = error.__traceback__, None
    this_file = os.path.abspath(__file__)
    while traceback is not None:
        code = traceback.tb_frame.f_code
        path = os.path.abspath(code.co_filename)
        parts = path.split(os.sep)
        if path != this_file and "cupy" not in parts and "cupy_backends" not in parts:
            found = f"{code.co_name} ({os.path.basename(path)}:{traceback.tb_lineno})"
        traceback = traceback.tb_next
    return f" in {found}" if found else ""


def capture_error(error, what="the step") -> CaptureError:
    """The :class:`CaptureError` that says why ``error`` (raised while capturing) happened."""
    message = str(error)
    where = _where(error)
    if isinstance(error, NotImplementedError) and "stream capture" in message:
        library = message.split()[1] if message.startswith("calling ") else "a CUDA library"
        return CaptureError(
            f"capture: {what} calls {library} through CuPy{where}, which CuPy refuses while a "
            "stream "
            f"is being captured into a CUDA graph ({message}; cupy#6290). Only the matmul "
            "primitive "
            "goes through chainrule's own capturable cuBLAS binding: write products with @ or "
            "chainrule.numpy.matmul, not cupy.dot, tensordot, einsum or cupy.linalg, or run this "
            "step without capture"
        )
    if "captur" in message.lower():
        return CaptureError(
            f"capture: {what} synchronised the host with the device while being captured into a "
            f"CUDA graph{where} ({type(error).__name__}: {message}). Nothing runs during a "
            "capture, "
            "so a graph cannot hold a device-to-host read or a synchronous host-to-device copy: "
            "keep "
            "the step free of .item(), float(), int(), bool(), .get(), cupy.asnumpy and of `if` on "
            "device values (a data-dependent Python decision cannot be replayed), and of "
            "cupy.asarray(numpy array); return such values and read them after the call"
        )
    return CaptureError(
        f"capture: {what} raised {type(error).__name__}: {message}{where} while being captured "
        "into "
        "a CUDA graph (it had just run eagerly without error)"
    )


def _copy_tree(tree):
    """``tree`` with every device array copied (on the current stream, current allocator)."""
    leaves, treedef = tree_flatten(tree)
    return tree_unflatten(
        treedef, [leaf.copy() if _is_device_array(leaf) else leaf for leaf in leaves]
    )


def capture_graph(function, *, what="the step"):
    """Warm up, then capture, one call of ``function()`` (no arguments; it closes over device
    arrays) on the current device, following the steps of the module docstring.

    Returns ``(graph, warm_result, static_result)``: the :class:`CudaGraph`; the warm-up's
    result with every device array copied out of the private pool (valid now); and the captured
    call's result, whose device arrays are the graph's static outputs (filled by each launch).
    """
    cupy = _require_cupy()
    caller_stream = cupy.cuda.get_current_stream()
    if caller_stream.ptr not in (0, 1) and caller_stream.is_capturing():
        raise CaptureError(
            "capture: the current stream is already being captured; captures do not nest"
        )
    device_id = cupy.cuda.runtime.getDevice()
    stream = cupy.cuda.Stream(non_blocking=True)
    pool = cupy.cuda.MemoryPool()
    stream.wait_event(caller_stream.record())
    workspace = None
    with stream:  # the handle and the side stream's workspace exist before any capture
        try:
            workspace = cublas.current_handle().workspace(stream.ptr)
        except cublas.CublasLibraryNotFound:  # a step without matmuls needs none; one with says so
            pass
    with stream, cupy.cuda.using_allocator(pool.malloc), matmul_through_cublas():
        warm = function()
    stream.synchronize()
    warm_result = _copy_tree(warm)  # on the caller's stream, with the caller's allocator
    # The capture reuses the warm-up's blocks: the copies must be done before any replay, on
    # whatever stream it is launched.
    caller_stream.synchronize()
    del warm  # its blocks go back to the private pool, for the capture to reuse
    # No cyclic garbage collection during the capture: a collected CUDA graph, pool or workspace
    # would cudaFree (which synchronises the device) in the middle of it.
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        with stream, cupy.cuda.using_allocator(pool.malloc), matmul_through_cublas():
            stream.begin_capture()
            failure, graph = None, None
            try:
                static_result = function()
            except Exception as error:
                failure = error
            finally:
                try:
                    graph = stream.end_capture()
                except Exception as end_error:  # the capture was invalidated
                    if failure is None:
                        failure = end_error
    finally:
        if collecting:
            gc.enable()
    if failure is not None:
        raise capture_error(failure, what) from failure
    return CudaGraph(graph, stream, pool, workspace, device_id), warm_result, static_result


class GraphStep:
    """The GPU counterpart of a CPU tape: one captured graph of a step for one input signature,
    its static input buffers and its static outputs."""

    __slots__ = ("graph", "inputs", "input_index", "outputs", "out_def", "verified", "copy_outputs")

    def __init__(self, graph, inputs, input_index, outputs, out_def, copy_outputs):
        self.graph = graph
        self.inputs = inputs  # one static device buffer per array leaf of the arguments
        self.input_index = input_index  # positions of those leaves among all leaves
        self.outputs = outputs  # per output leaf: a static device array, or a constant
        self.out_def = out_def
        self.copy_outputs = copy_outputs
        self.verified = False

    def replay(self, leaves):
        """Copy the array leaves of ``leaves`` into the static inputs, launch the graph (both on
        the current stream) and return the result tree."""
        cupy = arraylib.cupy_module()
        runtime = cupy.cuda.runtime
        switch = runtime.getDevice() != self.graph.device_id
        device = cupy.cuda.Device(self.graph.device_id) if switch else contextlib.nullcontext()
        with device:
            stream_pointer = cupy.cuda.get_current_stream().ptr
            for buffer, position in zip(self.inputs, self.input_index, strict=True):
                source = leaves[position]
                if source.flags.c_contiguous:
                    # (a static output fed back as this input may be the buffer itself)
                    if buffer.nbytes and source.data.ptr != buffer.data.ptr:
                        runtime.memcpyAsync(
                            buffer.data.ptr,
                            source.data.ptr,
                            buffer.nbytes,
                            _MEMCPY_DEVICE_TO_DEVICE,
                            stream_pointer,
                        )
                else:
                    buffer[...] = source
            self.graph.launch()
            outputs = self.outputs
            if self.copy_outputs:
                outputs = [leaf.copy() if _is_device_array(leaf) else leaf for leaf in outputs]
        return tree_unflatten(self.out_def, outputs)


def record_graph(step_fn, leaves, treedef, *, copy_outputs=True):
    """Capture ``step_fn`` called on static device copies of ``leaves`` (the flattened
    arguments, ``treedef`` their structure): ``(GraphStep, result of the warm-up call)``.

    Array leaves must be CuPy arrays on one device; NumPy arrays are refused (they would be
    frozen into the graph); other leaves are constants, as on the CPU path.
    """
    cupy = _require_cupy()
    devices = set()
    for position, leaf in enumerate(leaves):
        if _is_device_array(leaf):
            devices.add(leaf.device.id)
        elif isinstance(leaf, (_np.ndarray, _np.generic)):
            raise CaptureError(
                f"capture: argument leaf {position} is a NumPy {type(leaf).__name__} (shape "
                f"{_np.shape(leaf)}) among CuPy arrays; a CUDA graph would freeze its values. "
                "Pass it "
                "as a CuPy array (cupy.asarray) or as a Python number"
            )
    if len(devices) != 1:
        raise CaptureError(
            f"capture: the array arguments are on devices {sorted(devices)}; a graph runs on one"
        )
    device_id = devices.pop()
    with cupy.cuda.Device(device_id):
        inputs, input_index, watched = [], [], []
        for position, leaf in enumerate(leaves):
            if _is_device_array(leaf):
                buffer = cupy.empty(leaf.shape, dtype=leaf.dtype)
                buffer[...] = leaf
                inputs.append(buffer)
                input_index.append(position)
                watched.append(buffer)
            else:
                watched.append(leaf)
        arguments = tree_unflatten(treedef, watched)
        graph, warm_result, static_result = capture_graph(lambda: step_fn(*arguments))
    out_leaves, out_def = tree_flatten(static_result)
    outputs = []
    for leaf in out_leaves:
        if isinstance(leaf, Tracer):
            raise CaptureError(
                f"capture: the step returned a {type(leaf).__name__}; return plain arrays "
                "(e.g. from chainrule.value_and_grad, or tensor.data)"
            )
        outputs.append(leaf.copy() if isinstance(leaf, _np.ndarray) else leaf)
    return GraphStep(graph, inputs, input_index, outputs, out_def, copy_outputs), warm_result
