"""Optimizers (functional ``update`` on pytrees or θ, plus a bound object form) and schedules."""

from .optimizers import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    BoundOptimizer,
    GradientDescent,
    Momentum,
    Nesterov,
    Optimizer,
    RMSProp,
    optimizer_from_config,
)
from .schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    LinearWarmup,
    Schedule,
    SPSAGain,
    StepDecay,
    as_schedule,
    schedule_from_config,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "BoundOptimizer",
    "Constant",
    "Cosine",
    "SPSAGain",
    "GradientDescent",
    "LinearWarmup",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSProp",
    "Schedule",
    "StepDecay",
    "as_schedule",
    "optimizer_from_config",
    "schedule_from_config",
]
