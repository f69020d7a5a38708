"""Layers: Linear, activations, BatchNorm1d, LayerNorm, Dropout, Sequential and the MLP builder.

Each layer's ``forward(params, x, ctx)`` is written with ``chainrule.numpy`` operations only, so
its derivatives (reverse, forward, higher order) come from the engine. BatchNorm's gradient flows
through the batch mean and variance: every example's output depends on every other example in the
batch, which the tests check with ``check_grads``.
"""

from __future__ import annotations

import numbers

from .. import numpy as cnp
from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw, state
from ..transforms.jit import staging
from ..util.lookup import look_up
from .init import get_initialiser
from .module import Module, Parameter, shape_of


def _rng(seed_or_rng):
    if isinstance(seed_or_rng, xp.random.Generator):
        return seed_or_rng
    return xp.random.default_rng(seed_or_rng)


def _numpy_copy(array):
    """A NumPy copy of another namespace's host array (read through DLPack, which the standard's
    arrays implement)."""
    return xp.array(xp.from_dlpack(array), copy=True)


def _positive_int(value, what):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class Linear(Module):
    """y = x @ weight + bias, with ``weight`` of shape (in_features, out_features)."""

    def __init__(
        self, in_features, out_features, bias=True, init="glorot_uniform", seed=0, dtype=xp.float64
    ):
        super().__init__()
        self.in_features = _positive_int(in_features, "Linear in_features")
        self.out_features = _positive_int(out_features, "Linear out_features")
        rng = _rng(seed)
        self.weight = Parameter(
            get_initialiser(init)(rng, (self.in_features, self.out_features), dtype)
        )
        self.has_bias = bool(bias)
        if bias:
            self.bias = Parameter(xp.zeros(self.out_features, dtype=dtype))

    def forward(self, params, x, ctx):
        if len(shape_of(x)) == 0 or shape_of(x)[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) got input of shape "
                f"{shape_of(x)}; "
                f"its last axis must have {self.in_features} features"
            )
        weight = params["weight"]
        # Inside backend.use_namespace a plain input left of a traced weight would meet the
        # namespace's own ``@``, which may raise on a tracer (array_api_strict's does) instead of
        # deferring to it as NumPy does: the engine's matmul takes both operands there. So it does
        # whenever a backend layer supplies forwards (a precision mode, for one), which NumPy's
        # ``@`` of two plain arrays would bypass.
        out = cnp.matmul(x, weight) if state.hooked else x @ weight
        return out + params["bias"] if self.has_bias else out

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.has_bias}"


class _Activation(Module):
    fn = None

    def forward(self, params, x, ctx):
        return type(self).fn(x)


class ReLU(_Activation):
    fn = staticmethod(cnp.relu)


class Sigmoid(_Activation):
    fn = staticmethod(cnp.sigmoid)


class Tanh(_Activation):
    fn = staticmethod(cnp.tanh)


class GELU(_Activation):
    """GELU, tanh approximation."""

    fn = staticmethod(cnp.gelu)


class Identity(_Activation):
    fn = staticmethod(lambda x: x)


class Softmax(Module):
    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, params, x, ctx):
        return cnp.softmax(x, axis=self.axis)


ACTIVATIONS = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "gelu": GELU,
    "softmax": Softmax,
    "identity": Identity,
}


def activation(name: str) -> Module:
    """An activation module by name: relu, sigmoid, tanh, gelu, softmax, identity."""
    return look_up(ACTIVATIONS, name, "activation")()


