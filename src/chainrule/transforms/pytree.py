"""Pytrees: nested dicts, lists and tuples whose leaves are arrays (or numbers).

``ravel_pytree`` turns any parameter pytree into one flat vector θ and gives back the function that
rebuilds the tree, which is what finite differences, SPSA, forward gradients and an all-reduce need.
Flattening is iterative (an explicit stack), so deep trees are fine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..engine import arraylib, ops
from ..engine.arraylib import ndarray, xp
from ..engine.core import Tracer, raw, state


class TreeDef:
    """The structure of a pytree without its leaves: enough to rebuild it."""

    __slots__ = ("kind", "keys", "children", "count")

    def __init__(self, kind, keys, children, count):
        self.kind = kind  # "leaf", "none", dict, list, tuple or a namedtuple class
        self.keys = keys
        self.children = children
        self.count = count

    def __eq__(self, other):
        # Walked with an explicit stack, like flattening: deep trees must not hit the recursion
        # limit.
        pairs = [(self, other)]
        while pairs:
            mine, theirs = pairs.pop()
            if mine is theirs:
                continue
            if not isinstance(theirs, TreeDef):
                return False
            if (
                mine.kind != theirs.kind
                or mine.keys != theirs.keys
                or mine.count != theirs.count
                or len(mine.children) != len(theirs.children)
            ):
                return False
            pairs.extend(zip(mine.children, theirs.children, strict=True))
        return True

    def __repr__(self):
        # Built iteratively (see __eq__): text pieces in order, closing brackets pushed as markers.
        pieces: list[str] = []
        stack: list[TreeDef | str] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                pieces.append(node)
            elif node.kind == "leaf":
                pieces.append("*")
            elif node.kind == "none":
                pieces.append("None")
            else:
                pieces.append(f"{getattr(node.kind, '__name__', str(node.kind))}(")
                stack.append(")")
                for position in reversed(range(len(node.children))):
                    stack.append(node.children[position])
                    if position:
                        stack.append(", ")
        return "".join(pieces)


_LEAF = TreeDef("leaf", None, (), 1)
_NONE = TreeDef("none", None, (), 0)


def _children(node):
    """(kind, keys, children) of a container, or None for a leaf."""
    kind = type(node)
    if kind is tuple or kind is list:  # the usual containers, recognised by their exact type
        return kind, None, list(node)
    if kind is ndarray:  # the usual leaf
        return None
    if isinstance(node, dict):
        keys = sorted(node) if all(isinstance(k, str) for k in node) else list(node)
        return dict, tuple(keys), [node[k] for k in keys]
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node), None, list(node)
    if isinstance(node, (list, tuple)):
        return type(node), None, list(node)
    return None


#: (kind, number of leaves) -> the TreeDef of such a flat list or tuple (or namedtuple). A
#: program has a few structures and flattens them on every call of a transform; a TreeDef is
#: never changed, so one object serves them all (and compares equal to itself at once).
#: Bounded, for programs that make many. Dicts are left out: keys that are equal but differ
#: (``1`` and ``True``) must come back as they were.
_FLAT_DEFS: dict = {}
_FLAT_DEFS_LIMIT = 1024


def _flat(kind, keys, kids):
    """The (leaves, treedef) of a container whose children are all leaves, or None: the common
    case (a list or dict of parameter arrays) without the general walk's stack."""
    for kid in kids:
        if kid is None or isinstance(kid, (dict, list, tuple)):
            return None
    if keys is not None:
        return kids, TreeDef(kind, keys, (_LEAF,) * len(kids), len(kids))
    key = (kind, len(kids))
    treedef = _FLAT_DEFS.get(key)
    if treedef is None:
        treedef = TreeDef(kind, None, (_LEAF,) * len(kids), len(kids))
        if len(_FLAT_DEFS) < _FLAT_DEFS_LIMIT:
            _FLAT_DEFS[key] = treedef
    return kids, treedef


