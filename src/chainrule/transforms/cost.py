"""The cost model that picks a Jacobian's mode, and ``explain_jacobian`` to show its reasoning.

A Jacobian of ``f: R^n -> R^m`` costs, in either mode, one evaluation of ``f`` plus one sweep of
derivative rules per direction: n tangent directions in forward mode, m cotangent directions in
reverse mode. Both sweeps touch the same ops, and each op's linear map costs about as much one way
as the other (``t @ W`` forward, ``g @ W.T`` backward), so the decision is essentially n against
m, weighed by what a direction really costs. The model reads those costs off one recorded
evaluation (:class:`~chainrule.transforms.tracing.ReverseTrace`) with the table's FLOP rules:

* **arithmetic per direction**: each op on a path from input to output costs, for every argument
  that carries a derivative, its full FLOPs if it is matmul-like (``t @ W`` is a whole product)
  and otherwise one operation per element of the larger of argument and result (scale, add, copy,
  sum back); reverse mode adds the sums at fan-out, forward mode the sums of several tangents;
  seeding the identity costs n² (forward) or m² (reverse) element writes;
* **interpreter overhead**: every recorded op costs Python dispatches in either mode, and reverse
  mode makes about twice as many per op (it records the op, keeps the backward bookkeeping, and
  the VJP rules call more primitives than the JVP rules);
* **memory**: forward mode keeps no graph but carries n tangents through the widest value; reverse
  mode keeps the recorded graph (every array it saved) and carries m cotangents.

The FLOPs become seconds at two rates, matrix products (BLAS) and element-wise work (memory bound),
and the overhead is seconds per op and per call; the four constants below were measured by
``benchmarks/bench_modes.py`` on one core and only matter in proportion to one another. The faster
estimate wins, a tie goes to forward mode (no graph to keep), and a mode whose memory estimate
exceeds ``memory_limit`` (when one is given) loses to one that fits.

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> plan = cr.explain_jacobian(lambda x: cnp.tanh(np.ones((500, 3)) @ x), np.ones(3))
>>> plan.mode, plan.n_in, plan.n_out
('fwd', 3, 500)
"""

from __future__ import annotations

from dataclasses import dataclass

from .tracing import ReverseTrace

#: Sustained FLOP/s of NumPy's matrix products on one core (measured by bench_modes.py).
MATMUL_FLOPS_PER_SECOND = 3.0e10
#: Sustained element operations per second of NumPy's element-wise work on one core.
ELEMENTS_PER_SECOND = 1.0e9
#: Interpreter time per recorded op on an input-output path, per mode.
SECONDS_PER_OP = {"fwd": 20e-6, "rev": 36e-6}
#: Interpreter time per Jacobian call (seeding, tracing, assembling the blocks), per mode.
SECONDS_PER_CALL = {"fwd": 80e-6, "rev": 115e-6}


def _size(value) -> int:
    size = getattr(value, "size", None)
    return int(size) if size is not None else 1


def _itemsize(value) -> int:
    dtype = getattr(value, "dtype", None)
    return int(getattr(dtype, "itemsize", 8) or 8)


def _leaf_array(value):
    """The plain array under a value, for memory accounting (None for scalars)."""
    while value is not None and not hasattr(value, "nbytes"):
        value = getattr(value, "_unwrap", lambda: None)()
    return value


def _seconds(matmul_flops, element_ops):
    return matmul_flops / MATMUL_FLOPS_PER_SECOND + element_ops / ELEMENTS_PER_SECOND


@dataclass
class JacobianPlan:
    """What the cost model estimated for one Jacobian, and what it chose."""

    mode: str
    n_in: int
    n_out: int
    ops: int  # recorded ops on paths from the inputs to the outputs
    primal_flops: int
    tangent_flops: int  # per forward direction
    cotangent_flops: int  # per reverse direction
    fwd_flops: int  # primal + n_in * tangent_flops
    rev_flops: int  # primal + n_out * cotangent_flops
    fwd_seconds: float  # arithmetic + seeding + interpreter overhead
    rev_seconds: float
    fwd_bytes: int
    rev_bytes: int
    reason: str
    memory_limit: int | None = None

    def __str__(self):
        def mib(n):
            return f"{n / 2**20:,.1f} MiB"

        lines = [
            f"Jacobian of R^{self.n_in} -> R^{self.n_out} ({self.ops} recorded ops on "
            "input-output paths)",
            f"  one evaluation:            {self.primal_flops:>16,} FLOPs",
            f"  forward: {self.n_in:>7,} tangents   x {self.tangent_flops:>12,} = "
            f"{self.fwd_flops:>16,} FLOPs, ~{self.fwd_seconds * 1e3:,.3f} ms, memory "
            f"~{mib(self.fwd_bytes)}",
            f"  reverse: {self.n_out:>7,} cotangents x {self.cotangent_flops:>12,} = "
            f"{self.rev_flops:>16,} FLOPs, ~{self.rev_seconds * 1e3:,.3f} ms, memory "
            f"~{mib(self.rev_bytes)}",
            f"  chose {'forward' if self.mode == 'fwd' else 'reverse'} mode: {self.reason}",
        ]
        return "\n".join(lines)

    __repr__ = __str__


