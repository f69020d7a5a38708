"""Update schemes: what to do with gradients once a method can produce them.

* ``simultaneous`` — one gradient at the current θ, every layer updated at once: the standard,
  and the only scheme in which every layer's step is taken against the same network.
* ``layerwise`` — update the output layer, then recompute the gradient of the next layer down
  with the already-updated layers above it (a fresh forward and backward per layer), down to the
  first layer: L gradients per step, each aimed at a network that has since moved.
* ``cyclic`` — block-coordinate descent: one layer (parameter block) per step, in turn from the
  output down.
* ``locoprop-s`` / ``locoprop-m`` — LocoProp (Amid, Anil & Warmuth, AISTATS 2022): one forward
  and backward pass gives each layer's input x_i and the error signal at its output; each layer
  then solves its own local problem towards a target for T local steps, independently of the
  others (see :class:`LocoProp`).
* ``cmaes`` — derivative-free search with CMA-ES (the ``cma`` package) over θ: one generation of
  candidates per step, for small models.

Any gradient method of :mod:`chainrule.estimators` drives ``simultaneous``, ``layerwise`` and
``cyclic``; ``derivative_free`` is ``simultaneous`` with a method that never differentiates
(finite differences, SPSA, MeZO, ES). A scheme is used by the Trainer: ``init`` makes the
optimizer state, ``step`` takes one update and returns ``(params, opt_state, loss, cost)``.

Every scheme but ``cmaes`` runs where the parameters are (CPU or GPU): the arrays a scheme makes
itself (LocoProp's taps, step counters) are made on the parameters' device. CMA-ES is host-only
(the ``cma`` package is NumPy): it refuses parameters on a GPU with an error saying so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import numpy as cnp
from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw
from ..estimators import Cost, MeZO, StochasticMethod, measuring
from ..nn.layers import ACTIVATIONS, BatchNorm1d, Dropout, Linear, Sequential
from ..nn.module import Context
from ..optim.optimizers import SGD
from ..transforms.api import grad, value_and_grad
from ..transforms.pytree import ravel_pytree, tree_leaves, tree_map
from ..util.lookup import build


@dataclass
class StepInputs:
    """Everything one update needs besides the parameters and the optimizer state.

    ``objective(params, batch)`` is the training loss of this rank's share ``batch`` (features,
    labels) of the global batch. ``reduce(loss, grads)`` and ``reduce_seeded(loss, seeded)`` turn
    this rank's loss and gradient into the global batch's in one all-reduce;
    ``reduce_values(array)`` does the same for a vector of losses (identities on one process).
    """

    objective: Callable
    batch: tuple
    key: int
    step: int
    measure: bool = False
    distributed: bool = False
    reduce: Callable = lambda loss, grads: (loss, grads)
    reduce_seeded: Callable = lambda loss, seeded: (loss, seeded)
    reduce_values: Callable = lambda values: values
    context: Callable | None = None  # () -> nn Context for a forward pass of this step


def sub_key(key: int, index: int) -> int:
    """A key for part ``index`` of a step (a layer, a local problem), independent of the others."""
    return int(xp.random.SeedSequence([int(key), int(index)]).generate_state(1)[0])


def gradient(method, objective, params, inputs: StepInputs, key: int | None = None):
    """``(loss, grads, cost)`` of ``method`` on ``objective`` at ``params``, reduced across ranks:
    an exact gradient as one all-reduce of θ, a seeded estimate as its coefficients only."""
    key = inputs.key if key is None else key
    if inputs.distributed and isinstance(method, StochasticMethod):
        loss, seeded, cost = method.estimate(
            objective, params, inputs.batch, key, step=inputs.step, measure=inputs.measure
        )
        loss, seeded = inputs.reduce_seeded(loss, seeded)
        return loss, seeded.materialize(params), cost
    loss, grads, cost = method(
        objective, params, inputs.batch, key, step=inputs.step, measure=inputs.measure
    )
    loss, grads = inputs.reduce(loss, grads)
    return loss, grads, cost


class Scheme:
    name = "scheme"
    #: Whether the scheme's state can go into a checkpoint (CMA-ES's cannot).
    checkpointable = True

    def init(self, model, optimizer, params):
        return optimizer.init(params)

    def lr(self, optimizer, opt_state) -> float:
        return optimizer.lr(opt_state)

    def check_method(self, method) -> None:
        """Raise ``ValueError`` when this scheme cannot be driven by ``method``."""

    def step(self, trainer, params, opt_state, inputs: StepInputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}({self.config()})"


class Simultaneous(Scheme):
    """One gradient at θ, all parameters updated together by the optimizer."""

    name = "simultaneous"

    def step(self, trainer, params, opt_state, inputs):
        method, optimizer = trainer.method, trainer.optimizer
        if isinstance(method, MeZO) and _plain_sgd(optimizer) and not inputs.distributed:
            # MeZO's own update: θ changes in place and z is regenerated, never stored.
            lr = optimizer.lr(opt_state)
            loss, cost = method.step_(
                inputs.objective,
                params,
                inputs.batch,
                inputs.key,
                lr,
                step=inputs.step,
                measure=inputs.measure,
            )
            return params, {"step": _next_step(opt_state["step"])}, loss, cost
        loss, grads, cost = gradient(method, inputs.objective, params, inputs)
        params, opt_state = optimizer.update(grads, opt_state, params)
        return params, opt_state, loss, cost


class DerivativeFree(Simultaneous):
    """``simultaneous`` driven by a method that only evaluates the loss (never differentiates)."""

    name = "derivative_free"
    METHODS = ("finite_differences", "spsa", "mezo", "evolution_strategies")

    def check_method(self, method):
        if method.name not in self.METHODS:
            raise ValueError(
                "the derivative_free scheme needs a method that only evaluates the loss "
                f"{self.METHODS}, "
                f"not {method.name}"
            )


def _next_step(step):
    """The step counter ``step`` + 1, kept where it was (device and dtype)."""
    return arraylib.asarray(step + 1)


def _step_like(value: int, like):
    """The integer ``value`` as a 0-d array on the device and with the dtype of ``like``."""
    return arraylib.to_device(
        xp.asarray(value, dtype=getattr(like, "dtype", xp.int64)), arraylib.device_of(like)
    )


def _plain_sgd(optimizer) -> bool:
    return type(optimizer) is SGD and optimizer.momentum == 0 and optimizer.weight_decay == 0


def parameter_blocks(params) -> list:
    """The top-level entries of a model's parameter dict, input side first (a Sequential's
    layers "0", "1", ...): the blocks that layer-wise schemes update one at a time."""
    if not isinstance(params, dict):
        raise TypeError(
            f"layer-wise schemes need a dict of parameter blocks, got {type(params).__name__}"
        )
    keys = list(params)
    if all(str(k).isdigit() for k in keys):
        keys.sort(key=int)
    return keys


def _restricted(objective, params, block):
    """The objective as a function of one block, the other blocks held fixed."""

    def objective_of_block(block_params, batch):
        merged = dict(params)
        merged[block] = block_params
        return objective(merged, batch)

    return objective_of_block


class _BlockScheme(Scheme):
    """Shared by the layer-wise schemes: one optimizer state per block, so a block's momentum
    or Adam moments belong to it alone."""

    def init(self, model, optimizer, params):
        return {str(block): optimizer.init(params[block]) for block in parameter_blocks(params)}

    def lr(self, optimizer, opt_state):
        first = next(iter(opt_state.values()))
        return optimizer.lr(first)

    def _update_block(self, trainer, params, opt_state, inputs, block, index):
        objective = _restricted(inputs.objective, params, block)
        loss, grads, cost = gradient(
            trainer.method, objective, params[block], inputs, sub_key(inputs.key, index)
        )
        new_block, opt_state[str(block)] = trainer.optimizer.update(
            grads, opt_state[str(block)], params[block]
        )
        params = dict(params)
        params[block] = new_block
        return params, loss, cost


class LayerWise(_BlockScheme):
    """Output layer first, then each layer below against the layers already updated above it."""

    name = "layerwise"

    def step(self, trainer, params, opt_state, inputs):
        opt_state = dict(opt_state)
        total, first_loss = None, None
        blocks = parameter_blocks(params)
        for index, block in enumerate(reversed(blocks)):
            params, loss, cost = self._update_block(
                trainer, params, opt_state, inputs, block, index
            )
            first_loss = loss if first_loss is None else first_loss  # the loss at the step's θ
            total = cost if total is None else total + cost
        return params, opt_state, first_loss, total


class Cyclic(_BlockScheme):
    """Block-coordinate descent: the block of step k is the (k mod L)-th from the output down."""

    name = "cyclic"

    def step(self, trainer, params, opt_state, inputs):
        opt_state = dict(opt_state)
        blocks = parameter_blocks(params)
        block = list(reversed(blocks))[inputs.step % len(blocks)]
        params, loss, cost = self._update_block(trainer, params, opt_state, inputs, block, 0)
        return params, opt_state, loss, cost


# -- LocoProp
# ------------------------------------------------------------------------------------------- :
# Convex potentials F with F' = f for the matched losses of LocoProp-M (f must be increasing).
POTENTIALS = {
    "Identity": lambda z: 0.5 * z * z,
    "ReLU": lambda z: 0.5 * cnp.relu(z) ** 2,
    # log cosh z, up to a constant, written to stay finite for large |z|
    "Tanh": lambda z: cnp.abs(z) + cnp.softplus(-2.0 * cnp.abs(z)),
    "Sigmoid": lambda z: cnp.softplus(z),
}


@dataclass
class _Unit:
    """One LocoProp layer: a Linear, then optionally BatchNorm1d, then an activation."""

    linear: str
    batchnorm: str | None = None
    activation: Any = None  # the activation module (None: identity)


def locoprop_units(model) -> list:
    """Split a Sequential of Linear / BatchNorm1d / activation layers into LocoProp units;
    ``ValueError`` naming the layer that does not fit."""
    if not isinstance(model, Sequential):
        raise ValueError(
            f"LocoProp needs a Sequential model (e.g. nn.MLP), got {type(model).__name__}"
        )
    units: list[_Unit] = []
    for name, layer in model._children.items():
        if isinstance(layer, Linear):
            units.append(_Unit(name))
        elif not units:
            raise ValueError(
                f"LocoProp: layer {name} ({type(layer).__name__}) comes before the first Linear"
            )
        elif (
            isinstance(layer, BatchNorm1d)
            and units[-1].batchnorm is None
            and units[-1].activation is None
        ):
            units[-1].batchnorm = name
        elif (
            type(layer).__name__ in POTENTIALS
            and units[-1].activation is None
            and type(layer) in ACTIVATIONS.values()
        ):
            units[-1].activation = layer
        elif isinstance(layer, Dropout):
            raise ValueError(
                "LocoProp: Dropout is not supported (local targets need a deterministic layer)"
            )
        else:
            raise ValueError(
                f"LocoProp: layer {name} ({type(layer).__name__}) does not fit the pattern "
                "Linear [BatchNorm1d] [relu|tanh|sigmoid]"
            )
    return units


class LocoProp(Scheme):
    """LocoProp (Amid, Anil & Warmuth, AISTATS 2022): local losses with targets from one
    backward pass.

    One forward and backward pass through the whole network caches each unit's input x_i and its
    error signal. Then each unit, independently (they could run in parallel), takes
    ``local_steps`` (T) steps of the trainer's optimizer, freshly started, on a local loss of
    its own weights with x_i and the target frozen:

    * ``variant="S"`` (squared loss, pre-activation target): target a_i - gamma·δ_i with a_i the
      Linear's output and δ_i = dL/da_i; local loss 1/2 ||W x_i + b - target||² summed over the
      batch. Its first gradient is gamma·∂L/∂W, so with plain SGD (lr η) and T = 1 the step
      equals backprop's with learning rate η·gamma.
    * ``variant="M"`` (matched loss, post-activation target): target f(a_i) - gamma·∂L/∂y_i with
      y_i = f(a_i) the unit's output; local loss Σ F(z) - target·z with F' = f, whose weight
      gradient is x_iᵀ(f(W x_i + b) - target): the activation's slope drops out, which is the
      method's implicit preconditioning. With batch norm, the normalisation is frozen at this
      step's batch statistics (an affine map per feature) inside the local problem.

    Batch norm's own scale and shift take one ordinary gradient step from the same backward pass,
    scaled by gamma, so that with T = 1 the whole step is backprop's at η·gamma.
    """

    def __init__(self, variant: str = "S", gamma: float = 1.0, local_steps: int = 10):
        variant = str(variant).upper()
        if variant not in ("S", "M"):
            raise ValueError(f"LocoProp variant must be 'S' or 'M', got {variant!r}")
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"LocoProp gamma must be a positive number, got {gamma!r}")
        if isinstance(local_steps, bool) or int(local_steps) != local_steps or int(local_steps) < 1:
            raise ValueError(
                f"LocoProp local_steps must be a positive integer, got {local_steps!r}"
            )
        self.variant = variant
        self.gamma = float(gamma)
        self.local_steps = int(local_steps)
        self.name = f"locoprop-{variant.lower()}"

    def config(self):
        return {"name": self.name, "gamma": self.gamma, "local_steps": self.local_steps}

    def init(self, model, optimizer, params):
        self.units = locoprop_units(model)
        return _BlockScheme.init(self, model, optimizer, params)  # one state per block, as there

    lr = _BlockScheme.lr

    def check_method(self, method):
        if method.name != "backprop":
            raise ValueError(
                "LocoProp takes its targets from one backward pass: use method backprop, not "
                f"{method.name}"
            )

    def step(self, trainer, params, opt_state, inputs):
        if inputs.distributed:
            raise ValueError(
                f"{self.name} runs on one process: its local problems would need an all-reduce "
                "per local step"
            )
        cost = Cost()
        with measuring(cost, inputs.measure):
            params, opt_state, loss = self._step(trainer, params, dict(opt_state), inputs, cost)
        return params, opt_state, loss, cost

    def _step(self, trainer, params, opt_state, inputs, cost):
        model, units = trainer.model, self.units
        features, labels = inputs.batch
        context = inputs.context() if inputs.context is not None else Context(train=True)
        linear_inputs: dict = {}
        linear_outputs: dict = {}
        unit_of = {}
        for unit in units:
            unit_of[unit.linear] = unit
            if unit.batchnorm is not None:
                unit_of[unit.batchnorm] = unit
        post = self.variant == "M"

        def tapped(params, taps):
            """The loss with a zero added at each unit's output (S: the Linear's output; M: the
            unit's output): the gradient with respect to a tap is the error signal there."""
            x = features
            current = None
            for name, layer in model._children.items():
                if isinstance(layer, Linear):
                    if current is not None and post:
                        x = x + taps[current.linear]
                    current = unit_of[name]
                    linear_inputs[name] = raw(x)
                    x = layer.forward(params[name], x, context)
                    linear_outputs[name] = raw(x)
                    if not post:
                        x = x + taps[name]
                else:
                    x = layer.forward(params.get(name, {}), x, context)
            if post:
                x = x + taps[current.linear]
            return trainer.loss(x, labels)

        batch_size = len(labels)
        like = tree_leaves(params)[0]  # the taps are made on the parameters' device
        taps = {
            unit.linear: xp.zeros_like(
                like,
                shape=(batch_size, model._children[unit.linear].out_features),
                dtype=_dtype(params),
            )
            for unit in units
        }
        loss, (grads, signals) = value_and_grad(tapped, argnums=(0, 1))(params, taps)
        cost.forward_passes += 1
        cost.vjp_passes += 1
        signals = {name: raw(s) for name, s in signals.items()}
        loss = float(raw(loss))
        new_params = dict(params)
        for block in parameter_blocks(params):
            if block in unit_of and unit_of[block].linear == block:
                new_params[block], opt_state[str(block)] = self._local_solve(
                    trainer,
                    unit_of[block],
                    params,
                    opt_state[str(block)],
                    linear_inputs[block],
                    linear_outputs[block],
                    signals[block],
                    cost,
                )
            else:  # batch norm scale and shift: one backprop step (scaled by gamma, like the
                # layers' first local step) from the same backward pass
                new_params[block], opt_state[str(block)] = trainer.optimizer.update(
                    tree_map(lambda g: self.gamma * g, grads[block]),
                    opt_state[str(block)],
                    params[block],
                )
        return new_params, opt_state, loss

    def _local_solve(self, trainer, unit, params, state, x, a, signal, cost):
        """T optimizer steps on this unit's local loss, from its current weights."""
        model = trainer.model
        gamma = self.gamma
        if unit.batchnorm is not None:
            bn = model._children[unit.batchnorm]
            mean = a.mean(axis=0)
            var = a.var(axis=0)
            scale = 1.0 / xp.sqrt(var + bn.eps)
            shift = -mean * scale
            if bn.affine:
                bn_params = params[unit.batchnorm]
                scale = scale * raw(bn_params["weight"])
                shift = shift * raw(bn_params["weight"]) + raw(bn_params["bias"])
        else:
            scale, shift = None, None
        if self.variant == "S":
            target_shift = gamma * signal  # residual = (W x + b - a) + gamma·delta

            def local_loss(weights):
                residual = (x @ weights["weight"] + weights["bias"] - a) + target_shift
                return 0.5 * cnp.sum(residual * residual)

        else:
            activation = unit.activation
            kind = type(activation).__name__ if activation is not None else "Identity"
            potential = POTENTIALS[kind]
            transfer = (lambda z: z) if activation is None else activation.fn
            z0 = a if scale is None else a * scale + shift
            # Not projected into f's range: a ReLU target below 0 leaves a dead unit's local loss
            # unbounded below, but T steps move it a bounded distance, and projecting was
            # measured to destabilise training on digits (see docs/methods.md).
            target = raw(transfer(z0)) - gamma * signal

            def local_loss(weights):
                z = x @ weights["weight"] + weights["bias"]
                if scale is not None:
                    z = z * scale + shift
                return cnp.sum(potential(z) - target * z)

        local_grad = grad(local_loss)
        weights = params[unit.linear]
        if set(weights) != {"weight", "bias"}:
            raise ValueError(f"LocoProp needs Linear layers with a bias (layer {unit.linear})")
        # A fresh local optimizer each step (the local problem is new), its learning rate read
        # from the outer schedule at this step: the T local updates all use the step's rate.
        outer_step = int(state["step"])
        local_state = trainer.optimizer.init(weights)
        for _ in range(self.local_steps):
            local_state["step"] = _step_like(outer_step, local_state["step"])
            weights, local_state = trainer.optimizer.update(
                local_grad(weights), local_state, weights
            )
            cost.local_passes += 1
        return weights, {**state, "step": _step_like(outer_step + 1, state["step"])}


