"""The Jacobian of a chain ``f_L o ... o f_1``, multiplied in the cheapest order.

By the chain rule the Jacobian of the chain is the product ``J_L J_{L-1} ... J_1`` of the factors'
Jacobians, ``J_i`` of shape ``n_i x n_{i-1}``. Matrix multiplication is associative, so every
bracketing gives the same matrix, but not at the same price: ``(A B)`` for ``A`` of shape ``p x q``
and ``B`` of shape ``q x r`` costs ``2 p q r`` FLOPs. Two bracketings have names:

* **forward** (tangent) order, ``J_L (... (J_3 (J_2 J_1)))``: what forward mode does, carrying
  ``n_0`` directions from the input side;
* **reverse** (adjoint) order, ``((J_L J_{L-1}) J_{L-2}) ... J_1``: what reverse mode does,
  carrying ``n_L`` directions from the output side.

Neither is best in general: for a chain that is wide, then narrow, then wide again, the cheapest
order meets in the middle, at the narrow point. The cheapest bracketing is the classic
matrix-chain problem (the Jacobian chain bracketing problem of Naumann for dense factors), solved
by dynamic programming over the dimensions ``n_0 ... n_L`` in O(L^3):

    cost(i, j) = min over i <= k < j of  cost(k+1, j) + cost(i, k) + 2 n_j n_k n_{i-1}

A bracketing is written as a tree: the integer ``i`` is ``J_i``; a pair ``(left, right)`` is the
product ``left @ right``.

>>> optimal_bracketing([100, 100, 2, 100, 100])[1]
((4, 3), (2, 1))
>>> format_bracketing(forward_bracketing(3)), format_bracketing(reverse_bracketing(3))
('J3 (J2 J1)', '(J3 J2) J1')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..engine import ops

ORDERS = ("optimal", "forward", "reverse")


def product_cost(dims, left_rows, inner, right_cols) -> int:
    return 2 * int(dims[left_rows]) * int(dims[inner]) * int(dims[right_cols])


def optimal_bracketing(dims):
    """``(flops, tree)``: the cheapest way to multiply ``J_L ... J_1`` with ``J_i`` of shape
    ``dims[i] x dims[i-1]`` (``L = len(dims) - 1`` factors). Ties go to the lowest split point."""
    length = len(dims) - 1
    if length < 1:
        raise ValueError("optimal_bracketing: a chain needs at least one factor (two dimensions)")
    # cost[i][j] and split[i][j] for the product J_j ... J_i, 1 <= i <= j <= L.
    cost = [[0] * (length + 1) for _ in range(length + 1)]
    split = [[0] * (length + 1) for _ in range(length + 1)]
    for span in range(1, length):
        for i in range(1, length - span + 1):
            j = i + span
            best: int | None = None
            for k in range(i, j):
                candidate = cost[k + 1][j] + cost[i][k] + product_cost(dims, j, k, i - 1)
                if best is None or candidate < best:
                    best, split[i][j] = candidate, k
            cost[i][j] = best  # type: ignore[assignment]  # span >= 1: some k was tried
    return cost[1][length], _tree_from_splits(split, 1, length)


def _tree_from_splits(split, first, last):
    """The tree of the DP's split table, built with an explicit stack (no recursion)."""
    result: list = []
    stack = [("visit", first, last)]
    while stack:
        action, i, j = stack.pop()
        if action == "visit":
            if i == j:
                result.append(i)
                continue
            k = split[i][j]
            stack.append(("join", i, j))
            stack.append(("visit", i, k))  # right factor, built second
            stack.append(("visit", k + 1, j))  # left factor, built first
        else:
            right = result.pop()
            left = result.pop()
            result.append((left, right))
    return result[0]


def forward_bracketing(length: int):
    """``J_L (... (J_3 (J_2 J_1)))``."""
    tree: int | tuple = 1
    for i in range(2, length + 1):
        tree = (i, tree)
    return tree


def reverse_bracketing(length: int):
    """``((J_L J_{L-1}) J_{L-2}) ... J_1``."""
    tree: int | tuple = length
    for i in range(length - 1, 0, -1):
        tree = (tree, i)
    return tree


