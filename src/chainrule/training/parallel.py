"""What the Trainer needs from a group of processes training one model together.

A *communicator* is the Trainer's whole view of data parallelism. The single-process one below
is the default and does nothing; ``chainrule.distributed.MPICommunicator`` implements the same
five members on MPI. The Trainer decides what is reduced; the communicator it is handed decides
how it crosses the wire:

* each rank takes its share of every global batch (:func:`shard_bounds`, deterministic: the
  global batch order is a function of the seed and the epoch, the same on every rank);
* exact gradients, weighted by the rank's share of the batch, are summed with **one**
  all-reduce per step: a communicator of more than one rank also has
  ``allreduce_gradient(loss, grads, share, hits)``, which packs them into one flat θ-sized
  buffer (``chainrule.distributed.packing.PackedReductions`` provides it on ``allreduce_sum``);
* zeroth-order and forward-gradient estimates are sums of seeded random directions, identical on
  every rank, so ``allreduce_seeded(loss, seeded, share, hits)`` sums only their scalar
  coefficients (a few bytes instead of θ);
* the initial parameters come from rank 0 (``broadcast``), and only rank 0 writes checkpoints.

This layer imports nothing from ``chainrule.distributed``: the packing arrives with the
communicator (a single process never needs it).
"""

from __future__ import annotations

from ..engine.arraylib import xp


class LocalCommunicator:
    """One process: every collective is the identity."""

    rank = 0
    size = 1
    bytes_reduced = 0  # payload bytes this rank has sent through allreduce_sum

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum(self, array):
        """The element-wise sum of ``array`` over all ranks (a new array)."""
        array = xp.array(array, copy=True)
        self.bytes_reduced += array.nbytes
        return array

    def broadcast(self, array, root: int = 0):
        """Rank ``root``'s ``array`` on every rank."""
        return xp.array(array, copy=True)

    def barrier(self) -> None:
        """Wait until every rank arrives."""

    def abort(self, message: str, code: int = 1) -> None:  # pragma: no cover - ends the process
        """End every rank's process with ``message`` (a single process just exits)."""
        raise SystemExit(f"{message}")


def shard_bounds(count: int, rank: int, size: int) -> tuple[int, int]:
    """The slice ``[start, stop)`` of a global batch of ``count`` examples that ``rank`` of
    ``size`` trains on: contiguous, the first ``count % size`` ranks one example larger.

    >>> [shard_bounds(10, r, 3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    base, extra = divmod(int(count), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
