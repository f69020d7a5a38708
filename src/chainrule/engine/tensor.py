"""``Tensor``: an array that records the operations applied to it, for reverse mode.

A tensor created with ``requires_grad=True`` is a *leaf*. Every operation on it produces a tensor
that remembers its primitive, its arguments and its parameters: that is the graph, stored on the
tensors themselves (no separate node objects, no reference cycles). ``loss.backward()`` walks it
backwards (see :mod:`chainrule.engine.reverse`) and fills ``.grad`` of the leaves.

In-place changes are tracked by an epoch counter: every in-place change of a tensor advances the
epoch and stamps the changed tensor with it (``_version``); every recorded op is stamped with the
epoch it was made in (``_stamp``). Backward refuses to use a tensor changed after an op that saved
it, instead of returning a wrong gradient; a node made after the latest change needs no check.

The operators (``+ - * / @``, unary ``-``) have a fast path for the common case (tensors of one
level holding plain arrays, or a tensor and a plain constant, no observer or anomaly mode): they
call the NumPy ufunc directly and build the result tensor in place, skipping the general dispatch of
:func:`chainrule.engine.core.apply`. Anything else (nested tracers, an error to report, hooks) takes
the general path, which gives the same result.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from . import arraylib
from .array_methods import ArrayOperators
from .arraylib import ndarray, xp
from .core import (
    PLAIN_TYPES,
    Tracer,
    apply,
    batch_in_params,
    enable_grad,
    evaluate,
    raw,
    state,
)
from .reverse import backward_pass
from .reverse import constant_data as _constant_data
from .reverse import lift_constant as _lift_constant
from .table import REFLECTED_OPERATORS, TABLE

#: Number of in-place changes so far; recorded ops are stamped with it (see module docstring).
_epoch = 0

_new = object.__new__
_NO_PARAMS: dict = {}  # shared by every op recorded on the fast path; never mutated

_PLAIN_TYPES = PLAIN_TYPES  # the values that take the operators' fast path beside a tensor


def current_epoch() -> int:
    """The in-place epoch now: a node stamped with it has seen every in-place change so far."""
    return _epoch


def _result(out, level, prim, args, params, record):
    """The Tensor of level ``level`` holding ``out``: a node recording ``prim`` on ``args`` when
    ``record`` (some argument requires grad) and recording is on, else a constant. Every op's
    result is built here, without ``__init__`` and its checks."""
    result = _new(Tensor)
    result.data = out
    result.grad = None
    result._level = level
    if record and state.grad_enabled:
        result.requires_grad = True
        result._prim = prim
        result._args = args
        result._params = params
        result._stamp = _epoch
    else:
        result.requires_grad = False
        result._prim = None
        result._args = None
        result._params = None
    return result


def traced_leaf(data, level):
    """A leaf of level ``level`` that requires grad, holding ``data`` as it is: how the
    transforms lift the arguments they differentiate (checked by them, so without
    ``__init__``'s conversion and checks)."""
    leaf = _result(data, level, None, None, None, False)
    leaf.requires_grad = True
    leaf._stamp = _epoch  # as Tensor() stamps a leaf; a leaf's stamp is never compared
    return leaf


def _binary_operator(prim, reflected=False):
    """``tensor (op) other`` for primitive ``prim``, with the fast path of the module docstring.

    The fast path runs the primitive's ufunc on the operands' arrays; if that raises (a lower-level
    tracer inside, or shapes that do not broadcast) the general path redoes the work and reports
    any error with the op's name, so the fast path never changes what the user sees.
    """
    forward = prim.forward
    function = prim.function  # the checks of a written function, on the general path

    def general(self, other):
        return function(other, self) if reflected else function(self, other)

    def operator(self, other):
        kind = type(other)
        level = self._level
        if kind is Tensor:
            if other._level != level:
                return general(self, other)
            other_value = other.data
            record = self.requires_grad or other.requires_grad
        elif kind in _PLAIN_TYPES:
            other_value = other
            record = self.requires_grad
        else:
            return general(self, other)
        if state.hooked:
            return general(self, other)
        data = self.data
        if level and (isinstance(data, Tracer) or isinstance(other_value, Tracer)):
            # A lower-level tracer inside (only above level 0), as in every op of grad of grad:
            # the ufunc would refuse it, and raising costs more than asking. This tensor is the
            # highest-level tracer, so the op goes to _process at once (what apply would do);
            # an error is redone on the general path, to be reported as it reports it.
            try:
                return self._process(
                    prim, (other, self) if reflected else (self, other), _NO_PARAMS
                )
            except Exception:
                return general(self, other)
        try:
            out = forward(other_value, data) if reflected else forward(data, other_value)
        except Exception:
            return general(self, other)
        return _result(
            out, level, prim, (other, self) if reflected else (self, other), _NO_PARAMS, record
        )

    operator.__name__ = f"__{'r' if reflected else ''}{prim.name}__"
    return operator


def _unary_operator(prim):
    """``(op) tensor`` for primitive ``prim``, with the fast path of :func:`_binary_operator`."""
    forward = prim.forward

    def operator(self):
        data = self.data
        if state.hooked or (self._level and isinstance(data, Tracer)):
            return self._process(prim, (self,), _NO_PARAMS)  # what apply would do: self is the top
        try:
            out = forward(data)
        except Exception:
            return apply(prim, self)
        return _result(out, self._level, prim, (self,), _NO_PARAMS, self.requires_grad)

    operator.__name__ = f"__{prim.name}__"
    return operator


def _inplace_operator(ufunc, what):
    """``tensor (op)= other`` for NumPy's ``ufunc``, in place, returning the tensor, in one Python
    frame: every parameter update of a training loop runs it, so the checks of
    :meth:`Tensor._check_inplace` are read inline, and only a refused change calls it (for its
    message)."""

    def operator(self, other):
        data = self.data
        if (self.requires_grad and state.grad_enabled) or isinstance(data, Tracer):
            self._check_inplace(what)  # raises
        global _epoch
        _epoch += 1
        self._version = _epoch
        if type(other) is Tensor and other._level == 0:
            value = other.data
        elif isinstance(other, Tracer):
            value = raw(other)
        else:
            value = other
        if data.ndim == 0:
            self.data = arraylib.asarray(ufunc(data, value), dtype=data.dtype)
        else:
            ufunc(data, value, out=data)
        return self

    return operator


class Tensor(ArrayOperators, Tracer):
    """An array plus the record of how it was computed.

    >>> import chainrule as cr
    >>> x = cr.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> loss = (x * x).sum()
    >>> loss.backward()
    >>> x.grad
    array([2., 4., 6.])
    """

    # ``_version`` is set only on tensors changed in place (read it with getattr(t, "_version", 0)).
    __slots__ = (
        "data",
        "grad",
        "requires_grad",
        "_level",
        "_prim",
        "_args",
        "_params",
        "_stamp",
        "_version",
        "__weakref__",
    )
    data: Any
    _args: tuple | None
    _params: dict | None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        data = arraylib.asarray(data, dtype=dtype)
        if requires_grad and not arraylib.is_float_dtype(data.dtype):
            raise TypeError(
                f"Tensor(requires_grad=True) needs a floating-point array, got dtype {data.dtype}; "
                "convert first, e.g. Tensor(x, dtype=float, requires_grad=True)"
            )
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._level = 0
        self._prim = None
        self._args = None
        self._params = None
        self._stamp = _epoch

    # -- tracer protocol -------------------------------------------------------------------------
    def _unwrap(self):
        return self.data

    def _process(self, prim, args, params):
        level = self._level
        record = False
        plain = True
        if level:
            values = []
            for arg in args:
                if type(arg) is Tensor and arg._level == level:
                    value = arg.data
                    if arg.requires_grad:
                        record = True
                else:
                    value = arg
                # Only above level 0 can a value be a lower-level tracer (nested transforms).
                if isinstance(value, Tracer):
                    plain = False
                values.append(value)
        elif len(args) == 1:  # eager, one operand (relu, sum, the cross-entropy): no loop
            (arg,) = args
            if type(arg) is Tensor:
                values = [arg.data]
                record = arg.requires_grad
            else:
                values = [arg]
        else:  # eager: every tensor among the args is of level 0 (transforms start at 1)
            values = [arg.data if type(arg) is Tensor else arg for arg in args]
            for arg in args:
                if type(arg) is Tensor and arg.requires_grad:
                    record = True
                    break
        if plain and state.batching and params and batch_in_params(params) is not None:
            plain = False  # a parameter holds a batch (vmap): core.apply hands it over
        # On plain values, as core.apply does: every non-operator op lands here.
        out = evaluate(prim, values, params) if plain else apply(prim, *values, **params)
        result = _result(out, level, prim, args, params, record)
        if state.anomaly and result._prim is not None:  # detect_anomaly(): hash what it saved
            from .anomaly import remember_saved  # noqa: PLC0415  (debug mode only)

            remember_saved(result)
        return result

    # -- array-like attributes -------------------------------------------------------------------
    # Read straight off the array (C-level getters: rules ask for shapes on every op).
    shape = property(attrgetter("data.shape"))
    dtype = property(attrgetter("data.dtype"))
    ndim = property(attrgetter("data.ndim"))
    size = property(attrgetter("data.size"))

    @property
    def is_leaf(self) -> bool:
        return self._prim is None

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        text = repr(raw(self.data))
        grad = ", requires_grad=True" if self.requires_grad else ""
        level = f", level={self._level}" if self._level else ""
        return f"Tensor({text}{grad}{level})"

    __hash__ = object.__hash__

    def numpy(self):
        """The plain array (shared, not copied)."""
        return raw(self.data)

    @property
    def device(self) -> str:
        """Name of the device the values live on (``"cpu"``, ``"cuda"``)."""
        return arraylib.device_of(raw(self.data))

    def to(self, device) -> Tensor:
        """The same values on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``) as a new leaf
        (``self`` when already there). Move the inputs, not results: the copy is not recorded."""
        name = getattr(device, "name", device)
        data = raw(self.data)
        if arraylib.device_of(data) == arraylib.device_name(*arraylib.parse_device(name)):
            return self
        if self._prim is not None and self.requires_grad:
            raise RuntimeError(
                f"Tensor.to({name!r}): a recorded result (shape {self.shape}) would lose its "
                "graph; move the leaves (inputs, parameters) before computing"
            )
        return Tensor(arraylib.to_device(data, name), requires_grad=self.requires_grad)

    def to_numpy(self):
        """The values as a NumPy array on the host (a copy from a GPU; shared on the CPU)."""
        return arraylib.to_numpy(raw(self.data))

    def item(self):
        return raw(self.data).item()

    def __float__(self):
        return float(raw(self.data))

    def __int__(self):
        return int(raw(self.data))

    def __bool__(self):
        return bool(raw(self.data))

    def __array__(self, dtype=None, copy=None):
        data = raw(self.data)
        if type(data) is not arraylib.ndarray and arraylib.device_of(data) != "cpu":
            # As CuPy does for its arrays: no silent device-to-host copy.
            raise TypeError(
                f"cannot convert a Tensor on {arraylib.device_of(data)!r} (shape {self.shape}) to "
                "a NumPy array implicitly; use Tensor.to_numpy() or Tensor.to('cpu')"
            )
        array = arraylib.asarray(data)  # 0-d results are NumPy scalars: make them arrays
        return array if dtype is None else array.astype(dtype)

    def detach(self) -> Tensor:
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and not arraylib.is_float_dtype(self.data.dtype):
            raise TypeError(
                f"requires_grad needs a floating-point tensor, got dtype {self.data.dtype}"
            )
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, cotangent=None, retain_graph: bool = False, create_graph: bool = False):
        """Fill ``.grad`` of every leaf this tensor depends on (gradients add up across calls).

        ``cotangent`` is required unless the tensor holds a single value. ``retain_graph`` keeps
        the graph for another backward; ``create_graph`` records the backward pass itself so
        that the gradients can be differentiated again.
        """
        backward([self], [cotangent], retain_graph=retain_graph, create_graph=create_graph)

    # -- in-place changes
    # ---------------------------------------------------------------------------
    def _check_inplace(self, what):
        if state.grad_enabled and self.requires_grad:
            kind = "a leaf that requires grad" if self._prim is None else "a recorded result"
            raise RuntimeError(
                f"{what}: in-place change of {kind} (shape {self.shape}) would corrupt its "
                "gradient; for parameter updates wrap it in `with chainrule.no_grad():`, "
                "otherwise write the out-of-place form (x = x + y, cnp.where, cnp.concatenate)"
            )
        if isinstance(self.data, Tracer):  # (a GPU array is changed in place like a NumPy one)
            raise RuntimeError(f"{what}: in-place change of a tensor traced by a transformation")
        global _epoch
        _epoch += 1
        self._version = _epoch

    def __setitem__(self, index, value):
        self._check_inplace("__setitem__")
        self.data[index] = raw(value)

    # In place: each returns the tensor itself (see _inplace_operator).
    __iadd__ = _inplace_operator(xp.add, "+=")
    __isub__ = _inplace_operator(xp.subtract, "-=")
    __imul__ = _inplace_operator(xp.multiply, "*=")
    __itruediv__ = _inplace_operator(xp.divide, "/=")


