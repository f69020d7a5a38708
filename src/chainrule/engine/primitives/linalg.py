"""Linear-algebra primitives: matmul, einsum, det, inv and solve; with their public functions
(``matmul``, ``einsum``, ``chainrule.numpy.linalg.det``/``inv``/``solve``) and the compositions
their rules use (``diagonal``, ``trace``).

Their FLOPs are counted as matrix products (``matmul_like``): they dominate a network's cost.
"""

from __future__ import annotations

import builtins
import math
import string

from .. import arraylib
from ..arraylib import xp
from ..core import apply, ndim, raw, shape, state
from ..table import defprim, elementwise_flops, public
from .elementwise import _sum_tangents
from .reductions import sum
from .shapes import (
    align,
    batch_rank,
    broadcast_to,
    expand_dims,
    getitem,
    moveaxis,
    reshape,
    squeeze,
    swapaxes,
)

_NO_FLOPS = elementwise_flops(0)


#: A stack of products whose every factor has at most this many rows (or columns) runs as one
#: product instead: NumPy would loop over the stack calling BLAS on slivers.
_THIN = 4


def _batch_matmul(prim, values, batched, params, size):
    x, y = values
    x_batched, y_batched = batched
    x_rank, y_rank = batch_rank(x, x_batched), batch_rank(y, y_batched)
    if x_batched and not y_batched and y_rank <= 2:
        if x_rank == 1:  # (B, K) @ (K, N): already one matrix product
            return prim(x, y)
        x_shape = shape(x)
        if x_shape[-2] <= _THIN:  # thin rows: (B*...*M, K) @ (K, N) in one product
            out = prim(reshape(x, (-1, x_shape[-1])), y)
            return reshape(out, x_shape[:-1] + shape(out)[1:])
    if y_batched and not x_batched and x_rank <= 2:
        if y_rank == 1:  # x @ t for each t: (B, K) @ x^T in one product
            return prim(y, x if x_rank == 1 else swapaxes(x, -1, -2))
        y_shape = shape(y)
        if x_rank == 2 and y_shape[-1] <= _THIN:  # thin columns: (B*...*N, K) @ x^T, then back
            x_t = swapaxes(x, -1, -2)
            if y_shape[-1] == 1:  # a column per example: no transposes needed
                out = prim(reshape(y, (-1, y_shape[-2])), x_t)
                return reshape(out, y_shape[:-2] + (shape(x)[0], 1))
            rows = reshape(swapaxes(y, -1, -2), (-1, y_shape[-2]))
            out = reshape(prim(rows, x_t), y_shape[:-2] + (y_shape[-1], shape(x)[0]))
            return swapaxes(out, -1, -2)
    # General case: make 1-d operands matrices (NumPy's own convention), line up the stack axes,
    # multiply, and drop the axes that the promotion added.
    if x_rank == 1:
        x = expand_dims(x, -2)
    if y_rank == 1:
        y = expand_dims(y, -1)
    rank = builtins.max(x_rank, y_rank, 2)
    if x_batched:
        x = align(x, rank)
    if y_batched:
        y = align(y, rank)
    out = prim(x, y)
    if y_rank == 1:
        out = squeeze(out, -1)
    if x_rank == 1:
        out = squeeze(out, -1 if y_rank == 1 else -2)
    return out


def _batch_einsum(prim, values, batched, params, size):
    subscripts = params["subscripts"]
    inputs, output = subscripts.split("->")
    letter = next(c for c in string.ascii_letters if c not in subscripts)
    inputs = [
        letter + spec if b else spec for spec, b in zip(inputs.split(","), batched, strict=True)
    ]
    return prim(*values, subscripts=",".join(inputs) + "->" + letter + output)


def _batch_solve(prim, values, batched, params, size):
    a, b = values
    a_batched, b_batched = batched
    vector = batch_rank(b, b_batched) == 1
    if vector:  # NumPy reads a 1-d right-hand side as a vector only when it is truly 1-d
        b = expand_dims(b, -1)
    rank = builtins.max(batch_rank(a, a_batched), batch_rank(b, b_batched))
    if a_batched:
        a = align(a, rank)
    if b_batched:
        b = align(b, rank)
    out = prim(a, b)
    return squeeze(out, -1) if vector else out


def _mT(value):
    return swapaxes(value, -1, -2)


def _plain_matrices(g, other):
    """Whether a matmul rule may call NumPy itself: the cotangent and the other operand are
    exact NumPy arrays of rank 2 or more, and nothing is recorded, observed or redirected (the
    first-order step of every dense layer)."""
    return type(g) is type(other) is xp.ndarray and other.ndim >= 2 and not state.hooked


