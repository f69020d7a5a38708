"""The primitive table: what an entry holds, how one is declared, and what is generated from it.

Everything chainrule knows about a primitive sits in its one :class:`Primitive` entry, declared
with :func:`defprim` in one of the family modules of :mod:`chainrule.engine.primitives`::

    forward(*args, **params)                -> out          # plain arrays in, plain array out
    vjp:   one rule per argument, rule_i(cotangent, out, *args, **params) -> cotangent of arg i
           (``None`` marks an argument that is never differentiated), or for variadic
           primitives a single rule returning a tuple of cotangents
    jvp(tangents, out, *args, **params)     -> tangent of out   # tangents[i] is None when zero
    flops(out, *args, **params)             -> int
    batching                                -> how a batch axis goes through it (see below)
    array_api                               -> its name in the array-API standard, or a builder
                                               ``namespace -> forward``; None: NumPy/CuPy only
    matmul_like                             -> its FLOPs are counted as matrix products
    gpu                                     -> what to know about it on a GPU (docs)
    functions, methods, operator            -> its public face (below)

**What is generated from the table.** The ``chainrule.numpy`` functions (an entry's
``functions``: written ones registered with :func:`public`, or, for a primitive of one or two
array arguments and no parameters, one generated from its arity), the Tensor methods (``methods``)
and Python operators (``operator``), the batching rules (a name of a generic rule of
:mod:`chainrule.engine.batching`, ``"elementwise"`` for one, or a rule of the entry's own), the
cost model's matmul-like set, the array-API coverage list and ``docs/primitives.md``: each is a
loop over :data:`TABLE`. Adding a primitive is therefore one ``defprim`` in one source file, plus
one row of the test grid.

Rules are written with chainrule's own operations (other entries, called like functions:
``COS(x)`` is ``apply(COS, x)``; the public functions call ``apply`` themselves, one Python frame
fewer on the hot path), so the very same rule runs on plain arrays on the first-order
hot path and is itself recorded when a second derivative is asked for. Rules never worry about
broadcasting: the interpreters sum a cotangent back to its argument's shape and broadcast
tangents to the output shape in one central place. An entry without both rules is an error at
declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .core import apply

#: Python operators an entry may stand for that also have a reflected form (``__radd__``...).
REFLECTED_OPERATORS = frozenset({"add", "sub", "mul", "truediv", "floordiv", "pow", "matmul"})


class Primitive:
    """One entry of the table: a primitive's forward, derivative, cost and batching rules, and
    its public face, side by side (see the module docstring for each field)."""

    __slots__ = (
        "name",
        "forward",
        "vjp",
        "jvp",
        "flops",
        "batching",
        "array_api",
        "matmul_like",
        "gpu",
        "functions",
        "methods",
        "operator",
        "fast_operator",
        "operands",
    )

    def __init__(self, name, forward, vjp, jvp, flops, **fields):
        self.name = name
        self.forward = forward
        self.vjp = vjp  # tuple of per-argument rules, or one callable returning a tuple
        self.jvp = jvp
        self.flops = flops
        self.batching = fields.get("batching")
        self.array_api = fields.get("array_api")
        self.matmul_like = bool(fields.get("matmul_like", False))
        self.gpu = fields.get("gpu")
        self.functions: dict[str, Callable] = {}  # public name -> function of chainrule.numpy
        self.methods: tuple[str, ...] = tuple(fields.get("methods", ()))
        self.operator = fields.get("operator")  # "add" gives __add__ and __radd__
        self.fast_operator = bool(fields.get("fast_operator", False))
        self.operands: tuple[str, ...] | None = fields.get("operands")  # names, for errors

    #: ``prim(*args, **params)`` is ``apply(prim, *args, **params)``: how rules call each other
    #: (``apply`` itself as the method, so a rule's call costs no extra Python frame).
    __call__ = apply

    def __repr__(self):
        return f"Primitive({self.name})"

    @property
    def elementwise(self) -> bool:
        """Whether the primitive works entry by entry (with broadcasting)."""
        return self.batching == "elementwise"

    @property
    def namespace_forward(self) -> Callable[[Any], Callable] | None:
        """``namespace -> forward`` computing this primitive with an array-API namespace, or None
        when it has no array-API form (see :func:`chainrule.backend.namespace.use_namespace`)."""
        spec = self.array_api
        if spec is None or callable(spec):
            return spec
        return lambda namespace: getattr(namespace, spec)

    @property
    def function(self) -> Callable:
        """The entry's main public function (the first one registered)."""
        return next(iter(self.functions.values()))


#: name -> Primitive, the whole table.
TABLE: dict[str, Primitive] = {}


def _linear_jvp(prim):
    """JVP of a primitive that is linear in its (single differentiable) array argument."""

    def jvp(tangents, out, *args, **params):
        return apply(prim, tangents[0], **params)

    return jvp


def _from_vjp(rule):
    """JVP of an elementwise unary primitive: its Jacobian is diagonal, so J t equals J^T t."""

    def jvp(tangents, out, x, **params):
        return rule(tangents[0], out, x, **params)

    return jvp


def elementwise_flops(per_element=1):
    """FLOP rule of an elementwise primitive costing ``per_element`` operations per entry."""
    return lambda out, *args, **params: per_element * int(getattr(out, "size", 1))


def _unary_function(prim):
    def function(x):
        return apply(prim, x)

    return function


def _binary_function(prim):
    def function(x, y):
        return apply(prim, x, y)

    return function


