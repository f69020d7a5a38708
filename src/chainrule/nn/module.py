"""``Module``: a plain object whose parameters form a named pytree.

A module owns its parameters as Tensors (``requires_grad=True``) and its buffers (running
statistics and other state that is not trained) as plain arrays. Every module is usable two ways,
through one code path, ``forward(params, x, ctx)``:

* PyTorch style: ``model(x)`` runs ``forward`` on the module's own Tensors, so ``loss.backward()``
  fills their ``.grad``.
* Functional style: ``model.apply(params, x)`` runs it on any pytree of arrays with the same
  structure as ``model.parameters()``, which is what ``chainrule.grad`` differentiates.

>>> import numpy as np
>>> import chainrule as cr
>>> from chainrule import nn
>>> model = nn.MLP([3, 4, 2], activation="tanh", seed=0)
>>> params = model.parameters()                 # {"0": {"bias", "weight"}, "2": {...}}
>>> sorted(params), params["0"]["weight"].shape
(['0', '2'], (3, 4))
>>> theta, unravel = cr.ravel_pytree(params)
>>> theta.shape
(26,)
>>> x = np.ones((5, 3))
>>> bool(np.allclose(model.apply(params, x), model(x).numpy()))
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..backend.device import current_device
from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw, state
from ..engine.tensor import Tensor
from ..transforms.pytree import tree_flatten


def shape_of(value) -> tuple:
    """The shape of an array, Tensor or tracer (``()`` for a Python number)."""
    return tuple(getattr(value, "shape", ()))


def _new_array(value, dtype=None):
    """A copy of ``value`` for a module to own. A GPU array stays on its device; host values
    (NumPy arrays, lists, numbers) go to the default device (``with chainrule.device("cuda"):``
    builds the model on the GPU), NumPy when none is set."""
    value = raw(value)
    if arraylib.device_of(value) != "cpu":
        return value.astype(value.dtype if dtype is None else dtype, copy=True)
    array = xp.array(value, dtype=dtype, copy=True)
    target = current_device()
    return array if target.kind == "cpu" else arraylib.to_device(array, target.name)


def _onto(value, like, copy=True):
    """``value`` as an array on the device of ``like`` (an array or a number) in its dtype: how a
    loaded checkpoint (host arrays) lands on a model or optimizer state that lives on a GPU."""
    value, like = raw(value), raw(like)
    where = arraylib.device_of(like)
    dtype = like.dtype if hasattr(like, "dtype") else xp.asarray(like).dtype
    if arraylib.device_of(value) != where:
        value = arraylib.to_device(value, where)  # a copy already
        copy = False
    elif where == "cpu":
        value = xp.asarray(value)
    return value.astype(dtype, copy=copy)


def _host_copy(value):
    """A NumPy copy of ``value`` (from the device for a GPU array): what checkpoints hold."""
    value = raw(value)
    if arraylib.device_of(value) != "cpu":
        return arraylib.to_numpy(value)  # a device-to-host copy
    return xp.array(value, copy=True)


def _shape(value) -> tuple:
    """The shape of an array on any device (``xp.shape`` would convert a GPU array)."""
    return tuple(value.shape) if hasattr(value, "shape") else xp.shape(value)


def Parameter(data, dtype=None) -> Tensor:
    """A trainable tensor: a floating-point ``Tensor`` with ``requires_grad=True``, on the device
    of ``data`` when it is a GPU array, else on the default device
    (:func:`chainrule.backend.device`)."""
    array = _new_array(data, dtype)
    if not xp.issubdtype(array.dtype, xp.floating):
        array = array.astype(xp.float64)
    return Tensor(array, requires_grad=True)


@dataclass
class Context:
    """What one forward pass needs besides parameters and input.

    ``train`` selects training behaviour (batch statistics, dropout); ``rng`` is the
    ``numpy.random.Generator`` that dropout draws from (``None``: each layer's own seeded one);
    ``update_buffers`` lets a training pass update running statistics.
    """

    train: bool = False
    rng: Any = None
    update_buffers: bool = True


class Module:
    """Base class: register parameters with ``self.name = Parameter(array)``, sub-modules with
    ``self.name = SomeModule(...)``, buffers with ``self.register_buffer(name, array)``, and
    implement ``forward(self, params, x, ctx)`` reading parameters from ``params`` only."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "training", True)

    # -- registration ---------------------------------------------------------------------------
    def _registry(self, name):
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before assigning "
                "parameters or sub-modules"
            ) from None

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._registry("_children")[name] = value
        elif isinstance(value, Tensor) and value.requires_grad:
            self._registry("_parameters")[name] = value
        elif name in self.__dict__.get("_buffers", {}):
            value = raw(value)
            if state.foreign:  # inside backend.use_namespace: that namespace's array, as computed
                self._buffers[name] = arraylib.asarray(value)
                return
            self._buffers[name] = xp.asarray(value) if arraylib.device_of(value) == "cpu" else value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only reached when normal lookup fails: buffers live in their own table.
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            return buffers[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def register_buffer(self, name: str, value) -> None:
        """State saved with the model but not trained (e.g. BatchNorm's running mean)."""
        self._registry("_buffers")[name] = _new_array(value)

    # -- the forward pass -------------------------------------------------------------------------
    def forward(self, params, x, ctx: Context):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(params, x, ctx)")

    def apply(self, params, x, *, train: bool | None = None, rng=None, ctx: Context | None = None):
        """Run the module on explicit ``params`` (a pytree shaped like ``parameters()``).

        ``train`` defaults to the module's mode (``model.train()`` / ``model.eval()``); ``ctx``
        passes an enclosing forward pass's context down to a sub-module.
        """
        if ctx is None:
            ctx = Context(train=self.training if train is None else bool(train), rng=rng)
        return self.forward(params, x, ctx)

    def __call__(self, x, *, train: bool | None = None, rng=None):
        """PyTorch style: run on the module's own Tensors (``loss.backward()`` fills ``.grad``)."""
        return self.apply(self.named_tensors(), x, train=train, rng=rng)

    # -- modes ------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training behaviour (batch statistics, dropout) for this module and its children."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, device, dtype=None) -> Module:
        """Move every parameter and buffer to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``) in
        place, floating ones cast to ``dtype`` when given (integer buffers, such as batch norm's
        counter, keep theirs), so that ``model(x)`` and ``model.parameters()`` live there;
        returns the module. Gradients are dropped (they belong to the old arrays)."""
        name = getattr(device, "name", device)

        def moved(value):
            value = raw(value)
            if dtype is not None and value.dtype.kind == "f" and arraylib.device_of(value) == "cpu":
                value = value.astype(dtype, copy=False)  # cast before the copy: fewer bytes to move
            value = arraylib.to_device(value, name)
            if dtype is not None and value.dtype.kind == "f":
                value = value.astype(dtype, copy=False)
            return value

        for tensor in tree_flatten(self.named_tensors())[0]:
            tensor.data = moved(tensor.data)
            tensor.grad = None
        for module in self.modules():
            for key, value in module._buffers.items():
                module._buffers[key] = moved(value)
        return self

    def modules(self) -> Iterator[Module]:
        """This module and every sub-module, depth first (iterative)."""
        stack = [self]
        while stack:
            module = stack.pop()
            yield module
            stack.extend(reversed(list(module._children.values())))

    # -- parameters as a named pytree ----------------------------------------------------------
    def named_tensors(self) -> dict:
        """The live parameter Tensors as a nested dict (modules without parameters left out)."""
        return self._nested("_parameters")

    def _nested(self, registry: str) -> dict:
        """This module's ``registry`` (``"_parameters"`` or ``"_buffers"``) as a dict, with each
        child's under the child's name; children with nothing in theirs are left out."""
        tree = dict(getattr(self, registry))
        for name, child in self._children.items():
            sub = child._nested(registry)
            if sub:
                tree[name] = sub
        return tree

    def parameters(self) -> dict:
        """The parameters' current values as a nested dict of arrays: the pytree that
        ``apply``, ``chainrule.grad``, ``ravel_pytree`` and the optimizers take."""
        return _map_dict(lambda t: t.data, self.named_tensors())

    def grads(self) -> dict:
        """The ``.grad`` of every parameter after ``loss.backward()`` (zeros where none)."""
        return _map_dict(
            lambda t: xp.zeros_like(t.data) if t.grad is None else raw(t.grad), self.named_tensors()
        )

    def zero_grad(self) -> None:
        for tensor in tree_flatten(self.named_tensors())[0]:
            tensor.grad = None

    def load_parameters(self, params) -> None:
        """Replace the parameters' values by ``params`` (same structure and shapes)."""
        mapping = flatten_names(params)
        self._load(mapping, {}, strict_buffers=False)

    def named_buffers(self) -> dict:
        """Buffers as a nested dict of arrays (the module's non-trained state)."""
        return self._nested("_buffers")

    def num_parameters(self) -> int:
        return int(sum(t.data.size for t in tree_flatten(self.named_tensors())[0]))

    # -- state dict: flat names for checkpoints ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"params.0.weight": array, ..., "buffers.1.running_mean": array}`` (NumPy copies, also
        of a model on a GPU: what a checkpoint file holds)."""
        out = {f"params.{k}": _host_copy(v) for k, v in flatten_names(self.parameters()).items()}
        out.update(
            {f"buffers.{k}": _host_copy(v) for k, v in flatten_names(self.named_buffers()).items()}
        )
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load what ``state_dict`` gave; raises ``ValueError`` naming any missing, unexpected or
        differently shaped entry (a checkpoint of another architecture) before changing anything."""
        params = {k[len("params.") :]: v for k, v in state.items() if k.startswith("params.")}
        buffers = {k[len("buffers.") :]: v for k, v in state.items() if k.startswith("buffers.")}
        other = sorted(k for k in state if not k.startswith(("params.", "buffers.")))
        if other:
            raise ValueError(
                f"state dict has entries that are neither params nor buffers: {other[:3]}"
            )
        self._load(params, buffers, strict_buffers=True)

    def _load(self, params: dict, buffers: dict, strict_buffers: bool) -> None:
        own_params = flatten_names(self.named_tensors())
        own_buffers = flatten_names(self.named_buffers())
        problems = _compare(own_params, params, "parameter", lambda t: t.data.shape)
        if strict_buffers:
            problems += _compare(own_buffers, buffers, "buffer", lambda b: b.shape)
        if problems:
            shown = "; ".join(problems[:3]) + (
                f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
            )
            raise ValueError(f"does not fit this {type(self).__name__}: {shown}")
        # Values land on the device (and in the dtype) of what they replace.
        for name, tensor in own_params.items():
            tensor.data = _onto(params[name], tensor.data)
        if strict_buffers:
            for name, value in buffers.items():
                owner, attr = self._owner_of(name)
                owner._buffers[attr] = _onto(value, owner._buffers[attr])

    def _owner_of(self, dotted: str):
        parts = dotted.split(".")
        module = self
        for part in parts[:-1]:
            module = module._children[part]
        return module, parts[-1]

    # -- display -----------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._children:
            for name, child in self._children.items():
                child_text = repr(child).replace("\n", "\n  ")
                lines.append(f"  ({name}): {child_text}")
            return "\n".join(lines) + "\n)"
        return lines[0] + ")"


