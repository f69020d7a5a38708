"""A simulated CUDA device in host memory, with CuPy's placement rules, for machines without a GPU.

Code that runs on the CPU can still be wrong on a GPU in one common way: it makes a host (NumPy)
array next to device arrays (``np.zeros(shape)``, ``np.arange(n) == labels``, a NumPy constant)
or converts a device array to the host without saying so. CuPy refuses both: a ``cupy`` ufunc
given a ``numpy.ndarray`` operand raises ``TypeError``, and ``np.asarray(cupy_array)`` raises
instead of copying. :func:`simulate_cuda` makes ``"cuda"`` a device whose arrays
(:class:`SimulatedArray`) follow those same rules while computing with NumPy, so the whole engine,
the neural-network layers, the optimizers, the Trainer and the CLI's ``--device cuda`` can be run
and tested where no GPU is: every host array that would break on a real GPU breaks here too, with
an error naming the NumPy function and the operand.

>>> import numpy as np, chainrule as cr
>>> from chainrule.backend.device import to_device, device_of
>>> from chainrule.backend.simulated_cuda import simulate_cuda
>>> with simulate_cuda():
...     w = to_device(np.array([1.0, 2.0]), "cuda")
...     g = cr.grad(lambda w: (w * w).sum())(w)
...     print(device_of(g), g.get())
cuda [2. 4.]

What it checks: placement (no host ``ndarray`` mixed into a device operation, in ufuncs, NumPy
functions, indexing assignments; no implicit device-to-host conversion; operands of one operation
on one device). What it does not: which NumPy functions CuPy implements, dtype promotion
differences, performance, or anything about streams and kernels. It stands in for CuPy only
inside :func:`chainrule.engine.arraylib`'s device lookup, which is where chainrule asks for CuPy.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from operator import attrgetter

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from ..engine import arraylib

__all__ = ["SimulatedArray", "SimulatedCuPy", "count_kernels", "simulate_cuda"]


class _SimulatedDevice:
    """What ``cupy.ndarray.device`` is: a device with an ``id``."""

    __slots__ = ("id",)

    def __init__(self, index):
        self.id = index

    def __eq__(self, other):
        return isinstance(other, _SimulatedDevice) and other.id == self.id

    def __hash__(self):
        return hash(("simulated-cuda", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id} (simulated)>"


def _host_operand_error(where, value):
    return TypeError(
        f"{where}: unsupported operand of type {type(value).__module__}.{type(value).__name__} "
        f"with shape {getattr(value, 'shape', ())} on a CUDA device: a host (NumPy) array "
        "cannot be mixed with device arrays (CuPy raises here too); build it on the device, "
        "e.g. with the namespace of the other operand (chainrule.engine.arraylib.namespace_of) "
        "or chainrule.backend.device.array"
    )


class _Unwrapper:
    """Turns device arrays into their host buffers, refusing host arrays, for one operation."""

    __slots__ = ("where", "device")

    def __init__(self, where):
        self.where = where
        self.device = None

    def __call__(self, value):
        kind = type(value)
        if kind is SimulatedArray:
            if self.device is None:
                self.device = value.device
            elif value.device != self.device:
                raise ValueError(
                    f"{self.where}: operands on CUDA devices {self.device.id} and "
                    f"{value.device.id} "
                    "(simulated); move them to one device first"
                )
            return value._host
        if isinstance(value, np.ndarray):
            raise _host_operand_error(self.where, value)
        if kind in (list, tuple):
            return kind(self(item) for item in value)
        return value  # Python and NumPy scalars, dtypes, None, slices, strings...


def _wrap(value, device):
    """Host results back on ``device``: arrays and NumPy scalars become device arrays (as in CuPy,
    where reductions return 0-d arrays); tuples and lists are wrapped item by item."""
    if isinstance(value, np.ndarray):
        return SimulatedArray(value, device)
    if isinstance(value, np.generic):
        return SimulatedArray(np.asarray(value), device)
    if type(value) in (list, tuple):
        return type(value)(_wrap(item, device) for item in value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # linalg's named results
        return type(value)(*(_wrap(item, device) for item in value))
    return value


# The ufunc methods CuPy 14 implements (``cupy/_core/_kernel.pyx``): ``reduce`` and
# ``accumulate`` of add and multiply only (through sum/prod and cumsum/cumprod, without
# ``initial`` or ``where``), ``at`` of the ufuncs with a scatter kernel, ``reduceat`` of add.
# Everything else raises NotImplementedError there, so it does here.
_CUPY_UFUNC_METHODS = {
    "reduce": {"add", "multiply"},
    "accumulate": {"add", "multiply"},
    "reduceat": {"add"},
    "at": {"add", "maximum", "minimum"},
}


def _check_ufunc_method(ufunc, method, kwargs, where):
    supported = _CUPY_UFUNC_METHODS.get(method)
    if supported is None:
        return  # __call__ and outer: every ufunc
    if ufunc.__name__ not in supported:
        raise NotImplementedError(
            f"{where}: CuPy does not implement `{ufunc.__name__}.{method}` (only for "
            f"{', '.join(sorted(supported))}); use the named function instead (numpy.max, "
            "numpy.min, numpy.cumsum, ...), which dispatches to CuPy"
        )
    if method == "reduce" and ({"initial", "where"} & kwargs.keys()):
        raise TypeError(f"{where}: CuPy's reduce takes no `initial` or `where` argument")


# Kernel launches, counted while :func:`count_kernels` is active: every device operation that
# would launch work on a GPU (a ufunc, a reduction, a product, a copy, a fill, a scatter), not
# the ones that only make a view (reshape, transpose, broadcasting, basic indexing).
_kernels = None

#: NumPy functions and array methods that make views or read metadata: no kernel on a GPU.
_VIEWS = frozenset(
    {
        "reshape",
        "transpose",
        "permute_dims",
        "broadcast_to",
        "broadcast_arrays",
        "expand_dims",
        "squeeze",
        "swapaxes",
        "moveaxis",
        "view",
        "shape",
        "ndim",
        "size",
        "result_type",
        "may_share_memory",
        "shares_memory",
        "atleast_1d",
        "atleast_2d",
        "iscomplexobj",
        "isrealobj",
        "get",
        "item",
        "tolist",
        "empty",
        "empty_like",
    }
)


def _launch(name):
    if _kernels is not None:
        _kernels[name] += 1


@contextmanager
def count_kernels():
    """Count the kernels the device operations inside the block would launch on a GPU, by
    operation (a ``collections.Counter``). On a GPU each launch costs microseconds of host time
    whatever its size, so for small networks this count, not the arithmetic, sets a step's time.

    >>> import numpy as np, chainrule as cr
    >>> from chainrule.backend.device import to_device
    >>> with simulate_cuda():
    ...     w = to_device(np.ones(3), "cuda")
    ...     with count_kernels() as kernels:
    ...         _ = cr.grad(lambda w: cr.numpy.sum(w * w))(w)
    >>> sum(kernels.values()) > 0
    True
    """
    global _kernels
    saved, _kernels = _kernels, Counter()
    try:
        yield _kernels
    finally:
        _kernels = saved


def _current_device():
    return _SimulatedDevice(_state.device_index)


class SimulatedArray(NDArrayOperatorsMixin):
    """An array "on a CUDA device", held in host memory. Behaves like ``cupy.ndarray``: NumPy's
    ufuncs and functions dispatch to it, the operators are ufuncs, ``.get()`` copies to the host,
    and ``np.asarray(array)`` is an error."""

    __slots__ = ("_host", "device")
    __array_priority__ = 100

    def __init__(self, host, device=None):
        self._host = host
        self.device = _current_device() if device is None else device

    # The placement rules -------------------------------------------------------------------

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion of a CUDA array (simulated) to a NumPy array is not allowed "
            "(CuPy refuses it too); use .get() or chainrule.backend.device.to_numpy to copy it to "
            "the host"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        _check_ufunc_method(ufunc, method, kwargs, where)
        unwrap = _Unwrapper(where)
        if method == "at":  # (target, indices[, values]): the indices are an index, as in a[...]
            if type(inputs[1]) in (tuple, list):
                # CuPy's __array_ufunc__ answers NotImplemented for an operand that is neither an
                # array nor a scalar, so NumPy raises; cupy.<ufunc>.at itself takes such an index.
                raise TypeError(
                    f"{where}: operand type(s) all returned NotImplemented: CuPy refuses a "
                    f"{type(inputs[1]).__name__} index through NumPy's ufunc; call the namespace's "
                    f"{ufunc.__name__}.at directly"
                )
            target = unwrap(inputs[0])
            indices = _index_on_host(inputs[1], unwrap.device)
            host_inputs = [target, indices, *(unwrap(value) for value in inputs[2:])]
        else:
            host_inputs = [unwrap(value) for value in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(unwrap(value) for value in out)
        result = getattr(ufunc, method)(*host_inputs, **kwargs)
        _launch(where)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result, unwrap.device)

    def __array_function__(self, func, types, args, kwargs):
        unwrap = _Unwrapper(f"numpy.{func.__name__}")
        host_args = [unwrap(value) for value in args]
        host_kwargs = {name: unwrap(value) for name, value in kwargs.items()}
        result = func(*host_args, **host_kwargs)
        if func.__name__ not in _VIEWS:
            _launch(f"numpy.{func.__name__}")
        return _wrap(result, unwrap.device)

    # What cupy.ndarray offers --------------------------------------------------------------

    def get(self):
        """A NumPy copy of the values (CuPy's device-to-host copy)."""
        return self._host.copy()

    shape = property(attrgetter("_host.shape"))
    dtype = property(attrgetter("_host.dtype"))
    ndim = property(attrgetter("_host.ndim"))
    size = property(attrgetter("_host.size"))
    strides = property(attrgetter("_host.strides"))
    itemsize = property(attrgetter("_host.itemsize"))
    nbytes = property(attrgetter("_host.nbytes"))

    @property
    def T(self):
        return SimulatedArray(self._host.T, self.device)

    @property
    def mT(self):
        return SimulatedArray(self._host.mT, self.device)

    def __len__(self):
        return len(self._host)

    def __iter__(self):
        for index in range(len(self._host)):
            yield self[index]

    def __getitem__(self, index):
        host_index = _index_on_host(index, self.device)
        try:
            result = self._host[host_index]
        except IndexError:
            # CuPy wraps out-of-range integer-array indices around instead of raising.
            result = self._host[_wrapped_around(host_index, self._host.shape)]
        if isinstance(result, np.ndarray) and not np.may_share_memory(result, self._host):
            _launch("ndarray.__getitem__ (gather)")  # integer-array or boolean indexing copies
        return _wrap(result, self.device)

    def __setitem__(self, index, value):
        unwrap = _Unwrapper("ndarray.__setitem__")
        unwrap.device = self.device
        self._host[_index_on_host(index, self.device)] = unwrap(value)
        _launch("ndarray.__setitem__")

    def __getattr__(self, name):
        # Methods (reshape, astype, sum, copy, ...) run on the host buffer, their array results
        # coming back on this device; a host-array argument is refused like an operand.
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(self._host, name)
        if not callable(attribute):
            return _wrap(attribute, self.device)
        device = self.device

        def method(*args, **kwargs):
            unwrap = _Unwrapper(f"ndarray.{name}")
            unwrap.device = device
            result = attribute(
                *[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}
            )
            host = self._host
            if name not in _VIEWS and not (
                isinstance(result, np.ndarray) and np.may_share_memory(result, host)
            ):
                _launch(f"ndarray.{name}")
            return _wrap(result, device)

        return method

    def __float__(self):
        return float(self._host)

    def __int__(self):
        return int(self._host)

    def __index__(self):
        return self._host.__index__()

    def __bool__(self):
        return bool(self._host)

    def __complex__(self):
        return complex(self._host)

    def __repr__(self):
        return (
            f"array({np.array2string(self._host, separator=', ')}, device=cuda:{self.device.id} "
            "simulated)"
        )

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("a simulated CUDA array cannot be exported through DLPack")


def _wrapped_around(index, shape):
    """``index`` with each integer array taken modulo its axis's length (for indices made only of
    integers, slices and integer arrays, one per leading axis; others are returned unchanged)."""
    items = index if type(index) is tuple else (index,)
    if len(items) > len(shape) or any(item is None or item is Ellipsis for item in items):
        return index
    wrapped = tuple(
        item % shape[axis] if isinstance(item, np.ndarray) and item.dtype.kind in "iu" else item
        for axis, item in enumerate(items)
    )
    return wrapped if type(index) is tuple else wrapped[0]


def _index_on_host(index, device):
    """An index with its device arrays replaced by their host buffers. Host index arrays are
    accepted, as CuPy accepts them (it copies them to the device)."""
    items = index if type(index) is tuple else (index,)
    unwrap = _Unwrapper("ndarray.__getitem__")
    unwrap.device = device
    host_items = []
    for item in items:
        host_items.append(item if isinstance(item, np.ndarray) else unwrap(item))
    return tuple(host_items) if type(index) is tuple else host_items[0]


# ------------------------------------------------------------------------------------------------
# The namespace: what chainrule asks of ``cupy``
# ------------------------------------------------------------------------------------------------


class _DeviceState(threading.local):
    """The current device of each thread, as CUDA keeps it, and the ones each ``with`` replaced."""

    def __init__(self):
        self.device_index = 0
        self.replaced: list[int] = []


_state = _DeviceState()


class _DeviceContext:
    """``cupy.cuda.Device(index)``: a context manager making ``index`` the current device."""

    def __init__(self, index=0):
        self.id = int(index)

    def __enter__(self):
        if not 0 <= self.id < _runtime.device_count:
            raise RuntimeError(
                f"cudaErrorInvalidDevice: invalid device ordinal {self.id} (simulated)"
            )
        _state.replaced.append(_state.device_index)
        _state.device_index = self.id
        return self

    def __exit__(self, *exc_info):
        _state.device_index = _state.replaced.pop()
        return False


class _Runtime:
    device_count = 1

    def getDeviceCount(self):  # noqa: N802  (CuPy's name)
        return self.device_count


_runtime = _Runtime()


class _Cuda:
    Device = _DeviceContext
    runtime = _runtime


def _from_host(value, dtype=None):
    if type(value) is SimulatedArray:
        return value if dtype is None or value.dtype == dtype else value.astype(dtype)
    _launch("copy host to device")
    return SimulatedArray(np.array(value, dtype=dtype), _current_device())


class SimulatedCuPy:
    """The ``cupy`` module as chainrule uses it: ``asarray``/``array`` copy host values to the
    current device, ``cuda.Device`` and ``cuda.runtime.getDeviceCount`` manage devices, and every
    other NumPy name runs NumPy with the placement rules (creation functions put their result on
    the current device)."""

    __name__ = "chainrule.backend.simulated_cuda"
    ndarray = SimulatedArray
    cuda = _Cuda

    def asarray(self, value, dtype=None):
        return _from_host(value, dtype)

    def array(self, value, dtype=None, copy=True):
        moved = _from_host(value, dtype)
        return moved.copy() if copy and moved is value else moved

    def asnumpy(self, value):
        return value.get() if type(value) is SimulatedArray else np.asarray(value)

    def get_array_module(self, *arrays):
        return self if any(type(a) is SimulatedArray for a in arrays) else np

    def __getattr__(self, name):
        attribute = getattr(np, name)
        if not callable(attribute) or isinstance(attribute, type):
            return attribute  # dtypes, constants, classes

        def function(*args, **kwargs):
            unwrap = _Unwrapper(f"cupy.{name}")
            result = attribute(
                *[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}
            )
            if name not in _VIEWS:
                _launch(f"cupy.{name}")
            return _wrap(result, unwrap.device or _current_device())

        function.__name__ = name
        return _SimulatedUfunc(attribute, function) if isinstance(attribute, np.ufunc) else function


class _SimulatedUfunc:
    """``cupy.<ufunc>``: callable, with the methods CuPy implements for it (``cupy.add.at``...)."""

    def __init__(self, ufunc, function):
        self._ufunc = ufunc
        self._function = function
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)

    def __getattr__(self, method):
        if method not in ("reduce", "accumulate", "reduceat", "at", "outer"):
            raise AttributeError(method)
        bound = getattr(self._ufunc, method)
        where = f"cupy.{self.__name__}.{method}"

        def call(*args, **kwargs):
            _check_ufunc_method(self._ufunc, method, kwargs, where)
            unwrap = _Unwrapper(where)
            if method == "at":  # an index (tuples, host index arrays) as in a[...]
                target = unwrap(args[0])
                values = [unwrap(a) for a in args[2:]]
                bound(target, _index_on_host(args[1], unwrap.device), *values, **kwargs)
                _launch(where)
                return None
            result = bound(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()})
            _launch(where)
            return _wrap(result, unwrap.device or _current_device())

        return call


@contextmanager
def simulate_cuda(device_count: int = 1):
    """Inside the block, ``"cuda"`` (and ``"cuda:N"`` for N < ``device_count``) is a simulated
    device: :func:`chainrule.backend.device.device`, ``Tensor.to("cuda")``, ``to_device`` and
    everything built on them work and produce :class:`SimulatedArray` values. Not thread-safe
    (process-wide, like :func:`chainrule.backend.namespace.use_namespace`); blocks do not nest."""
    namespace = SimulatedCuPy()
    saved_count = _runtime.device_count
    _runtime.device_count = int(device_count)
    restore = arraylib.install_cuda_namespace(namespace, SimulatedArray)
    try:
        yield namespace
    finally:
        restore()
        _runtime.device_count = saved_count