def _generated_function(prim, name, arity, doc):
    """The ``chainrule.numpy`` function of a primitive of ``arity`` (1 or 2) array arguments and
    no parameters: one call of :func:`~chainrule.engine.core.apply`, as a written wrapper would
    be."""
    function = _unary_function(prim) if arity == 1 else _binary_function(prim)
    function.__name__ = function.__qualname__ = name
    function.__module__ = "chainrule.numpy"
    function.__doc__ = doc or (
        f"NumPy's ``{name}``, differentiable in every mode (primitive ``{prim.name}``)."
    )
    return function


def defprim(
    name: str,
    forward: Callable,
    vjp,
    jvp,
    flops: Callable | None = None,
    array_api=None,
    *,
    batching=None,
    matmul_like: bool = False,
    gpu: str | None = None,
    names: tuple[str, ...] | None = None,
    methods: tuple[str, ...] = (),
    operator: str | None = None,
    doc: str | None = None,
    operands: tuple[str, ...] | None = None,
    in_table: bool = True,
) -> Primitive:
    """Declare primitive ``name`` and enter it in :data:`TABLE`.

    ``jvp="linear"`` derives forward mode from the forward itself (a primitive linear in its
    array argument); ``jvp="from_vjp"`` from the single VJP rule of an elementwise unary one.
    ``names`` are its public ``chainrule.numpy`` names (default: ``name``), generated from the
    arity of its VJP rules when no written function is registered with :func:`public`;
    ``names=()`` makes it internal. ``operands`` names the array arguments in error messages
    (default ``operand 0``, ``operand 1``...). ``methods`` become Tensor methods of those
    functions, and ``operator="add"`` makes it ``__add__``/``__radd__`` of every tracer (with
    the Tensor fast path, since a generated function adds nothing to the primitive).
    """
    if vjp is None or jvp is None:
        raise TypeError(f"primitive {name!r} needs both a VJP and a JVP rule")
    if name in TABLE:
        raise ValueError(f"primitive {name!r} is declared twice")
    if not in_table and (names or methods or operator):
        raise TypeError(f"primitive {name!r}: a user primitive has no public names or operators")
    if jvp == "from_vjp":
        jvp = _from_vjp(vjp[0])
    prim = Primitive(
        name,
        forward,
        vjp,
        jvp,
        flops or elementwise_flops(),
        batching=batching,
        array_api=array_api,
        matmul_like=matmul_like,
        gpu=gpu,
        methods=methods,
        operator=operator,
        operands=operands,
    )
    if jvp == "linear":
        prim.jvp = _linear_jvp(prim)
    arity = len(vjp) if isinstance(vjp, tuple) else 0
    for public_name in (name,) if names is None else names:
        if arity in (1, 2):
            prim.functions[public_name] = _generated_function(prim, public_name, arity, doc)
    prim.fast_operator = bool(prim.functions)  # a generated function adds nothing to the call
    if in_table:
        TABLE[name] = prim
    return prim


def user_primitive(name, forward, vjp, jvp, flops=None, *, batching=None, doc=None) -> Primitive:
    """A primitive declared from user code (``chainrule.defprim``): the same fields as the
    table's own entries (``forward``, one ``vjp`` rule per argument, ``jvp``, ``flops``,
    ``batching``), and every interpreter treats it as one of them, but it stays out of
    :data:`TABLE`, which lists the library's own primitives (``docs/primitives.md``). Call the
    returned primitive like a function: ``prim(x, y, **params)``. Declaring the same name again
    gives a new primitive (a notebook cell run twice); a name of the table is refused."""
    rules = vjp if isinstance(vjp, tuple) or callable(vjp) else tuple(vjp)  # a list of rules
    return defprim(name, forward, rules, jvp, flops, batching=batching, doc=doc, **_OUTSIDE)


#: What makes a primitive a user's: no public names, not entered in the table.
_OUTSIDE: dict = {"names": (), "in_table": False}


def public(
    prim: Primitive,
    *,
    names: tuple[str, ...] | None = None,
    method: bool = False,
    fast_operator: bool = False,
):
    """Register the decorated function as a ``chainrule.numpy`` function of ``prim`` (in place of
    a generated one of the same name), under ``names`` (default: its own name; ``"linalg.det"``
    is ``det`` of ``chainrule.numpy.linalg``); ``method=True`` makes it a Tensor method too.

    A written function checks and normalises the arguments (an axis, a shape) before it applies
    the primitive; the entry's operator then calls it. With ``fast_operator=True`` (a function
    that only checks, such as matmul's rank check) the Tensor operator still runs the forward
    directly on plain operands, and calls the function only when that fails, so that any error is
    the function's.
    """

    def register(function):
        prim.fast_operator = fast_operator
        for name in (function.__name__,) if names is None else names:
            prim.functions[name] = function
        if method:
            prim.methods = (*prim.methods, function.__name__)
        return function

    return register


def check_table() -> None:
    """Every entry has a forward, and every operator a function (run when the table is loaded;
    :func:`defprim` has already refused an entry without both derivative rules)."""
    for name, prim in TABLE.items():
        if prim.forward is None:
            raise TypeError(f"primitive {name!r} has no forward")
        if prim.operator is not None and not prim.functions:
            raise TypeError(f"primitive {name!r} is operator {prim.operator!r} but has no function")


def public_functions() -> dict[str, Callable]:
    """Every ``chainrule.numpy`` function of the table: public name -> function."""
    functions: dict[str, Callable] = {}
    for prim in TABLE.values():
        for name, function in prim.functions.items():
            if functions.setdefault(name, function) is not function:
                raise ValueError(f"two primitives define the public function {name!r}")
    return functions
