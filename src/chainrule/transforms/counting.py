"""Cost accounting: ``with chainrule.count() as c:`` counts what a computation really did.

Counted inside the block:

* every primitive evaluation on plain arrays, per primitive name (forward passes *and* the
  derivative rules, which are made of primitives too), seen through
  :func:`chainrule.engine.core.observe`;
* FLOPs, from each primitive's FLOP rule in the table: in total and for the matmul-like ones
  (the entries flagged ``matmul_like``: ``matmul``, ``einsum``, ``solve``, ``det``, ``inv``...),
  which dominate a network's cost;
* passes, reported by the transforms when they start one (:func:`note_pass`): ``forward`` (one
  evaluation of the user's function), ``jvp`` and ``vjp`` (one sweep of derivative rules), each
  with the number of *directions* it carried: a ``jacfwd`` over n inputs is one JVP pass with n
  directions, n JVPs' worth of arithmetic in one sweep.

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> with cr.count() as c:
...     _ = cr.grad(lambda w: cnp.sum(np.ones((5, 3)) @ w))(np.ones((3, 4)))
>>> c.primitives["matmul"], c.matmul_flops, c.passes["forward"], c.passes["vjp"]
(2, 240, 1, 1)

A plain call of a function outside any transform evaluates primitives (they are counted) but is
not announced as a pass: code that wants it counted calls ``note_pass("forward")`` itself, as
``numerical_grad`` does for each of its evaluations. Counts nest: an inner ``count()`` block adds
to every enclosing one as well.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

from ..engine.core import observe

#: The kinds of pass a transform may announce.
PASS_KINDS = ("forward", "jvp", "vjp")

_active: list = []  # the Count objects of the open blocks, outermost first


class Count:
    """What ran inside one ``count()`` block (see the module docstring)."""

    def __init__(self):
        self.primitives: Counter = Counter()
        self.flops = 0
        self.matmul_flops = 0
        self.passes: Counter = Counter({kind: 0 for kind in PASS_KINDS})
        self.directions: Counter = Counter({kind: 0 for kind in PASS_KINDS})

    @property
    def evaluations(self) -> int:
        """Primitive evaluations in total."""
        return sum(self.primitives.values())

    def _observe(self, prim, args, params, out):
        self.primitives[prim.name] += 1
        try:
            flops = int(prim.flops(out, *args, **params))
        except Exception:  # a FLOP rule must never break the computation it counts
            flops = 0
        self.flops += flops
        if prim.matmul_like:
            self.matmul_flops += flops

    def as_dict(self) -> dict:
        return {
            "passes": dict(self.passes),
            "directions": dict(self.directions),
            "evaluations": self.evaluations,
            "flops": self.flops,
            "matmul_flops": self.matmul_flops,
            "primitives": dict(sorted(self.primitives.items())),
        }

    def __str__(self):
        passes = ", ".join(
            f"{self.passes[kind]} {kind}"
            + (
                f" ({self.directions[kind]} directions)"
                if kind != "forward" and self.passes[kind]
                else ""
            )
            for kind in PASS_KINDS
        )
        lines = [
            f"passes: {passes}",
            f"FLOPs: {self.flops:,} in total, {self.matmul_flops:,} in matmul-like ops",
            f"primitive evaluations: {self.evaluations:,}",
        ]
        width = max((len(name) for name in self.primitives), default=0)
        for name, number in sorted(self.primitives.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {name:<{width}}  {number:>8,}")
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"Count(passes={dict(self.passes)}, directions={dict(self.directions)}, "
            f"evaluations={self.evaluations}, flops={self.flops}, matmul_flops={self.matmul_flops})"
        )


def is_counting() -> bool:
    """Whether any ``count()`` block is open (to skip preparing what only counting needs)."""
    return bool(_active)


def note_pass(kind: str, directions: int = 1) -> None:
    """Tell every open ``count()`` block that a pass of ``kind`` started, carrying
    ``directions`` tangents or cotangents. Costs one list check when nothing is counting."""
    if not _active:
        return
    if kind not in PASS_KINDS:
        raise ValueError(f"note_pass: kind must be one of {PASS_KINDS}, got {kind!r}")
    for counter in _active:
        counter.passes[kind] += 1
        counter.directions[kind] += int(directions)


@contextmanager
def count():
    """Count primitive evaluations, FLOPs and passes inside the block (see module docstring)."""
    counter = Count()
    _active.append(counter)
    try:
        with observe(counter._observe):
            yield counter
    finally:
        _active.remove(counter)
