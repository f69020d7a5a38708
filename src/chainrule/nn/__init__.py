"""Neural networks: modules whose parameters are a named pytree, layers, losses, initialisers.

``from chainrule import nn``; ``nn.MLP([64, 128, 64, 10])`` is the learners' network. See
:mod:`chainrule.nn.module` for the two ways to call a model (Tensor style and functional).
"""

from . import init
from .init import glorot_normal, glorot_uniform, he_normal, he_uniform
from .layers import (
    ACTIVATIONS,
    GELU,
    MLP,
    BatchNorm1d,
    CheckpointedSequential,
    Dropout,
    Identity,
    LayerNorm,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    activation,
    checkpoint_sequential,
)
from .losses import (
    LOSSES,
    binary_logistic,
    check_labels,
    cross_entropy,
    get_loss,
    mse,
    softmax_cross_entropy,
)
from .module import Context, Module, Parameter, flatten_names, unflatten_names

__all__ = [
    "ACTIVATIONS",
    "GELU",
    "LOSSES",
    "MLP",
    "BatchNorm1d",
    "CheckpointedSequential",
    "Context",
    "Dropout",
    "Identity",
    "LayerNorm",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "activation",
    "binary_logistic",
    "checkpoint_sequential",
    "check_labels",
    "cross_entropy",
    "flatten_names",
    "get_loss",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "init",
    "mse",
    "softmax_cross_entropy",
    "unflatten_names",
]
