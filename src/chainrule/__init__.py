"""chainrule: backpropagation done properly, on NumPy, and measured against the alternatives.

The layers (inner knows nothing of outer): ``backend`` (the array module) → ``primitives`` (the
table of forward/VJP/JVP/FLOP rules) → autodiff (``tensor``/``reverse`` for reverse mode,
``forward`` for forward mode, ``transforms``, ``pytree``, ``numerical``).
"""

from . import numpy  # noqa: F401  (chainrule.numpy, import as cnp)
from .core import AnomalyError, detect_anomaly, enable_grad, no_grad
from .numerical import check_grads, numerical_grad
from .primitives import TABLE as primitives
from .pytree import ravel_pytree, tree_flatten, tree_leaves, tree_map, tree_unflatten
from .tensor import Tensor, tensor
from .transforms import grad, jvp, value_and_grad, vjp

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "Tensor",
    "check_grads",
    "detect_anomaly",
    "enable_grad",
    "grad",
    "jvp",
    "no_grad",
    "numerical_grad",
    "primitives",
    "ravel_pytree",
    "tensor",
    "tree_flatten",
    "tree_leaves",
    "tree_map",
    "tree_unflatten",
    "value_and_grad",
    "vjp",
]