class BatchNorm1d(Module):
    """Batch normalisation over axis 0 of (batch, features) inputs.

    Training: normalise with the batch's mean and (biased) variance, and move the running
    statistics towards them: running = (1 - momentum) * running + momentum * batch (the running
    variance uses the unbiased batch variance). Evaluation: normalise with the running statistics.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=xp.float64):
        super().__init__()
        self.num_features = _positive_int(num_features, "BatchNorm1d num_features")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm1d momentum must be in [0, 1], got {momentum}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        if affine:
            self.weight = Parameter(xp.ones(self.num_features, dtype=dtype))
            self.bias = Parameter(xp.zeros(self.num_features, dtype=dtype))
        self.register_buffer("running_mean", xp.zeros(self.num_features, dtype=dtype))
        self.register_buffer("running_var", xp.ones(self.num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", xp.zeros((), dtype=xp.int64))

    def forward(self, params, x, ctx):
        if len(shape_of(x)) != 2 or shape_of(x)[1] != self.num_features:
            raise ValueError(
                f"BatchNorm1d({self.num_features}) needs input of shape (batch, "
                f"{self.num_features}), "
                f"got {shape_of(x)}"
            )
        if ctx.train:
            count = shape_of(x)[0]
            if count < 2:
                raise ValueError(
                    "BatchNorm1d in training mode needs a batch of at least 2 examples"
                )
            mean = cnp.mean(x, axis=0)
            centered = x - mean
            var = cnp.mean(centered * centered, axis=0)
            if ctx.update_buffers:
                if staging():
                    raise ValueError(
                        "BatchNorm1d in training mode under jit: the running statistics are "
                        "module state, updated in place, so the update would happen once, while "
                        "staging, and never on a replay; jit the model in eval mode "
                        "(apply(..., train=False)), or pass ctx=Context(train=True, "
                        "update_buffers=False) to normalise by the batch without the update"
                    )
                self._buffers_to(raw(x))
                m = self.momentum
                self.running_mean = (1 - m) * self.running_mean + m * raw(mean)
                self.running_var = (1 - m) * self.running_var + m * raw(var) * count / (count - 1)
                self.num_batches_tracked = self.num_batches_tracked + 1
            out = centered / cnp.sqrt(var + self.eps)
        else:
            self._buffers_to(raw(x))
            out = (x - self.running_mean) / arraylib.ns.sqrt(self.running_var + self.eps)
        if self.affine:
            out = out * params["weight"] + params["bias"]
        return out

    def _buffers_to(self, x):
        """Move the running statistics to the device of the input ``x`` once, the first time the
        layer sees it there (the parameters arrive through ``params``; the buffers are the
        module's own: ``Module.to`` moves them ahead of time). Inside ``backend.use_namespace``
        they become that namespace's arrays, and NumPy's again on the first NumPy input after."""
        names = ("running_mean", "running_var", "num_batches_tracked")
        if state.foreign:
            for name in names:
                self._buffers[name] = arraylib.asarray(self._buffers[name])
            return
        where = arraylib.device_of(x)
        if arraylib.device_of(self.running_mean) != where:
            for name in names:
                self._buffers[name] = arraylib.to_device(self._buffers[name], where)
        elif where == "cpu" and not isinstance(self.running_mean, xp.ndarray):
            for name in names:  # left in another namespace by a use_namespace block
                self._buffers[name] = _numpy_copy(self._buffers[name])

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm(Module):
    """Normalise each example over its last axis, then scale and shift (per feature)."""

    def __init__(self, num_features, eps=1e-5, affine=True, dtype=xp.float64):
        super().__init__()
        self.num_features = _positive_int(num_features, "LayerNorm num_features")
        self.eps = float(eps)
        self.affine = bool(affine)
        if affine:
            self.weight = Parameter(xp.ones(self.num_features, dtype=dtype))
            self.bias = Parameter(xp.zeros(self.num_features, dtype=dtype))

    def forward(self, params, x, ctx):
        if len(shape_of(x)) == 0 or shape_of(x)[-1] != self.num_features:
            raise ValueError(f"LayerNorm({self.num_features}) got input of shape {shape_of(x)}")
        mean = cnp.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        var = cnp.mean(centered * centered, axis=-1, keepdims=True)
        out = centered / cnp.sqrt(var + self.eps)
        if self.affine:
            out = out * params["weight"] + params["bias"]
        return out

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


class Dropout(Module):
    """Zero each entry with probability ``p`` in training, scaling the rest by 1/(1-p).

    The mask comes from ``ctx.rng`` when the caller passes one (``apply(..., rng=generator)``),
    otherwise from this layer's own generator, seeded by ``seed``; either way a run is
    reproducible from its seeds. Evaluation mode is the identity.
    """

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = xp.random.default_rng(seed)

    def forward(self, params, x, ctx):
        if not ctx.train or self.p == 0.0:
            return x
        if staging():
            raise ValueError(
                "Dropout in training mode under jit: its mask is drawn from a random generator "
                "in Python, so it would be drawn once, while staging, and every replay would "
                "reuse it; jit the model in eval mode (apply(..., train=False)), or leave "
                "training steps with dropout unjitted"
            )
        rng = ctx.rng if ctx.rng is not None else self.rng
        keep = rng.random(shape_of(x)) >= self.p
        if state.foreign:  # the same host mask, in the namespace backend.use_namespace made active
            return x * arraylib.asarray(keep / (1.0 - self.p), dtype=raw(x).dtype)
        mask = (keep / (1.0 - self.p)).astype(raw(x).dtype)
        where = arraylib.device_of(raw(x))
        if where != "cpu":  # drawn on the host (one seed, one mask, on every device), then moved
            mask = arraylib.to_device(mask, where)
        return x * mask

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Module):
    """Sub-modules applied in order; their parameters are keyed "0", "1", ..."""

    def __init__(self, *layers):
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: item {index} is a {type(layer).__name__}, not a Module"
                )
            setattr(self, str(index), layer)

    def __len__(self):
        return len(self._children)

    def __getitem__(self, index):
        return list(self._children.values())[index]

    def forward(self, params, x, ctx):
        for name, layer in self._children.items():
            x = layer.forward(params.get(name, {}), x, ctx)
        return x


class MLP(Sequential):
    """A multilayer perceptron from its layer sizes, e.g. ``MLP([64, 128, 64, 10])``.

    Each hidden layer is Linear, then BatchNorm1d (``batchnorm=True``), the activation, then
    Dropout (``dropout > 0``); the last Linear gives the outputs (logits) with no activation.
    Weights use He initialisation under relu/gelu and Glorot otherwise, unless ``init`` is given.
    """

    def __init__(
        self,
        sizes,
        activation="relu",
        batchnorm=False,
        dropout=0.0,
        init=None,
        seed=0,
        dtype=xp.float64,
    ):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s <= 0 for s in sizes):
            raise ValueError(
                f"MLP needs at least two positive layer sizes (inputs, outputs), got {sizes}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        if init is None:
            init = "he_normal" if activation in ("relu", "gelu") else "glorot_uniform"
        seeds = xp.random.SeedSequence(seed).spawn(2 * len(sizes))
        layers = []
        for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = index == len(sizes) - 2
            layers.append(
                Linear(
                    fan_in,
                    fan_out,
                    init="glorot_uniform" if last else init,
                    seed=_rng(seeds[2 * index]),
                    dtype=dtype,
                )
            )
            if last:
                break
            if batchnorm:
                layers.append(BatchNorm1d(fan_out, dtype=dtype))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(Dropout(dropout, seed=seeds[2 * index + 1]))
        super().__init__(*layers)
        self.sizes = sizes
        self.activation = activation

    def extra_repr(self):
        return f"sizes={self.sizes}, activation={self.activation!r}"


class CheckpointedSequential(Sequential):
    """A :class:`Sequential` run as ``segments`` checkpointed pieces (see
    :func:`checkpoint_sequential`): the same layers, the same parameter keys."""

    def __init__(self, layers, segments: int):
        super().__init__(*layers)
        if not isinstance(segments, int) or not 1 <= segments:
            raise ValueError(f"checkpoint_sequential: segments must be an int >= 1, got {segments}")
        names = list(self._children)
        size = -(-len(names) // segments) if names else 1
        self.__dict__["_segments"] = [names[i : i + size] for i in range(0, len(names), size)]

    def forward(self, params, x, ctx):
        from ..transforms.remat import checkpoint  # noqa: PLC0415  (only checkpointed models pay)

        for chunk in self.__dict__["_segments"]:

            def run(chunk_params, x, chunk=chunk):
                for name in chunk:
                    x = self._children[name].forward(chunk_params[name], x, ctx)
                return x

            x = checkpoint(run)({name: params.get(name, {}) for name in chunk}, x)
        return x


def checkpoint_sequential(model: Sequential, segments: int) -> CheckpointedSequential:
    """``model`` split into ``segments`` consecutive pieces, each run under
    :func:`chainrule.checkpoint`: the backward pass keeps only the activations at segment
    boundaries and recomputes each piece in turn (√L segments for L layers: O(√L) memory, one extra
    forward pass). The layers (and so the parameters) are shared with ``model``; gradients are
    those of ``model`` bit for bit. A layer that draws random numbers (Dropout in training) would
    draw again in the recomputation: checkpoint only deterministic layers, or evaluate.

    >>> import numpy as np, chainrule as cr
    >>> from chainrule import nn
    >>> model = nn.MLP([3, 8, 8, 2], activation="tanh", seed=0)
    >>> checked = nn.checkpoint_sequential(model, 2)
    >>> loss = lambda m: lambda p, x: cr.numpy.sum(m.apply(p, x) ** 2)
    >>> x, p = np.ones((4, 3)), model.parameters()
    >>> g, h = cr.grad(loss(model))(p, x), cr.grad(loss(checked))(p, x)
    >>> all(np.array_equal(a, b) for a, b in zip(cr.tree_leaves(g), cr.tree_leaves(h)))
    True
    """
    if not isinstance(model, Sequential):
        raise TypeError(
            f"checkpoint_sequential: needs an nn.Sequential, got {type(model).__name__}"
        )
    return CheckpointedSequential(list(model), segments)
