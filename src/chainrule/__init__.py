"""chainrule: backpropagation done properly, on NumPy, and measured against the alternatives.

The layers (inner knows nothing of outer): ``backend`` (the array module) → ``primitives`` (the
table of forward/VJP/JVP/FLOP rules) → autodiff (``tensor``/``reverse`` for reverse mode,
``forward`` for forward mode, ``batching`` for many directions per pass, ``transforms``,
``jacobians``, ``linearize``, ``cost``/``chain``/``counting`` for the cost side, ``pytree``,
``numerical``).
"""

# The outer layers (modules, optimizers, data, training); each imports only what sits below it.
from . import (  # noqa: E402, F401
    data,
    nn,
    numpy,  # noqa: F401  (chainrule.numpy, import as cnp)
    optim,
    training,
)
from .backend.capture import CaptureError, capture
from .backend.device import device
from .engine.core import AnomalyError, detect_anomaly, enable_grad, no_grad
from .engine.primitives import TABLE as primitives
from .engine.tensor import Tensor, tensor
from .transforms.api import grad, jvp, value_and_grad, vjp
from .transforms.chain import ChainJacobian, chain_jacobian
from .transforms.cost import JacobianPlan, explain_jacobian
from .transforms.counting import count
from .transforms.jacobians import hessian, hvp, jacfwd, jacobian, jacrev
from .transforms.linearize import linearize
from .transforms.numerical import check_grads, numerical_grad
from .transforms.pytree import (
    ravel_pytree,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
)

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "CaptureError",
    "ChainJacobian",
    "JacobianPlan",
    "Tensor",
    "capture",
    "chain_jacobian",
    "check_grads",
    "count",
    "detect_anomaly",
    "device",
    "enable_grad",
    "explain_jacobian",
    "grad",
    "hessian",
    "hvp",
    "jacfwd",
    "jacobian",
    "jacrev",
    "jvp",
    "linearize",
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
