"""Learning-rate schedules: callables ``schedule(step) -> lr``, ``step`` counting updates from 0.

Every schedule can describe itself as a JSON-ready dict (``config()``) and be rebuilt from it
(``from_config``), which is how checkpoints record them.

A schedule takes the step in two forms. A Python int (what a training loop counts, what a log line
prints) gives a Python float. An integer *array* (the optimizer state's 0-d ``step``) gives a
float64 array of the same shape, on the step's device, computed by array operations alone: no
``int(step)`` reads the value into Python, so a step captured by :mod:`chainrule.backend.capture`
replays its learning rate as part of the tape instead of guarding on the step number. On NumPy both
forms give the same bits (``tests/backend/test_capture_optim.py`` checks it): the array form
evaluates the same formula in float64, with ``float_power`` for the powers because it calls the C
library's ``pow`` as Python's ``**`` does, where NumPy's ``power`` on float64 arrays may take a
SIMD ``pow`` that differs in the last bit.

>>> s = Cosine(0.1, total_steps=100)
>>> round(s(0), 6), round(s(50), 6), round(s(100), 6)
(0.1, 0.05, 0.0)
>>> w = LinearWarmup(Constant(0.1), warmup_steps=4)
>>> [round(w(t), 3) for t in range(5)]
[0.025, 0.05, 0.075, 0.1, 0.1]
>>> import numpy as np
>>> decay = StepDecay(1.0, step_size=2, gamma=0.5)
>>> decay(3), decay(np.asarray(3))                # a float for an int, an array for an array
(0.5, array(0.5))
>>> decay(np.arange(6))                           # so an array of steps gives every rate at once
array([1.  , 1.  , 0.5 , 0.5 , 0.25, 0.25])
"""

from __future__ import annotations

import math

import numpy as _np

from .. import numpy as cnp
from ..engine import arraylib
from ..engine.core import Tracer, state


def _positive(value, what):
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number, got {value}")
    return value


def _positive_int(value, what):
    if int(value) != value or int(value) <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value}")
    return int(value)


def float_power(namespace, base, exponent):
    """``base ** exponent`` in float64. NumPy's and CuPy's ``float_power`` call the C library's
    pow, the one Python's ``**`` calls, so results keep the bits they always had; a namespace of
    the array API standard has no ``float_power``: its ``pow`` on float64 operands."""
    if not state.foreign:
        return namespace.float_power(base, exponent)

    def in_float64(value):
        return value if type(value) is float else namespace.astype(value, namespace.float64)

    return namespace.pow(in_float64(base), in_float64(exponent))


class _TracedNamespace:
    """The array functions the schedules and optimizers call, for a step counter or a parameter
    that a transform traces (under :func:`~chainrule.jit` the whole state is staged): those of
    :mod:`chainrule.numpy`, so the learning rate and the update are staged, differentiated or
    batched with everything else. On plain arrays they give the bits NumPy's own give."""

    float64 = _np.float64
    astype = staticmethod(cnp.astype)
    cos = staticmethod(cnp.cos)
    float_power = staticmethod(cnp.float_power)
    floor_divide = staticmethod(cnp.floor_divide)
    minimum = staticmethod(cnp.minimum)
    sqrt = staticmethod(cnp.sqrt)

    @staticmethod
    def full_like(value, fill, dtype):
        return cnp.zeros_like(value, dtype=dtype) + fill


#: See :class:`_TracedNamespace`.
traced_namespace = _TracedNamespace()


