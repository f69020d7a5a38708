"""What one gradient cost: the counts every method reports, and how FLOPs and memory are measured.

The counts are exact by construction (each method knows what it ran). FLOPs and peak memory are
*measured* only when asked (``measure=True``), because measuring costs time itself: FLOPs through
:func:`chainrule.count` (each primitive's FLOP rule, summed as it runs), peak memory with
:mod:`tracemalloc` (NumPy reports its allocations to it), as the peak above what was already
allocated when the method started.

On a GPU the counts and FLOPs are the same, but ``peak_bytes`` is still the host's: tracemalloc
does not see device allocations (CuPy's memory pool would have to be asked). ``seconds`` there
includes the GPU's work only because every method reads its losses back to the host, which
waits for the device.
"""

from __future__ import annotations

import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

from ..transforms.counting import count


@dataclass
class Cost:
    """The work behind one gradient (or one update).

    ``loss_evaluations``: plain evaluations of the loss (no derivative carried), what
    finite differences and zeroth-order methods spend. ``forward_passes``: forward passes that
    carry derivative work (recorded for a backward pass, or carrying tangents).
    ``jvp_passes``: tangent directions pushed forward (a batched sweep of k directions counts k).
    ``vjp_passes``: cotangents pulled back. ``local_passes``: forward-and-backward passes through
    a single layer's local loss (LocoProp's inner steps), not through the network. ``flops`` and
    ``peak_bytes`` are ``None`` unless measured. ``seconds`` is the wall time of the call.
    """

    loss_evaluations: int = 0
    forward_passes: int = 0
    jvp_passes: int = 0
    vjp_passes: int = 0
    local_passes: int = 0
    flops: int | None = None
    peak_bytes: int | None = None
    seconds: float = 0.0

    @property
    def passes(self) -> int:
        """Network passes of any kind: the x-axis of "loss vs passes" (a JVP or VJP direction
        counts as one pass, as the cheap-gradient principle prices it within a small constant)."""
        return self.loss_evaluations + self.forward_passes + self.jvp_passes + self.vjp_passes

    def __add__(self, other: Cost) -> Cost:
        def plus(a, b):
            return None if a is None or b is None else a + b

        return Cost(
            self.loss_evaluations + other.loss_evaluations,
            self.forward_passes + other.forward_passes,
            self.jvp_passes + other.jvp_passes,
            self.vjp_passes + other.vjp_passes,
            self.local_passes + other.local_passes,
            plus(self.flops, other.flops),
            None
            if self.peak_bytes is None or other.peak_bytes is None
            else max(self.peak_bytes, other.peak_bytes),
            self.seconds + other.seconds,
        )

    def as_dict(self) -> dict:
        out = asdict(self)
        out["passes"] = self.passes
        return out


COST_FIELDS = tuple(f.name for f in fields(Cost))


def forward_flops(loss_fn, params, batch) -> int:
    """FLOPs of one evaluation of ``loss_fn`` at ``params``, counted by running it once on
    Tensors (plain-array evaluations run NumPy's own operators, which nothing can observe)."""
    from ..engine.tensor import Tensor
    from ..transforms.pytree import tree_map

    tensors = tree_map(lambda leaf: Tensor(leaf), params)
    with count() as counter:
        loss_fn(tensors, batch)
    return int(counter.flops)


@contextmanager
def measuring(cost: Cost, measure: bool, plain=None):
    """Fill ``cost.seconds`` always and ``cost.flops`` / ``cost.peak_bytes`` when ``measure``.

    Traced work (recorded forward and backward passes, tangent sweeps) is counted as it runs.
    ``plain=(loss_fn, params, batch, extra_flops)`` is for methods made of plain loss
    evaluations: their FLOPs are ``cost.loss_evaluations`` times one evaluation's (counted once,
    after the timed part) plus ``extra_flops()``, the vector arithmetic of their perturbations.
    """
    if not measure:
        started = time.perf_counter()
        try:
            yield cost
        finally:
            cost.seconds = time.perf_counter() - started
        return
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        if plain is None:
            with count() as counter:
                yield cost
        else:
            yield cost
    finally:
        cost.seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        if not was_tracing:
            tracemalloc.stop()
    cost.peak_bytes = max(0, int(peak - base))
    if plain is None:
        cost.flops = int(counter.flops)
    else:
        loss_fn, params, batch, extra_flops = plain
        cost.flops = cost.loss_evaluations * forward_flops(loss_fn, params, batch) + int(
            extra_flops()
        )
