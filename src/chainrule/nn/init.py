"""Weight initialisers: each takes a ``numpy.random.Generator`` and a shape ``(fan_in, fan_out)``.

Glorot (Xavier) keeps the variance of activations and of gradients about equal across layers for
symmetric saturating activations (tanh, sigmoid): Var(w) = 2 / (fan_in + fan_out). He (Kaiming)
accounts for ReLU zeroing half its inputs: Var(w) = 2 / fan_in.

>>> import numpy as np
>>> w = he_normal(np.random.default_rng(0), (400, 300))
>>> round(float(w.std() ** 2 * 400), 1)          # Var(w) * fan_in ≈ 2
2.0
"""

from __future__ import annotations

import math

from ..engine.arraylib import xp
from ..util.lookup import look_up


def _fans(shape) -> tuple[int, int]:
    if len(shape) < 1:
        raise ValueError(f"initialiser: needs a shape with at least one axis, got {shape}")
    fan_in = shape[0]
    fan_out = shape[1] if len(shape) > 1 else shape[0]
    return int(fan_in), int(fan_out)


def glorot_uniform(rng, shape, dtype=xp.float64):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def glorot_normal(rng, shape, dtype=xp.float64):
    """N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def he_uniform(rng, shape, dtype=xp.float64):
    """U(-a, a) with a = sqrt(6 / fan_in)."""
    fan_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(rng, shape, dtype=xp.float64):
    """N(0, 2 / fan_in)."""
    fan_in, _ = _fans(shape)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def zeros(rng, shape, dtype=xp.float64):
    return xp.zeros(shape, dtype=dtype)


INITIALISERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "zeros": zeros,
}
# Short names.
INITIALISERS["glorot"] = glorot_uniform
INITIALISERS["xavier"] = glorot_uniform
INITIALISERS["he"] = he_normal
INITIALISERS["kaiming"] = he_normal


def get_initialiser(name_or_fn):
    if callable(name_or_fn):
        return name_or_fn
    return look_up(INITIALISERS, name_or_fn, "initialiser")
