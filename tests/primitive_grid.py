"""Test helper: the primitive grid, every function of ``chainrule.numpy`` × its input domain ×
shapes, as data (:data:`GRID`, a list of :class:`Case`).

``tests/engine/test_primitives.py`` runs every case through its checks (forward value, VJP and
JVP against central differences, eager backward); ``tests/engine/test_forward.py``,
``tests/backend/test_simulated_cuda.py`` and ``tests/backend/test_array_api.py`` reuse the same
cases. Constant arrays the cases read (a ``where`` condition, labels, index arrays) are globals
of this module, which :func:`module_arrays.with_module_arrays` converts for other array libraries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# ------------------------------------------------------------------------------------------------
# Input domains
# ------------------------------------------------------------------------------------------------


def _distinct(shape, rng, slot):
    """Values on a grid of step 0.25, shuffled: no two entries within 0.25 of each other, none
    within 0.06 of 0, and the values of argument ``slot`` 0 and 1 interleave (0.125 apart), so
    max/min/sort/maximum never meet a tie and abs/relu never meet their kink."""
    size = math.prod(shape)
    values = (rng.permutation(size) - size // 2) * 0.25 + 0.06 + 0.125 * slot
    return values.reshape(shape)


def _well_conditioned(shape, rng, slot):
    """Square matrices 2·I + small noise: eigenvalues near 2, condition number near 1."""
    n = shape[-1]
    return 2.0 * np.eye(n) + 0.3 * rng.standard_normal(shape) / math.sqrt(n)


DOMAINS: dict[str, Callable] = {
    "real": lambda shape, rng, slot: rng.standard_normal(shape),
    "positive": lambda shape, rng, slot: rng.uniform(0.5, 2.0, shape),
    "nonzero": lambda shape, rng, slot: (
        rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
    ),
    "moderate": lambda shape, rng, slot: rng.uniform(-1.2, 1.2, shape),  # tan: |x| < pi/2
    # floor_divide: x / y stays a quarter away from every integer (its jumps), for y = ±1, ±2.
    "half_integer": lambda shape, rng, slot: rng.integers(-3, 3, shape) + 0.5,
    "unit": lambda shape, rng, slot: rng.choice([-2.0, -1.0, 1.0, 2.0], shape),
    "distinct": _distinct,
    "matrix": _well_conditioned,
}


@dataclass(frozen=True)
class Case:
    """One row of the grid: public function ``name`` applied as ``fun(xp, *args)``."""

    name: str  # the chainrule.numpy function under test
    fun: Callable
    args: tuple  # ((shape, domain), ...) per differentiable argument
    tag: str = ""  # tells variants of one function apart in test ids
    order: int = 2  # highest derivative order checked against finite differences

    @property
    def id(self):
        shapes = ",".join("x".join(map(str, shape)) or "scalar" for shape, _ in self.args)
        return f"{self.name}{'[' + self.tag + ']' if self.tag else ''}({shapes})"

    def sample(self, seed=0):
        rng = np.random.default_rng(seed)
        return tuple(
            np.asarray(DOMAINS[domain](shape, rng, slot), dtype=np.float64)
            for slot, (shape, domain) in enumerate(self.args)
        )


GRID: list[Case] = []


def case(name, fun, *args, tag="", order=2):
    GRID.append(Case(name, fun, tuple(args), tag, order))


# ---- elementwise unary: op -> (fun, domain) ------------------------------------------------------
UNARY_OPS = {
    "negative": (lambda xp, x: xp.negative(x), "real"),
    "square": (lambda xp, x: xp.square(x), "real"),
    "sqrt": (lambda xp, x: xp.sqrt(x), "positive"),
    "exp": (lambda xp, x: xp.exp(x), "real"),
    "log": (lambda xp, x: xp.log(x), "positive"),
    "log1p": (lambda xp, x: xp.log1p(x), "positive"),
    "expm1": (lambda xp, x: xp.expm1(x), "real"),
    "sin": (lambda xp, x: xp.sin(x), "real"),
    "cos": (lambda xp, x: xp.cos(x), "real"),
    "tan": (lambda xp, x: xp.tan(x), "moderate"),
    "tanh": (lambda xp, x: xp.tanh(x), "real"),
    "arctan": (lambda xp, x: xp.arctan(x), "real"),
    "sinh": (lambda xp, x: xp.sinh(x), "real"),
    "cosh": (lambda xp, x: xp.cosh(x), "real"),
    "cbrt": (lambda xp, x: xp.cbrt(x), "nonzero"),
    "abs": (lambda xp, x: xp.abs(x), "nonzero"),
    "absolute": (lambda xp, x: xp.absolute(x), "nonzero"),
    "sign": (lambda xp, x: xp.sign(x), "nonzero"),
    "sigmoid": (lambda xp, x: xp.sigmoid(x), "real"),
    "relu": (lambda xp, x: xp.relu(x), "nonzero"),
    "softplus": (lambda xp, x: xp.softplus(x), "real"),
    "gelu": (lambda xp, x: xp.gelu(x), "real"),
}
UNARY_SHAPES = [(), (5,), (3, 4), (2, 3, 4)]
for _name, (_fun, _domain) in UNARY_OPS.items():
    for _shape in UNARY_SHAPES:
        case(_name, _fun, (_shape, _domain))

# ---- elementwise binary: op -> (fun, domain of x, domain of y) -----------------------------------
BINARY_OPS = {
    "add": (lambda xp, x, y: xp.add(x, y), "real", "real"),
    "subtract": (lambda xp, x, y: xp.subtract(x, y), "real", "real"),
    "multiply": (lambda xp, x, y: xp.multiply(x, y), "real", "real"),
    "divide": (lambda xp, x, y: xp.divide(x, y), "real", "nonzero"),
    "true_divide": (lambda xp, x, y: xp.true_divide(x, y), "real", "nonzero"),
    "power": (lambda xp, x, y: xp.power(x, y), "positive", "real"),
    "float_power": (lambda xp, x, y: xp.float_power(x, y), "positive", "real"),
    "floor_divide": (lambda xp, x, y: xp.floor_divide(x, y), "half_integer", "unit"),
    "maximum": (lambda xp, x, y: xp.maximum(x, y), "distinct", "distinct"),
    "minimum": (lambda xp, x, y: xp.minimum(x, y), "distinct", "distinct"),
    "hypot": (lambda xp, x, y: xp.hypot(x, y), "real", "real"),
}
BINARY_SHAPES = [
    ((), ()),
    ((4,), (4,)),
    ((3, 4), (3, 4)),
    ((1, 4), (3, 4)),  # (1, n) against (m, n)
    ((3, 4), (1, 4)),
    ((3, 1), (1, 4)),  # both stretched
    ((), (3, 4)),  # scalar against matrix
    ((4,), (2, 3, 4)),  # rank promotion
    ((2, 3, 4), (3, 1)),
]
for _name, (_fun, _dx, _dy) in BINARY_OPS.items():
    for _sx, _sy in BINARY_SHAPES:
        case(_name, _fun, (_sx, _dx), (_sy, _dy))

# Operators and constant exponents (x**2 and x**0.5 take shortcuts in cnp.power).
for _exponent in (2, 3, 0.5, -1.5):
    case(
        "power",
        lambda xp, x, p=_exponent: xp.power(x, p),
        ((3, 4), "positive"),
        tag=f"**{_exponent}",
    )
case("power", lambda xp, x: 2.0**x, ((4,), "real"), tag="constant base")
case(
    "add",
    lambda xp, x, y: 2.0 * x - y / 3.0 + x * y - 1.5 / (y + 3.0),
    ((3, 4), "real"),
    ((4,), "positive"),
    tag="operators",
)

# ---- where / clip ------------------------------------------------------------------------------
_CONDITION = np.arange(12).reshape(3, 4) % 3 == 0
case("where", lambda xp, x, y: xp.where(_CONDITION, x, y), ((3, 4), "real"), ((3, 4), "real"))
case(
    "where",
    lambda xp, x, y: xp.where(_CONDITION, x, y),
    ((1, 4), "real"),
    ((), "real"),
    tag="broadcast",
)
case("where", lambda xp, x: xp.where(x > 0, x, 0.1 * x), ((2, 3, 4), "distinct"), tag="leaky")
case("clip", lambda xp, x: xp.clip(x, -0.3, 0.4), ((5,), "distinct"))
case("clip", lambda xp, x: xp.clip(x, -0.3, 0.4), ((3, 4), "distinct"))
case("clip", lambda xp, x: xp.clip(x, -0.3, None), ((2, 3, 4), "distinct"), tag="lower only")
case("clip", lambda xp, x: xp.clip(x, None, 0.4), ((3, 4), "distinct"), tag="upper only")

# ---- reductions: op -> (fun(xp, x, axis, keepdims), domain) ------------------------------------
REDUCTION_OPS = {
    "sum": (lambda xp, x, axis, keepdims: xp.sum(x, axis=axis, keepdims=keepdims), "real"),
    "mean": (lambda xp, x, axis, keepdims: xp.mean(x, axis=axis, keepdims=keepdims), "real"),
    "prod": (lambda xp, x, axis, keepdims: xp.prod(x, axis=axis, keepdims=keepdims), "nonzero"),
    "max": (lambda xp, x, axis, keepdims: xp.max(x, axis=axis, keepdims=keepdims), "distinct"),
    "min": (lambda xp, x, axis, keepdims: xp.min(x, axis=axis, keepdims=keepdims), "distinct"),
    "amax": (lambda xp, x, axis, keepdims: xp.amax(x, axis=axis, keepdims=keepdims), "distinct"),
    "amin": (lambda xp, x, axis, keepdims: xp.amin(x, axis=axis, keepdims=keepdims), "distinct"),
    "var": (lambda xp, x, axis, keepdims: xp.var(x, axis=axis, keepdims=keepdims), "real"),
    "std": (lambda xp, x, axis, keepdims: xp.std(x, axis=axis, keepdims=keepdims), "distinct"),
    "logsumexp": (
        lambda xp, x, axis, keepdims: xp.logsumexp(x, axis=axis, keepdims=keepdims),
        "real",
    ),
}
REDUCTION_VARIANTS = [  # (shape, axis, keepdims)
    ((), None, False),
    ((5,), None, False),
    ((5,), 0, True),
    ((3, 4), None, False),
    ((3, 4), None, True),
    ((3, 4), 0, False),
    ((3, 4), -1, True),
    ((2, 3, 4), 1, False),
    ((2, 3, 4), (0, 2), True),
    ((2, 3, 4), (-1, 0), False),
]
for _name, (_fun, _domain) in REDUCTION_OPS.items():
    for _shape, _axis, _keepdims in REDUCTION_VARIANTS:
        if _name == "std" and _shape == ():
            continue  # the std of one value is 0, where sqrt has no derivative
        case(
            _name,
            lambda xp, x, f=_fun, a=_axis, k=_keepdims: f(xp, x, a, k),
            (_shape, _domain),
            tag=f"axis={_axis},keepdims={_keepdims}",
        )
case("var", lambda xp, x: xp.var(x, axis=0, ddof=1), ((3, 4), "real"), tag="ddof=1")
case(
    "std",
    lambda xp, x: xp.std(x, axis=-1, ddof=1, keepdims=True),
    ((2, 3, 4), "distinct"),
    tag="ddof=1",
)
case("prod", lambda xp, x: xp.prod(x, axis=1), ((3, 4), "real"), tag="real")

# ---- softmax family, cumsum, sort ---------------------------------------------------------------
_LABELS = np.array([0, 2, 1, 2])
_LABELS_2D = np.array([[1, 0], [2, 2]])
for _axis, _shape in ((-1, (5,)), (-1, (3, 4)), (0, (3, 4)), (1, (2, 3, 4))):
    case(
        "softmax",
        lambda xp, x, a=_axis: xp.softmax(x, axis=a),
        (_shape, "real"),
        tag=f"axis={_axis}",
    )
    case(
        "log_softmax",
        lambda xp, x, a=_axis: xp.log_softmax(x, axis=a),
        (_shape, "real"),
        tag=f"axis={_axis}",
    )
case("softmax_cross_entropy", lambda xp, x: xp.softmax_cross_entropy(x, _LABELS), ((4, 3), "real"))
case(
    "softmax_cross_entropy",
    lambda xp, x: xp.softmax_cross_entropy(x, _LABELS_2D),
    ((2, 2, 3), "real"),
)
for _axis, _shape in ((None, (5,)), (None, (3, 4)), (0, (3, 4)), (-1, (2, 3, 4)), (1, (2, 3, 4))):
    case(
        "cumsum", lambda xp, x, a=_axis: xp.cumsum(x, axis=a), (_shape, "real"), tag=f"axis={_axis}"
    )
for _axis, _shape in ((-1, (6,)), (0, (3, 4)), (-1, (3, 4)), (1, (2, 3, 4)), (None, (3, 4))):
    case(
        "sort", lambda xp, x, a=_axis: xp.sort(x, axis=a), (_shape, "distinct"), tag=f"axis={_axis}"
    )

# ---- shapes -------------------------------------------------------------------------------------
case("reshape", lambda xp, x: xp.reshape(x, (2, 6)), ((3, 4), "real"))
case("reshape", lambda xp, x: xp.reshape(x, (4, -1)), ((2, 3, 4), "real"), tag="-1")
case("reshape", lambda xp, x: xp.reshape(x, (1, 1)), ((), "real"), tag="scalar")
case("reshape", lambda xp, x: x.reshape(6, 2), ((3, 4), "real"), tag="method")
case("ravel", lambda xp, x: xp.ravel(x), ((2, 3, 4), "real"))
case("transpose", lambda xp, x: xp.transpose(x), ((3, 4), "real"))
case("transpose", lambda xp, x: xp.transpose(x, (1, 0, 2)), ((2, 3, 4), "real"), tag="axes")
case("transpose", lambda xp, x: x.T, ((2, 3, 4), "real"), tag=".T")
case("swapaxes", lambda xp, x: xp.swapaxes(x, 0, -1), ((2, 3, 4), "real"))
case("moveaxis", lambda xp, x: xp.moveaxis(x, 0, -1), ((2, 3, 4), "real"))
case("moveaxis", lambda xp, x: xp.moveaxis(x, [0, 1], [-1, -2]), ((2, 3, 4), "real"), tag="several")
case("expand_dims", lambda xp, x: xp.expand_dims(x, 0), ((3, 4), "real"))
case("expand_dims", lambda xp, x: xp.expand_dims(x, -1), ((), "real"), tag="scalar")
case("expand_dims", lambda xp, x: xp.expand_dims(x, (0, 2)), ((3, 4), "real"), tag="several")
case("squeeze", lambda xp, x: xp.squeeze(x), ((3, 1, 4, 1), "real"))
case("squeeze", lambda xp, x: xp.squeeze(x, axis=1), ((3, 1, 4), "real"), tag="axis")
case("broadcast_to", lambda xp, x: xp.broadcast_to(x, (3, 4)), ((4,), "real"))
case("broadcast_to", lambda xp, x: xp.broadcast_to(x, (2, 3, 4)), ((3, 1), "real"), tag="stretch")
case("broadcast_to", lambda xp, x: xp.broadcast_to(x, (2, 2)), ((), "real"), tag="scalar")
case("flip", lambda xp, x: xp.flip(x, axis=1), ((3, 4), "real"))
case("flip", lambda xp, x: xp.flip(x), ((2, 3, 4), "real"), tag="all")
case(
    "concatenate",
    lambda xp, x, y, z: xp.concatenate([x, y, z]),
    ((2,), "real"),
    ((3,), "real"),
    ((1,), "real"),
)
case(
    "concatenate",
    lambda xp, x, y: xp.concatenate([x, y], axis=1),
    ((3, 2), "real"),
    ((3, 4), "real"),
    tag="axis=1",
)
case(
    "concatenate",
    lambda xp, x, y: xp.concatenate((x, y), axis=-1),
    ((2, 3, 1), "real"),
    ((2, 3, 2), "real"),
    tag="axis=-1",
)
case("stack", lambda xp, x, y: xp.stack([x, y]), ((4,), "real"), ((4,), "real"))
case(
    "stack",
    lambda xp, x, y, z: xp.stack([x, y, z], axis=-1),
    ((3, 4), "real"),
    ((3, 4), "real"),
    ((3, 4), "real"),
    tag="axis=-1",
)
case("stack", lambda xp, x, y: xp.stack([x, y], axis=-1), ((), "real"), ((), "real"), tag="scalars")
case("split", lambda xp, x: xp.split(x, 3), ((6,), "real"))
case("split", lambda xp, x: xp.split(x, [1, 3], axis=1), ((3, 4), "real"), tag="indices")
case("split", lambda xp, x: xp.split(x, 2, axis=-1), ((2, 3, 4), "real"), tag="axis=-1")

# ---- indexing: basic, integer (with repeats: gradients add up), boolean --------------------------
_ROWS = np.array([[0, 1], [2, 0]])
_MASK = np.array([True, False, True, True])
_ORDER = np.array([[2, 0, 3, 1], [1, 1, 0, 3], [3, 2, 1, 0]])  # repeats allowed: a gather
case("getitem", lambda xp, x: x[1], ((3, 4), "real"), tag="int")
case("getitem", lambda xp, x: x[-1, 1:3], ((3, 4), "real"), tag="int,slice")
case("getitem", lambda xp, x: x[..., ::2], ((2, 3, 4), "real"), tag="ellipsis,step")
case("getitem", lambda xp, x: x[None, 1:, 0], ((3, 4), "real"), tag="newaxis")
case("getitem", lambda xp, x: x[::-1, 1], ((2, 3, 4), "real"), tag="reversed")
case("getitem", lambda xp, x: x[[0, 2, 2, 1]], ((4,), "real"), tag="int array repeats")
case("getitem", lambda xp, x: x[_ROWS], ((3, 4), "real"), tag="2-d int array")
case("getitem", lambda xp, x: x[[0, 2, 2], [1, 3, 1]], ((3, 4), "real"), tag="paired int arrays")
case("getitem", lambda xp, x: x[:, [2, 0, 2]], ((2, 3, 4), "real"), tag="slice,int array")
case("getitem", lambda xp, x: x[_MASK], ((4,), "real"), tag="bool")
case("getitem", lambda xp, x: x[:, _MASK], ((3, 4), "real"), tag="slice,bool")
case("getitem", lambda xp, x: x[x > 0.1], ((2, 3, 4), "distinct"), tag="bool from data")
case("take", lambda xp, x: xp.take(x, [2, 0, 2]), ((3, 4), "real"), tag="flat")
case("take", lambda xp, x: xp.take(x, [3, 0, -1], axis=1), ((3, 4), "real"), tag="axis=1")
case("take", lambda xp, x: xp.take(x, _ROWS, axis=0), ((3, 2, 2), "real"), tag="2-d indices")
case("take_along_axis", lambda xp, x: xp.take_along_axis(x, _ORDER, axis=1), ((3, 4), "real"))
case(
    "take_along_axis",
    lambda xp, x: xp.take_along_axis(x, _ROWS, axis=0),
    ((3, 2), "real"),
    tag="axis=0",
)

# ---- linear algebra ----------------------------------------------------------------------------
for _sx, _sy in (
    ((4,), (4,)),
    ((3, 4), (4,)),
    ((4,), (4, 2)),
    ((3, 4), (4, 2)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (2, 4, 3)),
):
    case("matmul", lambda xp, x, y: xp.matmul(x, y), (_sx, "real"), (_sy, "real"))
case("matmul", lambda xp, x, y: x @ y, ((3, 4), "real"), ((2, 4, 2), "real"), tag="@")
for _sx, _sy in (
    ((), (3,)),
    ((4,), (4,)),
    ((3, 4), (4,)),
    ((3, 4), (4, 2)),
    ((2, 3, 4), (5, 4, 2)),
):
    case("dot", lambda xp, x, y: xp.dot(x, y), (_sx, "real"), (_sy, "real"))
case("vdot", lambda xp, x, y: xp.vdot(x, y), ((3, 4), "real"), ((3, 4), "real"))
case("inner", lambda xp, x, y: xp.inner(x, y), ((3, 4), "real"), ((5, 4), "real"))
case("inner", lambda xp, x, y: xp.inner(x, y), ((), "real"), ((2, 3), "real"), tag="scalar")
case("outer", lambda xp, x, y: xp.outer(x, y), ((3,), "real"), ((4,), "real"))
case("outer", lambda xp, x, y: xp.outer(x, y), ((2, 2), "real"), ((3,), "real"), tag="flattens")
for _spec, _shapes in (
    ("ij,jk->ik", ((3, 4), (4, 2))),
    ("i,i->", ((4,), (4,))),
    ("i,j->ij", ((3,), (4,))),
    ("bij,bjk->bik", ((2, 3, 4), (2, 4, 2))),
    ("ij->ji", ((3, 4),)),
    ("ij->", ((3, 4),)),
    ("ijk->ki", ((2, 3, 4),)),
    ("ij,jk,kl->il", ((2, 3), (3, 4), (4, 2))),
    ("ij,ij->i", ((3, 4), (3, 4))),
    ("ii->", ((4, 4),)),  # trace
    ("ii->i", ((4, 4),)),  # diagonal
    ("iij,jk->ik", ((3, 3, 4), (4, 2))),
    ("ij,jj->i", ((3, 4), (4, 4))),
    ("...ij,jk->...ik", ((2, 3, 2, 3), (3, 2))),  # ellipsis
    ("...ij,...jk->...ik", ((2, 1, 2, 3), (4, 3, 2))),  # ellipsis, broadcast batch
    ("i...->...i", ((2, 3, 4),)),
):
    case(
        "einsum",
        lambda xp, *ops, s=_spec: xp.einsum(s, *ops),
        *((shape, "real") for shape in _shapes),
        tag=_spec,
    )
for _axes, _shapes in (
    (0, ((2,), (3,))),
    (1, ((3, 4), (4, 2))),
    (2, ((2, 3, 4), (3, 4, 2))),
    (([1, 0], [0, 1]), ((3, 4), (4, 3))),
):
    case(
        "tensordot",
        lambda xp, x, y, a=_axes: xp.tensordot(x, y, axes=a),
        (_shapes[0], "real"),
        (_shapes[1], "real"),
        tag=f"axes={_axes}",
    )
case("trace", lambda xp, x: xp.trace(x), ((4, 4), "real"))
case("trace", lambda xp, x: xp.trace(x, 1), ((3, 5), "real"), tag="offset=1")
case("trace", lambda xp, x: xp.trace(x, -1, 1, 2), ((2, 3, 4), "real"), tag="offset=-1,axes 1,2")
case("diagonal", lambda xp, x: xp.diagonal(x), ((4, 4), "real"))
case("diagonal", lambda xp, x: xp.diagonal(x, 1), ((3, 5), "real"), tag="offset=1")
case("diagonal", lambda xp, x: xp.diagonal(x, -1), ((4, 3), "real"), tag="offset=-1")
case("diagonal", lambda xp, x: xp.diagonal(x, 0, 0, 2), ((3, 2, 4), "real"), tag="axes 0,2")
case("cross", lambda xp, x, y: xp.cross(x, y), ((3,), "real"), ((3,), "real"))
case("cross", lambda xp, x, y: xp.cross(x, y), ((4, 3), "real"), ((3,), "real"), tag="broadcast")
case(
    "cross",
    lambda xp, x, y: xp.cross(x, y, axis=0),
    ((3, 4), "real"),
    ((3, 4), "real"),
    tag="axis=0",
)
case("linalg.norm", lambda xp, x: xp.linalg.norm(x), ((5,), "nonzero"))
case("linalg.norm", lambda xp, x: xp.linalg.norm(x), ((3, 4), "nonzero"), tag="frobenius")
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, "fro"), ((3, 4), "nonzero"), tag="fro")
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, axis=1), ((3, 4), "nonzero"), tag="axis=1")
case(
    "linalg.norm",
    lambda xp, x: xp.linalg.norm(x, axis=0, keepdims=True),
    ((3, 4), "nonzero"),
    tag="keepdims",
)
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, 1), ((5,), "distinct"), tag="ord=1")
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, np.inf), ((5,), "distinct"), tag="ord=inf")
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, -np.inf), ((5,), "distinct"), tag="ord=-inf")
case(
    "linalg.norm", lambda xp, x: xp.linalg.norm(x, 3, axis=-1), ((2, 3, 4), "nonzero"), tag="ord=3"
)
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, 1), ((3, 4), "distinct"), tag="matrix ord=1")
case(
    "linalg.norm",
    lambda xp, x: xp.linalg.norm(x, np.inf),
    ((3, 4), "distinct"),
    tag="matrix ord=inf",
)
case(
    "linalg.norm",
    lambda xp, x: xp.linalg.norm(x, -1, axis=(2, 1)),
    ((2, 3, 4), "distinct"),
    tag="matrix ord=-1",
)
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, 2), ((4, 3), "real"), tag="spectral")
case("linalg.norm", lambda xp, x: xp.linalg.norm(x, -2), ((3, 4), "real"), tag="ord=-2")
case(
    "linalg.norm",
    lambda xp, x: xp.linalg.norm(x, "nuc", axis=(2, 0), keepdims=True),
    ((3, 2, 4), "real"),
    tag="nuclear",
)
for _shape in ((2, 2), (3, 3), (2, 3, 3)):
    case("linalg.det", lambda xp, x: xp.linalg.det(x), (_shape, "matrix"))
    case("linalg.inv", lambda xp, x: xp.linalg.inv(x), (_shape, "matrix"))
for _sa, _sb in (((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (2, 3, 2)), ((2, 3, 3), (3,))):
    case("linalg.solve", lambda xp, a, b: xp.linalg.solve(a, b), (_sa, "matrix"), (_sb, "real"))

# ---- decompositions: only basis-independent results (eigenvector and singular-vector signs are
# arbitrary, so the grid takes squares of their entries, or the factors that are unique) ---------
_SPREAD = np.diag([0.0, 1.5, 3.0])  # keeps the eigenvalues of sym(x) apart


def _sym(xp, x):  # the cases add _SPREAD themselves: their module arrays are converted
    return 0.5 * (x + xp.swapaxes(x, -1, -2))


def _gram(xp, x):
    return xp.matmul(x, xp.swapaxes(x, -1, -2))


for _shape in ((3, 3), (2, 3, 3)):
    case("linalg.cholesky", lambda xp, x: xp.linalg.cholesky(_gram(xp, x)), (_shape, "matrix"))
    case("linalg.slogdet", lambda xp, x: tuple(xp.linalg.slogdet(x)), (_shape, "matrix"))
    case(
        "linalg.eigvalsh",
        lambda xp, x: xp.linalg.eigvalsh(_sym(xp, x) + _SPREAD),
        (_shape, "matrix"),
    )
    case(
        "linalg.eigh",
        lambda xp, x: (lambda w, v: (w, v * v))(*xp.linalg.eigh(_sym(xp, x) + _SPREAD)),
        (_shape, "matrix"),
    )
    case("linalg.qr", lambda xp, x: tuple(xp.linalg.qr(x)), (_shape, "matrix"))
case(
    "linalg.cholesky",
    lambda xp, x: xp.linalg.cholesky(_gram(xp, x), upper=True),
    ((3, 3), "matrix"),
    tag="upper",
)
case(
    "linalg.slogdet", lambda xp, x: tuple(xp.linalg.slogdet(-x)), ((3, 3), "matrix"), tag="sign -1"
)
case("linalg.qr", lambda xp, x: tuple(xp.linalg.qr(x)), ((4, 3), "real"), tag="tall")
case("linalg.qr", lambda xp, x: tuple(xp.linalg.qr(x)), ((2, 3, 4), "real"), tag="wide")
case("linalg.qr", lambda xp, x: xp.linalg.qr(x, mode="r"), ((4, 3), "real"), tag="r")
for _shape in ((4, 3), (2, 3, 4)):
    case("linalg.svdvals", lambda xp, x: xp.linalg.svdvals(x), (_shape, "real"))
    case("linalg.pinv", lambda xp, x: xp.linalg.pinv(x), (_shape, "real"))
    case(
        "linalg.svd",
        lambda xp, x: (lambda u, s, vh: (u * u, s, vh * vh))(
            *xp.linalg.svd(x, full_matrices=False)
        ),
        (_shape, "real"),
    )
case(
    "linalg.svd",
    lambda xp, x: (lambda u, s, vh: (u[:, :3] ** 2, s, vh * vh))(*xp.linalg.svd(x)),
    ((4, 3), "real"),
    tag="full_matrices",
)
case("linalg.svd", lambda xp, x: xp.linalg.svd(x, compute_uv=False), ((3, 4), "real"), tag="S")
for _sb in ((4,), (4, 2)):
    case(
        "linalg.lstsq",
        lambda xp, a, b: (lambda x, res, rank, s: (x, res, s))(*xp.linalg.lstsq(a, b)),
        ((4, 3), "real"),
        (_sb, "real"),
    )

# ---- constants: zero derivative, checked as such ------------------------------------------------
case("zeros_like", lambda xp, x: xp.zeros_like(x), ((3, 4), "real"))
case("ones_like", lambda xp, x: xp.ones_like(x) * x, ((3, 4), "real"))
