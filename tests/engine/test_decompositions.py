"""The matrix decompositions of ``chainrule.numpy.linalg``: cholesky, qr, eigh, eigvalsh, svd,
svdvals, slogdet, pinv and lstsq.

Beyond their rows of the primitive grid (tests/primitive_grid.py): stacks of matrices (2, 3, n, n)
in both modes against central differences, the dot-product identity ``<u, J v> = <J^T u, v>``,
second derivatives, losses that do not depend on the choice of eigen- or singular vectors
(exact even where values repeat), the documented NaN/inf where they do, NumPy's result types and
signatures, misuse errors, and PyTorch's ``torch.linalg`` when it is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp

BATCH = (2, 3)


def _sym(a):
    return 0.5 * (a + cnp.swapaxes(a, -1, -2))


def _spd(a):
    return cnp.matmul(a, cnp.swapaxes(a, -1, -2)) + 0.5 * np.eye(np.shape(a)[-2], dtype=a.dtype)


def _square(rng, shape):
    """Well-conditioned square matrices: I plus noise."""
    return np.eye(shape[-1]) + 0.3 * rng.standard_normal(shape)


def _spread(rng, shape):
    """Matrices whose singular values (and the eigenvalues of their symmetric part, when square)
    are near 1, 2.5, 4, ...: well apart, so that the vectors' derivatives are well conditioned."""
    m, n = shape[-2:]
    base = np.eye(m, n) * (1.0 + 1.5 * np.arange(n))  # column j scaled by 1 + 1.5 j
    return base + 0.2 * rng.standard_normal(shape)


def _reconstruct(u, s, vh):
    return cnp.matmul(u * cnp.expand_dims(s, -2), vh)


# Each case: a function of one matrix stack and the stack it is checked at. Results that depend on
# the arbitrary signs of eigen- or singular vectors appear only through gauge-invariant forms.
CASES = {
    "cholesky": (lambda a: cnp.linalg.cholesky(_spd(a)), _square, (3, 3)),
    "cholesky upper": (lambda a: cnp.linalg.cholesky(_spd(a), upper=True), _square, (3, 3)),
    "slogdet": (lambda a: tuple(cnp.linalg.slogdet(a)), _square, (3, 3)),
    "eigvalsh": (lambda a: cnp.linalg.eigvalsh(_sym(a)), _spread, (4, 4)),
    "eigvalsh upper": (lambda a: cnp.linalg.eigvalsh(_sym(a), UPLO="U"), _spread, (3, 3)),
    "eigh |v|^2": (
        lambda a: (lambda w, v: (w, v * v))(*cnp.linalg.eigh(_sym(a))),
        _spread,
        (4, 4),
    ),
    "eigh projector": (
        lambda a: (lambda v: v[..., :, :1] * cnp.swapaxes(v[..., :, :1], -1, -2))(
            cnp.linalg.eigh(_sym(a)).eigenvectors
        ),
        _spread,
        (3, 3),
    ),
    "svdvals tall": (lambda a: cnp.linalg.svdvals(a), _spread, (5, 3)),
    "svd reconstruction tall": (
        lambda a: _reconstruct(*cnp.linalg.svd(a, full_matrices=False)),
        _spread,
        (5, 3),
    ),
    "svd reconstruction wide": (
        lambda a: _reconstruct(*cnp.linalg.svd(a, full_matrices=False)),
        _spread,
        (3, 5),
    ),
    "svd U Vh (polar factor)": (
        lambda a: (lambda u, s, vh: cnp.matmul(u, vh))(*cnp.linalg.svd(a, full_matrices=False)),
        _spread,
        (4, 3),
    ),
    "svd full_matrices": (
        lambda a: (lambda u, s, vh: (u[..., :, :3] ** 2, s, vh**2))(*cnp.linalg.svd(a)),
        _spread,
        (4, 3),
    ),
    "svd full_matrices wide": (
        lambda a: (lambda u, s, vh: (u**2, s, vh[..., :3, :] ** 2))(*cnp.linalg.svd(a)),
        _spread,
        (3, 4),
    ),
    "qr square": (lambda a: tuple(cnp.linalg.qr(a)), _square, (3, 3)),
    "qr tall": (lambda a: tuple(cnp.linalg.qr(a)), _spread, (5, 3)),
    "qr wide": (lambda a: tuple(cnp.linalg.qr(a)), _spread, (3, 5)),
    "pinv tall": (lambda a: cnp.linalg.pinv(a), _spread, (4, 3)),
    "pinv wide": (lambda a: cnp.linalg.pinv(a), _spread, (3, 4)),
}


