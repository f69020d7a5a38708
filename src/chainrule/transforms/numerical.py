"""Finite differences as a first-class gradient method, and ``check_grads``.

``numerical_grad`` is the method a learner first thinks of: nudge each weight, watch the loss.
It costs one (forward) or two (central) loss evaluations per weight, which is exactly the cost the
lab compares against one reverse pass.

``check_grads`` tests derivatives along one random direction with the dot-product identity
``<v, J u>``: the finite-difference side needs two evaluations whatever the size of the input, so
it is cheap enough to run on every primitive at every shape.
"""

from __future__ import annotations

from ..engine import arraylib, ops
from ..engine.arraylib import xp
from ..engine.core import raw
from .counting import note_pass
from .pytree import ravel_pytree, tree_flatten, tree_map


def _step_sizes(theta, method, eps):
    if eps is not None:
        return xp.full_like(theta, eps)
    machine = xp.finfo(theta.dtype).eps
    base = machine ** (1.0 / 3.0) if method == "central" else machine**0.5
    return base * xp.maximum(1.0, xp.abs(theta))


def _as_float(leaf):
    leaf = raw(leaf)
    leaf = xp.asarray(leaf) if arraylib.device_of(leaf) == "cpu" else leaf  # a GPU array stays
    return leaf if xp.issubdtype(leaf.dtype, xp.floating) else leaf.astype(xp.float64)


def _random_like(rng, theta, shape):
    """Standard normal draws of ``shape`` in ``theta``'s dtype, on ``theta``'s device (drawn on
    the host, so that a seed gives the same directions on every device)."""
    draws = rng.standard_normal(shape).astype(theta.dtype)
    return arraylib.to_device(draws, arraylib.device_of(theta))


def numerical_grad(fun, x, method: str = "central", eps=None):
    """Gradient of scalar ``fun`` at ``x`` (array or pytree) by finite differences.

    ``method="central"`` uses (f(x+h e_i) - f(x-h e_i)) / 2h, error O(h²), 2P evaluations;
    ``"forward"`` uses (f(x+h e_i) - f(x)) / h, error O(h), P+1 evaluations. The default step is
    cbrt(machine eps)·max(1,|x_i|) for central and sqrt(machine eps)·max(1,|x_i|) for forward:
    the steps that balance truncation against rounding error.
    """
    if method not in ("central", "forward"):
        raise ValueError(f"numerical_grad: method must be 'central' or 'forward', got {method!r}")
    # Integer leaves are measured in float64: unravel would otherwise round every step away.
    x = tree_map(_as_float, x)
    theta, unravel = ravel_pytree(x)
    steps = _step_sizes(theta, method, eps)

    def f(vector):
        note_pass("forward")
        value = raw(fun(unravel(vector)))
        if xp.ndim(value) != 0:
            raise TypeError(
                f"numerical_grad: fun must return a scalar, got shape {xp.shape(value)}"
            )
        return value

    gradient = xp.zeros_like(theta)
    base = f(theta) if method == "forward" else None
    for i in range(theta.size):
        h = steps[i]
        bumped = theta.copy()
        bumped[i] += h
        h_actual = bumped[i] - theta[i]  # the step that was really taken, after rounding
        if method == "central":
            lowered = theta.copy()
            lowered[i] -= h
            gradient[i] = (f(bumped) - f(lowered)) / (bumped[i] - lowered[i])
        else:
            gradient[i] = (f(bumped) - base) / h_actual
    return unravel(gradient)


def _flatten_output(out):
    leaves, _ = tree_flatten(out)
    return (
        ops.concatenate([ops.reshape(leaf, (-1,)) for leaf in leaves])
        if len(leaves) > 1
        else ops.reshape(leaves[0], (-1,))
    )


def _tolerances(dtype, rtol, atol):
    if xp.finfo(dtype).bits >= 64:
        return rtol or 1e-5, atol or 1e-6
    return rtol or 2e-2, atol or 2e-3


