"""The transforms layer: functions of functions built on the engine's interpreters.

``grad``, ``value_and_grad``, ``vjp`` and ``jvp`` (:mod:`.api`), Jacobians and Hessians
(:mod:`.jacobians`), ``linearize``, the Jacobian cost model and chain bracketing (:mod:`.cost`,
:mod:`.chain`), FLOP counting (:mod:`.counting`), finite differences and ``check_grads``
(:mod:`.numerical`) and pytrees (:mod:`.pytree`).
"""

from .api import grad, jvp, value_and_grad, vjp

__all__ = ["grad", "jvp", "value_and_grad", "vjp"]