def _matmul_vjp_x(g, out, x, y):
    if _plain_matrices(g, y) and x.ndim >= 2:
        # The calls matmul(g, swapaxes(y, -1, -2)) makes (the same view, the same product),
        # without the two dispatches.
        return xp.matmul(g, y.swapaxes(-1, -2))
    if x.ndim == 1 and y.ndim == 1:
        return g * y
    if x.ndim == 1:  # (k,) @ (..., k, n) -> (..., n)
        return matmul(y, expand_dims(g, -1))[..., 0]
    if y.ndim == 1:  # (..., m, k) @ (k,) -> (..., m)
        return expand_dims(g, -1) * y
    return matmul(g, _mT(y))


def _matmul_vjp_y(g, out, x, y):
    if _plain_matrices(g, x) and y.ndim >= 2:  # as in _matmul_vjp_x
        return xp.matmul(x.swapaxes(-1, -2), g)
    if x.ndim == 1 and y.ndim == 1:
        return g * x
    if x.ndim == 1:
        return expand_dims(x, -1) * expand_dims(g, -2)
    if y.ndim == 1:
        return matmul(_mT(x), expand_dims(g, -1))[..., 0]
    return matmul(_mT(x), g)


def _matmul_flops(out, x, y):
    contracted = x.shape[-1]
    return 2 * int(getattr(out, "size", 1)) * int(contracted)


MATMUL = defprim(
    "matmul",
    xp.matmul,
    (_matmul_vjp_x, _matmul_vjp_y),
    lambda ts, out, x, y: _sum_tangents(
        None if ts[0] is None else matmul(ts[0], y),
        None if ts[1] is None else matmul(x, ts[1]),
    ),
    _matmul_flops,
    array_api="matmul",
    batching=_batch_matmul,
    matmul_like=True,
    operator="matmul",
    gpu="Inside CUDA-graph capture, float32/float64 products go through cuBLAS directly "
    "(capturable); ``matmul_precision`` selects TF32 or bfloat16 tensor-core inputs.",
)


def _parse_einsum(subscripts, count):
    inputs, output = subscripts.replace(" ", "").split("->")
    inputs = inputs.split(",")
    if len(inputs) != count:
        raise ValueError(f"einsum: {subscripts!r} names {len(inputs)} operands, got {count}")
    return inputs, output


def _einsum_vjp(g, out, *operands, subscripts):
    inputs, output = _parse_einsum(subscripts, len(operands))
    unused_letters = [c for c in string.ascii_letters if c not in subscripts]
    cotangents = []
    for i, target in enumerate(inputs):
        if "." in target:
            raise NotImplementedError(
                f"einsum: no derivative for operand {i} with ellipsis subscripts {target!r} in "
                f"{subscripts!r}; write the axes out explicitly"
            )
        sizes = dict(zip(target, operands[i].shape, strict=True))
        letters = "".join(dict.fromkeys(target))  # each letter once, in order of appearance
        others = [s for j, s in enumerate(inputs) if j != i]
        available = set(output).union(*others) if others else set(output)
        # Letters summed away inside operand i alone cannot come out of the einsum: broadcast after.
        kept = "".join(c for c in letters if c in available)
        spec = ",".join([output, *others]) + "->" + kept
        contribution = einsum(spec, g, *[o for j, o in enumerate(operands) if j != i])
        if kept != letters:
            shape = tuple(sizes[c] if c in kept else 1 for c in letters)
            full_shape = tuple(sizes[c] for c in letters)
            contribution = broadcast_to(reshape(contribution, shape), full_shape)
        if letters != target:
            # A repeated letter reads a diagonal (``ii->i``): write the cotangent back onto that
            # diagonal, zeros elsewhere, by multiplying with identities: out[i, a] = c[i] * eye[i,
            # a].
            fresh = iter(unused_letters)
            spelled, identity_specs = [], []
            for position, c in enumerate(target):
                if c in target[:position]:
                    twin = next(fresh)
                    spelled.append(twin)
                    identity_specs.append(c + twin)
                else:
                    spelled.append(c)
            # Built where the cotangent lives (NumPy, or CuPy for a GPU array).
            eye = arraylib.namespace_of(raw(g)).eye
            identities = [eye(sizes[pair[0]], dtype=raw(g).dtype) for pair in identity_specs]
            full_spec = ",".join([letters, *identity_specs]) + "->" + "".join(spelled)
            contribution = einsum(full_spec, contribution, *identities)
        cotangents.append(contribution)
    return tuple(cotangents)


def _einsum_jvp(ts, out, *operands, subscripts):
    terms = []
    for i, t in enumerate(ts):
        if t is not None:
            args = list(operands)
            args[i] = t
            terms.append(einsum(subscripts, *args))
    return _sum_tangents(*terms)


