"""Data-parallel training over MPI ranks.

The Trainer sees a group of processes through a *communicator* (the interface is
:class:`chainrule.training.parallel.LocalCommunicator`, a single process). This package holds the
MPI one, :class:`MPICommunicator`, built on mpi4py's buffer API: every collective moves one
contiguous NumPy array, never a pickled object. mpi4py is imported only when an
``MPICommunicator`` is created, so the single-process path needs no MPI at all.

    mpirun -n 2 chainrule train --data digits --distributed

A rank that raises, or whose command fails, ends the whole job through ``MPI_Abort`` with a line
``chainrule: rank N failed: ...`` instead of leaving the other ranks waiting in a collective
forever (see :mod:`.mpi`). :mod:`.packing` lays a step's gradient, loss and hits into the one
buffer that is all-reduced; :mod:`.cost` is the cost model that says when more ranks pay off.
"""

from .cost import (
    allreduce_seconds,
    break_even_batch,
    parallel_speedup,
    ranks_worth_using,
    step_seconds,
)
from .mpi import MPICommunicator, failure_message, mpi_available
from .packing import PackedReductions

__all__ = [
    "MPICommunicator",
    "PackedReductions",
    "allreduce_seconds",
    "break_even_batch",
    "failure_message",
    "mpi_available",
    "parallel_speedup",
    "ranks_worth_using",
    "step_seconds",
]
