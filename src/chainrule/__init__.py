"""chainrule: backpropagation done properly, on NumPy, and measured against the alternatives.

``import chainrule`` loads the engine (the primitive table, tensors, the reverse and forward
interpreters), the transforms (``grad``, ``jvp``, Jacobians, ``linearize``, counting, pytrees)
and ``chainrule.numpy``, nothing more: a script that only differentiates a function never pays
for the data sets, plots and training machinery. The outer layers (``nn``, ``optim``, ``data``,
``estimators``, ``training``, ``distributed``, ``backend``, ``apps``), the backend's root-level
names (``capture``, ``CaptureError``, ``device``) and the transforms few scripts need (the chain
DP, the cost model, finite differences) load the first time they are used, through the
module ``__getattr__`` below (PEP 562), so ``chainrule.nn.MLP`` and ``chainrule.capture(...)``
read as if they had been imported eagerly. ``docs/architecture.md`` draws the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import numpy  # noqa: F401  (chainrule.numpy, import as cnp)
from .engine.core import enable_grad, no_grad
from .engine.primitives import TABLE as primitives
from .engine.table import user_primitive as defprim
from .engine.tensor import Tensor, tensor
from .transforms.api import grad, jvp, value_and_grad, vjp
from .transforms.counting import count
from .transforms.jacobians import hessian, hvp, jacfwd, jacobian, jacrev
from .transforms.linearize import linearize
from .transforms.pytree import (
    ravel_pytree,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
)

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from . import apps, backend, data, distributed, estimators, nn, optim, training  # noqa: F401
    from .backend.capture import CaptureError, capture
    from .backend.device import device
    from .engine.anomaly import AnomalyError, detect_anomaly
    from .transforms.chain import ChainJacobian, chain_jacobian
    from .transforms.cost import JacobianPlan, explain_jacobian
    from .transforms.custom import custom_jvp, custom_vjp
    from .transforms.jit import ConcretizationError, jit
    from .transforms.numerical import check_grads, numerical_grad
    from .transforms.remat import checkpoint, remat
    from .transforms.vmap import vmap

__version__ = "0.1.0"

#: The outer layers, loaded on first use.
_LAZY_SUBPACKAGES = frozenset(
    {"apps", "backend", "data", "distributed", "estimators", "nn", "optim", "training"}
)

#: Root-level names that live in an outer layer: name -> (module, attribute).
_LAZY_NAMES = {
    "CaptureError": ("chainrule.backend.capture", "CaptureError"),
    "capture": ("chainrule.backend.capture", "capture"),
    "device": ("chainrule.backend.device", "device"),
    # Debugging: loaded when an anomaly check is first asked for.
    "AnomalyError": ("chainrule.engine.anomaly", "AnomalyError"),
    "detect_anomaly": ("chainrule.engine.anomaly", "detect_anomaly"),
    # Transforms that a script which only differentiates never needs: loaded on first use too.
    "ChainJacobian": ("chainrule.transforms.chain", "ChainJacobian"),
    "chain_jacobian": ("chainrule.transforms.chain", "chain_jacobian"),
    "JacobianPlan": ("chainrule.transforms.cost", "JacobianPlan"),
    "explain_jacobian": ("chainrule.transforms.cost", "explain_jacobian"),
    "check_grads": ("chainrule.transforms.numerical", "check_grads"),
    "checkpoint": ("chainrule.transforms.remat", "checkpoint"),
    "remat": ("chainrule.transforms.remat", "remat"),
    "custom_jvp": ("chainrule.transforms.custom", "custom_jvp"),
    "custom_vjp": ("chainrule.transforms.custom", "custom_vjp"),
    "numerical_grad": ("chainrule.transforms.numerical", "numerical_grad"),
    "vmap": ("chainrule.transforms.vmap", "vmap"),
    "jit": ("chainrule.transforms.jit", "jit"),
    "ConcretizationError": ("chainrule.transforms.jit", "ConcretizationError"),
}


def __getattr__(name: str):
    """Import an outer layer, or the module holding a lazy root-level name, on first use."""
    if name in _LAZY_SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _LAZY_NAMES:
        module_name, attribute = _LAZY_NAMES[name]
        value = getattr(importlib.import_module(module_name), attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without coming back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBPACKAGES | set(_LAZY_NAMES))


__all__ = [
    "AnomalyError",
    "CaptureError",
    "ChainJacobian",
    "ConcretizationError",
    "JacobianPlan",
    "Tensor",
    "capture",
    "chain_jacobian",
    "check_grads",
    "checkpoint",
    "count",
    "custom_jvp",
    "custom_vjp",
    "defprim",
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
    "jit",
    "jvp",
    "linearize",
    "no_grad",
    "numerical_grad",
    "primitives",
    "ravel_pytree",
    "remat",
    "tensor",
    "tree_flatten",
    "tree_leaves",
    "tree_map",
    "tree_unflatten",
    "value_and_grad",
    "vjp",
    "vmap",
]
