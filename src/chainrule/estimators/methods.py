"""Every way to get a gradient, behind one call.

A *method* is called ``loss, grads, cost = method(loss_fn, params, batch, key, step=0)``:
``loss_fn(params, batch)`` returns a scalar, ``params`` is any pytree of arrays, ``key`` an integer
seed for the method's randomness (the same key gives the same estimate) and ``step`` the update
number (SPSA's perturbation size shrinks with it). It returns the loss at ``params`` (see each
method for how it is obtained), a gradient pytree shaped like ``params`` and a :class:`Cost`.

>>> import numpy as np, chainrule.numpy as cnp
>>> def loss_fn(params, batch):
...     return cnp.sum((batch @ params["w"]) ** 2)
>>> params, batch = {"w": np.array([1.0, -2.0])}, np.eye(2)
>>> loss, grads, cost = get_method("backprop")(loss_fn, params, batch, key=0)
>>> loss, grads["w"], (cost.forward_passes, cost.vjp_passes)
(5.0, array([ 2., -4.]), (1, 1))
>>> loss, grads, cost = get_method("finite_differences")(loss_fn, params, batch, key=0)
>>> np.round(grads["w"], 6), cost.loss_evaluations
(array([ 2., -4.]), 4)

The exact methods (``backprop``, ``forward_mode``) agree to rounding; ``finite_differences``
to its truncation error; the stochastic ones (``forward_gradient``, ``spsa``, ``mezo``,
``evolution_strategies``) are random estimates whose *expectation* is the gradient (or, for SPSA,
MeZO and ES, the gradient of a smoothed loss), each with a variance that grows with the number of
parameters P. Their ``estimate`` method returns the estimate as a :class:`SeededGradient` (a key
and a few coefficients) instead of a pytree.

Every method works on parameters on a GPU as well: the results (gradients, perturbed points)
stay on the parameters' device, and the random directions of the stochastic methods are drawn
on the host by NumPy and copied over (:mod:`.seeded`), so a key gives the same estimate on every
device. The losses come back to the host as Python floats, one small copy per evaluation.
"""

from __future__ import annotations

import math
import numbers

from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw
from ..engine.ops import concatenate
from ..transforms.api import jvp, value_and_grad
from ..transforms.jacobians import forward_jacobian
from ..transforms.pytree import (
    ravel_pytree,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
)
from ..util.lookup import build
from .cost import Cost, measuring
from .seeded import SeededGradient, add_direction_, direction, direction_leaf


def _scalar(value, method: str) -> float:
    value = raw(value)
    shape = tuple(getattr(value, "shape", ()))
    if shape != ():
        raise TypeError(f"{method}: loss_fn must return a scalar, got an array of shape {shape}")
    return float(value)  # a device's 0-d loss: one explicit copy to the host


def _float_leaves(params, method: str):
    leaves, treedef = tree_flatten(params)
    arrays = [arraylib.asarray(raw(leaf)) for leaf in leaves]
    for n, array in enumerate(arrays):
        if not xp.issubdtype(array.dtype, xp.floating):
            raise TypeError(
                f"{method}: parameter leaf {n} has dtype {array.dtype}; parameters must be floating"
            )
    return arrays, treedef


def _check_positive(value, what, integer=False):
    bad = (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    )
    if integer:
        bad = bad or int(value) != value
    if bad:
        raise ValueError(
            f"{what} must be a positive {'integer' if integer else 'number'}, got {value!r}"
        )
    return int(value) if integer else float(value)


def _check_key(key, method: str) -> int:
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
        raise ValueError(f"{method}: key must be a non-negative integer, got {key!r}")
    return int(key)


