"""Gradient-descent optimizers on any pytree of arrays (a parameter dict, or the flat vector θ).

Functional form, with no hidden state::

    state = opt.init(params)
    params, state = opt.update(grads, state, params)

``update`` returns new arrays and never changes its inputs. The state is a pytree of arrays
(``{"step": 0-d int, ...}``), so a checkpoint can store it next to the parameters. Every array of
the state is made like a parameter (``zeros_like``), so it lives where the parameters live: CuPy
arrays on the GPU for CuPy parameters.

The step counter stays an array through ``update``: the learning rate (``schedule(step)`` on the
array, see :mod:`chainrule.optim.schedules`) and Adam's bias corrections 1-βᵗ are array expressions
of it, never ``int(step)``. So a whole training step captured by :mod:`chainrule.backend.capture`
replays without a guard on the step number, and the GPU is not waited on to read it. A constant
learning rate stays a Python float. Scalars computed as float64 arrays are rounded to each
parameter's dtype before they meet it, exactly as NumPy rounds a Python float, so the updates are
the same bits as with Python-float scalars (float32 parameters compute in float32).

Traced leaves stay traced (the array functions are then ``chainrule.numpy``'s), so ``update`` is
part of what a transform sees: ``jit`` of a whole training step stages the update with the
gradient and replays the eager bits, ``grad`` through updates gives meta-gradients, ``vmap``
updates an ensemble. A Tensor that requires no grad stands for its data.

Object form for the Tensor style, on a module (or any pytree of Tensors)::

    optimizer = opt.bind(model)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

The update rules, with g the gradient, t the step count from 1 and lr the schedule's value:

* SGD: θ ← θ - lr·g. With momentum μ: v ← μv + g, θ ← θ - lr·v; Nesterov: θ ← θ - lr·(g + μv).
  ``weight_decay`` λ adds λθ to g (L2 regularisation).
* Adam: m ← β₁m + (1-β₁)g, v ← β₂v + (1-β₂)g², θ ← θ - lr·m̂/(√v̂ + ε) with bias corrections
  m̂ = m/(1-β₁ᵗ), v̂ = v/(1-β₂ᵗ). AdamW: the same plus a decoupled decay θ ← θ - lr·λθ.
* RMSProp: s ← ρs + (1-ρ)g², θ ← θ - lr·g/(√s + ε) (optionally with momentum).

>>> import numpy as np
>>> opt = SGD(lr=0.1, momentum=0.9)
>>> params = {"w": np.array([1.0, 2.0])}
>>> state = opt.init(params)
>>> params, state = opt.update({"w": np.array([1.0, 1.0])}, state, params)
>>> params["w"]                                   # θ - 0.1·g
array([0.9, 1.9])
>>> params, state = opt.update({"w": np.array([1.0, 1.0])}, state, params)
>>> params["w"]                                   # v = 0.9·1 + 1 = 1.9
array([0.71, 1.71])
"""

from __future__ import annotations

import math

from ..engine import arraylib
from ..engine.arraylib import ndarray, xp
from ..engine.core import Tracer, no_grad, raw, state, zeros_like
from ..engine.tensor import Tensor
from ..transforms.pytree import TreeDef, tree_flatten, tree_unflatten
from .schedules import (
    Constant,
    Schedule,
    as_schedule,
    float_power,
    schedule_from_config,
    traced_namespace,
)


def _check_finite_number(
    value, what, low=None, high=None, low_inclusive=True, high_inclusive=False
):
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{what} must be {'>=' if low_inclusive else '>'} {low}, got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(f"{what} must be {'<=' if high_inclusive else '<'} {high}, got {value}")
    return value


def _as_array(leaf):
    """``leaf`` as an array of the active namespace. A NumPy array outside ``use_namespace``, the
    usual leaf, is what ``asarray`` would return, so it is kept without the call (``update`` runs
    once per training step). A Tensor that requires no grad stands for its data. A traced leaf
    (under ``jit``, ``grad``, ``vmap``...) stays traced, so that the update is part of what the
    transform sees, as an optax update is under JAX's."""
    if type(leaf) is ndarray and not state.foreign:
        return leaf
    while type(leaf) is Tensor and not leaf.requires_grad:
        leaf = leaf.data
    return leaf if isinstance(leaf, Tracer) else arraylib.asarray(leaf)