def _einsum_flops(out, *operands, subscripts):
    inputs, _ = _parse_einsum(subscripts, len(operands))
    sizes = {}
    for spec, operand in zip(inputs, operands, strict=True):
        for letter, size in zip(spec, operand.shape, strict=True):
            sizes[letter] = size
    return 2 * math.prod(sizes.values()) if len(operands) > 1 else int(operands[0].size)


#: Below about this many loop iterations NumPy's plain einsum loop beats ``optimize=True``, whose
#: planning and BLAS call cost about 10 µs (about 36,000 iterations of the loop) on this machine.
_OPTIMIZE_FROM = 32_768
_optimize_cache: dict = {}


def _letter_sizes(spec, shape):
    """{letter: size} of one operand's subscripts, and the size of its ``...`` axes."""
    if "..." not in spec:
        return dict(zip(spec, shape, strict=True)), 1
    left, right = spec.split("...")
    middle = shape[len(left) : len(shape) - len(right)]
    sizes = dict(zip(left, shape[: len(left)], strict=True))
    sizes.update(zip(right, shape[len(shape) - len(right) :], strict=True))
    return sizes, math.prod(middle)


def _pays_to_optimize(subscripts, operands):
    """Whether ``np.einsum(..., optimize=True)`` is faster: always for three or more operands
    (contraction order matters); for two, when the contraction is a matrix product (an index
    summed over, and each operand with an index of its own, so BLAS can take it) big enough to
    repay the planning. ``ij,ij->i`` or a tiny product stay on the plain loop (3-10x faster
    there); a (64, 64) matmul goes to BLAS (3.5x faster)."""
    if len(operands) != 2:
        return len(operands) > 2
    key = (subscripts, operands[0].shape, operands[1].shape)
    decision = _optimize_cache.get(key)
    if decision is None:
        (first, second), output = _parse_einsum(subscripts, 2)
        first_sizes, first_batch = _letter_sizes(first, operands[0].shape)
        second_sizes, second_batch = _letter_sizes(second, operands[1].shape)
        a, b = set(first_sizes), set(second_sizes)
        summed = (a & b) - set(output)
        loop = math.prod({**first_sizes, **second_sizes}.values()) * max(first_batch, second_batch)
        decision = bool(summed) and bool(a - b) and bool(b - a) and loop >= _OPTIMIZE_FROM
        if len(_optimize_cache) > 4096:  # bounded: a long run of new shapes cannot grow it
            _optimize_cache.clear()
        _optimize_cache[key] = decision
    return decision


def _einsum(*operands, subscripts):
    return xp.einsum(subscripts, *operands, optimize=_pays_to_optimize(subscripts, operands))


EINSUM = defprim(
    "einsum",
    _einsum,
    _einsum_vjp,
    _einsum_jvp,
    _einsum_flops,
    batching=_batch_einsum,
    matmul_like=True,
)


def _det_vjp(g, out, x):
    scale = expand_dims(expand_dims(g * out, -1), -1)
    return scale * _mT(inv(x))


