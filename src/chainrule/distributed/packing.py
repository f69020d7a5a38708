"""Packing a data-parallel step into one all-reduce.

A step of data-parallel training has to sum, over the ranks, the share-weighted gradient (or the
coefficients of a seeded estimate), the share-weighted loss and the count of correct predictions.
Sending each separately costs one collective, with its latency, per leaf. :class:`PackedReductions`
instead lays them end to end in one flat host buffer, ``[θ-gradient..., loss, hits]`` or
``[coefficients..., loss, hits]``, sums that with a single ``allreduce_sum``, and reads the
result back as views in the gradient's own shapes, dtypes and device.

It is a mixin: any communicator with ``allreduce_sum`` gains the two methods the Trainer calls on
a communicator of more than one rank (:class:`~chainrule.distributed.MPICommunicator` is one).
The Trainer never imports this module; it calls the methods on the communicator it is handed.

>>> import numpy as np
>>> from chainrule.training.parallel import LocalCommunicator
>>> class TwoEqualRanks(PackedReductions, LocalCommunicator):
...     size = 2
...     def allreduce_sum(self, array):
...         return 2 * super().allreduce_sum(array)
>>> comm = TwoEqualRanks()
>>> loss, grads, hits = comm.allreduce_gradient(1.5, {"w": np.ones(3)}, 0.5, 4.0)
>>> loss, grads["w"], hits, comm.bytes_reduced  # one buffer of 3 + 2 float64
(1.5, array([1., 1., 1.]), 8, 40)
"""

from __future__ import annotations

from ..backend.device import to_numpy
from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw
from ..transforms.pytree import tree_flatten, tree_unflatten


class PackedReductions:
    """The Trainer's per-step reductions on top of ``self.allreduce_sum``, one call each.

    ``share`` is this rank's fraction of the global batch; a rank whose share is empty (a global
    batch smaller than the ranks) adds zeros, not the NaN mean of no examples. ``hits`` is this
    rank's count of correct predictions; the summed count comes back as an ``int``.
    """

    _packing_buffer = None  # the flat host buffer of the last gradient step, reused

    def allreduce_gradient(self, loss, grads, share: float, hits: float):
        """``(global loss, global gradient pytree, global hits)`` from this rank's, in ONE
        all-reduce of [θ-gradient, loss, hits]. The gradient is scaled straight into a flat buffer
        kept across steps and read back as views (ravel + astype + concatenate + unravel cost ~4x
        more per step at 10^6 parameters). The buffer is host memory: a gradient on a GPU crosses
        to the host and back."""
        leaves, treedef = tree_flatten(grads)
        leaves = [raw(leaf) for leaf in leaves]
        where = arraylib.device_of(leaves[0]) if leaves else "cpu"
        leaves = [to_numpy(leaf) for leaf in leaves] if where != "cpu" else leaves
        size = sum(leaf.size for leaf in leaves)
        buffer = self._packing_buffer
        if buffer is None or buffer.size != size + 2:
            buffer = self._packing_buffer = xp.empty(size + 2)
        offset = 0
        for leaf in leaves:
            part = buffer[offset : offset + leaf.size]
            if share:
                xp.multiply(leaf.reshape(-1), share, out=part)
            else:
                part[...] = 0.0
            offset += leaf.size
        buffer[-2] = float(loss) * share if share else 0.0
        buffer[-1] = hits
        total = self.allreduce_sum(buffer)
        out, offset = [], 0
        for leaf in leaves:
            piece = (
                total[offset : offset + leaf.size]
                .reshape(leaf.shape)
                .astype(leaf.dtype, copy=False)
            )
            out.append(piece if where == "cpu" else arraylib.to_device(piece, where))
            offset += leaf.size
        return float(total[-2]), tree_unflatten(treedef, out), int(round(float(total[-1])))

    def allreduce_seeded(self, loss, seeded, share: float, hits: float):
        """The same for a seeded estimate (``seeded.coefficients`` times the directions drawn from
        its key): every rank drew the same directions from the same key, so only the coefficients
        (and the loss and hits) cross the wire. ``seeded`` is updated in place and returned."""
        coefficients = seeded.coefficients * share if share else xp.zeros_like(seeded.coefficients)
        scalars = [float(loss) * share if share else 0.0, hits]
        total = self.allreduce_sum(xp.concatenate([coefficients, xp.asarray(scalars)]))
        seeded.coefficients = total[:-2]
        return float(total[-2]), seeded, int(round(float(total[-1])))