def _array_leaves(tree) -> tuple[list, TreeDef]:
    """``tree``'s leaves as arrays (see :func:`_as_array`) and its structure, in one walk."""
    leaves, treedef = tree_flatten(tree)
    return [_as_array(leaf) for leaf in leaves], treedef


def _namespace_of(array):
    """The array module that computes on ``array``: NumPy or CuPy by its device, the namespace
    ``backend.use_namespace`` made active, or for a traced array ``chainrule.numpy``'s functions."""
    if isinstance(array, Tracer):
        return traced_namespace
    return arraylib.ns if state.foreign else arraylib.namespace_of(array)


def _cast(array, dtype):
    """``array`` in ``dtype``, without a copy when it already is (the standard has no
    ``astype`` method: its function inside ``backend.use_namespace``)."""
    if isinstance(array, Tracer):
        return traced_namespace.astype(array, dtype)
    if state.foreign:
        return arraylib.ns.astype(array, arraylib.as_dtype(dtype), copy=False)
    return array.astype(dtype, copy=False)


def _step_array(step):
    """The step counter as an array: a traced one as it is, anything else through ``asarray``."""
    return step if isinstance(step, Tracer) else arraylib.asarray(step)


def _sqrt(value):
    """``sqrt`` in the active namespace, or ``chainrule.numpy``'s for a traced value."""
    return traced_namespace.sqrt(value) if isinstance(value, Tracer) else arraylib.ns.sqrt(value)


def _zero_step(param_leaves):
    """The step counter at 0: a 0-d int64 array made like the first parameter (same array type
    and device), a NumPy one for an empty parameter tree."""
    if not param_leaves:
        return arraylib.ns.zeros((), dtype=arraylib.ns.int64)
    first = raw(param_leaves[0])  # its array type and device (a traced one's stacked array)
    if state.foreign:  # the standard's zeros_like takes no shape
        return arraylib.ns.zeros((), dtype=arraylib.ns.int64, device=first.device)
    return arraylib.namespace_of(first).zeros_like(first, shape=(), dtype=xp.int64)


def _in_dtype(value, dtype):
    """A step scalar (learning rate, bias correction) ready to meet arrays of ``dtype``.

    NumPy rounds a Python float to the array's dtype before the arithmetic, whereas a float64 array
    or NumPy scalar would promote float32 parameters to float64. Rounding an array-computed scalar
    to ``dtype`` first gives the bits the Python float gave; a Python float passes as it is."""
    if type(value) is float:
        return value
    return _cast(value, dtype)


def _check_structure(g_leaves, g_def, p_leaves, p_def):
    """Refuse gradients that are not one array per parameter, of the parameter's shape."""
    if g_def != p_def:
        raise ValueError(
            f"optimizer: gradient structure {g_def} does not match parameter structure {p_def}"
        )
    for g, p in zip(g_leaves, p_leaves, strict=True):
        if g.shape != p.shape:
            raise ValueError(
                f"optimizer: gradient of shape {xp.shape(g)} for a parameter of shape {xp.shape(p)}"
            )