def _install_fast_operators():
    """Tensor's operators with the fast path (module docstring), from the table: every entry
    whose ``operator`` may skip its public function on plain operands."""
    for prim in TABLE.values():
        if prim.operator is None or not prim.fast_operator:
            continue
        if prim.operator in REFLECTED_OPERATORS:
            setattr(Tensor, f"__{prim.operator}__", _binary_operator(prim))
            setattr(Tensor, f"__r{prim.operator}__", _binary_operator(prim, reflected=True))
        else:
            setattr(Tensor, f"__{prim.operator}__", _unary_operator(prim))


_install_fast_operators()


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Same as ``Tensor(data, requires_grad, dtype)``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Constants for namespaces whose operators refuse tracers
# ------------------------------------------------------------------------------------------------


def lift_constant(value):
    """A plain array as a constant Tensor (see :func:`chainrule.engine.reverse.lift_constant`)."""
    return _lift_constant(value, Tensor)


def constant_data(value):
    """A lifted constant's array again."""
    return _constant_data(value, Tensor)


def numpy_seed(data):
    """1 in the shape and dtype of ``data``, a NumPy array or scalar of one entry: the seed of
    a backward pass from a scalar. Made by ``asarray`` (a fifth of ``ones``; 1 is exact in every
    floating dtype), inside ``use_namespace`` by that namespace's ``ones``."""
    if arraylib.ns is not xp:
        return arraylib.ns.ones(data.shape, dtype=data.dtype)
    seed = xp.asarray(1.0, data.dtype)
    return seed if data.shape == () else seed.reshape(data.shape)


