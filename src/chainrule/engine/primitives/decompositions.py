"""Matrix decompositions: Cholesky, QR, the symmetric eigendecomposition, the SVD, slogdet and
the pseudo-inverse; with their public functions (``chainrule.numpy.linalg.cholesky``, ``qr``,
``eigh``, ``eigvalsh``, ``svd``, ``svdvals``, ``slogdet``, ``pinv``, ``lstsq``).

Every rule works on stacks of matrices (leading axes) and is written with chainrule's own
operations, so that derivatives of every order follow. A decomposition with several results is
one primitive whose output packs them along the row axis (``eigh``: the eigenvalues as row 0,
the eigenvectors below), so that LAPACK runs once per call; the public function slices the
parts out, and the slices' derivatives route each part's cotangent to the one rule.

The rules follow the literature: Murray (2016) for Cholesky; Giles (2008) and Walter & Lehmann
for QR; Giles (2008) and Seeger et al. (2017) for eigh; Townsend (2016) for the SVD; Golub &
Pereyra (1973) for the pseudo-inverse. Inputs of ``cholesky`` and ``eigh`` are taken as
symmetric: their derivatives are those of ``f((A + A^T) / 2)``, as in JAX and PyTorch.

**Repeated eigenvalues and singular values.** The derivative of the eigenvectors (singular
vectors) contains ``1 / (λj - λi)`` (``1 / (sj² - si²)``), which diverges when two values meet:
there the vectors are not unique, and only losses that do not depend on the choice of basis
(gauge-invariant losses: the eigenvalues, ``U diag(s) V^T``, projectors ``U U^T`` onto a whole
eigenspace) have a derivative. As in JAX and PyTorch, the rules then give ``inf`` or ``NaN``
where the vectors are used. A loss of the eigenvalues or singular values alone (``eigvalsh``,
``svdvals``, ``eigh(a)[0]``) never touches that term: its gradient ``V diag(wbar) V^T`` is
always finite, exact for every loss differentiable there (symmetric in the repeated values:
their sum, ``sum(f(w))``, a norm), and for one repeated value alone (not differentiable there)
one element of its subdifferential, as in JAX and PyTorch. The skipped term is recognised by a
cotangent of plain zeros (one, or a batch of them under ``jacrev``); second derivatives trace
the term and are ``NaN`` at repeated values. The SVD's vector terms also divide by the singular
values, so they need ``s > 0``. With
``full_matrices=True`` the extra columns of ``U`` and rows of ``Vh`` are any basis of the
complement, so their cotangents are ignored and their tangents are zero (PyTorch's rule).
"""

from __future__ import annotations

import builtins
from typing import NamedTuple

from .. import arraylib
from ..arraylib import xp
from ..core import Tracer, apply, raw, shape, strip
from ..table import defprim, public
from .linalg import matmul, solve
from .reductions import sum
from .shapes import concatenate, expand_dims, reshape, swapaxes


def _decomposition(name, forward, vjp, jvp, matrix_flops, *, array_api, gpu):
    """The entry of a decomposition of each matrix of a stack (the leading axes batch it, so
    its batching rule is ``"stacked"``): one VJP rule, FLOPs counted as matrix products
    (``matrix_flops(m, n)`` of one m x n matrix, times the matrices in the stack), and only a
    written public function in ``chainrule.numpy.linalg`` (registered with ``public``)."""

    def flops(out, x, **params):
        rows, cols = int(x.shape[-2]), int(x.shape[-1])
        return int(matrix_flops(rows, cols)) * _stack_count(x)

    return defprim(
        name,
        forward,
        (vjp,),
        jvp,
        flops,
        array_api=array_api,
        batching="stacked",
        matmul_like=True,
        names=(),
        gpu=gpu,
    )


class SlogdetResult(NamedTuple):
    """``slogdet``'s results: the sign and the log of the absolute value of the determinant."""

    sign: object
    logabsdet: object


class EighResult(NamedTuple):
    """``eigh``'s results: ascending eigenvalues and the eigenvectors as columns."""

    eigenvalues: object
    eigenvectors: object


class SVDResult(NamedTuple):
    """``svd``'s results: ``U``, the descending singular values ``S`` and ``Vh``."""

    U: object
    S: object
    Vh: object


class QRResult(NamedTuple):
    """``qr``'s results: ``Q`` with orthonormal columns and upper-triangular ``R``."""

    Q: object
    R: object


# ------------------------------------------------------------------------------------------------
# Helpers of the rules: all in chainrule's ops, constants built on the operand's device
# ------------------------------------------------------------------------------------------------


def _mT(value):
    return swapaxes(value, -1, -2)


def _constant(like, build):
    """A constant matrix made by ``build(namespace, dtype)`` where ``like`` lives."""
    array = raw(like)
    return build(arraylib.namespace_beside(array), array.dtype)