def _file_leaf(node, leaves: list, defs: list):
    """None when ``node`` is ``None`` or a leaf, filed on the way: its TreeDef appended to
    ``defs`` (and a leaf to ``leaves``); a container's (kind, keys, children) otherwise, for
    the caller to walk."""
    if node is None:
        defs.append(_NONE)
        return None
    split = _children(node)
    if split is None:
        leaves.append(node)
        defs.append(_LEAF)
    return split


def tree_flatten(tree) -> tuple[list, TreeDef]:
    """Leaves in a fixed order (dict keys sorted) and the structure to rebuild the tree."""
    if tree is None:
        return [], _NONE
    split = _children(tree)
    if split is None:
        return [tree], _LEAF
    flat = _flat(*split)
    if flat is not None:
        return flat
    shallow = _two_levels(*split)
    if shallow is not None:
        return shallow
    leaves: list = []
    # Post-order with an explicit stack: (node, built children or None), the root already split.
    root_box: list = []
    kind, keys, kids = split
    built: list = []
    stack: list = [(tree, (kind, keys, built), root_box)]
    stack.extend((child, None, built) for child in reversed(kids))
    while stack:
        node, built, parent_box = stack.pop()
        if built is None:
            split = _file_leaf(node, leaves, parent_box)
            if split is None:
                continue
            kind, keys, kids = split
            built = []
            stack.append((node, (kind, keys, built), parent_box))
            # Children are pushed reversed so they are visited (and their leaves listed) in order.
            for child in reversed(kids):
                stack.append((child, None, built))
        else:
            kind, keys, kids = built
            parent_box.append(TreeDef(kind, keys, tuple(kids), sum(k.count for k in kids)))
    return leaves, root_box[0]


def _two_levels(kind, keys, kids):
    """The (leaves, treedef) of a container whose children are leaves or containers of leaves,
    or None: the usual parameter pytree (a list of (weight, bias) pairs, a dict of layers), which
    ``grad`` flattens on every call, without the general walk's stack."""
    leaves: list = []
    children: list = []
    for kid in kids:
        split = _file_leaf(kid, leaves, children)
        if split is None:
            continue
        flat = _flat(*split)
        if flat is None:
            return None
        leaves += flat[0]
        children.append(flat[1])
    return leaves, TreeDef(kind, keys, tuple(children), len(leaves))


def _rebuilt(kind, keys, pieces):
    """One container of ``kind`` holding ``pieces`` (a list, consumed)."""
    if kind is dict:
        return dict(zip(keys, pieces, strict=True))
    if kind is list:
        return pieces
    if kind is tuple:
        return tuple(pieces)
    return kind(*pieces)  # a namedtuple


def _unflatten_shallow(treedef, leaves):
    """:func:`tree_unflatten` of a tree at most two levels deep (see :func:`_two_levels`), or
    None for a deeper one."""
    pieces = []
    position = 0
    for child in treedef.children:
        kind = child.kind
        if kind == "leaf":
            pieces.append(leaves[position])
            position += 1
        elif kind == "none":
            pieces.append(None)
        else:
            for grandchild in child.children:
                if grandchild.kind != "leaf":
                    return None
            end = position + child.count
            pieces.append(_rebuilt(kind, child.keys, leaves[position:end]))
            position = end
    return _rebuilt(treedef.kind, treedef.keys, pieces)


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    leaves = list(leaves)
    if len(leaves) != treedef.count:
        raise ValueError(
            f"tree_unflatten: structure {treedef} needs {treedef.count} leaves, got {len(leaves)}"
        )
    kind = treedef.kind
    if kind == "leaf":
        return leaves[0]
    if kind != "none":
        shallow = _unflatten_shallow(treedef, leaves)
        if shallow is not None:
            return shallow
    position = 0
    # Iterative build: stack of (treedef, children collected so far)
    result_box: list = []
    stack: list = [(treedef, None, result_box)]
    while stack:
        node, collected, parent = stack.pop()
        if node.kind == "leaf":
            parent.append(leaves[position])
            position += 1
            continue
        if node.kind == "none":
            parent.append(None)
            continue
        if collected is None:
            collected = []
            stack.append((node, collected, parent))
            for child in reversed(node.children):
                stack.append((child, None, collected))
            continue
        if node.kind is dict:
            parent.append(dict(zip(node.keys, collected, strict=True)))
        elif node.kind in (list, tuple):
            parent.append(node.kind(collected))
        else:  # namedtuple
            parent.append(node.kind(*collected))
    return result_box[0]


