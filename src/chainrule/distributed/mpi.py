"""``MPICommunicator``: the Trainer's communicator on MPI (mpi4py, buffer API only).

Every collective moves one contiguous NumPy array through mpi4py's uppercase methods
(``Allreduce``, ``Bcast``), which hand the array's memory straight to MPI: no pickling, no copy
into Python objects. A data-parallel step therefore costs one ``Allreduce`` of the flat gradient
θ (or of a few scalars for the zeroth-order estimators), and :attr:`bytes_reduced` counts it.

Failures. MPI has no notion of a Python exception: a rank that raises, prints its traceback and
exits normally calls ``MPI_Finalize``, which waits for the other ranks, while they wait in the
next ``Allreduce`` for it. Nothing ever ends. So when the job has more than one rank,

* an uncaught exception on any rank goes through :func:`sys.excepthook`, which prints the
  traceback and ``chainrule: rank N failed: TypeError: ...`` and calls
  ``MPI_COMM_WORLD.Abort``: ``mpirun`` then kills every rank and exits non-zero;
* :meth:`MPICommunicator.run` does the same for a function that raises *or returns a non-zero
  exit status* (a command that catches its own errors and returns 2, as ``chainrule train``
  does, would otherwise hang the job the same way);
* a rank that is killed outright (SIGKILL, out of memory) needs nothing from us: Open MPI's
  ``mpirun`` notices the lost process and ends the job within a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback

import numpy as np

from .packing import PackedReductions

_INSTALL_HINT = (
    "install them with scripts/setup_mpi.sh (Open MPI + mpi4py), or pip install mpi4py next to "
    "an MPI library"
)


def mpi_available() -> bool:
    """Whether mpi4py can be imported (without importing it, which would start MPI)."""
    return importlib.util.find_spec("mpi4py") is not None


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"MPICommunicator needs mpi4py and an MPI library ({error}); {_INSTALL_HINT}"
        ) from None
    return MPI


def _on_host(array):
    """``(host array, device template)``: a GPU array (CuPy's, or any array with
    ``__cuda_array_interface__`` and ``get()``) is copied to host memory for MPI, which is not
    assumed to be CUDA-aware; the template (``None`` for host arrays) brings the result back."""
    if (
        not isinstance(array, np.ndarray)
        and hasattr(array, "__cuda_array_interface__")
        and hasattr(array, "get")
    ):
        return array.get(), array
    return array, None


def _like(result: np.ndarray, template):
    """``result`` on the device and in the array module of ``template`` (as is for ``None``)."""
    if template is None:
        return result
    module = sys.modules[type(template).__module__.partition(".")[0]]
    device = getattr(template, "device", None)
    if hasattr(device, "__enter__"):
        with device:
            return module.asarray(result)
    return module.asarray(result)


def failure_message(rank: int, reason: str) -> str:
    """The one line a failing rank prints before it ends the job.

    >>> failure_message(1, "RuntimeError: out of data")
    'chainrule: rank 1 failed: RuntimeError: out of data'
    """
    return f"chainrule: rank {rank} failed: {reason}"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _exit_status(code) -> int:
    """The process exit status ``sys.exit(code)`` would give (1 for a message)."""
    if code is None:
        return 0
    if isinstance(code, bool) or not isinstance(code, int):
        return 1
    if code == 0:
        return 0
    return code & 0xFF or 1  # the status a shell sees; a multiple of 256 must not read as success


_hook_installed = False


def _install_excepthook(world) -> None:
    """Abort the whole job when any uncaught exception reaches the top of this rank."""
    global _hook_installed
    if _hook_installed:
        return

    def abort_on_uncaught(exc_type, exc, tb):
        try:
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
            print(failure_message(world.Get_rank(), _describe(exc)), file=sys.stderr, flush=True)
        finally:  # Abort does not return: mpirun ends every rank
            world.Abort(130 if issubclass(exc_type, KeyboardInterrupt) else 1)

    sys.excepthook = abort_on_uncaught
    _hook_installed = True


class MPICommunicator(PackedReductions):
    """The ranks of an MPI job as the Trainer's communicator.

    ``comm`` defaults to ``MPI.COMM_WORLD``; the communicator works on a duplicate of it, so its
    collectives never match messages of other code in the same processes. Every rank must call
    each collective in the same order with arrays of the same shape and dtype (the Trainer's
    single flat gradient per step guarantees that). With ``abort_on_failure`` (the default) and
    more than one rank, an uncaught exception on any rank aborts the whole job (see the module
    docstring). The Trainer's per-step gradient packing comes from :class:`PackedReductions`.
    """

    def __init__(self, comm=None, *, abort_on_failure: bool = True):
        MPI = _import_mpi()
        self._MPI = MPI
        self._world = MPI.COMM_WORLD
        self.comm = (comm if comm is not None else self._world).Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.bytes_reduced = 0  # payload bytes this rank has passed to allreduce_sum
        self.abort_on_failure = bool(abort_on_failure)
        if self.abort_on_failure and self.size > 1:
            _install_excepthook(self._world)

    def __repr__(self) -> str:
        return f"MPICommunicator(rank={self.rank}, size={self.size})"

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- collectives -------------------------------------------------------------------------------
    @staticmethod
    def _buffer(array, operation: str) -> np.ndarray:
        source = np.asarray(array)
        if source.dtype == object or source.dtype.kind not in "biufc":
            raise TypeError(f"{operation} needs a numeric array, got dtype {source.dtype}")
        return source if source.flags.c_contiguous else np.ascontiguousarray(source)

    def allreduce_sum(self, array):
        """The element-wise sum of ``array`` over all ranks (a new array, same shape and dtype,
        on the same device)."""
        host, device_template = _on_host(array)
        source = self._buffer(host, "allreduce_sum")
        result = np.empty_like(source)
        self.comm.Allreduce(source, result, op=self._MPI.SUM)
        self.bytes_reduced += source.nbytes
        return _like(result, device_template)

    def broadcast(self, array, root: int = 0):
        """Rank ``root``'s ``array`` on every rank (a new array, on the device of this rank's
        ``array``). Only the root's shape and dtype matter: they travel first, as a short JSON
        header in a byte buffer."""
        if not 0 <= int(root) < self.size:
            raise ValueError(f"broadcast root must be a rank in [0, {self.size}), got {root}")
        root = int(root)
        host, device_template = _on_host(array)
        length = np.zeros(1, dtype=np.int64)
        if self.rank == root:
            source = self._buffer(host, "broadcast")
            header = json.dumps({"dtype": source.dtype.str, "shape": list(source.shape)}).encode()
            length[0] = len(header)
        self.comm.Bcast(length, root=root)
        if self.rank == root:
            header_buffer = np.frombuffer(header, dtype=np.uint8).copy()
        else:
            header_buffer = np.empty(int(length[0]), dtype=np.uint8)
        self.comm.Bcast(header_buffer, root=root)
        if self.rank == root:
            result = source.copy()
        else:
            info = json.loads(header_buffer.tobytes().decode())
            result = np.empty(tuple(info["shape"]), dtype=np.dtype(info["dtype"]))
        self.comm.Bcast(result, root=root)
        return _like(result, device_template)

    def barrier(self) -> None:
        """Wait until every rank arrives."""
        self.comm.Barrier()

    # -- failures ----------------------------------------------------------------------------------
    def abort(self, message: str, code: int = 1) -> None:
        """Print ``chainrule: rank N failed: message`` and end every rank's process with exit
        status ``code`` (``MPI_Abort`` on ``COMM_WORLD``; it does not return)."""
        print(failure_message(self._world.Get_rank(), message), file=sys.stderr, flush=True)
        self._world.Abort(int(code) or 1)

    def run(self, function, *args, **kwargs):
        """``function(*args, **kwargs)``, ending the whole job if it fails on this rank.

        Failing means raising (other than ``SystemExit(0)``) or returning a non-zero integer
        exit status. With one rank nothing is changed: errors propagate and statuses return.
        """
        if self.size == 1 or not self.abort_on_failure:
            return function(*args, **kwargs)
        try:
            result = function(*args, **kwargs)
        except SystemExit as exit_request:
            status = _exit_status(exit_request.code)
            if status == 0:
                raise
            if not isinstance(exit_request.code, int):
                print(exit_request.code, file=sys.stderr, flush=True)
            self.abort(f"exited with status {status}", status)
        except KeyboardInterrupt:
            self.abort("interrupted", 130)
        except BaseException as error:  # noqa: BLE001 - any failure must end every rank
            traceback.print_exc(file=sys.stderr)
            self.abort(_describe(error), 1)
        if isinstance(result, int) and not isinstance(result, bool) and result != 0:
            self.abort(f"exited with status {result}", _exit_status(result))
        return result