def _eye(like, n, width=None):
    return _constant(like, lambda ns, dtype: ns.eye(n, width or n, dtype=dtype))


def _tril_mask(like, n, k=0, diagonal_value=None):
    """Ones on and below diagonal ``k`` (the main diagonal set to ``diagonal_value`` if given)."""

    def build(ns, dtype):
        mask = ns.tril(ns.ones((n, n), dtype=dtype), k=k)
        if diagonal_value is not None:
            mask = mask - (1 - diagonal_value) * ns.eye(n, dtype=dtype)
        return mask

    return _constant(like, build)


def _sym(a):
    return 0.5 * (a + _mT(a))


def _diag(a):
    """The diagonal of each matrix (..., n, n) as (..., n): a masked sum, where ``diagonal``'s
    integer-array index would leave the array-API standard."""
    return sum(a * _eye(a, shape(a)[-1]), axis=-1)


def _diag_embed(v):
    """(..., n) -> (..., n, n) with ``v`` on the diagonal."""
    return expand_dims(v, -1) * _eye(v, shape(v)[-1])


def _gap_reciprocals(values):
    """``F[i, j] = 1 / (values[j] - values[i])`` off the diagonal, 0 on it; ``inf`` where two
    values are equal (the derivative of the vectors does not exist there)."""
    eye = _eye(values, shape(values)[-1])
    # The traced operand first: a strict array-API array refuses a tracer on its right.
    return 1.0 / ((expand_dims(values, -2) - expand_dims(values, -1)) + eye) - eye


def _known_zero(cotangent):
    """Whether ``cotangent`` is known to be zeros: a plain array of zeros, or a batch of them (the
    part of a packed cotangent that belongs to results the loss does not use, which PyTorch skips
    the same way). A traced cotangent may be zero now and not nearby: never skipped."""
    # Many cotangents at once (jacrev's batching.Batched, known by its batch_size, as importing
    # it here would make a cycle): skip when all of them are zero.
    while isinstance(cotangent, Tracer) and hasattr(type(cotangent), "batch_size"):
        cotangent = getattr(cotangent, "value")  # noqa: B009 - Tracer itself has no value
    if isinstance(cotangent, Tracer):
        return False
    array = raw(cotangent)
    return not bool(arraylib.namespace_beside(array).any(array != 0))


def _solve_right(a, b):
    """``b @ inv(a)`` for square ``a``: ``(a^-T b^T)^T``."""
    return _mT(solve(_mT(a), _mT(b)))