class Optimizer:
    """Base class. Subclasses name their per-parameter state arrays in ``slots`` and the
    attributes that describe them (besides the learning rate) in ``hyperparameter_names``, and
    implement ``_step_leaf``; ``_step_scalars`` adds scalars that depend on the step (Adam's
    corrections)."""

    name = "optimizer"
    slots: tuple[str, ...] = ()
    hyperparameter_names: tuple[str, ...] = ()

    def __init__(self, lr):
        self.schedule: Schedule = as_schedule(lr)

    # -- functional API ------------------------------------------------------------------------
    def init(self, params) -> dict:
        """The initial state: a step counter and one zero array per parameter and slot."""
        leaves, treedef = _array_leaves(params)
        state = {"step": _zero_step(leaves)}
        for slot in self.slots:
            # Zeros of each parameter's shape as it shows it (one example's, under vmap).
            state[slot] = tree_unflatten(treedef, [zeros_like(leaf) for leaf in leaves])
        return state

    def lr(self, state) -> float:
        """The learning rate the next update will use."""
        return float(self.schedule(int(state["step"])))

    def update(self, grads, state, params):
        """One step: ``(new_params, new_state)``; inputs are left unchanged."""
        g_leaves, g_def = _array_leaves(grads)
        p_leaves, treedef = _array_leaves(params)
        _check_structure(g_leaves, g_def, p_leaves, treedef)
        new_leaves, new_state = self._update_leaves(g_leaves, p_leaves, state, treedef)
        return tree_unflatten(treedef, new_leaves), new_state

    def _update_leaves(self, g_leaves, p_leaves, state, treedef):
        """:meth:`update` on the leaves of checked, matching trees of structure ``treedef``:
        ``(new parameter leaves, new state)`` (the state's slots rebuilt as trees)."""
        # The step is only ever computed on as an array (never int(step)): no Python decision
        # reads it, so a captured step (chainrule.backend.capture) replays as recorded.
        step = _step_array(state["step"])
        next_step = _step_array(step + 1)  # a 0-d array, as the state's other steps
        lr = self.schedule.lr if isinstance(self.schedule, Constant) else self.schedule(step)
        scalars = self._step_scalars(lr, next_step)
        scalars_by_dtype = {}
        slot_leaves = [tree_flatten(state[slot])[0] for slot in self.slots]
        new_params: list = []
        new_slots: list[list] = [[] for _ in self.slots]
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves, strict=True)):
            slots = [leaves[i] for leaves in slot_leaves]
            if p.dtype not in scalars_by_dtype:
                scalars_by_dtype[p.dtype] = {
                    key: _in_dtype(v, p.dtype) for key, v in scalars.items()
                }
            new_p, updated = self._step_leaf(p, _cast(g, p.dtype), slots, scalars_by_dtype[p.dtype])
            new_params.append(_cast(new_p, p.dtype))
            for store, value in zip(new_slots, updated, strict=True):
                store.append(value)
        new_state = {"step": next_step}
        for slot, leaves in zip(self.slots, new_slots, strict=True):
            new_state[slot] = tree_unflatten(treedef, leaves)
        return new_params, new_state

    def _step_scalars(self, lr, step_number) -> dict:
        """The scalars every leaf's update reads, in float64: the learning rate ``lr`` (a Python
        float, or a 0-d array from the schedule) and whatever depends on ``step_number``, the
        0-d int array t counting this update from 1. Computed once per update."""
        return {"lr": lr}

    def _step_leaf(self, param, grad, slots, scalars):  # pragma: no cover - abstract
        """One parameter's update: ``(new_param, new_slots)``, ``scalars`` in ``param``'s dtype."""
        raise NotImplementedError

    # -- object form ----------------------------------------------------------------------------
    def bind(self, target) -> BoundOptimizer:
        """PyTorch-style optimizer over a Module's parameters (or a pytree of Tensors)."""
        return BoundOptimizer(self, target)

    # -- description -----------------------------------------------------------------------------
    def hyperparameters(self) -> dict:
        """The settings besides the learning rate, by name: what ``config()`` stores and
        ``optimizer_from_config`` passes back to the constructor."""
        return {name: getattr(self, name) for name in self.hyperparameter_names}

    def config(self) -> dict:
        return {"name": self.name, "lr": self.schedule.config(), **self.hyperparameters()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}(lr={self.schedule!r}{', ' + args if args else ''})"