class Schedule:
    """``schedule(step)``: a Python float for a Python step number, a float64 array for an
    integer array of steps (see the module docstring). Subclasses write the formula twice, side by
    side: ``_at_int`` on a Python number and ``_at_array`` with the step array's namespace."""

    def __call__(self, step):
        if isinstance(step, Tracer):
            return self._at_array(step, traced_namespace)
        if arraylib.is_array(step):
            return arraylib.asarray(self._at_array(step, arraylib.namespace_of(step)))
        if state.foreign and hasattr(step, "__array_namespace__"):
            # An array of the namespace backend.use_namespace made active. Its standard mixes no
            # integer array with a float scalar: steps (small whole numbers, exact) in float64.
            namespace = arraylib.ns
            return self._at_array(namespace.astype(step, namespace.float64), namespace)
        return self._at_int(step)

    def _at_int(self, step) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _at_array(self, step, namespace):  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The same learning rate at every step."""

    def __init__(self, lr):
        self.lr = _positive(lr, "learning rate")

    def _at_int(self, step):
        return self.lr

    def _at_array(self, step, namespace):
        return namespace.full_like(step, self.lr, dtype=namespace.float64)

    def config(self):
        return {"name": "constant", "lr": self.lr}


class StepDecay(Schedule):
    """lr * gamma ** (step // step_size): multiply by ``gamma`` every ``step_size`` steps."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _positive(lr, "learning rate")
        self.step_size = _positive_int(step_size, "step_size")
        self.gamma = _positive(gamma, "gamma")

    def _at_int(self, step):
        return self.lr * self.gamma ** (int(step) // self.step_size)

    def _at_array(self, step, namespace):
        return self.lr * float_power(
            namespace, self.gamma, namespace.floor_divide(step, self.step_size)
        )

    def config(self):
        return {"name": "step", "lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class Cosine(Schedule):
    """Half a cosine from ``lr`` at step 0 to ``final_lr`` at ``total_steps`` (flat after)."""

    def __init__(self, lr, total_steps, final_lr=0.0):
        self.lr = _positive(lr, "learning rate")
        self.total_steps = _positive_int(total_steps, "total_steps")
        self.final_lr = float(final_lr)
        if self.final_lr < 0:
            raise ValueError(f"final_lr must be non-negative, got {final_lr}")

    def _at_int(self, step):
        progress = min(int(step), self.total_steps) / self.total_steps
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (
            1.0 + math.cos(math.pi * progress)
        )

    def _at_array(self, step, namespace):
        progress = namespace.minimum(step, self.total_steps) / self.total_steps
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (
            1.0 + namespace.cos(math.pi * progress)
        )

    def config(self):
        return {
            "name": "cosine",
            "lr": self.lr,
            "total_steps": self.total_steps,
            "final_lr": self.final_lr,
        }


class LinearWarmup(Schedule):
    """``base(step) * min(1, (step + 1) / warmup_steps)``: a linear ramp over the first steps."""

    def __init__(self, base, warmup_steps):
        self.base = as_schedule(base)
        self.warmup_steps = _positive_int(warmup_steps, "warmup_steps")

    def _at_int(self, step):
        return self.base(step) * min(1.0, (int(step) + 1) / self.warmup_steps)

    def _at_array(self, step, namespace):
        return self.base(step) * namespace.minimum((step + 1) / self.warmup_steps, 1.0)

    def config(self):
        return {"name": "warmup", "base": self.base.config(), "warmup_steps": self.warmup_steps}


class SPSAGain(Schedule):
    """Spall's gain sequence a_k = lr / (offset + k + 1) ** alpha, with the standard alpha = 0.602
    and the stability offset A (``offset``) commonly set near 10% of the planned steps.

    >>> s = SPSAGain(0.1, offset=9)
    >>> round(s(0), 6), round(s(90), 6)
    (0.025003, 0.006252)
    """

    def __init__(self, lr, offset=0.0, alpha=0.602):
        self.lr = _positive(lr, "learning rate")
        self.offset = float(offset)
        if not math.isfinite(self.offset) or self.offset < 0:
            raise ValueError(f"SPSA gain offset must be >= 0, got {offset}")
        self.alpha = _positive(alpha, "SPSA gain alpha")

    def _at_int(self, step):
        return self.lr / (self.offset + int(step) + 1) ** self.alpha

    def _at_array(self, step, namespace):
        return self.lr / float_power(namespace, self.offset + step + 1, self.alpha)

    def config(self):
        return {"name": "spsa", "lr": self.lr, "offset": self.offset, "alpha": self.alpha}


SCHEDULES = {
    "constant": Constant,
    "step": StepDecay,
    "cosine": Cosine,
    "warmup": LinearWarmup,
    "spsa": SPSAGain,
}


def as_schedule(lr) -> Schedule:
    """A number becomes ``Constant(lr)``; a schedule passes through."""
    if isinstance(lr, Schedule):
        return lr
    if callable(lr):
        raise TypeError(
            "learning-rate schedules must be chainrule.optim.Schedule objects (so they can be "
            "saved)"
        )
    return Constant(lr)


def schedule_from_config(config: dict) -> Schedule:
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}")
    if name == "warmup":
        return LinearWarmup(schedule_from_config(config["base"]), config["warmup_steps"])
    return SCHEDULES[name](**config)