def _compare(own: dict, given: dict, kind: str, shape_of) -> list[str]:
    problems = []
    for name in own:
        if name not in given:
            problems.append(f"missing {kind} {name!r}")
        elif _shape(raw(given[name])) != tuple(shape_of(own[name])):
            problems.append(
                f"{kind} {name!r} has shape {_shape(raw(given[name]))}, "
                f"expected {tuple(shape_of(own[name]))}"
            )
    problems += [f"unexpected {kind} {name!r}" for name in given if name not in own]
    return problems


def _map_dict(fn, tree):
    """Map over the leaves of a nested dict (iteratively)."""
    out: dict = {}
    stack = [(tree, out)]
    while stack:
        source, target = stack.pop()
        for key, value in source.items():
            if isinstance(value, dict):
                target[key] = {}
                stack.append((value, target[key]))
            else:
                target[key] = fn(value)
    return out


def flatten_names(tree, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists/tuples to ``{"a.b.0": leaf}`` (the flat names checkpoints use).

    >>> flatten_names({"0": {"weight": 1, "bias": 2}, "step": 3})
    {'0.bias': 2, '0.weight': 1, 'step': 3}
    """
    out: dict[str, Any] = {}
    stack = [(prefix, tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            items = sorted(node.items(), key=lambda kv: str(kv[0]))
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            out[path] = node
            continue
        for key, value in reversed(items):
            stack.append((f"{path}.{key}" if path else str(key), value))
    return dict(sorted(out.items()))


def unflatten_names(template, mapping: dict[str, Any], what: str = "state"):
    """The inverse of :func:`flatten_names` into ``template``'s structure, checking that the names
    and shapes agree (``ValueError`` naming the first differences otherwise)."""
    expected = flatten_names(template)
    problems = _compare(expected, mapping, what, lambda v: _shape(raw(v)))
    if problems:
        raise ValueError("; ".join(problems[:3]))

    def build(path, node):
        if isinstance(node, dict):
            return {k: build(f"{path}.{k}" if path else str(k), v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(
                build(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node)
            )
        return _onto(mapping[path], node, copy=False)  # on the template leaf's device

    return build("", template)