class SGD(Optimizer):
    """Plain gradient descent, with optional (Nesterov) momentum and L2 weight decay."""

    name = "sgd"
    hyperparameter_names = ("momentum", "nesterov", "weight_decay")

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check_finite_number(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.weight_decay = _check_finite_number(weight_decay, "weight_decay", 0.0)
        self.slots = ("velocity",) if self.momentum else ()

    def _step_leaf(self, param, grad, slots, scalars):
        lr = scalars["lr"]
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if not self.momentum:
            return param - lr * grad, ()
        velocity = self.momentum * slots[0] + grad
        direction = grad + self.momentum * velocity if self.nesterov else velocity
        return param - lr * direction, (velocity,)


def GradientDescent(lr) -> SGD:
    """The seeds' "simple gradient descent": θ ← θ - lr·∇L."""
    return SGD(lr)


def Momentum(lr, momentum=0.9) -> SGD:
    return SGD(lr, momentum=momentum)


def Nesterov(lr, momentum=0.9) -> SGD:
    return SGD(lr, momentum=momentum, nesterov=True)


class Adam(Optimizer):
    """Adam; ``weight_decay`` here is coupled L2 (added to the gradient), as in the paper."""

    name = "adam"
    slots = ("m", "v")
    hyperparameter_names = ("b1", "b2", "eps", "weight_decay")
    decoupled = False

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.b1 = _check_finite_number(b1, "b1", 0.0, 1.0)
        self.b2 = _check_finite_number(b2, "b2", 0.0, 1.0)
        self.eps = _check_finite_number(eps, "eps", 0.0, low_inclusive=False)
        self.weight_decay = _check_finite_number(weight_decay, "weight_decay", 0.0)

    def _step_scalars(self, lr, step_number):
        # 1 - βᵗ from the step array. float_power computes in float64 with the C library's pow,
        # the one Python's ``β ** t`` calls (NumPy's power on float64 arrays may use a SIMD pow
        # that differs in the last bit), so the corrections are the bits they always were.
        namespace = _namespace_of(step_number)
        scalars = {
            "lr": lr,
            "correction1": 1 - float_power(namespace, self.b1, step_number),
            "correction2": 1 - float_power(namespace, self.b2, step_number),
        }
        if self.weight_decay and self.decoupled:
            scalars["lr_decay"] = lr * self.weight_decay  # lr·λ in float64, then in param's dtype
        return scalars

    def _step_leaf(self, param, grad, slots, scalars):
        if self.weight_decay and not self.decoupled:
            grad = grad + self.weight_decay * param
        m = self.b1 * slots[0] + (1 - self.b1) * grad
        v = self.b2 * slots[1] + (1 - self.b2) * grad * grad
        m_hat = m / scalars["correction1"]
        v_hat = v / scalars["correction2"]
        new = param - scalars["lr"] * m_hat / (_sqrt(v_hat) + self.eps)
        if self.weight_decay and self.decoupled:
            new = new - scalars["lr_decay"] * param
        return new, (m, v)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ - lr·λθ besides the step."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr, b1, b2, eps, weight_decay)


class RMSProp(Optimizer):
    """RMSProp: divide the gradient by a running root-mean-square of its recent values."""

    name = "rmsprop"
    hyperparameter_names = ("decay", "eps", "momentum", "weight_decay")

    def __init__(self, lr=1e-3, decay=0.9, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(lr)
        self.decay = _check_finite_number(decay, "decay", 0.0, 1.0)
        self.eps = _check_finite_number(eps, "eps", 0.0, low_inclusive=False)
        self.momentum = _check_finite_number(momentum, "momentum", 0.0, 1.0)
        self.weight_decay = _check_finite_number(weight_decay, "weight_decay", 0.0)
        self.slots = ("square_avg", "velocity") if self.momentum else ("square_avg",)

    def _step_leaf(self, param, grad, slots, scalars):
        lr = scalars["lr"]
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        square_avg = self.decay * slots[0] + (1 - self.decay) * grad * grad
        scaled = grad / (_sqrt(square_avg) + self.eps)
        if self.momentum:
            velocity = self.momentum * slots[1] + scaled
            return param - lr * velocity, (square_avg, velocity)
        return param - lr * scaled, (square_avg,)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}


def optimizer_from_config(config: dict) -> Optimizer:
    """Rebuild an optimizer from ``opt.config()`` (as stored in a checkpoint's JSON)."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    config["lr"] = schedule_from_config(config["lr"])
    return OPTIMIZERS[name](**config)


class BoundOptimizer:
    """An optimizer holding its state and the Tensors it updates (PyTorch style)."""

    def __init__(self, optimizer: Optimizer, target):
        self.optimizer = optimizer
        tensors = target.named_tensors() if hasattr(target, "named_tensors") else target
        self.tensors, self.treedef = tree_flatten(tensors)
        for tensor in self.tensors:
            if not getattr(tensor, "requires_grad", False):
                raise TypeError("bind: every leaf must be a Tensor with requires_grad=True")
        self.state = optimizer.init(self._values())

    def _values(self):
        return tree_unflatten(self.treedef, [t.data for t in self.tensors])

    def zero_grad(self) -> None:
        for tensor in self.tensors:
            tensor.grad = None

    def step(self) -> None:
        """Update every Tensor from its ``.grad`` (a missing ``.grad`` counts as zero)."""
        zeros_like = arraylib.ns.zeros_like
        tensors, treedef = self.tensors, self.treedef
        g_leaves = [zeros_like(t.data) if t.grad is None else _as_array(t.grad) for t in tensors]
        p_leaves = [_as_array(t.data) for t in tensors]
        _check_structure(g_leaves, treedef, p_leaves, treedef)
        new_leaves, self.state = self.optimizer._update_leaves(
            g_leaves, p_leaves, self.state, treedef
        )
        with no_grad():
            for tensor, value in zip(tensors, new_leaves, strict=True):
                tensor.data = value

    @property
    def lr(self) -> float:
        return self.optimizer.lr(self.state)
