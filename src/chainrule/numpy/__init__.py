"""NumPy's names for chainrule's differentiable operations: ``import chainrule.numpy as cnp``.

Every function accepts Tensors, tracers or plain arrays; on plain arrays it returns plain arrays.
The namespace is :mod:`chainrule.engine.ops`'s: the functions of the primitive table (each entry's
own, see :mod:`chainrule.engine.table`) and the compositions built on them. A name that is not
there raises an AttributeError naming the closest ones.
"""

import difflib as _difflib

from ..engine import ops as _ops

__all__ = list(_ops.__all__)
globals().update({_name: getattr(_ops, _name) for _name in __all__})


def __getattr__(name: str):
    close = _difflib.get_close_matches(name, __all__, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise AttributeError(f"chainrule.numpy has no function {name!r}{hint}")