def _stack_count(x):
    rows, cols = x.shape[-2:]
    return builtins.max(1, int(x.size) // builtins.max(1, int(rows) * int(cols)))


def _cubic_flops(factor):
    """FLOPs ``factor * n^3`` of one matrix (n its larger side), at least 1."""
    return lambda rows, cols: builtins.max(1, int(factor * builtins.max(rows, cols) ** 3))


def _eps(x):
    """The machine epsilon of ``x``'s dtype, in its own namespace."""
    plain = raw(x)
    return float(arraylib.namespace_beside(plain).finfo(plain.dtype).eps)


def _require_matrices(op, name, x, square=False):
    s = shape(x)
    if len(s) < 2 or (square and s[-1] != s[-2]):
        kind = "square matrices (..., n, n)" if square else "matrices (..., m, n)"
        raise ValueError(f"chainrule.linalg.{op}: argument {name!r} must be {kind}, got shape {s}")
    dtype = getattr(raw(x), "dtype", None)
    if getattr(dtype, "kind", "") == "c":  # the rules transpose, they never conjugate
        raise TypeError(
            f"chainrule.linalg.{op}: argument {name!r} is complex ({dtype}, shape {s}); the "
            "decompositions' derivatives are for real matrices only"
        )


def _pad_in(namespace, array, width):
    """``array`` with zero columns appended up to ``width``, in an array-API ``namespace``."""
    extra = width - array.shape[-1]
    if extra == 0:
        return array
    zeros = namespace.zeros((*array.shape[:-1], extra), dtype=array.dtype)
    return namespace.concat([array, zeros], axis=-1)


# ------------------------------------------------------------------------------------------------
# Cholesky (Murray 2016): A = L L^T, L lower triangular
# ------------------------------------------------------------------------------------------------


def _phi(x):
    """The lower triangle of ``x`` with its diagonal halved."""
    return x * _tril_mask(x, shape(x)[-1], diagonal_value=0.5)


def _cholesky_vjp(g, out, x):
    # Abar = sym(L^-T Phi(L^T Lbar) L^-1)
    inner = solve(_mT(out), _phi(matmul(_mT(out), g)))
    return _sym(_solve_right(out, inner))


def _cholesky_jvp(ts, out, x):
    # dL = L Phi(L^-1 sym(dA) L^-T)
    inner = _solve_right(_mT(out), solve(out, _sym(ts[0])))
    return matmul(out, _phi(inner))


def _cholesky_forward(x):
    try:
        return xp.linalg.cholesky(x)
    except xp.linalg.LinAlgError as error:  # the engine adds the call's name and the shapes
        raise xp.linalg.LinAlgError(
            f"argument 'x' is not symmetric positive definite ({error})"
        ) from None


CHOLESKY = _decomposition(
    "cholesky",
    _cholesky_forward,
    _cholesky_vjp,
    _cholesky_jvp,
    _cubic_flops(1 / 3),
    array_api=lambda ns: lambda x: ns.linalg.cholesky(x),
    gpu="cupy.linalg.cholesky (cuSOLVER) does not raise on a matrix that is not positive "
    "definite unless ``cupyx.errstate(linalg='raise')`` is set: check the factor with "
    "``isfinite``. The rules solve with L (a general solve: no triangular-solve primitive yet).",
)


@public(CHOLESKY, names=("linalg.cholesky",))
def cholesky(x, *, upper=False):
    """The Cholesky factor ``L`` (lower triangular, ``x = L @ L.T``) of each symmetric
    positive-definite matrix of ``x`` (..., n, n); ``upper=True`` gives ``L.T``.

    Only the lower triangle of ``x`` is read; the derivative is that of ``cholesky((x + x.T)/2)``
    (Murray 2016), so the gradient is symmetric.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> cnp.linalg.cholesky(a)
    array([[2.        , 0.        ],
           [1.        , 1.41421356]])
    >>> # log det(a) = 2 sum(log(diag(L))), whose gradient is inv(a):
    >>> g = cr.grad(lambda a: 2 * cnp.sum(cnp.log(cnp.diagonal(cnp.linalg.cholesky(a)))))(a)
    >>> np.allclose(g, np.linalg.inv(a))
    True
    """
    _require_matrices("cholesky", "x", x, square=True)
    factor = apply(CHOLESKY, x)
    return _mT(factor) if upper else factor


# ------------------------------------------------------------------------------------------------
# slogdet: packed (..., 2) as [sign, log|det|]; the sign is piecewise constant
# ------------------------------------------------------------------------------------------------


def _slogdet_forward(x):
    sign, logabsdet = xp.linalg.slogdet(x)
    return xp.stack([sign, logabsdet], axis=-1)


def _slogdet_vjp(g, out, x):
    # d log|det A| = tr(A^-1 dA): the gradient is A^-T.
    scale = expand_dims(expand_dims(g[..., 1], -1), -1)
    return scale * _mT(solve(x, _eye(x, shape(x)[-1])))


def _slogdet_jvp(ts, out, x):
    tangent = _diag(solve(x, ts[0]))
    logdet_tangent = expand_dims(sum(tangent, axis=-1), -1)
    return concatenate([0.0 * logdet_tangent, logdet_tangent], axis=-1)


SLOGDET = _decomposition(
    "slogdet",
    _slogdet_forward,
    _slogdet_vjp,
    _slogdet_jvp,
    _cubic_flops(2 / 3),
    array_api=lambda ns: lambda x: ns.stack(list(ns.linalg.slogdet(x)), axis=-1),
    gpu="cupy.linalg.slogdet (an LU factorisation, cuSOLVER); the VJP is a solve.",
)


@public(SLOGDET, names=("linalg.slogdet",))
def slogdet(x):
    """``(sign, logabsdet)`` of the determinant of each matrix of ``x`` (..., n, n), computed
    without overflow. ``logabsdet``'s gradient is ``inv(x).T``; ``sign`` has derivative 0.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[2.0, 1.0], [1.0, -3.0]])
    >>> sign, logabsdet = cnp.linalg.slogdet(a)
    >>> float(sign), round(float(logabsdet), 6)
    (-1.0, 1.94591)
    >>> np.allclose(cr.grad(lambda a: cnp.linalg.slogdet(a)[1])(a), np.linalg.inv(a).T)
    True
    """
    _require_matrices("slogdet", "x", x, square=True)
    packed = apply(SLOGDET, x)
    return SlogdetResult(packed[..., 0], packed[..., 1])


# ------------------------------------------------------------------------------------------------
# eigh: packed (..., n + 1, n) as [eigenvalues; eigenvectors]
# ------------------------------------------------------------------------------------------------


def _eigh_forward(x, uplo):
    values, vectors = xp.linalg.eigh(x, UPLO=uplo)
    return xp.concatenate([values[..., None, :], vectors], axis=-2)


def _eigh_in(namespace):
    """eigh's packed forward in an array-API namespace, whose ``eigh`` has no ``UPLO``: the
    symmetric matrix is first rebuilt from the triangle ``uplo`` names."""

    def forward(x, uplo):
        lower = namespace.tril(x) if uplo == "L" else namespace.matrix_transpose(namespace.triu(x))
        full = lower + namespace.matrix_transpose(namespace.tril(lower, k=-1))
        values, vectors = namespace.linalg.eigh(full)
        return namespace.concat([namespace.expand_dims(values, axis=-2), vectors], axis=-2)

    return forward


def _eigh_vjp(g, out, x, uplo):
    # Abar = sym(V (diag(wbar) + F o (V^T Vbar)) V^T), F[i, j] = 1 / (w[j] - w[i])
    values, vectors = out[..., 0, :], out[..., 1:, :]
    inner = _diag_embed(g[..., 0, :])
    vectors_cotangent = g[..., 1:, :]
    if not _known_zero(vectors_cotangent):
        inner = inner + _gap_reciprocals(values) * matmul(_mT(vectors), vectors_cotangent)
    return _sym(matmul(vectors, matmul(inner, _mT(vectors))))


def _eigh_jvp(ts, out, x, uplo):
    # P = V^T sym(dA) V: dw = diag(P), dV = V (F o P)
    values, vectors = out[..., 0, :], out[..., 1:, :]
    projected = matmul(_mT(vectors), matmul(_sym(ts[0]), vectors))
    vectors_tangent = matmul(vectors, _gap_reciprocals(values) * projected)
    return concatenate([expand_dims(_diag(projected), -2), vectors_tangent], axis=-2)


EIGH = _decomposition(
    "eigh",
    _eigh_forward,
    _eigh_vjp,
    _eigh_jvp,
    _cubic_flops(9),
    array_api=_eigh_in,
    gpu="cupy.linalg.eigh (cuSOLVER); the rules are matrix products only. Not yet measured on "
    "a GPU.",
)


@public(EIGH, names=("linalg.eigh",))
def eigh(x, UPLO="L"):  # noqa: N803 - NumPy's name
    """``(eigenvalues, eigenvectors)`` of each symmetric matrix of ``x`` (..., n, n): ascending
    eigenvalues ``w`` and orthonormal eigenvectors as the columns of ``V``, ``x = V diag(w) V^T``.

    Only the triangle ``UPLO`` ("L" or "U") is read; derivatives treat ``x`` as symmetric: they
    are those of ``eigh((x + x.T) / 2)``, as in JAX and PyTorch. The eigenvectors' derivative
    diverges where eigenvalues repeat (inf/NaN, see docs/linalg.md); the eigenvalues' stays
    finite there.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> w, v = cnp.linalg.eigh(a)
    >>> w
    array([1., 3.])
    >>> # the largest eigenvalue's gradient is the projector onto its eigenvector
    >>> cr.grad(lambda a: cnp.linalg.eigh(a)[0][-1])(a)
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    _require_matrices("eigh", "x", x, square=True)
    if UPLO not in ("L", "U"):
        raise ValueError(f"chainrule.linalg.eigh: UPLO must be 'L' or 'U', got {UPLO!r}")
    packed = apply(EIGH, x, uplo=UPLO)
    return EighResult(packed[..., 0, :], packed[..., 1:, :])


@public(EIGH, names=("linalg.eigvalsh",))
def eigvalsh(x, UPLO="L"):  # noqa: N803 - NumPy's name
    """The ascending eigenvalues of each symmetric matrix of ``x`` (..., n, n): ``eigh``'s
    first result. Its gradient ``V diag(wbar) V^T`` stays finite where eigenvalues repeat (exact
    for losses symmetric in the repeated ones, such as their sum).

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> cr.grad(lambda a: cnp.sum(cnp.linalg.eigvalsh(a)))(np.eye(3))  # the trace's gradient
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """
    _require_matrices("eigvalsh", "x", x, square=True)
    if UPLO not in ("L", "U"):
        raise ValueError(f"chainrule.linalg.eigvalsh: UPLO must be 'L' or 'U', got {UPLO!r}")
    return apply(EIGH, x, uplo=UPLO)[..., 0, :]


# ------------------------------------------------------------------------------------------------
# SVD (Townsend 2016): packed (..., m + 1 + n, width) as [U; s; V], V = Vh^T, width k = min(m, n)
# (or max(m, n) with full_matrices, zero-padded)
# ------------------------------------------------------------------------------------------------


def _pad_columns(array, width):
    """``array`` with zero columns appended up to ``width`` (a forward's helper: plain arrays)."""
    extra = width - array.shape[-1]
    if extra == 0:
        return array
    zeros = arraylib.namespace_of(array).zeros((*array.shape[:-1], extra), dtype=array.dtype)
    return xp.concatenate([array, zeros], axis=-1)


def _svd_forward(x, full_matrices):
    u, s, vh = xp.linalg.svd(x, full_matrices=full_matrices)
    m, n = x.shape[-2:]
    width = builtins.max(m, n) if full_matrices else builtins.min(m, n)
    parts = (u, s[..., None, :], xp.matrix_transpose(vh))
    return xp.concatenate([_pad_columns(part, width) for part in parts], axis=-2)


def _svd_in(namespace):
    def forward(x, full_matrices):
        u, s, vh = namespace.linalg.svd(x, full_matrices=full_matrices)
        m, n = x.shape[-2:]
        width = builtins.max(m, n) if full_matrices else builtins.min(m, n)
        parts = (u, namespace.expand_dims(s, axis=-2), namespace.matrix_transpose(vh))
        return namespace.concat([_pad_in(namespace, part, width) for part in parts], axis=-2)

    return forward


def _svd_parts(packed, x):
    """``U``, ``s`` and ``V`` of the thin SVD (k columns) inside ``packed``."""
    m, n = shape(x)[-2:]
    k = builtins.min(m, n)
    return packed[..., :m, :k], packed[..., m, :k], packed[..., m + 1 :, :k]


def _svd_vjp(g, out, x, full_matrices):
    # Abar = U (J S + S K + diag(sbar)) V^T + (I - U U^T) Ubar S^-1 V^T + U S^-1 Vbar^T (I - V V^T)
    # with J = F o (U^T Ubar - Ubar^T U), K = F o (V^T Vbar - Vbar^T V), F[i, j] = 1/(sj² - si²)
    m, n = shape(x)[-2:]
    k = builtins.min(m, n)
    u, s, v = _svd_parts(out, x)
    u_cotangent, s_cotangent, v_cotangent = _svd_parts(g, x)
    inner = _diag_embed(s_cotangent)
    use_u, use_v = not _known_zero(u_cotangent), not _known_zero(v_cotangent)
    if use_u or use_v:
        gaps = _gap_reciprocals(s * s)
    if use_u:
        projected_u = matmul(_mT(u), u_cotangent)
        inner = inner + gaps * (projected_u - _mT(projected_u)) * expand_dims(s, -2)
    if use_v:
        projected_v = matmul(_mT(v), v_cotangent)
        inner = inner + expand_dims(s, -1) * (gaps * (projected_v - _mT(projected_v)))
    gradient = matmul(u, matmul(inner, _mT(v)))
    if use_u and m > k:
        rest = (u_cotangent - matmul(u, projected_u)) / expand_dims(s, -2)
        gradient = gradient + matmul(rest, _mT(v))
    if use_v and n > k:
        rest = (v_cotangent - matmul(v, projected_v)) / expand_dims(s, -2)
        gradient = gradient + matmul(u, _mT(rest))
    return gradient


def _svd_jvp(ts, out, x, full_matrices):
    # dP = U^T dA V: ds = diag(dP), dU = U (F o (dP S + S dP^T)) + (I - U U^T) dA V S^-1,
    # dV = V (F o (S dP + dP^T S)) + (I - V V^T) dA^T U S^-1
    m, n = shape(x)[-2:]
    k = builtins.min(m, n)
    u, s, v = _svd_parts(out, x)
    tangent = ts[0]
    a_v = matmul(tangent, v)
    projected = matmul(_mT(u), a_v)
    gaps = _gap_reciprocals(s * s)
    scaled_columns = projected * expand_dims(s, -2)  # dP S
    scaled_rows = expand_dims(s, -1) * projected  # S dP
    u_tangent = matmul(u, gaps * (scaled_columns + _mT(scaled_columns)))
    v_tangent = matmul(v, gaps * (scaled_rows + _mT(scaled_rows)))
    if m > k:
        u_tangent = u_tangent + (a_v - matmul(u, projected)) / expand_dims(s, -2)
    if n > k:
        at_u = matmul(_mT(tangent), u)
        v_tangent = v_tangent + (at_u - matmul(v, _mT(projected))) / expand_dims(s, -2)
    s_tangent = expand_dims(_diag(projected), -2)
    if full_matrices:  # the extra columns, any basis of the complement, get tangent zero
        width = builtins.max(m, n)
        parts = [matmul(part, _eye(x, k, width)) for part in (u_tangent, s_tangent, v_tangent)]
    else:
        parts = [u_tangent, s_tangent, v_tangent]
    return concatenate(parts, axis=-2)


def _svd_flops(rows, cols):
    small, large = builtins.min(rows, cols), builtins.max(rows, cols)
    return 4 * large * small * small + 8 * small**3


SVD = _decomposition(
    "svd",
    _svd_forward,
    _svd_vjp,
    _svd_jvp,
    _svd_flops,
    array_api=_svd_in,
    gpu="cupy.linalg.svd (cuSOLVER); the rules are matrix products only. Not yet measured on "
    "a GPU.",
)


@public(SVD, names=("linalg.svd",))
def svd(x, full_matrices=True, compute_uv=True, hermitian=False):
    """The singular value decomposition ``x = U @ diag(S) @ Vh`` of each matrix of ``x``
    (..., m, n), as NumPy's: ``(U, S, Vh)`` with descending ``S``, or ``S`` alone when
    ``compute_uv`` is false. ``full_matrices`` (NumPy's default) completes ``U`` and ``Vh`` to
    square orthogonal matrices; the extra columns are any basis of the complement, so their
    cotangents are ignored (as in PyTorch). ``hermitian`` is accepted and changes nothing: the
    general SVD runs (the same factorisation, up to the signs of the vectors).

    Derivatives through ``U`` and ``Vh`` need distinct, non-zero singular values (see the
    module notes); those of ``S`` alone, and of gauge-invariant losses such as
    ``U diag(f(S)) Vh``, are exact.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[3.0, 0.0], [4.0, 5.0]])
    >>> cnp.linalg.svd(a)[1] ** 2
    array([45.,  5.])
    >>> # the nuclear norm sum(S) has gradient U @ Vh
    >>> u, s, vh = np.linalg.svd(a)
    >>> np.allclose(cr.grad(lambda a: cnp.sum(cnp.linalg.svd(a)[1]))(a), u @ vh)
    True
    """
    _require_matrices("svd", "x", x)
    if not compute_uv:
        return svdvals(x)
    packed = apply(SVD, x, full_matrices=bool(full_matrices))
    m, n = shape(x)[-2:]
    k = builtins.min(m, n)
    u_width, v_width = (m, n) if full_matrices else (k, k)
    return SVDResult(
        packed[..., :m, :u_width], packed[..., m, :k], _mT(packed[..., m + 1 :, :v_width])
    )


@public(SVD, names=("linalg.svdvals",))
def svdvals(x):
    """The singular values of each matrix of ``x`` (..., m, n), descending. Their gradient
    ``U diag(sbar) V^T`` stays finite where singular values repeat (exact for losses symmetric in
    the repeated ones, such as the nuclear norm).

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> cnp.linalg.svdvals(np.array([[0.0, 2.0], [1.0, 0.0]]))
    array([2., 1.])
    >>> cr.grad(lambda a: cnp.sum(cnp.linalg.svdvals(a)))(np.eye(2))  # repeated values: exact
    array([[1., 0.],
           [0., 1.]])
    """
    _require_matrices("svdvals", "x", x)
    m = shape(x)[-2]
    return apply(SVD, x, full_matrices=False)[..., m, :]


# ------------------------------------------------------------------------------------------------
# QR (Walter & Lehmann; Giles 2008): packed (..., m + k, n) as [Q; R], Q zero-padded to n columns
# ------------------------------------------------------------------------------------------------


def _qr_forward(x):
    q, r = xp.linalg.qr(x)
    return xp.concatenate([_pad_columns(q, x.shape[-1]), r], axis=-2)


def _qr_in(namespace):
    def forward(x):
        q, r = namespace.linalg.qr(x)
        return namespace.concat([_pad_in(namespace, q, x.shape[-1]), r], axis=-2)

    return forward


def _qr_parts(packed, x):
    m, n = shape(x)[-2:]
    k = builtins.min(m, n)
    return packed[..., :m, :k], packed[..., m:, :]


def _qr_square_jvp(q, r, tangent):
    # C = Q^T dA R^-1, Omega = tril(C, -1) - tril(C, -1)^T:
    # dQ = dA R^-1 - Q (C - Omega), dR = (C - Omega) R
    a_rinv = _solve_right(r, tangent)
    c = matmul(_mT(q), a_rinv)
    lower = c * _tril_mask(c, shape(c)[-1], k=-1)
    upper = c - lower + _mT(lower)  # C - Omega
    return a_rinv - matmul(q, upper), matmul(upper, r)


def _qr_square_vjp(q, r, q_cotangent, r_cotangent):
    # M = Rbar R^T - Q^T Qbar; Abar = (Qbar + Q N) R^-T with N = triu(M) + triu(M, 1)^T
    m_matrix = matmul(r_cotangent, _mT(r)) - matmul(_mT(q), q_cotangent)
    copied = m_matrix + (_mT(m_matrix) - m_matrix) * _tril_mask(m_matrix, shape(m_matrix)[-1], k=-1)
    return _mT(solve(r, _mT(q_cotangent + matmul(q, copied))))


def _qr_vjp(g, out, x):
    m, n = shape(x)[-2:]
    q, r = _qr_parts(out, x)
    q_cotangent, r_cotangent = _qr_parts(g, x)
    if m >= n:
        return _qr_square_vjp(q, r, q_cotangent, r_cotangent)
    # A = [A1 A2] with A1 = Q R1 (square) and R2 = Q^T A2
    r1, r1_cotangent, r2_cotangent = r[..., :m], r_cotangent[..., :m], r_cotangent[..., m:]
    a2 = x[..., m:]
    first = _qr_square_vjp(q, r1, q_cotangent + matmul(a2, _mT(r2_cotangent)), r1_cotangent)
    return concatenate([first, matmul(q, r2_cotangent)], axis=-1)


def _qr_jvp(ts, out, x):
    m, n = shape(x)[-2:]
    q, r = _qr_parts(out, x)
    tangent = ts[0]
    if m >= n:
        q_tangent, r_tangent = _qr_square_jvp(q, r, tangent)
    else:
        q_tangent, r1_tangent = _qr_square_jvp(q, r[..., :m], tangent[..., :m])
        r2_tangent = matmul(_mT(q_tangent), x[..., m:]) + matmul(_mT(q), tangent[..., m:])
        r_tangent = concatenate([r1_tangent, r2_tangent], axis=-1)
    if m < n:  # Q is padded to n columns in the packed output
        q_tangent = matmul(q_tangent, _eye(x, m, n))
    return concatenate([q_tangent, r_tangent], axis=-2)


def _qr_flops(rows, cols):
    k = builtins.min(rows, cols)
    return builtins.max(1, 2 * rows * cols * k - (2 * k**3) // 3)


QR = _decomposition(
    "qr",
    _qr_forward,
    _qr_vjp,
    _qr_jvp,
    _qr_flops,
    array_api=_qr_in,
    gpu="cupy.linalg.qr (cuSOLVER); the rules solve with R (a general solve: no "
    "triangular-solve primitive yet).",
)


@public(QR, names=("linalg.qr",))
def qr(x, mode="reduced"):
    """The QR decomposition ``x = Q @ R`` of each matrix of ``x`` (..., m, n), as NumPy's:
    ``mode="reduced"`` gives ``(Q, R)`` with ``Q`` (..., m, k) of orthonormal columns and
    upper-triangular ``R`` (..., k, n), k = min(m, n); ``mode="r"`` gives ``R`` alone;
    ``mode="complete"`` is the same as ``"reduced"`` for m <= n and refused for m > n (the extra
    columns of a square ``Q`` are any basis of the complement: they have no derivative).
    Derivatives need ``x``'s leading k columns to be linearly independent.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[3.0, 1.0], [4.0, 2.0], [0.0, 2.0]])
    >>> q, r = cnp.linalg.qr(a)
    >>> np.allclose(q @ r, a), np.allclose(q.T @ q, np.eye(2))
    (True, True)
    >>> # |det R| is the volume spanned by the columns: sqrt(det(a^T a))
    >>> volume = lambda a: cnp.abs(cnp.prod(cnp.diagonal(cnp.linalg.qr(a, mode="r"))))
    >>> np.allclose(cr.grad(volume)(a), volume(a) * np.linalg.pinv(a).T)
    True
    """
    _require_matrices("qr", "x", x)
    m, n = shape(x)[-2:]
    if mode == "complete" and m > n:
        raise ValueError(
            f"chainrule.linalg.qr: mode='complete' of argument 'x' of shape {shape(x)} (m > n) "
            "has no derivative; use mode='reduced'"
        )
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(
            f"chainrule.linalg.qr: mode must be 'reduced', 'complete' (m <= n) or 'r', got {mode!r}"
        )
    packed = apply(QR, x)
    q, r = _qr_parts(packed, x)
    return r if mode == "r" else QRResult(q, r)


# ------------------------------------------------------------------------------------------------
# Pseudo-inverse (Golub & Pereyra 1973), exact where the rank does not change
# ------------------------------------------------------------------------------------------------


def _pinv_vjp(g, out, x, rcond):
    # Abar = -X^T G X^T + (I - A X) G^T X X^T + X^T X G^T (I - X A), with X = pinv(A)
    g_t = _mT(g)
    left = matmul(g_t, matmul(out, _mT(out)))
    right = matmul(matmul(_mT(out), out), g_t)
    return (
        -matmul(_mT(out), matmul(g, _mT(out)))
        + left
        - matmul(x, matmul(out, left))
        + right
        - matmul(matmul(right, out), x)
    )


def _pinv_jvp(ts, out, x, rcond):
    # dX = -X dA X + X X^T dA^T (I - A X) + (I - X A) dA^T X^T X
    tangent_t = _mT(ts[0])
    left = matmul(matmul(out, _mT(out)), tangent_t)
    right = matmul(tangent_t, matmul(_mT(out), out))
    return (
        -matmul(out, matmul(ts[0], out))
        + left
        - matmul(matmul(left, x), out)
        + right
        - matmul(out, matmul(x, right))
    )


PINV = _decomposition(
    "pinv",
    lambda x, rcond: xp.linalg.pinv(x, rcond=rcond),
    _pinv_vjp,
    _pinv_jvp,
    _cubic_flops(12),
    array_api=lambda ns: lambda x, rcond: ns.linalg.pinv(x, rtol=rcond),
    gpu="cupy.linalg.pinv (one SVD, cuSOLVER); the rules are matrix products only.",
)


#: ``pinv``'s ``rtol`` when the caller gives none (NumPy's sentinel, which None is not).
_UNSET = object()


@public(PINV, names=("linalg.pinv",))
def pinv(x, rcond=None, hermitian=False, *, rtol=_UNSET):
    """The Moore-Penrose pseudo-inverse of each matrix of ``x`` (..., m, n), as NumPy's:
    singular values at most ``rcond`` (or ``rtol``, the array API's name) times the largest count
    as zero; NumPy's defaults: 1e-15 when neither is given, ``max(m, n) * eps`` for
    ``rtol=None``. ``hermitian`` is accepted and changes nothing (the general SVD gives the same
    pseudo-inverse). The derivative (Golub & Pereyra) is exact wherever the rank is locally
    constant, whatever the singular values, repeated ones included.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> np.allclose(cnp.linalg.pinv(a) @ a, np.eye(2))
    True
    >>> g = cr.grad(lambda a: cnp.sum(cnp.linalg.pinv(a)))(a)
    >>> np.allclose(g, cr.numerical_grad(lambda a: cnp.sum(cnp.linalg.pinv(a)), a))
    True
    """
    _require_matrices("pinv", "x", x)
    if rcond is not None and rtol is not _UNSET:
        raise ValueError("chainrule.linalg.pinv: give 'rcond' or 'rtol', not both")
    if rcond is None:
        if rtol is _UNSET:
            rcond = 1e-15
        elif rtol is None:
            rcond = builtins.max(shape(x)[-2:]) * _eps(x)
        else:
            rcond = rtol
    return apply(PINV, x, rcond=float(rcond))


@public(PINV, names=("linalg.lstsq",))
def lstsq(a, b, rcond=None):
    """The least-squares solution of ``a @ x = b``, as NumPy's: ``(x, residuals, rank, s)`` for
    ``a`` (m, n) and ``b`` (m,) or (m, k). ``x`` is the minimum-norm solution ``pinv(a) @ b``
    (singular values at most ``rcond`` times the largest count as zero; None: machine precision
    times max(m, n)); ``residuals`` the squared residual norms when ``a`` has full rank n < m
    (else empty); ``s`` the singular values of ``a``. ``x``, ``residuals`` and ``s`` are
    differentiable in ``a`` and ``b``.

    >>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
    >>> a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    >>> b = np.array([1.0, 2.0, 4.0])
    >>> x, residuals, rank, s = cnp.linalg.lstsq(a, b)
    >>> np.round(x, 6), np.round(residuals, 6), rank
    (array([0.833333, 1.5     ]), array([0.166667]), 2)
    >>> slope = lambda b: cnp.linalg.lstsq(a, b)[0][1]
    >>> np.allclose(cr.grad(slope)(b), [-0.5, 0.0, 0.5])  # the fitted slope's weights
    True
    """
    _require_matrices("lstsq", "a", a)
    shape_a, shape_b = shape(a), shape(b)
    if len(shape_a) != 2:
        raise ValueError(
            f"chainrule.linalg.lstsq: argument 'a' must be a matrix (m, n), got shape {shape_a}"
        )
    if len(shape_b) not in (1, 2) or shape_b[0] != shape_a[0]:
        raise ValueError(
            f"chainrule.linalg.lstsq: argument 'b' must have shape ({shape_a[0]},) or "
            f"({shape_a[0]}, k) for 'a' of shape {shape_a}, got shape {shape_b}"
        )
    if any(isinstance(strip(operand), Tracer) for operand in (a, b)):
        raise ValueError(
            f"chainrule.linalg.lstsq: not batched under vmap nor staged by jit (a of shape "
            f"{shape_a}, b of shape {shape_b}): the rank it returns, and so the residuals' "
            "shape, depend on the values; use pinv(a) @ b instead"
        )
    m, n = shape_a
    singular_values = svdvals(a)
    plain = raw(singular_values)
    namespace = arraylib.namespace_beside(plain)  # NumPy, CuPy or the active array-API one
    if rcond is None:
        rcond = _eps(plain) * builtins.max(m, n)
    solution = matmul(apply(PINV, a, rcond=float(rcond)), b)
    cutoff = rcond * float(plain[0]) if plain.shape[0] else 0.0
    rank = int(namespace.count_nonzero(plain > cutoff))
    if rank == n and m > n:
        residual = b - matmul(a, solution)
        residuals = sum(residual * residual, axis=0)
        if len(shape_b) == 1:
            residuals = reshape(residuals, (1,))
    else:
        residuals = namespace.zeros((0,), dtype=plain.dtype)
    return solution, residuals, rank, singular_values