def _sample(name, batch=BATCH, seed=0):
    _, build, shape = CASES[name]
    return build(np.random.default_rng(seed), batch + shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stacks_match_central_differences_in_both_modes(name):
    fun = CASES[name][0]
    # Both modes at once also check the JVP against the VJP along random directions.
    cr.check_grads(fun, (_sample(name),), modes=("rev", "fwd"), order=1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vjp_and_jvp_satisfy_the_dot_product_identity(name):
    fun = CASES[name][0]
    a = _sample(name)
    rng = np.random.default_rng(3)
    out, pull_back = cr.vjp(fun, a)
    u = cr.tree_map(lambda leaf: rng.standard_normal(np.shape(leaf)), out)
    v = rng.standard_normal(a.shape)
    (jt_u,) = pull_back(u)
    _, j_v = cr.jvp(fun, (a,), (v,))
    lhs = sum(np.sum(x * y) for x, y in zip(cr.tree_leaves(u), cr.tree_leaves(j_v), strict=True))
    assert lhs == pytest.approx(np.sum(jt_u * v), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", ["cholesky", "slogdet", "eigh |v|^2", "svd reconstruction tall"])
def test_stacks_are_the_stacked_single_results(name):
    fun = CASES[name][0]
    a = _sample(name)
    rng = np.random.default_rng(4)
    out, pull_back = cr.vjp(fun, a)
    u = cr.tree_map(lambda leaf: rng.standard_normal(np.shape(leaf)), out)
    (whole,) = pull_back(u)
    for index in np.ndindex(*BATCH):
        out_one, pull_one = cr.vjp(fun, a[index])
        (one,) = pull_one(cr.tree_map(lambda leaf, index=index: leaf[index], u))
        np.testing.assert_allclose(whole[index], one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name", ["cholesky", "slogdet", "eigvalsh", "eigh |v|^2", "svdvals tall", "qr tall"]
)
def test_second_order_in_every_combination_of_modes(name):
    fun = CASES[name][0]
    cr.check_grads(fun, (_sample(name, batch=(2,)),), modes=("rev", "fwd"), order=2)


def test_hessian_of_logabsdet_is_the_known_formula():
    # d^2 log|det A| [E, F] = -tr(A^-1 E A^-1 F): H[i, j, k, l] = -inv[j, k] inv[l, i]
    a = _square(np.random.default_rng(5), (3, 3))
    hessian = cr.hessian(lambda a: cnp.linalg.slogdet(a).logabsdet)(a)
    inverse = np.linalg.inv(a)
    np.testing.assert_allclose(hessian, -np.einsum("jk,li->ijkl", inverse, inverse), atol=1e-10)


def test_hessian_of_a_spectral_function_matches_differences_of_its_gradient():
    a = _spread(np.random.default_rng(6), (3, 3))

    def loss(a):
        return cnp.sum(cnp.linalg.eigvalsh(_sym(a)) ** 3)

    hessian = cr.hessian(loss)(a).reshape(9, 9)
    numeric = np.stack(
        [
            (cr.grad(loss)(a + 1e-5 * e) - cr.grad(loss)(a - 1e-5 * e)).ravel() / 2e-5
            for e in np.eye(9).reshape(9, 3, 3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(hessian, numeric, atol=1e-6)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Gauge invariance and repeated values
# ------------------------------------------------------------------------------------------------


def test_eigenvalue_losses_are_exact_at_repeated_eigenvalues():
    # Eigenvalues 1, 1, 1, 4: the eigenvectors of the triple eigenvalue are any basis of a plane.
    a = np.diag([1.0, 1.0, 1.0, 4.0])
    weights = np.array([0.5, -1.0, 2.0, 3.0])
    grad_trace = cr.grad(lambda a: cnp.sum(cnp.linalg.eigvalsh(a)))(a)
    np.testing.assert_allclose(grad_trace, np.eye(4), atol=1e-14)
    grad_sum = cr.grad(lambda a: cnp.sum(cnp.linalg.eigh(a)[0]))(a)
    np.testing.assert_allclose(grad_sum, np.eye(4), atol=1e-14)
    # the largest (simple) eigenvalue: the projector onto e4
    grad_top = cr.grad(lambda a: cnp.linalg.eigvalsh(a)[-1])(a)
    np.testing.assert_allclose(grad_top, np.diag([0.0, 0.0, 0.0, 1.0]), atol=1e-14)
    # forward mode too
    _, tangent = cr.jvp(lambda a: cnp.linalg.eigvalsh(a), (a,), (np.diag(weights),))
    np.testing.assert_allclose(np.sort(tangent[:3]), np.sort(weights[:3]), atol=1e-14)
    assert tangent[3] == pytest.approx(3.0)


def test_singular_value_losses_are_exact_at_repeated_singular_values():
    a = np.eye(3)[:, :2] * 2.0  # singular values 2, 2
    nuclear = cr.grad(lambda a: cnp.sum(cnp.linalg.svdvals(a)))(a)
    np.testing.assert_allclose(nuclear, np.eye(3)[:, :2], atol=1e-14)
    frobenius = cr.grad(lambda a: cnp.sum(cnp.linalg.svd(a)[1] ** 2))(a)
    np.testing.assert_allclose(frobenius, 2 * a, atol=1e-14)
    _, tangent = cr.jvp(lambda a: cnp.linalg.svdvals(a), (a,), (np.ones((3, 2)),))
    assert np.all(np.isfinite(tangent))


def test_gauge_invariant_losses_of_the_vectors_get_exact_gradients():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 3))
    # ||U diag(s) Vh||^2 = ||a||^2: gradient 2a, though it runs through U and Vh
    grad = cr.grad(lambda a: cnp.sum(_reconstruct(*cnp.linalg.svd(a, full_matrices=False)) ** 2))
    np.testing.assert_allclose(grad(a), 2 * a, atol=1e-12)
    # |u_i|^2 projections of eigenvectors: the squared entries are sign-independent
    s = _spread(rng, (3, 3))

    def projection(s):
        vectors = cnp.linalg.eigh(_sym(s))[1]
        return cnp.sum(vectors[..., 0] ** 2 * np.array([1.0, 2.0, 3.0]))

    np.testing.assert_allclose(
        cr.grad(projection)(s), cr.numerical_grad(projection, s), rtol=1e-6, atol=1e-8
    )
    # V diag(w) V^T rebuilds sym(s): its gradient is the symmetrised cotangent
    weights = rng.standard_normal((3, 3))

    def rebuilt(s):
        w, v = cnp.linalg.eigh(_sym(s))
        return cnp.sum(cnp.matmul(v * cnp.expand_dims(w, -2), cnp.swapaxes(v, -1, -2)) * weights)

    np.testing.assert_allclose(cr.grad(rebuilt)(s), 0.5 * (weights + weights.T), atol=1e-12)


def test_eigenvector_derivatives_at_repeated_eigenvalues_are_not_finite():
    # Documented behaviour (JAX's and PyTorch's): 1 / (λj - λi) diverges.
    a = np.diag([1.0, 1.0, 2.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = cr.grad(lambda a: cnp.sum(cnp.linalg.eigh(a)[1][:, 0] * np.arange(3.0)))(a)
        _, tangent = cr.jvp(lambda a: cnp.linalg.eigh(a)[1], (a,), (np.ones((3, 3)),))
    assert not np.all(np.isfinite(grad))
    assert not np.all(np.isfinite(tangent))


def test_extra_columns_of_full_matrices_are_ignored():
    a = _spread(np.random.default_rng(8), (4, 2))

    def extra(a):
        return cnp.sum(cnp.linalg.svd(a)[0][:, 2:] * np.ones((4, 2)))

    np.testing.assert_array_equal(cr.grad(extra)(a), np.zeros((4, 2)))
    _, tangent = cr.jvp(lambda a: cnp.linalg.svd(a)[0], (a,), (np.ones((4, 2)),))
    np.testing.assert_array_equal(tangent[:, 2:], np.zeros((4, 2)))


# ------------------------------------------------------------------------------------------------
# NumPy's signatures, result types and values
# ------------------------------------------------------------------------------------------------


def test_results_are_numpys_named_tuples_and_values():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((2, 4, 3))
    s = _sym(_spread(rng, (2, 3, 3)))
    w, v = cnp.linalg.eigh(s)
    assert cnp.linalg.eigh(s)._fields == ("eigenvalues", "eigenvectors")
    np.testing.assert_allclose(w, np.linalg.eigh(s).eigenvalues, rtol=1e-12)
    np.testing.assert_allclose(np.abs(v), np.abs(np.linalg.eigh(s).eigenvectors), rtol=1e-10)
    for full in (True, False):
        ours, numpys = cnp.linalg.svd(a, full_matrices=full), np.linalg.svd(a, full_matrices=full)
        assert ours._fields == ("U", "S", "Vh")
        for got, want in zip(ours, numpys, strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cnp.linalg.svd(a, compute_uv=False), np.linalg.svdvals(a))
    q, r = cnp.linalg.qr(a)
    assert cnp.linalg.qr(a)._fields == ("Q", "R") and q.shape == (2, 4, 3) and r.shape == (2, 3, 3)
    np.testing.assert_allclose(cnp.linalg.qr(a, mode="r"), np.linalg.qr(a, mode="r"))
    wide = a.swapaxes(-1, -2)
    np.testing.assert_allclose(cnp.linalg.qr(wide, mode="complete").Q, np.linalg.qr(wide).Q)
    sign, logabsdet = cnp.linalg.slogdet(-s)
    assert cnp.linalg.slogdet(s)._fields == ("sign", "logabsdet")
    np.testing.assert_allclose(sign, np.linalg.slogdet(-s).sign)
    np.testing.assert_allclose(logabsdet, np.linalg.slogdet(-s).logabsdet, rtol=1e-12)
    np.testing.assert_allclose(cnp.linalg.pinv(a), np.linalg.pinv(a), rtol=1e-10)
    np.testing.assert_allclose(cnp.linalg.pinv(a, rcond=0.5), np.linalg.pinv(a, rcond=0.5))
    spd = np.asarray(_spd(a.swapaxes(-1, -2)))
    np.testing.assert_allclose(cnp.linalg.cholesky(spd), np.linalg.cholesky(spd), rtol=1e-12)
    np.testing.assert_allclose(
        cnp.linalg.cholesky(spd, upper=True), np.linalg.cholesky(spd, upper=True), rtol=1e-12
    )


@pytest.mark.parametrize("b_shape", [(5,), (5, 2)])
def test_lstsq_matches_numpy_and_differentiates_both_arguments(b_shape):
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal(b_shape)
    ours, numpys = cnp.linalg.lstsq(a, b), np.linalg.lstsq(a, b)
    for got, want in zip(ours, numpys, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert ours[2] == 3 and isinstance(ours[2], int)

    def fitted(a, b):
        x, residuals, _, s = cnp.linalg.lstsq(a, b)
        return x, residuals, s

    cr.check_grads(fitted, (a, b), modes=("rev", "fwd"), order=2)


def test_lstsq_of_a_rank_deficient_system_is_the_minimum_norm_solution():
    a = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    b = np.array([1.0, 2.0, 3.0])
    x, residuals, rank, s = cnp.linalg.lstsq(a, b)
    want = np.linalg.lstsq(a, b)
    np.testing.assert_allclose(x, want[0], atol=1e-12)
    assert rank == want[2] == 1 and residuals.shape == want[1].shape == (0,)


def test_tensors_backward_through_a_decomposition():
    a = cr.Tensor(_square(np.random.default_rng(11), (3, 3)), requires_grad=True)
    loss = cnp.linalg.slogdet(cnp.matmul(a, a.T)).logabsdet + cnp.sum(cnp.linalg.svdvals(a))
    loss.backward()
    u, _, vh = np.linalg.svd(a.data)
    np.testing.assert_allclose(a.grad, 2 * np.linalg.inv(a.data).T + u @ vh, atol=1e-10)


def test_jacobians_run_through_the_batching_rules():
    a = _spread(np.random.default_rng(12), (3, 3))
    fun = lambda a: cnp.linalg.eigvalsh(_sym(a))  # noqa: E731
    np.testing.assert_allclose(cr.jacfwd(fun)(a), cr.jacrev(fun)(a), atol=1e-12)
    numeric = np.stack(
        [(fun(a + 1e-6 * e) - fun(a - 1e-6 * e)) / 2e-6 for e in np.eye(9).reshape(9, 3, 3)],
        axis=-1,
    ).reshape(3, 3, 3)
    np.testing.assert_allclose(cr.jacrev(fun)(a), numeric, atol=1e-8)


def test_single_precision_stays_single_precision():
    a = _square(np.random.default_rng(13), (2, 3, 3)).astype(np.float32)
    for fun in (
        lambda a: cnp.linalg.cholesky(_spd(a)),
        lambda a: cnp.linalg.eigvalsh(_sym(a)),
        lambda a: cnp.linalg.svdvals(a),
        lambda a: cnp.linalg.slogdet(a).logabsdet,
        lambda a: cnp.linalg.qr(a).R,
        lambda a: cnp.linalg.pinv(a),
    ):
        assert np.asarray(fun(a)).dtype == np.float32
        grad = cr.grad(lambda a, fun=fun: cnp.sum(fun(a)))(a)
        assert grad.dtype == np.float32 and grad.shape == a.shape


# ------------------------------------------------------------------------------------------------
# Misuse: errors that name the function, the argument and the shapes
# ------------------------------------------------------------------------------------------------

MISUSE = {
    "cholesky": (lambda: cnp.linalg.cholesky(np.ones((3, 2))), r"linalg\.cholesky.*'x'.*\(3, 2\)"),
    "eigh": (lambda: cnp.linalg.eigh(np.ones((2, 3, 4))), r"linalg\.eigh.*'x'.*\(2, 3, 4\)"),
    "eigvalsh": (lambda: cnp.linalg.eigvalsh(np.ones(3)), r"linalg\.eigvalsh.*'x'.*\(3,\)"),
    "slogdet": (lambda: cnp.linalg.slogdet(np.ones((4, 3))), r"linalg\.slogdet.*'x'.*\(4, 3\)"),
    "svd": (lambda: cnp.linalg.svd(np.ones(3)), r"linalg\.svd.*'x'.*\(3,\)"),
    "svdvals": (lambda: cnp.linalg.svdvals(np.float64(2.0)), r"linalg\.svdvals.*'x'.*\(\)"),
    "qr": (lambda: cnp.linalg.qr(np.ones(3)), r"linalg\.qr.*'x'.*\(3,\)"),
    "qr complete": (
        lambda: cnp.linalg.qr(np.ones((4, 3)), mode="complete"),
        r"linalg\.qr.*complete.*\(4, 3\)",
    ),
    "qr mode": (lambda: cnp.linalg.qr(np.ones((3, 3)), mode="raw"), r"linalg\.qr.*'raw'"),
    "eigh UPLO": (lambda: cnp.linalg.eigh(np.eye(2), UPLO="X"), r"linalg\.eigh.*UPLO"),
    "pinv": (lambda: cnp.linalg.pinv(np.ones(3)), r"linalg\.pinv.*'x'.*\(3,\)"),
    "lstsq a": (
        lambda: cnp.linalg.lstsq(np.ones((2, 3, 3)), np.ones(3)),
        r"linalg\.lstsq.*'a'.*\(2, 3, 3\)",
    ),
    "lstsq b": (
        lambda: cnp.linalg.lstsq(np.ones((4, 3)), np.ones(3)),
        r"linalg\.lstsq.*'b'.*\(4, 3\).*\(3,\)",
    ),
}


@pytest.mark.parametrize("name", sorted(MISUSE))
def test_misuse_names_the_function_the_argument_and_the_shapes(name):
    call, pattern = MISUSE[name]
    with pytest.raises(ValueError, match=pattern):
        call()


def test_cholesky_of_a_matrix_that_is_not_positive_definite_says_so():
    with pytest.raises(np.linalg.LinAlgError, match=r"cholesky.*'x'.*positive definite.*\(2, 2\)"):
        cnp.linalg.cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))


# ------------------------------------------------------------------------------------------------
# PyTorch's torch.linalg as a peer (optional)
# ------------------------------------------------------------------------------------------------

PEER = {  # name: (chainrule loss, torch loss, shape)
    "cholesky": (
        lambda a: cnp.sum(cnp.linalg.cholesky(_spd(a)) * np.arange(9.0).reshape(3, 3)),
        lambda torch, a: (
            torch.linalg.cholesky(a @ a.mT + 0.5 * torch.eye(3, dtype=a.dtype))
            * torch.arange(9.0, dtype=a.dtype).reshape(3, 3)
        ).sum(),
        (3, 3),
    ),
    "eigh": (
        lambda a: cnp.sum(cnp.linalg.eigh(_sym(a))[1] ** 2 * np.arange(9.0).reshape(3, 3)),
        lambda torch, a: (
            torch.linalg.eigh(0.5 * (a + a.mT))[1] ** 2
            * torch.arange(9.0, dtype=a.dtype).reshape(3, 3)
        ).sum(),
        (3, 3),
    ),
    "svd": (
        lambda a: cnp.sum(cnp.linalg.svd(a, full_matrices=False)[0] ** 2 * np.arange(3.0)),
        lambda torch, a: (
            torch.linalg.svd(a, full_matrices=False)[0] ** 2 * torch.arange(3.0, dtype=a.dtype)
        ).sum(),
        (4, 3),
    ),
    "qr": (
        lambda a: cnp.sum(cnp.linalg.qr(a)[1] * np.arange(9.0).reshape(3, 3)),
        lambda torch, a: (
            torch.linalg.qr(a)[1] * torch.arange(9.0, dtype=a.dtype).reshape(3, 3)
        ).sum(),
        (4, 3),
    ),
    "qr wide": (
        lambda a: cnp.sum(cnp.linalg.qr(a)[0] * cnp.linalg.qr(a)[1][..., :, :3]),
        lambda torch, a: (torch.linalg.qr(a)[0] * torch.linalg.qr(a)[1][..., :, :3]).sum(),
        (3, 5),
    ),
    "eigvalsh": (
        lambda a: cnp.linalg.eigvalsh(_sym(a)) ** 2,
        lambda torch, a: torch.linalg.eigvalsh(0.5 * (a + a.mT)) ** 2,
        (4, 4),
    ),
    "svdvals": (
        lambda a: cnp.exp(cnp.linalg.svdvals(a)),
        lambda torch, a: torch.exp(torch.linalg.svdvals(a)),
        (3, 5),
    ),
    "slogdet": (
        lambda a: cnp.linalg.slogdet(a)[1],
        lambda torch, a: torch.linalg.slogdet(a)[1],
        (3, 3),
    ),
    "pinv": (
        lambda a: cnp.sum(cnp.linalg.pinv(a) ** 2),
        lambda torch, a: (torch.linalg.pinv(a) ** 2).sum(),
        (4, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(PEER))
def test_gradients_equal_pytorchs(name):
    torch = pytest.importorskip("torch")
    ours, theirs, shape = PEER[name]
    a = _spread(np.random.default_rng(14), (2, *shape))
    tensor = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    theirs(torch, tensor).sum().backward()
    np.testing.assert_allclose(
        cr.grad(lambda a: cnp.sum(ours(a)))(a), tensor.grad.numpy(), rtol=1e-9, atol=1e-10
    )


def test_pinv_takes_numpys_rcond_rtol_and_hermitian():
    a = np.diag([1.0, 1e-9, 0.0])
    np.testing.assert_allclose(cnp.linalg.pinv(a), np.linalg.pinv(a))
    np.testing.assert_allclose(cnp.linalg.pinv(a, rtol=None), np.linalg.pinv(a, rtol=None))
    np.testing.assert_allclose(cnp.linalg.pinv(a, rtol=1e-12), np.linalg.pinv(a, rtol=1e-12))
    np.testing.assert_allclose(cnp.linalg.pinv(a, 1e-6, hermitian=True), np.diag([1.0, 0, 0]))
    with pytest.raises(ValueError, match=r"linalg\.pinv.*'rcond' or 'rtol'"):
        cnp.linalg.pinv(a, rcond=1e-3, rtol=1e-3)


def test_spectral_and_nuclear_norms_come_from_the_singular_values():
    a = _spread(np.random.default_rng(15), (4, 3))
    for ord in (2, -2, "nuc"):
        assert cnp.linalg.norm(a, ord) == pytest.approx(np.linalg.norm(a, ord), rel=1e-12)
    u, _, vh = np.linalg.svd(a)
    spectral = cr.grad(lambda a: cnp.linalg.norm(a, 2))(a)
    np.testing.assert_allclose(spectral, np.outer(u[:, 0], vh[0]), atol=1e-12)
    np.testing.assert_allclose(cr.grad(lambda a: cnp.linalg.norm(a, "nuc"))(np.eye(3)), np.eye(3))


def test_jacobians_of_the_values_stay_finite_at_repeated_values():
    # jacrev pulls back many cotangents at once (a batch): the zero vector part is still skipped.
    for fun in (cnp.linalg.eigvalsh, cnp.linalg.svdvals):
        reverse, forward = cr.jacrev(fun)(np.eye(3)), cr.jacfwd(fun)(np.eye(3))
        assert np.all(np.isfinite(reverse))
        np.testing.assert_allclose(np.sum(reverse, axis=0), np.eye(3), atol=1e-14)  # the trace
        np.testing.assert_allclose(np.sum(forward, axis=0), np.eye(3), atol=1e-14)


def test_complex_matrices_are_refused_by_name():
    with pytest.raises(TypeError, match=r"linalg\.eigh.*'x'.*complex.*\(2, 2\)"):
        cnp.linalg.eigh(np.eye(2, dtype=complex))


@pytest.mark.parametrize("name", sorted(PEER))
def test_forward_mode_equals_pytorchs(name):
    torch = pytest.importorskip("torch")
    ours, theirs, shape = PEER[name]
    rng = np.random.default_rng(16)
    a = _spread(rng, (2, *shape))
    tangent = rng.standard_normal(a.shape)
    _, expected = torch.func.jvp(
        lambda t: theirs(torch, t).sum(),
        (torch.tensor(a, dtype=torch.float64),),
        (torch.tensor(tangent, dtype=torch.float64),),
    )
    _, got = cr.jvp(lambda a: cnp.sum(ours(a)), (a,), (tangent,))
    assert float(got) == pytest.approx(float(expected), rel=1e-9, abs=1e-10)