def plan_from_trace(trace: ReverseTrace, memory_limit: int | None = None) -> JacobianPlan:
    """Estimate both modes from a recorded evaluation and choose one (see module docstring)."""
    n_in = sum(_size(t.data) for t in trace.inputs)
    n_out = sum(_size(leaf) for leaf in trace.out_leaves)
    nodes = trace.recorded_nodes()
    primal = {"matmul": 0, "elements": 0}
    direction = {"matmul": 0, "elements": 0}  # per direction, either mode
    fan_out = 0  # per reverse direction: sums of cotangents
    widest = max([n_in, n_out, 1])
    consumers: dict = {}
    saved: dict = {}
    itemsize = 8
    for prim, values, params, out, active, node in nodes:
        try:
            flops = int(prim.flops(out, *values, **params))
        except Exception:  # an odd FLOP rule must not stop the computation it estimates
            flops = _size(out)
        matmul_like = prim.matmul_like
        primal["matmul" if matmul_like else "elements"] += flops
        out_size = _size(out)
        widest = max(widest, out_size)
        itemsize = _itemsize(out)
        for i in active:
            if matmul_like:
                direction["matmul"] += flops
            else:
                direction["elements"] += max(out_size, _size(values[i]))
            arg = node._args[i]
            count, _ = consumers.get(id(arg), (0, 0))
            consumers[id(arg)] = (count + 1, _size(values[i]))
        if len(active) > 1 and not matmul_like:
            direction["elements"] += out_size  # forward mode adds the tangents of several arguments
        for value in (out, *values):
            array = _leaf_array(value)
            if array is not None and getattr(array, "ndim", None):
                saved[id(array)] = int(array.nbytes)
    for count, size in consumers.values():
        fan_out += (count - 1) * size
    primal_flops = primal["matmul"] + primal["elements"]
    tangent_flops = direction["matmul"] + direction["elements"]
    cotangent_flops = tangent_flops + fan_out
    fwd_flops = primal_flops + n_in * tangent_flops
    rev_flops = primal_flops + n_out * cotangent_flops

    primal_seconds = _seconds(primal["matmul"], primal["elements"])
    fwd_seconds = (
        primal_seconds
        + n_in * _seconds(direction["matmul"], direction["elements"])
        + _seconds(0, n_in * n_in)  # the identity seeded as n tangents
        + SECONDS_PER_CALL["fwd"]
        + SECONDS_PER_OP["fwd"] * len(nodes)
    )
    rev_seconds = (
        primal_seconds
        + n_out * _seconds(direction["matmul"], direction["elements"] + fan_out)
        + _seconds(0, n_out * n_out)
        + SECONDS_PER_CALL["rev"]
        + SECONDS_PER_OP["rev"] * len(nodes)
    )

    tape_bytes = sum(saved.values())
    result_bytes = itemsize * n_in * n_out
    fwd_bytes = itemsize * n_in * (widest + n_in) + result_bytes
    rev_bytes = tape_bytes + itemsize * n_out * (widest + n_out) + result_bytes

    if fwd_seconds <= rev_seconds:
        mode = "fwd"
        if fwd_flops < rev_flops:
            reason = (
                f"{n_in:,} input directions cost {rev_flops / max(fwd_flops, 1):.3g}x fewer FLOPs "
                "than "
                f"{n_out:,} output directions"
            )
        elif fwd_seconds == rev_seconds:
            reason = "both modes cost the same; forward mode keeps no graph"
        else:
            reason = (
                f"reverse mode would save {fwd_flops - rev_flops:,} FLOPs, less than its extra "
                f"interpreter overhead on {len(nodes)} ops"
            )
    else:
        mode = "rev"
        reason = (
            f"{n_out:,} output directions cost {fwd_flops / max(rev_flops, 1):.3g}x fewer FLOPs "
            "than "
            f"{n_in:,} input directions"
        )
        if fwd_flops <= rev_flops:
            reason = "forward mode's seeding and arithmetic estimate is slower"
    if memory_limit is not None:
        chosen, other = (fwd_bytes, rev_bytes) if mode == "fwd" else (rev_bytes, fwd_bytes)
        if chosen > memory_limit >= other:
            mode = "rev" if mode == "fwd" else "fwd"
            reason = (
                f"the faster mode needs ~{chosen / 2**20:,.1f} MiB, over the limit of "
                f"{memory_limit / 2**20:,.1f} MiB; the other fits"
            )
    return JacobianPlan(
        mode=mode,
        n_in=n_in,
        n_out=n_out,
        ops=len(nodes),
        primal_flops=primal_flops,
        tangent_flops=tangent_flops,
        cotangent_flops=cotangent_flops,
        fwd_flops=fwd_flops,
        rev_flops=rev_flops,
        fwd_seconds=fwd_seconds,
        rev_seconds=rev_seconds,
        fwd_bytes=fwd_bytes,
        rev_bytes=rev_bytes,
        reason=reason,
        memory_limit=memory_limit,
    )


def explain_jacobian(fun, *args, argnums=0, memory_limit: int | None = None) -> JacobianPlan:
    """What ``jacobian(fun, argnums, mode="auto")`` would do at ``args``, and why: the estimated
    FLOPs, time and memory of both modes. Print the result for the explanation."""
    trace = ReverseTrace(fun, args, argnums, "explain_jacobian")
    return plan_from_trace(trace, memory_limit=memory_limit)