def _seed(root, cotangent, create_graph):
    if cotangent is None:
        if root.size != 1:
            raise RuntimeError(
                f"backward of a tensor of shape {root.shape} needs a cotangent of that shape; "
                "reduce it to a scalar first (e.g. loss.sum() or loss.mean()) or pass one"
            )
        data = raw(root.data)
        if isinstance(data, (ndarray, xp.generic)):
            return numpy_seed(data)
        return arraylib.ns.ones_like(data)  # on the root's device (or in the active namespace)
    if isinstance(cotangent, Tensor) and not create_graph:
        cotangent = cotangent.data
    if tuple(cotangent.shape if hasattr(cotangent, "shape") else ()) != tuple(root.shape):
        raise ValueError(
            f"backward: cotangent of shape {getattr(cotangent, 'shape', ())} does not match the "
            f"tensor's shape {root.shape}"
        )
    return (
        ops.astype(ops.asarray(cotangent), root.dtype)
        if not isinstance(cotangent, Tracer)
        else cotangent
    )


def backward(roots, cotangents, *, retain_graph=False, create_graph=False):
    """Eager backward: fill ``.grad`` of every leaf reached from ``roots``."""
    for root in roots:
        if not isinstance(root, Tensor):
            raise TypeError(f"backward needs Tensors, got {type(root).__name__}")
        if not root.requires_grad:
            raise RuntimeError(
                "backward of a tensor that does not require grad: no input was created with "
                "requires_grad=True, or it was computed under chainrule.no_grad()"
            )
        dtype = root.data.dtype
        kind = getattr(dtype, "kind", None)  # NumPy's (and CuPy's) dtypes: read off the dtype
        if not (kind in "fc" if kind is not None else arraylib.is_float_dtype(dtype)):
            raise TypeError(
                f"backward of a tensor of dtype {root.dtype}; it must be floating-point"
            )
    if len(roots) == 1 and len(cotangents) == 1:  # loss.backward(): no comprehension to run
        seeds = [_seed(roots[0], cotangents[0], create_graph)]
    else:
        seeds = [_seed(root, ct, create_graph) for root, ct in zip(roots, cotangents, strict=True)]
    if create_graph:
        seeds = [s if isinstance(s, Tensor) else Tensor(s) for s in seeds]
        with enable_grad():
            backward_pass(roots, seeds, epoch=_epoch, retain_graph=True, create_graph=True)
    else:
        backward_pass(roots, seeds, epoch=_epoch, retain_graph=retain_graph)


from . import ops  # noqa: E402  (ops imports primitives, which import this module's users)