def structure_key(treedef: TreeDef) -> tuple:
    """A hashable form of ``treedef`` (each node's kind, dict keys and number of children, in
    pre-order): the structural part of the signature under which ``jit`` and ``capture`` keep
    what they built for a call."""
    key = []
    stack = [treedef]
    while stack:
        node = stack.pop()
        key.append((node.kind, node.keys, len(node.children)))
        stack.extend(reversed(node.children))
    return tuple(key)


def leaves_like(tree, treedef: TreeDef) -> list | None:
    """The leaves of ``tree`` if it has exactly the structure ``treedef`` (the same container
    types, the same dict keys, leaves where it has leaves), else None: what a repeated call of a
    jitted or captured step checks, without building a new TreeDef (an explicit stack; leaves in
    flattening order, a dict's read in ``treedef``'s key order)."""
    leaves = []
    stack = [(tree, treedef)]
    while stack:
        node, spec = stack.pop()
        kind = spec.kind
        if kind == "leaf":
            if isinstance(node, (dict, list, tuple)) or node is None:
                return None
            leaves.append(node)
        elif kind == "none":
            if node is not None:
                return None
        else:
            if type(node) is not kind or len(node) != len(spec.children):
                return None
            if kind is dict:
                try:
                    kids = [node[key] for key in spec.keys]
                except KeyError:
                    return None
            else:
                kids = node
            stack.extend(zip(reversed(kids), reversed(spec.children), strict=True))
    return leaves


def leaves_match(leaves, checks) -> bool:
    """Whether ``leaves`` pass ``checks``, one per leaf: ``(shape, dtype)`` for a NumPy array
    (or a NumPy scalar, which stands for its 0-d array), ``(None, constant)`` for a leaf that
    must equal ``constant`` (of the same type)."""
    for leaf, (shape, expected) in zip(leaves, checks, strict=True):
        if shape is None:
            if not (leaf is expected or (type(leaf) is type(expected) and leaf == expected)):
                return False
        elif (
            (type(leaf) is not ndarray and not isinstance(leaf, xp.generic))
            or leaf.shape != shape
            or leaf.dtype != expected
        ):
            return False
    return True


def tree_map(fn: Callable, tree, *rest):
    """Apply ``fn`` leaf by leaf to one tree (or several of the same structure)."""
    leaves, treedef = tree_flatten(tree)
    others = []
    for other in rest:
        other_leaves, other_def = tree_flatten(other)
        if other_def != treedef:
            raise ValueError(f"tree_map: structures differ: {treedef} vs {other_def}")
        others.append(other_leaves)
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others, strict=True)])


def tree_leaves(tree) -> list:
    return tree_flatten(tree)[0]


def _leaf_arrays(leaves):
    """The leaves as arrays on one device. NumPy arrays for a tree on the CPU; where some leaf is
    a device (GPU) array, the others stay on that device and the Python numbers among them join
    it (a number lives nowhere in particular); a NumPy array beside a device array is an error
    naming both devices, as for any operation."""
    values = [raw(leaf) for leaf in leaves]
    devices = [arraylib.device_of(value) for value in values]
    device = next((name for name in devices if name != "cpu"), None)
    if device is None:  # all on the CPU: the common case
        return [xp.asarray(value) for value in values]
    arrays = []
    for value, where in zip(values, devices, strict=True):
        if where != device:
            if arraylib.is_array(value):
                raise TypeError(
                    f"ravel_pytree: leaves on two devices: a leaf of shape {value.shape} on "
                    f"{where!r} beside leaves on {device!r}; move the tree to one device first "
                    "(chainrule.backend.device.to_device)"
                )
            value = arraylib.to_device(value, device)
        arrays.append(value)
    return arrays


