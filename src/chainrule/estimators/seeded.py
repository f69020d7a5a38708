"""Random directions that are never stored: regenerated from (key, direction, leaf, chunk).

Forward gradients, SPSA, MeZO and evolution strategies all produce an estimate of the form
``g = sum_i c_i z_i`` with random directions ``z_i``. Drawing each direction from a seed that is
a pure function of ``(key, i, leaf, chunk)`` means:

* a direction can be regenerated at will, so it never needs to be kept (MeZO's memory trick), and
  it can be generated chunk by chunk, so not even one full copy of it exists at once;
* every process that knows the key draws the *same* directions, so data-parallel ranks exchange
  only the scalars ``c_i`` (a few bytes) instead of a θ-sized gradient.

:class:`SeededGradient` is such an estimate kept as its key and coefficients.

Directions are drawn on the host, by NumPy's generator, whatever device the parameters are on,
and copied to that device: the same key gives bit-identical directions on the CPU and on a GPU
(so a run resumed on another device, or ranks on different devices, agree), at the price of
drawing on the CPU and one host-to-device copy of the drawn values (P·itemsize bytes per use of
a direction; on a GPU the drawing, not the copy, is the larger cost, as with MeZO on the CPU).
"""

from __future__ import annotations

from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw
from ..transforms.pytree import tree_flatten, tree_unflatten

#: Elements generated at once when a direction is added in place: bounds the extra memory.
CHUNK = 1 << 15

DISTRIBUTIONS = ("gaussian", "rademacher")


def _draw(key: int, direction: int, leaf: int, chunk: int, size: int, dtype, distribution: str):
    generator = xp.random.Generator(
        xp.random.PCG64(xp.random.SeedSequence([key, direction, leaf, chunk]))
    )
    if distribution == "gaussian":
        return generator.standard_normal(size, dtype=xp.float64).astype(dtype, copy=False)
    signs = generator.integers(0, 2, size=size, dtype=xp.int8)
    return (2 * signs - 1).astype(dtype)


def _chunks(size: int):
    for number, start in enumerate(range(0, size, CHUNK)):
        yield number, start, min(start + CHUNK, size)


def direction_leaf(
    key: int,
    direction: int,
    leaf: int,
    shape,
    dtype,
    distribution: str = "gaussian",
    device: str = "cpu",
):
    """The whole ``leaf``-th array of direction ``direction`` (the same values, chunk by chunk,
    that :func:`add_direction_` adds), on ``device``: drawn on the host, then one copy there."""
    size = 1
    for n in shape:
        size *= int(n)
    out = xp.empty(size, dtype=dtype)
    for number, start, stop in _chunks(size):
        out[start:stop] = _draw(key, direction, leaf, number, stop - start, dtype, distribution)
    out = out.reshape(shape)
    return out if device == "cpu" else arraylib.to_device(out, device)


def direction(key: int, index: int, template, distribution: str = "gaussian"):
    """Direction ``index`` of ``key`` as a pytree shaped like ``template``, each leaf on the
    device of ``template``'s leaf."""
    leaves, treedef = tree_flatten(template)
    arrays = [arraylib.asarray(raw(leaf)) for leaf in leaves]
    return tree_unflatten(
        treedef,
        [
            direction_leaf(key, index, n, a.shape, a.dtype, distribution, arraylib.device_of(a))
            for n, a in enumerate(arrays)
        ],
    )


def add_direction_(
    leaves, key: int, index: int, scale: float, distribution: str = "gaussian"
) -> None:
    """``leaf += scale * z`` for every leaf, in place, generating ``z`` a chunk at a time: the
    extra memory is one chunk, whatever the size of θ. Every leaf is checked before any changes.
    A leaf on a GPU gets each chunk drawn on the host and copied over (see the module's text)."""
    for n, leaf in enumerate(leaves):
        flags = getattr(leaf, "flags", None)
        # CuPy's flags have no ``writeable``: device arrays always are.
        if (
            not arraylib.is_array(leaf)
            or not flags.c_contiguous
            or not getattr(flags, "writeable", True)
        ):
            raise ValueError(
                f"add_direction_: leaf {n} of shape {tuple(getattr(leaf, 'shape', ()))} must be a "
                "writable C-contiguous array"
            )
    for n, leaf in enumerate(leaves):
        flat = leaf.reshape(-1)
        where = arraylib.device_of(leaf)
        for number, start, stop in _chunks(flat.size):
            z = _draw(key, index, n, number, stop - start, flat.dtype, distribution)
            z *= flat.dtype.type(scale)
            if where != "cpu":
                z = arraylib.to_device(z, where)
            flat[start:stop] += z


class SeededGradient:
    """``sum_i coefficients[i] * direction(key, i)``, kept as ``key`` and the coefficients."""

    def __init__(self, key: int, coefficients, distribution: str = "gaussian"):
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"SeededGradient: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}"
            )
        self.key = int(key)
        self.coefficients = xp.asarray(coefficients, dtype=xp.float64).reshape(-1)
        self.distribution = distribution

    def materialize(self, template):
        """The estimate as a pytree shaped like ``template`` (one θ-sized array per leaf)."""
        leaves, treedef = tree_flatten(template)
        out = []
        for n, leaf in enumerate(leaves):
            leaf = arraylib.asarray(raw(leaf))
            total = xp.zeros(leaf.shape, dtype=leaf.dtype)  # summed on the host, then one copy
            for i, c in enumerate(self.coefficients):
                if c != 0:
                    total += leaf.dtype.type(c) * direction_leaf(
                        self.key, i, n, leaf.shape, leaf.dtype, self.distribution
                    )
            where = arraylib.device_of(leaf)
            out.append(total if where == "cpu" else arraylib.to_device(total, where))
        return tree_unflatten(treedef, out)

    def add_to_(self, leaves, scale: float) -> None:
        """``leaf += scale * estimate`` in place, chunk by chunk (no θ-sized temporary)."""
        for i, c in enumerate(self.coefficients):
            if c != 0:
                add_direction_(leaves, self.key, i, scale * float(c), self.distribution)

    def __repr__(self):
        return (
            f"SeededGradient(key={self.key}, {self.coefficients.size} {self.distribution} "
            "directions)"
        )