def check_grads(
    fun, args, modes=("rev",), order: int = 2, eps=None, rtol=None, atol=None, seed: int = 0
):
    """Check ``fun``'s derivatives at ``args`` against central differences (random direction).

    For each mode ("rev" and/or "fwd") and each order up to ``order``, compares
    ``<v, J u>`` from finite differences with the same number from the mode, and with both modes
    also checks the JVP against the VJP (``<J^T v, u>`` against ``<v, J u>``, to a tolerance of
    sqrt(eps): both are exact up to rounding). Beyond order 1, each mode's derivative is itself
    checked in every mode, so with both modes order 2 covers rev over rev, fwd over rev (the
    Hessian's way), rev over fwd and fwd over fwd. Raises ``AssertionError`` showing both numbers,
    the tolerance and the combination. ``args`` is a tuple of arrays or pytrees.
    """
    from .api import jvp, vjp  # noqa: PLC0415 (the autodiff layer, imported on use)

    if not isinstance(args, tuple):
        args = (args,)
    for mode in modes:
        if mode not in ("rev", "fwd"):
            raise ValueError(f"check_grads: modes must be 'rev' and/or 'fwd', got {mode!r}")
    theta, unravel = ravel_pytree(args)
    if not xp.issubdtype(theta.dtype, xp.floating):
        raise TypeError(f"check_grads: arguments must be floating-point, got {theta.dtype}")
    rng = xp.random.default_rng(seed)

    def flat_fun(vector):
        return _flatten_output(fun(*unravel(vector)))

    _check_level(flat_fun, theta, modes, order, eps, rtol, atol, rng, vjp, jvp, level=1)


def _check_level(flat_fun, theta, modes, order, eps, rtol, atol, rng, vjp, jvp, level, path=""):
    """Check ``flat_fun`` (vector -> vector) at ``theta``; ``path`` names how it was derived
    (e.g. "the fwd-mode derivative" at order 2), for the error message."""
    out = raw(flat_fun(theta))
    dtype = theta.dtype
    u = _random_like(rng, theta, theta.shape)
    v = _random_like(rng, theta, out.shape)
    h = (
        eps
        if eps is not None
        else float(xp.finfo(dtype).eps ** (1.0 / 3.0))
        * max(1.0, float(xp.sqrt(xp.mean(theta * theta))) if theta.size else 1.0)
    )
    plus = raw(flat_fun(theta + h * u))
    minus = raw(flat_fun(theta - h * u))
    numeric = float(xp.vdot(v, (plus - minus) / (2 * h)))
    rtol_, atol_ = _tolerances(dtype, rtol, atol)
    # The absolute part scales with the size of the quantities involved.
    scale = max(1.0, float(xp.abs(v).sum()) * float(xp.abs(u).mean()) if v.size else 1.0)
    tol = atol_ * scale + rtol_ * abs(numeric)
    where = f"order {level}" + (f", {path}" if path else "")

    results = {}
    if "rev" in modes:
        _, vjp_fun = vjp(flat_fun, theta)
        results["rev"] = float(xp.vdot(raw(vjp_fun(v)[0]), u))
    if "fwd" in modes:
        _, tangent = jvp(flat_fun, (theta,), (u,))
        results["fwd"] = float(xp.vdot(v, raw(tangent)))
    for mode, analytic in results.items():
        if not abs(analytic - numeric) <= tol:
            raise AssertionError(
                f"check_grads ({mode} mode, {where}): <v, J u> by finite differences = "
                f"{numeric:.12g}, by {mode} mode = {analytic:.12g}; |difference| "
                f"{abs(analytic - numeric):.3g} > tolerance {tol:.3g}"
            )
    if len(results) == 2:
        # Both modes are exact up to rounding: they must agree far more closely than with the
        # finite difference (<v, J u> computed as <J^T v, u> and as <v, J u>).
        agreement = float(xp.sqrt(xp.finfo(dtype).eps)) * (scale + abs(results["rev"]))
        if not abs(results["rev"] - results["fwd"]) <= agreement:
            raise AssertionError(
                f"check_grads ({where}): <v, J u> by reverse mode = {results['rev']:.15g} but by "
                f"forward mode = {results['fwd']:.15g}; |difference| "
                f"{abs(results['rev'] - results['fwd']):.3g} > tolerance {agreement:.3g}"
            )
    if order > 1:
        # Each mode's first derivative is itself differentiated in every mode: with both modes
        # that is rev over rev, fwd over rev (the Hessian's way), rev over fwd and fwd over fwd.
        for mode in modes:
            if mode == "rev":

                def derivative(vector, v_fixed=v):
                    _, vjp_fun = vjp(flat_fun, vector)
                    return ops.reshape(vjp_fun(v_fixed)[0], (-1,))
            else:

                def derivative(vector, u_fixed=u):
                    _, tangent = jvp(flat_fun, (vector,), (u_fixed,))
                    return ops.reshape(tangent, (-1,))

            inner = f"the {mode}-mode derivative" + (f" of {path}" if path else "")
            _check_level(
                derivative,
                theta,
                modes,
                order - 1,
                eps,
                rtol,
                atol,
                rng,
                vjp,
                jvp,
                level + 1,
                inner,
            )