def _dtype(params):
    leaves = tree_leaves(params)
    return xp.result_type(*[raw(leaf).dtype for leaf in leaves]) if leaves else xp.float64


# -- CMA-ES
# -----------------------------------------------------------------------------------------------
class CMAES(Scheme):
    """CMA-ES (Hansen) over θ through the ``cma`` package: each step evaluates the loss at the
    current mean θ (the loss it reports), asks for one generation of ``population`` candidates,
    evaluates each on the batch and tells the strategy the values; θ becomes the new mean. Its
    state (a P×P covariance) is why it suits only small models, and why it is not checkpointed:
    runs with it cannot be resumed."""

    name = "cmaes"
    checkpointable = False

    def __init__(self, sigma: float = 0.1, population: int | None = None, seed: int = 0):
        self.sigma = float(sigma)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"cmaes sigma must be a positive number, got {sigma!r}")
        self.population = population
        self.seed = int(seed)

    def config(self):
        return {
            "name": self.name,
            "sigma": self.sigma,
            "population": self.population,
            "seed": self.seed,
        }

    def init(self, model, optimizer, params):
        devices = {arraylib.device_of(raw(leaf)) for leaf in tree_leaves(params)} - {"cpu"}
        if devices:
            raise ValueError(
                f"the cmaes scheme runs on the host (the cma package computes with NumPy), but the "
                f"parameters are on {sorted(devices)[0]!r}: train it on device 'cpu'"
            )
        try:
            import cma
        except ImportError:  # pragma: no cover - cma is installed with the project's lab extra
            raise ImportError("the cmaes scheme needs the 'cma' package: pip install cma") from None
        theta, self.unravel = ravel_pytree(params)
        options = {
            "seed": self.seed + 1,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            "CMA_diagonal": theta.size > 2000,
        }
        if self.population is not None:
            options["popsize"] = int(self.population)
        self.strategy = cma.CMAEvolutionStrategy(theta, self.sigma, options)
        return {"step": xp.zeros((), dtype=xp.int64)}

    def check_method(self, method):
        if method.name != "backprop":
            raise ValueError(
                "the cmaes scheme uses no gradient method: leave the method at its default"
            )

    def lr(self, optimizer, opt_state):
        return float(self.strategy.sigma)

    def step(self, trainer, params, opt_state, inputs):
        cost = Cost()
        with measuring(
            cost, inputs.measure, plain=(inputs.objective, params, inputs.batch, lambda: 0)
        ):
            # The loss at the mean (θ) first, like every other scheme's, then the generation's.
            candidates = self.strategy.ask()
            values = [float(raw(inputs.objective(params, inputs.batch)))]
            for candidate in candidates:
                values.append(
                    float(raw(inputs.objective(self.unravel(xp.asarray(candidate)), inputs.batch)))
                )
            cost.loss_evaluations += len(values)
            values = [float(v) for v in inputs.reduce_values(xp.asarray(values))]
            self.strategy.tell(candidates, values[1:])
        loss = values[0]
        params = self.unravel(xp.asarray(self.strategy.mean))
        return params, {"step": xp.asarray(int(opt_state["step"]) + 1, dtype=xp.int64)}, loss, cost


SCHEMES = {
    "simultaneous": Simultaneous,
    "derivative_free": DerivativeFree,
    "layerwise": LayerWise,
    "cyclic": Cyclic,
    "locoprop-s": lambda **options: LocoProp("S", **options),
    "locoprop-m": lambda **options: LocoProp("M", **options),
    "cmaes": CMAES,
}


#: Other spellings accepted for scheme names.
SCHEME_ALIASES = {
    "locoprop": "locoprop-s",
    "locoprop_s": "locoprop-s",
    "locoprop_m": "locoprop-m",
    "derivative-free": "derivative_free",
}


def get_scheme(name, **options) -> Scheme:
    """A new scheme by name (or ``name`` itself when it is already a :class:`Scheme`). A scheme
    holds per-run state once a Trainer has called ``init``: give each Trainer its own."""
    return build(SCHEMES, name, "update scheme", SCHEME_ALIASES, Scheme, options, "get_scheme")
