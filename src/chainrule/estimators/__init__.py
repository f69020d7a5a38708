"""Every gradient method behind one interface returning ``(loss, grads, cost)``.

See :mod:`chainrule.estimators.methods` for the interface and the methods, :mod:`.cost` for
what is counted, and :mod:`.seeded` for the seeded random directions the stochastic estimators
share (and why they make data-parallel zeroth-order training cheap).
"""

from .cost import COST_FIELDS, Cost, measuring
from .methods import (
    ALIASES,
    METHODS,
    SPSA,
    Backprop,
    EvolutionStrategies,
    FiniteDifferences,
    ForwardGradient,
    ForwardMode,
    Method,
    MeZO,
    StochasticMethod,
    centred_ranks,
    get_method,
)
from .seeded import SeededGradient, add_direction_, direction

__all__ = [
    "ALIASES",
    "COST_FIELDS",
    "METHODS",
    "SPSA",
    "Backprop",
    "Cost",
    "EvolutionStrategies",
    "FiniteDifferences",
    "ForwardGradient",
    "ForwardMode",
    "MeZO",
    "Method",
    "SeededGradient",
    "StochasticMethod",
    "add_direction_",
    "centred_ranks",
    "direction",
    "get_method",
    "measuring",
]