DET = defprim(
    "det",
    xp.linalg.det,
    (_det_vjp,),
    lambda ts, out, x: out * trace(solve(x, ts[0]), axis1=-2, axis2=-1),
    lambda out, x: int(x.shape[-1]) ** 3 * max(1, int(x.size) // int(x.shape[-1]) ** 2),
    batching="stacked",
    matmul_like=True,
    names=(),
)
INV = defprim(
    "inv",
    xp.linalg.inv,
    (lambda g, out, x: -matmul(_mT(out), matmul(g, _mT(out))),),
    lambda ts, out, x: -matmul(out, matmul(ts[0], out)),
    lambda out, x: 2 * int(x.shape[-1]) ** 3 * max(1, int(x.size) // int(x.shape[-1]) ** 2),
    batching="stacked",
    matmul_like=True,
    names=(),
)


def _solve_vjp_b(g, out, a, b):
    if b.ndim == 1:
        return solve(_mT(a), expand_dims(g, -1))[..., 0]
    return solve(_mT(a), g)


def _solve_vjp_a(g, out, a, b):
    gb = _solve_vjp_b(g, out, a, b)
    if b.ndim == 1:
        return -expand_dims(gb, -1) * expand_dims(out, -2)
    return -matmul(gb, _mT(out))


def _solve_jvp(ts, out, a, b):
    # a x = b  =>  a dx = db - da x
    rhs = ts[1]
    if ts[0] is not None:
        # A 1-d b is one vector for every matrix of the batch: multiply it as a column.
        da_x = matmul(ts[0], expand_dims(out, -1))[..., 0] if b.ndim == 1 else matmul(ts[0], out)
        rhs = -da_x if rhs is None else rhs - da_x
    if b.ndim == 1:
        return solve(a, expand_dims(rhs, -1))[..., 0]
    return solve(a, rhs)


SOLVE = defprim(
    "solve",
    xp.linalg.solve,
    (_solve_vjp_a, _solve_vjp_b),
    _solve_jvp,
    lambda out, a, b: int(a.shape[-1]) ** 3 + 2 * int(a.shape[-1]) * int(getattr(out, "size", 1)),
    batching=_batch_solve,
    matmul_like=True,
    names=(),
)


@public(MATMUL, fast_operator=True)
def matmul(x, y):
    """The matrix product ``x @ y``, with NumPy's rules for 1-d operands and stacks."""
    if ndim(x) == 0 or ndim(y) == 0:
        raise ValueError(
            f"chainrule.matmul: operands must have at least one axis, got shapes {shape(x)} and "
            f"{shape(y)}"
        )
    return apply(MATMUL, x, y)


@public(EINSUM)
def einsum(subscripts: str, *operands):
    """Einstein summation with explicit output subscripts, e.g. ``einsum("ij,jk->ik", a, b)``."""
    if "->" not in subscripts:
        raise ValueError(
            f"chainrule.einsum: give explicit output subscripts ('ij,jk->ik'), got {subscripts!r}"
        )
    subscripts = _spell_out_ellipsis(subscripts.replace(" ", ""), operands)
    return apply(EINSUM, *operands, subscripts=subscripts)


def _spell_out_ellipsis(subscripts, operands):
    """``...`` replaced by letters of its own, so that every axis is named and differentiable:
    ``einsum("...ij,jk->...ik", a, b)`` with ``a`` of rank 4 becomes ``"abij,jk->abik"``. The
    axes an ellipsis stands for broadcast right-aligned, as in NumPy."""
    if "..." not in subscripts:
        return subscripts
    inputs, output = subscripts.split("->")
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        return subscripts  # the primitive reports the mismatch
    # How many axes each operand's ellipsis stands for (0 where it has none).
    ranks = [
        ndim(op) - (len(spec) - 3) if "..." in spec else 0
        for spec, op in zip(inputs, operands, strict=True)
    ]
    width = builtins.max(ranks)
    if builtins.min(ranks) < 0:
        raise ValueError(f"chainrule.einsum: {subscripts!r} names more axes than an operand has")
    unused = [c for c in _LETTERS if c not in subscripts]
    if width > len(unused):
        raise ValueError(f"chainrule.einsum: too many axes under '...' in {subscripts!r}")
    letters = "".join(unused[:width])
    spelled = [
        spec.replace("...", letters[width - rank :])
        for spec, rank in zip(inputs, ranks, strict=True)
    ]
    return ",".join(spelled) + "->" + output.replace("...", letters)


_LETTERS = string.ascii_letters


def diagonal(x, offset=0, axis1=0, axis2=1):
    """The diagonal of ``x`` over ``axis1`` and ``axis2``, as the last axis (NumPy's)."""
    moved = moveaxis(x, (axis1, axis2), (-2, -1))
    rows, cols = shape(moved)[-2:]
    start_row, start_col = (0, offset) if offset >= 0 else (-offset, 0)
    length = builtins.max(0, builtins.min(rows - start_row, cols - start_col))
    index = arraylib.namespace_beside(raw(x)).arange(length)  # on x's device
    return getitem(moved, (Ellipsis, index + start_row, index + start_col))


def trace(x, offset=0, axis1=0, axis2=1):
    """The sum of :func:`diagonal`."""
    return sum(diagonal(x, offset, axis1, axis2), axis=-1)


def _require_square(op, x):
    s = shape(x)
    if len(s) < 2 or s[-1] != s[-2]:
        raise ValueError(f"chainrule.linalg.{op}: needs square matrices (..., n, n), got shape {s}")


# ``chainrule.numpy.linalg``'s functions: public names with a ``linalg.`` prefix.
@public(DET, names=("linalg.det",))
def det(x):
    """The determinant of each matrix of ``x`` (..., n, n)."""
    _require_square("det", x)
    return apply(DET, x)


@public(INV, names=("linalg.inv",))
def inv(x):
    """The inverse of each matrix of ``x`` (..., n, n)."""
    _require_square("inv", x)
    return apply(INV, x)


@public(SOLVE, names=("linalg.solve",))
def solve(a, b):
    """``x`` with ``a @ x = b``, for square ``a`` (..., n, n) and ``b`` (..., n) or (..., n, k)."""
    _require_square("solve", a)
    return apply(SOLVE, a, b)