def ravel_pytree(tree):
    """Flatten a pytree of arrays into one 1-d vector θ; return ``(theta, unravel)``.

    >>> import numpy as np
    >>> theta, unravel = ravel_pytree({"w": np.array([[1.0, 2.0]]), "b": np.array([3.0])})
    >>> theta
    array([3., 1., 2.])
    >>> unravel(theta)["w"]
    array([[1., 2.]])
    """
    leaves, treedef = tree_flatten(tree)
    if state.foreign:
        return _ravel_in_namespace(arraylib.ns, leaves, treedef)
    arrays = _leaf_arrays(leaves)
    shapes = [a.shape for a in arrays]
    sizes = [a.size for a in arrays]
    dtypes = [a.dtype for a in arrays]
    dtype = xp.result_type(*dtypes) if arrays else xp.float64
    theta = (
        xp.concatenate([a.ravel().astype(dtype) for a in arrays]) if arrays else xp.zeros(0, dtype)
    )

    def host_vector(flat):
        return xp.asarray(flat) if arraylib.device_of(flat) == "cpu" else flat  # a GPU θ stays

    def host_leaf(segment, shape, leaf_dtype):
        return segment.reshape(shape).astype(leaf_dtype, copy=False)

    return theta, _unraveller(treedef, shapes, sizes, dtypes, host_vector, host_leaf)


def _ravel_in_namespace(namespace, leaves, treedef):
    """:func:`ravel_pytree` inside ``backend.use_namespace``: the same vector and ``unravel``, with
    the array API standard's functions (``concat``, ``reshape``, ``astype``; no array methods)."""
    arrays = [arraylib.asarray(raw(leaf)) for leaf in leaves]
    shapes = [tuple(a.shape) for a in arrays]
    sizes = [math.prod(shape) for shape in shapes]
    dtypes = [a.dtype for a in arrays]
    try:
        dtype = namespace.result_type(*dtypes) if arrays else namespace.float64
    except TypeError as error:  # the standard promotes no integer dtype with a floating one
        raise TypeError(
            f"ravel_pytree: leaves of dtypes {sorted(set(map(str, dtypes)))} have no common dtype "
            "in "
            f"{arraylib.namespace_name(namespace)}; cast them to one dtype first"
        ) from error
    if arrays:
        theta = namespace.concat(
            [namespace.astype(namespace.reshape(a, (-1,)), dtype) for a in arrays]
        )
    else:
        theta = namespace.zeros((0,), dtype=dtype)

    def namespace_leaf(segment, shape, leaf_dtype):
        return namespace.astype(namespace.reshape(segment, shape), leaf_dtype, copy=False)

    return theta, _unraveller(treedef, shapes, sizes, dtypes, arraylib.asarray, namespace_leaf)


def _unraveller(treedef, shapes, sizes, dtypes, as_vector, as_leaf):
    """The ``unravel`` that :func:`ravel_pytree` returns: θ cut into the leaves' segments, each
    reshaped and cast back to its leaf's dtype, in the tree ``treedef``.

    ``as_vector(flat)`` brings a plain θ into the array library and ``as_leaf(segment, shape,
    dtype)`` makes one segment a leaf (NumPy/CuPy methods, or the array API's functions). A
    traced θ is cut with the engine's ``getitem`` and ``reshape`` instead, so that ``unravel`` is
    differentiable."""
    total = int(sum(sizes))

    def unravel(flat):
        traced = isinstance(flat, Tracer)
        if not traced:
            flat = as_vector(flat)
        if tuple(flat.shape) != (total,):
            raise ValueError(
                f"unravel: expected a vector of shape ({total},), got {tuple(flat.shape)}"
            )
        pieces = []
        start = 0
        for shape, size, leaf_dtype in zip(shapes, sizes, dtypes, strict=True):
            if traced:
                pieces.append(ops.reshape(ops.getitem(flat, slice(start, start + size)), shape))
            else:
                pieces.append(as_leaf(flat[start : start + size], shape, leaf_dtype))
            start += size
        return tree_unflatten(treedef, pieces)

    return unravel