class Method:
    """Base class: subclasses implement ``_gradient(loss_fn, params, batch, key, step, cost)``."""

    name = "method"
    exact = False  # True: the result is the gradient up to rounding

    def __call__(self, loss_fn, params, batch, key=0, *, step: int = 0, measure: bool = False):
        """``(loss, grads, cost)``; ``measure=True`` also fills ``cost.flops`` and
        ``cost.peak_bytes``."""
        return self._measured(self._gradient, loss_fn, params, batch, key, step, measure)

    def _measured(self, work, loss_fn, params, batch, key, step, measure):
        """``(loss, result, cost)`` of ``work(loss_fn, params, batch, key, step, cost)`` (the
        gradient, or a zeroth-order estimate's coefficients), its key checked and its cost
        counted, and priced when ``measure`` is true."""
        cost = Cost()
        with measuring(cost, measure, self._plain(loss_fn, params, batch, cost)):
            loss, result = work(loss_fn, params, batch, _check_key(key, self.name), int(step), cost)
        return loss, result, cost

    def _plain(self, loss_fn, params, batch, cost):
        """For methods made of plain loss evaluations: what :func:`measuring` needs to price them
        (``None``: the method's work is traced and counted as it runs)."""
        return None

    def _gradient(self, loss_fn, params, batch, key, step, cost):  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {}

    def config(self) -> dict:
        """A JSON-ready description (checkpoints record it)."""
        return {"name": self.name, **self.hyperparameters()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


# -- exact
# -------------------------------------------------------------------------------------------
class Backprop(Method):
    """Reverse mode: one recorded forward pass, one backward pass, whatever P is."""

    name = "backprop"
    exact = True

    def _gradient(self, loss_fn, params, batch, key, step, cost):
        loss, grads = value_and_grad(loss_fn)(params, batch)
        cost.forward_passes += 1
        cost.vjp_passes += 1
        return _scalar(loss, self.name), grads


class ForwardMode(Method):
    """The exact gradient from P JVPs, one per basis direction, pushed ``chunk_size`` at a time
    through batched forward sweeps: P times the work of one forward pass."""

    name = "forward_mode"
    exact = True

    def __init__(self, chunk_size: int = 128, sample: int | None = None):
        self.chunk_size = _check_positive(chunk_size, "forward_mode chunk_size", integer=True)
        self.sample = (
            None if sample is None else _check_positive(sample, "forward_mode sample", integer=True)
        )

    def hyperparameters(self):
        return {"chunk_size": self.chunk_size, "sample": self.sample}

    def _gradient(self, loss_fn, params, batch, key, step, cost):
        arrays, treedef = _float_leaves(params, self.name)
        size = sum(a.size for a in arrays)
        if self.sample is not None and self.sample < size:
            return self._sampled(loss_fn, arrays, treedef, batch, cost)
        loss, grads = forward_jacobian(
            loss_fn, (tree_unflatten(treedef, arrays), batch), argnums=0, chunk_size=self.chunk_size
        )
        cost.forward_passes += max(1, -(-size // self.chunk_size))
        cost.jvp_passes += size
        return _scalar(loss, self.name), tree_map(lambda leaf: arraylib.asarray(raw(leaf)), grads)

    def _sampled(self, loss_fn, arrays, treedef, batch, cost):
        """Only the first ``sample`` partial derivatives (the rest left zero): the same sweeps
        a full run makes, fewer of them, to time a gradient too slow to finish."""
        theta, unravel = ravel_pytree(tree_unflatten(treedef, arrays))
        rest = theta[self.sample :]

        def of_head(head, batch):
            return loss_fn(unravel(concatenate([head, rest])), batch)

        loss, head_grad = forward_jacobian(
            of_head, (theta[: self.sample], batch), argnums=0, chunk_size=self.chunk_size
        )
        cost.forward_passes += -(-self.sample // self.chunk_size)
        cost.jvp_passes += self.sample
        flat = xp.zeros_like(theta)
        flat[: self.sample] = raw(head_grad)
        return _scalar(loss, self.name), unravel(flat)


# -- finite differences
# --------------------------------------------------------------------------------
class FiniteDifferences(Method):
    """Nudge each of the P parameters and watch the loss.

    ``kind="central"``: (f(θ+h e_i) - f(θ-h e_i)) / 2h, error O(h²), 2P loss evaluations; the loss
    returned is the mean of those evaluations, f(θ) + O(h²), so no evaluation is spent on f(θ).
    ``kind="forward"``: (f(θ+h e_i) - f(θ)) / h, error O(h), P+1 evaluations (the loss is exact).
    ``eps`` defaults to the step that balances truncation against rounding for the dtype:
    cbrt(machine eps)·max(1,|θ_i|) (central), sqrt(machine eps)·max(1,|θ_i|) (forward). θ is
    nudged in place in one flat copy, so each evaluation costs a loss evaluation and nothing more.
    ``sample=m`` nudges only the first m coordinates (the rest of the gradient is left zero): a
    timed sample of a gradient too slow to finish.
    """

    name = "finite_differences"
    exact = False

    def __init__(self, kind: str = "central", eps: float | None = None, sample: int | None = None):
        if kind not in ("central", "forward"):
            raise ValueError(
                f"finite_differences: kind must be 'central' or 'forward', got {kind!r}"
            )
        self.kind = kind
        self.eps = None if eps is None else _check_positive(eps, "finite_differences eps")
        self.sample = (
            None
            if sample is None
            else _check_positive(sample, "finite_differences sample", integer=True)
        )

    def hyperparameters(self):
        return {"kind": self.kind, "eps": self.eps, "sample": self.sample}

    def _plain(self, loss_fn, params, batch, cost):
        return (loss_fn, params, batch, lambda: 0)  # a nudge is one assignment, not a FLOP

    def _gradient(self, loss_fn, params, batch, key, step, cost):
        arrays, treedef = _float_leaves(params, self.name)
        dtype = xp.result_type(*[a.dtype for a in arrays]) if arrays else xp.float64
        theta = (
            xp.concatenate([a.ravel().astype(dtype) for a in arrays])
            if arrays
            else xp.zeros(0, dtype)
        )
        views, start = [], 0
        for a in arrays:  # views into θ: nudging θ[i] nudges the parameter the loss sees
            views.append(theta[start : start + a.size].reshape(a.shape))
            start += a.size
        view_tree = tree_unflatten(treedef, views)
        machine = float(xp.finfo(dtype).eps)
        base = (
            self.eps
            if self.eps is not None
            else machine ** (1 / 3 if self.kind == "central" else 1 / 2)
        )

        def f():
            cost.loss_evaluations += 1
            return _scalar(loss_fn(view_tree, batch), self.name)

        gradient = xp.zeros_like(theta)
        center = f() if self.kind == "forward" else None
        total = 0.0
        coordinates = theta.size if self.sample is None else min(self.sample, theta.size)
        for i in range(coordinates):
            original = theta[i]
            h = base if self.eps is not None else base * max(1.0, abs(float(original)))
            theta[i] = original + h
            upper_point = theta[i]
            upper = f()
            if self.kind == "central":
                theta[i] = original - h
                lower_point = theta[i]
                lower = f()
                gradient[i] = (upper - lower) / (
                    upper_point - lower_point
                )  # the steps really taken
                total += upper + lower
            else:
                gradient[i] = (upper - center) / (upper_point - original)
            theta[i] = original
        if self.kind == "forward":
            loss = center
        else:
            loss = (
                total / (2 * coordinates)
                if coordinates
                else _scalar(loss_fn(view_tree, batch), self.name)
            )
        pieces, start = [], 0
        for a in arrays:
            pieces.append(
                gradient[start : start + a.size].reshape(a.shape).astype(a.dtype, copy=False)
            )
            start += a.size
        return loss, tree_unflatten(treedef, pieces)


# -- stochastic estimators
# ------------------------------------------------------------------------------
class StochasticMethod(Method):
    """An estimate ``sum_i c_i z_i`` over seeded random directions (see :mod:`.seeded`)."""

    distribution = "gaussian"

    #: FLOPs per parameter of perturbing θ for one loss evaluation (scale z, add): priced in
    #: measured costs beside the evaluations themselves.
    perturbation_flops = 2

    def _plain(self, loss_fn, params, batch, cost):
        size = sum(int(getattr(raw(leaf), "size", 1)) for leaf in tree_leaves(params))
        return (
            loss_fn,
            params,
            batch,
            lambda: self.perturbation_flops * size * cost.loss_evaluations,
        )

    def estimate(self, loss_fn, params, batch, key=0, *, step: int = 0, measure: bool = False):
        """``(loss, SeededGradient, cost)``: the estimate as its key and coefficients."""
        loss, coefficients, cost = self._measured(
            self._coefficients, loss_fn, params, batch, key, step, measure
        )
        return loss, SeededGradient(key, coefficients, self.distribution), cost

    def _gradient(self, loss_fn, params, batch, key, step, cost):
        loss, coefficients = self._coefficients(loss_fn, params, batch, key, step, cost)
        return loss, SeededGradient(key, coefficients, self.distribution).materialize(params)

    def _coefficients(self, loss_fn, params, batch, key, step, cost):  # pragma: no cover - abstract
        raise NotImplementedError


def _perturbed(arrays, treedef, key, index, scale, distribution):
    """θ + scale·z_index as a new pytree (one θ-sized copy), on θ's device."""
    return tree_unflatten(
        treedef,
        [
            a
            + a.dtype.type(scale)
            * direction_leaf(key, index, n, a.shape, a.dtype, distribution, arraylib.device_of(a))
            for n, a in enumerate(arrays)
        ],
    )


class ForwardGradient(StochasticMethod):
    """Baydin et al. 2022, "Gradients without Backpropagation": v ~ N(0, I), g = (∇f·v) v from one
    JVP, averaged over ``directions`` independent v. Unbiased, but E||g||² = (P+2)||∇f||² for one
    direction: its cosine with ∇f is |û·v̂| for a random unit v̂, about sqrt(2/(πP)), so it
    fades as 1/sqrt(P) and K directions buy back only a factor sqrt(K)."""

    name = "forward_gradient"

    def _plain(self, loss_fn, params, batch, cost):
        return None  # its JVPs are traced and counted as they run

    def __init__(self, directions: int = 1):
        self.directions = _check_positive(directions, "forward_gradient directions", integer=True)

    def hyperparameters(self):
        return {"directions": self.directions}

    def _coefficients(self, loss_fn, params, batch, key, step, cost):
        arrays, treedef = _float_leaves(params, self.name)
        primal = tree_unflatten(treedef, arrays)
        coefficients, loss = [], None
        for index in range(self.directions):
            tangent = direction(key, index, primal, self.distribution)
            value, slope = jvp(lambda p: loss_fn(p, batch), (primal,), (tangent,))
            cost.forward_passes += 1
            cost.jvp_passes += 1
            loss = _scalar(value, self.name)
            coefficients.append(_scalar(slope, self.name) / self.directions)
        return loss, coefficients


class SPSA(StochasticMethod):
    """Spall 1992, simultaneous perturbation: Δ of independent ±1 (Rademacher) entries, c_k =
    c/(k+1)^gamma, g = (f(θ+c_kΔ) - f(θ-c_kΔ)) / (2c_k) · Δ (as 1/Δ_i = Δ_i). Two loss evaluations
    whatever P is; the loss returned is their mean (f(θ) + O(c_k²)). Pair it with the gain
    sequence a_k = a/(A+k+1)^0.602 (:class:`chainrule.optim.SPSAGain`) as the learning rate."""

    name = "spsa"
    distribution = "rademacher"

    def __init__(self, c: float = 1e-2, gamma: float = 0.101, pairs: int = 1):
        self.c = _check_positive(c, "spsa c")
        self.gamma = float(gamma)
        if not 0 <= self.gamma < 1:
            raise ValueError(f"spsa gamma must be in [0, 1), got {gamma}")
        self.pairs = _check_positive(pairs, "spsa pairs", integer=True)

    def hyperparameters(self):
        return {"c": self.c, "gamma": self.gamma, "pairs": self.pairs}

    def perturbation(self, step: int) -> float:
        """c_k, the perturbation size at update ``step`` (counting from 0)."""
        return self.c / (step + 1) ** self.gamma

    def _coefficients(self, loss_fn, params, batch, key, step, cost):
        arrays, treedef = _float_leaves(params, self.name)
        c_k = self.perturbation(step)
        coefficients, total = [], 0.0
        for index in range(self.pairs):
            upper = _scalar(
                loss_fn(_perturbed(arrays, treedef, key, index, c_k, self.distribution), batch),
                self.name,
            )
            lower = _scalar(
                loss_fn(_perturbed(arrays, treedef, key, index, -c_k, self.distribution), batch),
                self.name,
            )
            cost.loss_evaluations += 2
            coefficients.append((upper - lower) / (2 * c_k) / self.pairs)
            total += upper + lower
        return total / (2 * self.pairs), coefficients


class MeZO(StochasticMethod):
    """Malladi et al. 2023, memory-efficient zeroth order: SPSA with Gaussian z regenerated from
    the key, perturbing the parameters *in place* (+eps z, -2 eps z, +eps z), so neither a second
    copy of θ nor z itself is ever held: z is generated a chunk at a time, twice per use.

    :meth:`step_` does a whole MeZO-SGD update in place (the update regenerates z too). Calling the
    method (``__call__``) or :meth:`estimate` also perturbs ``params`` in place and puts them back
    (equal to the originals within a few ulps), so ``params`` must be writable arrays.
    """

    name = "mezo"
    perturbation_flops = (
        3  # three in-place passes over θ (+eps z, -2 eps z, +eps z) per two evaluations
    )

    def __init__(self, eps: float = 1e-3):
        self.eps = _check_positive(eps, "mezo eps")

    def hyperparameters(self):
        return {"eps": self.eps}

    def _coefficients(self, loss_fn, params, batch, key, step, cost):
        leaves = tree_leaves(params)
        for n, leaf in enumerate(leaves):
            if not arraylib.is_array(leaf):
                raise TypeError(
                    f"mezo: parameter leaf {n} must be an array, NumPy or CuPy (it is perturbed in "
                    f"place), got {type(leaf).__name__}"
                )
            if not xp.issubdtype(leaf.dtype, xp.floating):
                raise TypeError(
                    f"mezo: parameter leaf {n} has dtype {leaf.dtype}; parameters must be floating"
                )
        add_direction_(leaves, key, 0, self.eps, self.distribution)
        offset = self.eps  # what has been added so far, taken back whatever happens
        try:
            upper = _scalar(loss_fn(params, batch), self.name)
            add_direction_(leaves, key, 0, -2 * self.eps, self.distribution)
            offset = -self.eps
            lower = _scalar(loss_fn(params, batch), self.name)
        finally:
            add_direction_(leaves, key, 0, -offset, self.distribution)
        cost.loss_evaluations += 2
        return (upper + lower) / 2, [(upper - lower) / (2 * self.eps)]

    def step_(
        self, loss_fn, params, batch, key, lr: float, *, step: int = 0, measure: bool = False
    ):
        """One MeZO-SGD update of ``params`` in place: θ ← θ - lr·g, z regenerated from ``key``.
        Returns ``(loss, cost)``."""
        cost = Cost()
        with measuring(cost, measure, self._plain(loss_fn, params, batch, cost)):
            loss, coefficients = self._coefficients(
                loss_fn, params, batch, _check_key(key, self.name), int(step), cost
            )
            SeededGradient(key, coefficients, self.distribution).add_to_(
                tree_leaves(params), -float(lr)
            )
        return loss, cost


class EvolutionStrategies(StochasticMethod):
    """Salimans et al. 2017: ``population`` antithetic pairs θ ± sigma·ε_i, ε_i ~ N(0, I),
    g = 1/(2·n·sigma) Σ (f(θ+σε_i) - f(θ-σε_i)) ε_i. With ``rank_shaping`` the 2n losses are first
    replaced by their centred ranks in [-0.5, 0.5] (robust to the loss's scale; the estimate then
    points the same way on average but no longer has the gradient's length). The loss returned is
    the mean of the 2n evaluations (f(θ) + O(σ²))."""

    name = "evolution_strategies"

    def __init__(self, population: int = 16, sigma: float = 1e-2, rank_shaping: bool = False):
        self.population = _check_positive(
            population, "evolution_strategies population", integer=True
        )
        self.sigma = _check_positive(sigma, "evolution_strategies sigma")
        self.rank_shaping = bool(rank_shaping)

    def hyperparameters(self):
        return {
            "population": self.population,
            "sigma": self.sigma,
            "rank_shaping": self.rank_shaping,
        }

    def _coefficients(self, loss_fn, params, batch, key, step, cost):
        arrays, treedef = _float_leaves(params, self.name)
        values = xp.empty((self.population, 2))
        for index in range(self.population):
            for side, sign in enumerate((1.0, -1.0)):
                values[index, side] = _scalar(
                    loss_fn(
                        _perturbed(
                            arrays, treedef, key, index, sign * self.sigma, self.distribution
                        ),
                        batch,
                    ),
                    self.name,
                )
        cost.loss_evaluations += 2 * self.population
        loss = float(values.mean())
        fitness = centred_ranks(values) if self.rank_shaping else values
        coefficients = (fitness[:, 0] - fitness[:, 1]) / (2 * self.population * self.sigma)
        return loss, coefficients


def centred_ranks(values):
    """Each value's rank scaled to [-0.5, 0.5] (the smallest -0.5), as ES fitness shaping uses.

    >>> import numpy as np
    >>> centred_ranks(np.array([[3.0, 1.0], [10.0, 2.0]]))
    array([[ 0.16666667, -0.5       ],
           [ 0.5       , -0.16666667]])
    """
    flat = xp.asarray(values, dtype=xp.float64).reshape(-1)
    ranks = xp.empty(flat.size)
    ranks[xp.argsort(flat, kind="stable")] = xp.arange(flat.size)
    if flat.size > 1:
        ranks = ranks / (flat.size - 1) - 0.5
    else:
        ranks[:] = 0.0
    return ranks.reshape(xp.shape(values))


#: Each method under its ``name``, in the order the command line lists them.
METHODS = {
    method.name: method
    for method in (
        Backprop,
        ForwardMode,
        FiniteDifferences,
        ForwardGradient,
        SPSA,
        MeZO,
        EvolutionStrategies,
    )
}

ALIASES = {
    "es": "evolution_strategies",
    "fd": "finite_differences",
    "reverse": "backprop",
    "forward": "forward_mode",
}


def get_method(name, **options) -> Method:
    """A method by name (``es``, ``fd`` are accepted for the long names), or ``name`` itself when
    it is already a :class:`Method`."""
    return build(METHODS, name, "gradient method", ALIASES, Method, options, "get_method")