def _post_order(tree):
    """Nodes of a bracketing tree, children before parents (explicit stack)."""
    order = []
    stack = [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        if isinstance(node, int) or expanded:
            order.append(node)
            continue
        stack.append((node, True))
        stack.append((node[1], False))
        stack.append((node[0], False))
    return order


def bracketing_flops(dims, tree) -> int:
    """FLOPs of multiplying the chain in the order ``tree`` (2 p q r per product)."""
    spans: list = []  # (highest factor, lowest factor) of each finished subtree
    total = 0
    for node in _post_order(tree):
        if isinstance(node, int):
            spans.append((node, node))
            continue
        right = spans.pop()
        left = spans.pop()
        if left[1] != right[0] + 1:
            raise ValueError(f"bracketing {tree!r} does not multiply consecutive factors")
        total += product_cost(dims, left[0], right[0], right[1] - 1)
        spans.append((left[0], right[1]))
    return total


def format_bracketing(tree) -> str:
    """``(4, (3, (2, 1)))`` -> ``"J4 (J3 (J2 J1))"``."""
    pieces: list = []
    for node in _post_order(tree):
        if isinstance(node, int):
            pieces.append((f"J{node}", True))
            continue
        right, right_atom = pieces.pop()
        left, left_atom = pieces.pop()
        left = left if left_atom else f"({left})"
        right = right if right_atom else f"({right})"
        pieces.append((f"{left} {right}", False))
    return pieces[0][0]


def multiply_in_order(factors, tree):
    """``J_L ... J_1`` for ``factors = [J_1, ..., J_L]`` (2-d), multiplied in the order ``tree``."""
    stack = []
    for node in _post_order(tree):
        if isinstance(node, int):
            stack.append(factors[node - 1])
        else:
            right = stack.pop()
            left = stack.pop()
            stack.append(ops.matmul(left, right))
    return stack[0]


@dataclass
class ChainJacobian:
    """The Jacobian of a chain, how it was multiplied, and what each order would have cost."""

    jacobian: object
    value: object
    dims: list
    order: str
    bracketing: object
    flops: dict  # product FLOPs of the "optimal", "forward" and "reverse" orders
    factor_modes: list = field(default_factory=list)
    factor_flops: list = field(default_factory=list)  # estimated FLOPs of each factor's Jacobian

    @property
    def product_flops(self) -> int:
        return self.flops[self.order]

    def __str__(self):
        lines = [
            f"chain of {len(self.dims) - 1} functions, dimensions "
            f"{' -> '.join(map(str, self.dims))}",
            f"factor Jacobians by mode: {', '.join(self.factor_modes)} "
            f"(~{sum(self.factor_flops):,} FLOPs to form them)",
            f"used the {self.order} order: {format_bracketing(self.bracketing)}",
        ]
        best = max(self.flops["optimal"], 1)
        for name in ORDERS:
            tree = {
                "optimal": optimal_bracketing(self.dims)[1],
                "forward": forward_bracketing(len(self.dims) - 1),
                "reverse": reverse_bracketing(len(self.dims) - 1),
            }[name]
            lines.append(
                f"  {name:<8} {self.flops[name]:>16,} FLOPs  ({self.flops[name] / best:6.2f}x "
                "optimal)  "
                f"{format_bracketing(tree)}"
            )
        return "\n".join(lines)

    __repr__ = __str__


def chain_jacobian(fns, x, order: str = "optimal") -> ChainJacobian:
    """The Jacobian of ``fns[-1] o ... o fns[0]`` at ``x``, as a :class:`ChainJacobian`.

    Each ``f_i`` maps one array to one array. Each factor's Jacobian is formed by the mode the cost
    model of :func:`chainrule.jacobian` picks for it, reshaped to a matrix, and the factors are
    multiplied in ``order``: ``"optimal"`` (the dynamic programme), ``"forward"`` or ``"reverse"``.
    The result's ``jacobian`` has shape ``y.shape + x.shape``; its ``flops`` give the product's
    FLOPs in all three orders.
    """
    from .jacobians import value_and_jacobian  # noqa: PLC0415 (jacobians imports this layer's peers)

    if order not in ORDERS:
        raise ValueError(f"chain_jacobian: order must be one of {ORDERS}, got {order!r}")
    fns = list(fns)
    if not fns:
        raise ValueError("chain_jacobian: needs at least one function")
    value = x
    dims = [math.prod(ops.shape(x))]
    factors, modes, factor_flops = [], [], []
    for number, fn in enumerate(fns, start=1):
        out, jac, plan = value_and_jacobian(fn, (value,), 0, "auto")
        if not hasattr(out, "shape"):
            raise TypeError(
                f"chain_jacobian: function {number} must return one array, got {type(out).__name__}"
            )
        n_out = math.prod(ops.shape(out))
        factors.append(ops.reshape(jac, (n_out, dims[-1])))
        modes.append(plan.mode)
        factor_flops.append(plan.fwd_flops if plan.mode == "fwd" else plan.rev_flops)
        dims.append(n_out)
        value = out
    length = len(fns)
    optimal_flops, optimal_tree = optimal_bracketing(dims)
    trees = {
        "optimal": optimal_tree,
        "forward": forward_bracketing(length),
        "reverse": reverse_bracketing(length),
    }
    flops = {"optimal": optimal_flops}
    flops["forward"] = bracketing_flops(dims, trees["forward"])
    flops["reverse"] = bracketing_flops(dims, trees["reverse"])
    product = multiply_in_order(factors, trees[order])
    jacobian = ops.reshape(product, tuple(ops.shape(value)) + tuple(ops.shape(x)))
    return ChainJacobian(
        jacobian=jacobian,
        value=value,
        dims=dims,
        order=order,
        bracketing=trees[order],
        flops=flops,
        factor_modes=modes,
        factor_flops=factor_flops,
    )
