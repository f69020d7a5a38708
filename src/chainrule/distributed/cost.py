"""When data parallelism pays: ring all-reduce time against the compute it saves.

One data-parallel step on ``N`` ranks does ``1/N`` of the global batch's forward and backward
work on each rank, then sums the flat gradient with one all-reduce. A ring all-reduce of ``B``
bytes sends ``2(N-1)/N · B`` bytes from every rank in ``2(N-1)`` rounds (reduce-scatter, then
all-gather), so with link bandwidth ``β`` (bytes/s) and per-message latency ``α`` (s)

    T_allreduce(N) = 2(N-1)/N · B/β + 2(N-1)·α

With ``t`` the compute seconds per example, ``G`` the global batch, ``u`` the per-step work every
rank repeats on all of θ (the optimizer update, the step's fixed Python overhead) and ``p`` the
data-parallel bookkeeping a single process skips (copying the gradient into the flat all-reduce
buffer and back),

    T_step(1) = G·t + u            T_step(N) = G·t/N + u + p + T_allreduce(N)

``N`` ranks beat one when ``G·t·(1 - 1/N) > T_allreduce(N) + p``: the global batch must exceed
:func:`break_even_batch`, and the speed-up can never pass ``(G·t + u)/(u + p)``. For a dense
MLP, ``t ≈ 6P/F`` (P parameters, F FLOP/s) and ``B = 8P`` (float64), so the bandwidth part of
the bound is ``G > 8F/(3β)`` whatever the width, and the latency part ``F·N·α/(3P)`` shrinks as
the network widens. A zeroth-order step all-reduces a few scalars (``B`` ≈ 0) and is bounded by
latency alone.

>>> round(allreduce_seconds(8e6, ranks=2, bandwidth=1e9, latency=0.0), 6)
0.008
>>> round(parallel_speedup(compute_seconds=0.1, nbytes=8e6, ranks=2, bandwidth=1e9, latency=0.0), 3)
1.724
"""

from __future__ import annotations

import math


def _check_ranks(ranks) -> int:
    if isinstance(ranks, bool) or int(ranks) != ranks or int(ranks) < 1:
        raise ValueError(f"ranks must be a positive integer, got {ranks!r}")
    return int(ranks)


def allreduce_seconds(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` over ``ranks`` ranks (0 for one rank).

    >>> allreduce_seconds(1000, ranks=1, bandwidth=1e9, latency=1e-5)
    0.0
    >>> round(allreduce_seconds(0, ranks=4, bandwidth=1e9, latency=1e-5), 9)
    6e-05
    """
    ranks = _check_ranks(ranks)
    if bandwidth <= 0 or latency < 0 or nbytes < 0:
        raise ValueError(
            f"allreduce_seconds needs bandwidth > 0, latency >= 0 and nbytes >= 0, got "
            f"bandwidth={bandwidth}, latency={latency}, nbytes={nbytes}"
        )
    rounds = 2 * (ranks - 1)
    return rounds / ranks * nbytes / bandwidth + rounds * latency


def step_seconds(
    compute_seconds: float,
    nbytes: float,
    ranks: int,
    bandwidth: float,
    latency: float,
    serial_seconds: float = 0.0,
    overhead_seconds: float = 0.0,
) -> float:
    """``T_step(N)``: ``compute_seconds`` (one process's batch compute, which splits), plus
    ``serial_seconds`` (``u``, repeated by every rank), plus on more than one rank
    ``overhead_seconds`` (``p``) and the all-reduce of ``nbytes``.

    >>> step_seconds(0.1, nbytes=0, ranks=1, bandwidth=1e9, latency=0, serial_seconds=0.01)
    0.11
    """
    ranks = _check_ranks(ranks)
    step = compute_seconds / ranks + serial_seconds
    if ranks > 1:
        step += overhead_seconds + allreduce_seconds(nbytes, ranks, bandwidth, latency)
    return step


def _step_on(compute_seconds, nbytes, bandwidth, latency, serial_seconds, overhead_seconds):
    """:func:`step_seconds` with everything but the number of ranks fixed: the one step-time
    model that :func:`parallel_speedup` and :func:`ranks_worth_using` evaluate."""

    def step(ranks):
        return step_seconds(
            compute_seconds, nbytes, ranks, bandwidth, latency, serial_seconds, overhead_seconds
        )

    return step


def parallel_speedup(
    compute_seconds: float,
    nbytes: float,
    ranks: int,
    bandwidth: float,
    latency: float,
    serial_seconds: float = 0.0,
    overhead_seconds: float = 0.0,
) -> float:
    """``T_step(1) / T_step(N)`` (see :func:`step_seconds` for the arguments)."""
    step = _step_on(compute_seconds, nbytes, bandwidth, latency, serial_seconds, overhead_seconds)
    return step(1) / step(ranks)


def break_even_batch(
    seconds_per_example: float,
    nbytes: float,
    ranks: int,
    bandwidth: float,
    latency: float,
    overhead_seconds: float = 0.0,
) -> float:
    """The global batch above which ``ranks`` ranks take less time per step than one.

    >>> round(break_even_batch(1e-4, nbytes=8e6, ranks=2, bandwidth=1e9, latency=0.0))
    160
    >>> round(break_even_batch(
    ...     1e-4, nbytes=8e6, ranks=2, bandwidth=1e9, latency=0.0, overhead_seconds=0.01
    ... ))
    360
    """
    ranks = _check_ranks(ranks)
    if ranks == 1:
        return 0.0
    if seconds_per_example <= 0:
        raise ValueError(f"seconds_per_example must be > 0, got {seconds_per_example}")
    saved_per_example = seconds_per_example * (1 - 1 / ranks)
    return (
        allreduce_seconds(nbytes, ranks, bandwidth, latency) + overhead_seconds
    ) / saved_per_example


def ranks_worth_using(
    compute_seconds: float,
    nbytes: float,
    bandwidth: float,
    latency: float,
    serial_seconds: float = 0.0,
    overhead_seconds: float = 0.0,
    max_ranks: int = 1024,
) -> int:
    """The number of ranks (up to ``max_ranks``) with the shortest modelled step time.

    >>> ranks_worth_using(compute_seconds=1.0, nbytes=8e6, bandwidth=1e9, latency=1e-4)
    70
    >>> ranks_worth_using(compute_seconds=1e-3, nbytes=8e6, bandwidth=1e9, latency=1e-4)
    1
    """
    step = _step_on(compute_seconds, nbytes, bandwidth, latency, serial_seconds, overhead_seconds)
    best, best_time = 1, math.inf
    for ranks in range(1, _check_ranks(max_ranks) + 1):
        seconds = step(ranks)
        if seconds < best_time:
            best, best_time = ranks, seconds
    return best
