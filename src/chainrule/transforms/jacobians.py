"""Whole Jacobians and Hessians: jacfwd, jacrev, jacobian (mode chosen by a cost model), hessian,
hvp.

Each Jacobian is one pass, not a loop of passes: ``jacfwd`` seeds every input direction at once as a
:class:`~chainrule.engine.batching.Batched` tangent (the identity matrix, one row per direction) and
runs forward mode once; ``jacrev`` records the function once and pulls the identity back as a
Batched cotangent in one backward sweep. ``chunk_size`` optionally splits the directions into groups
of that many (one pass each) to bound memory.

Arguments and results are pytrees, as in JAX. For ``fun`` with output leaves ``o`` and input leaves
``i`` the result has the output's structure, each output leaf replaced by the input's structure
(a tuple of them when ``argnums`` is a tuple), and block ``[o][i]`` has shape
``o.shape + i.shape``:

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> f = lambda x: cnp.sin(x) * x[0]
>>> x = np.array([1.0, 2.0, 3.0])
>>> bool(np.allclose(cr.jacfwd(f)(x), cr.jacrev(f)(x)))
True
>>> params = {"w": np.ones((2, 3)), "b": np.ones(3)}
>>> cr.jacrev(lambda p: {"y": p["w"] @ p["b"]})(params)["y"]["w"].shape
(2, 2, 3)
>>> cr.hessian(lambda x: cnp.sum(x ** 3))(np.array([1.0, 2.0]))
array([[ 6.,  0.],
       [ 0., 12.]])
"""

from __future__ import annotations

import functools
import math

from ..engine import arraylib, ops
from ..engine.arraylib import xp
from ..engine.batching import Batched, unbatch
from ..engine.core import new_level, raw, state
from ..engine.forward import Dual
from .api import _as_value, check_outputs, grad, jvp
from .counting import note_pass
from .pytree import tree_flatten, tree_unflatten
from .tracing import ReverseTrace, argnums_tuple, plain

_MODES = ("auto", "fwd", "rev")


# ------------------------------------------------------------------------------------------------
# Helpers: bases, chunks and the assembly of blocks
# ------------------------------------------------------------------------------------------------


def _layout(shapes):
    """Sizes and offsets of leaves laid end to end in one flat vector."""
    sizes = [math.prod(shape) for shape in shapes]
    offsets = []
    total = 0
    for size in sizes:
        offsets.append(total)
        total += size
    return sizes, offsets, total


def _chunks(total, chunk_size):
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if not chunk_size or chunk_size >= total:  # one pass for every direction (the usual case)
        return [(0, total)] if total else []
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def _basis_block(start, stop, offset, like, dtype):
    """Rows ``start:stop`` of the identity, restricted to the columns of one leaf (at ``offset``)
    and shaped like it: shape ``(stop - start, *like.shape)``, on ``like``'s device. ``None``
    where that block is zero. Row r stands for direction ``start + r`` and column c for entry
    ``offset + c``: the ones lie on the diagonal ``c = r + start - offset`` (``eye``'s ``k``)."""
    shape = ops.shape(like)
    size = math.prod(shape)
    low, high = max(start, offset), min(stop, offset + size)
    if low >= high:
        return None
    if state.foreign:  # another array namespace (backend.use_namespace): its eye and reshape
        namespace = arraylib.ns
        block = namespace.eye(stop - start, size, k=start - offset, dtype=arraylib.as_dtype(dtype))
        return namespace.reshape(block, (stop - start, *shape))
    namespace = arraylib.namespace_of(raw(like))  # NumPy, or CuPy for a GPU array
    if namespace is xp and start == offset and stop - start == size:
        # The whole identity of one leaf (every jacfwd of a single input, every inner gradient
        # of a nested descent): a copy of a kept one, 0.15 µs against eye's 1.2 µs. A copy,
        # since a block may be handed to code that writes into it.
        block = _identity(size, dtype).copy()
    else:
        block = namespace.eye(stop - start, size, k=start - offset, dtype=dtype)
    return block if len(shape) == 1 else block.reshape((stop - start, *shape))


@functools.lru_cache(maxsize=64)
def _identity(size, dtype):
    """The NumPy identity of ``size`` and ``dtype``, read-only: :func:`_basis_block` copies it."""
    identity = xp.eye(size, dtype=dtype)
    identity.flags.writeable = False
    return identity


def _zeros(like, shape, dtype):
    """Zeros of ``shape`` and ``dtype`` on the device of ``like`` (an array or a tracer)."""
    if state.foreign:  # the standard's zeros_like takes no shape
        return arraylib.ns.zeros(
            shape, dtype=arraylib.as_dtype(dtype), device=getattr(raw(like), "device", None)
        )
    return xp.zeros_like(raw(like), shape=shape, dtype=dtype)


def _float_dtype(value):
    """``value``'s dtype when it is floating, else float64 (both in the active namespace's terms:
    ``backend`` is read at call time, since ``use_namespace`` rebinds its names)."""
    dtype = getattr(value, "dtype", None)
    return dtype if dtype is not None and arraylib.is_float_dtype(dtype) else arraylib.ns.float64


def _stack_chunks(pieces, widths, shape, like):
    """Concatenate per-chunk stacks along axis 0; a ``None`` chunk stands for zeros (of
    ``like``'s floating dtype)."""
    if len(pieces) == 1 and pieces[0] is not None:  # one chunk: nothing to fill or join
        return pieces[0]
    present = [piece for piece in pieces if piece is not None]
    if not present:
        return None
    dtype = _float_dtype(like)
    filled = [
        _zeros(present[0], (width, *shape), dtype) if piece is None else piece
        for piece, width in zip(pieces, widths, strict=True)
    ]
    return filled[0] if len(filled) == 1 else ops.concatenate(filled, axis=0)


def _group(blocks, arg_defs, single):
    """Blocks for all input leaves -> one pytree per argument (a tuple of them unless
    ``single``)."""
    trees = []
    position = 0
    for treedef in arg_defs:
        trees.append(tree_unflatten(treedef, blocks[position : position + treedef.count]))
        position += treedef.count
    return trees[0] if single else tuple(trees)


# ------------------------------------------------------------------------------------------------
# Forward mode: all directions through one pass
# ------------------------------------------------------------------------------------------------


def _flat_inputs(args, nums, transform):
    arg_defs: list = []
    leaves: list = []
    for n in nums:
        arg_leaves, treedef = tree_flatten(args[n])
        arg_defs.append(treedef)
        leaves += [_as_value(leaf, transform) for leaf in arg_leaves]
    return arg_defs, leaves


def _push_chunk(fun, args, nums, arg_defs, leaves, offsets, start, stop):
    """One forward pass carrying input directions ``start:stop``; returns (out leaves' values,
    out treedef, per out leaf the stacked tangents of shape (stop - start, *out.shape) or None)."""
    batch_level = new_level()  # below the dual level: tangents are processed one level down
    dual_level = new_level()
    width = stop - start
    new_args = list(args)
    position = 0
    for n, treedef in zip(nums, arg_defs, strict=True):
        lifted = []
        for _ in range(treedef.count):
            value = leaves[position]
            basis = _basis_block(start, stop, offsets[position], value, value.dtype)
            if basis is None and state.foreign:
                # Traced all the same, with zero tangents: whether a leaf is traced must not
                # depend on the chunking, since a plain array of another namespace left of a
                # tracer raises there instead of deferring (``b + w @ x`` with only ``w`` traced).
                basis = _zeros(value, (width, *ops.shape(value)), value.dtype)
            # A leaf with no direction in this chunk stays a constant: no tangent work for it.
            lifted.append(
                value if basis is None else Dual(value, Batched(basis, batch_level), dual_level)
            )
            position += 1
        new_args[n] = tree_unflatten(treedef, lifted)
    note_pass("forward")
    note_pass("jvp", width)
    out = fun(*new_args)
    out_leaves, out_def = tree_flatten(out)
    check_outputs(out, out_leaves, "jacfwd")
    values, stacks = [], []
    for leaf in out_leaves:
        if type(leaf) is Dual and leaf._level == dual_level:
            values.append(plain(leaf.primal))
            stacks.append(unbatch(leaf.tangent, width, batch_level))
        else:
            values.append(plain(leaf))
            stacks.append(None)
    return values, out_def, stacks


def forward_jacobian(fun, args, argnums=0, chunk_size=None, transform="jacfwd"):
    """``(value, jacobian)`` of ``fun`` at ``args`` by forward mode (see module docstring)."""
    nums = argnums_tuple(argnums, len(args), transform)
    arg_defs, leaves = _flat_inputs(args, nums, transform)
    in_shapes = [ops.shape(v) for v in leaves]
    in_sizes, offsets, total = _layout(in_shapes)
    chunks = _chunks(total, chunk_size) or [(0, 0)]
    per_chunk = []
    for start, stop in chunks:
        values, out_def, stacks = _push_chunk(
            fun, args, nums, arg_defs, leaves, offsets, start, stop
        )
        per_chunk.append(stacks)
    if len(chunks) > 1:  # (one chunk's stacks are the whole ones)
        widths = [stop - start for start, stop in chunks]
        stacks = [
            _stack_chunks([chunk[j] for chunk in per_chunk], widths, ops.shape(value), value)
            for j, value in enumerate(values)
        ]
    per_output = []
    for value, stacked in zip(values, stacks, strict=True):
        out_shape = ops.shape(value)
        blocks = []
        for shape, size, offset in zip(in_shapes, in_sizes, offsets, strict=True):
            if stacked is None:
                blocks.append(_zeros(value, out_shape + shape, _float_dtype(value)))
                continue
            # The rows of this leaf's directions; all of them for a single input leaf (every
            # inner gradient of a nested descent), which needs no slicing op, recorded or not.
            rows = stacked if size == total else ops.getitem(stacked, slice(offset, offset + size))
            piece = ops.reshape(rows, shape + out_shape)
            if out_shape:  # (*in, *out) -> (*out, *in); a scalar output's block is in order
                order = tuple(range(len(shape), len(shape) + len(out_shape)))
                piece = ops.transpose(piece, order + tuple(range(len(shape))))
            blocks.append(plain(piece))
        per_output.append(_group(blocks, arg_defs, isinstance(argnums, int)))
    return tree_unflatten(out_def, values), tree_unflatten(out_def, per_output)


def jacfwd(fun, argnums=0, *, chunk_size=None):
    """The Jacobian of ``fun`` with respect to argument(s) ``argnums`` by forward mode: all input
    directions in one batched pass (or passes of ``chunk_size`` directions). Cheapest when the
    input is small and the output large."""

    @functools.wraps(fun)
    def jacfwd_fun(*args):
        return forward_jacobian(fun, args, argnums, chunk_size)[1]

    return jacfwd_fun


# ------------------------------------------------------------------------------------------------
# Reverse mode: record once, pull all directions back in one sweep
# ------------------------------------------------------------------------------------------------


def reverse_jacobian(trace, argnums=0, chunk_size=None):
    """``(value, jacobian)`` from a :class:`~chainrule.transforms.tracing.ReverseTrace` (consumes
    it)."""
    out_shapes = trace.output_shapes
    out_sizes, out_offsets, total = _layout(out_shapes)
    in_shapes = trace.input_shapes
    if total == 1 and len(out_shapes) == 1:
        return _one_direction_jacobian(trace, argnums, out_shapes[0], in_shapes)
    chunks = _chunks(total, chunk_size)
    per_chunk = []
    for number, (start, stop) in enumerate(chunks):
        batch_level = new_level()
        seeds = []
        for leaf, _shape, offset in zip(trace.out_leaves, out_shapes, out_offsets, strict=True):
            basis = _basis_block(start, stop, offset, leaf, _float_dtype(leaf))
            seeds.append(None if basis is None else Batched(basis, batch_level))
        note_pass("vjp", stop - start)
        cotangents = trace.pull(seeds, retain_graph=number < len(chunks) - 1)
        width = stop - start
        per_chunk.append(
            [None if ct is None else unbatch(ct, width, batch_level) for ct in cotangents]
        )
    widths = [stop - start for start, stop in chunks]
    stacked_inputs = []
    for k, (shape, tensor) in enumerate(zip(in_shapes, trace.inputs, strict=True)):
        stacked_inputs.append(
            _stack_chunks([cts[k] for cts in per_chunk], widths, shape, tensor)
            if per_chunk
            else None
        )
    per_output = []
    for shape, size, offset in zip(out_shapes, out_sizes, out_offsets, strict=True):
        blocks = []
        for in_shape, stacked, tensor in zip(in_shapes, stacked_inputs, trace.inputs, strict=True):
            if stacked is None:
                blocks.append(_zeros(tensor.data, shape + in_shape, _float_dtype(tensor)))
            else:
                piece = ops.getitem(stacked, slice(offset, offset + size))
                blocks.append(plain(ops.reshape(piece, shape + in_shape)))
        per_output.append(_group(blocks, trace.arg_defs, isinstance(argnums, int)))
    return trace.output_value(), tree_unflatten(trace.out_def, per_output)


def _one_direction_jacobian(trace, argnums, out_shape, in_shapes):
    """``reverse_jacobian`` for a function with one output value (a scalar loss, the inner
    ``jacrev`` of a Hessian): one plain seed of ones, as ``grad`` pulls back, instead of a batch
    of one direction, whose batching level would cost more than the sweep itself."""
    (leaf,) = trace.out_leaves
    note_pass("vjp", 1)
    cotangents = trace.pull([ops.ones_like(leaf, dtype=_float_dtype(leaf))])
    blocks = []
    for in_shape, ct, tensor in zip(in_shapes, cotangents, trace.inputs, strict=True):
        if ct is None:
            blocks.append(_zeros(tensor.data, out_shape + in_shape, _float_dtype(tensor)))
        else:
            blocks.append(plain(ops.reshape(ct, out_shape + in_shape)))
    jacobian = _group(blocks, trace.arg_defs, isinstance(argnums, int))
    return trace.output_value(), tree_unflatten(trace.out_def, [jacobian])


def jacrev(fun, argnums=0, *, chunk_size=None):
    """The Jacobian of ``fun`` with respect to argument(s) ``argnums`` by reverse mode: one
    recorded evaluation, all output directions pulled back in one batched sweep. Cheapest when the
    output is small and the input large."""

    @functools.wraps(fun)
    def jacrev_fun(*args):
        trace = ReverseTrace(fun, args, argnums, "jacrev")
        return reverse_jacobian(trace, argnums, chunk_size)[1]

    return jacrev_fun


# ------------------------------------------------------------------------------------------------
# Either mode, chosen by the cost model
# ------------------------------------------------------------------------------------------------


def value_and_jacobian(fun, args, argnums=0, mode="auto", chunk_size=None, memory_limit=None):
    """``(value, jacobian, plan)``; ``plan`` is the cost model's
    :class:`~chainrule.transforms.cost.JacobianPlan` for ``mode="auto"`` and ``None`` otherwise."""
    if mode not in _MODES:
        raise ValueError(f"jacobian: mode must be one of {_MODES}, got {mode!r}")
    if mode == "fwd":
        value, jac = forward_jacobian(fun, args, argnums, chunk_size, "jacobian")
        return value, jac, None
    trace = ReverseTrace(fun, args, argnums, "jacobian")
    plan = None
    if mode == "auto":
        from .cost import plan_from_trace  # noqa: PLC0415 (cost builds on this module's layer)

        plan = plan_from_trace(trace, memory_limit=memory_limit)
        if plan.mode == "fwd":
            del trace  # drop the recorded graph before the forward pass
            value, jac = forward_jacobian(fun, args, argnums, chunk_size, "jacobian")
            return value, jac, plan
    value, jac = reverse_jacobian(trace, argnums, chunk_size)
    return value, jac, plan


def _signature(args):
    """What the cost model's decision depends on: the structure, shapes and dtypes of the
    arguments."""
    leaves, treedef = tree_flatten(list(args))
    return repr(treedef), tuple(
        (tuple(getattr(leaf, "shape", ())), str(getattr(leaf, "dtype", type(leaf).__name__)))
        for leaf in leaves
    )


def jacobian(fun, argnums=0, mode="auto", *, chunk_size=None, memory_limit=None):
    """The Jacobian of ``fun`` by ``mode``: ``"fwd"`` (jacfwd), ``"rev"`` (jacrev) or ``"auto"``,
    which records ``fun`` once, estimates the time and memory of both modes from the recorded
    graph and the table's FLOP rules, and runs the faster one (reusing the recording when that is
    reverse mode). ``chainrule.explain_jacobian`` prints the estimate.

    The decision is made on the first call for each structure, shape and dtype of the arguments
    and remembered by the returned function: later calls run the chosen mode directly. (It is a
    choice of speed only; both modes give the same Jacobian.)
    """
    if mode not in _MODES:
        raise ValueError(f"jacobian: mode must be one of {_MODES}, got {mode!r}")
    decided: dict = {}

    @functools.wraps(fun)
    def jacobian_fun(*args):
        if mode != "auto":
            return value_and_jacobian(fun, args, argnums, mode, chunk_size, memory_limit)[1]
        key = _signature(args)
        chosen = decided.get(key)
        if chosen is not None:
            return value_and_jacobian(fun, args, argnums, chosen, chunk_size)[1]
        _, jac, plan = value_and_jacobian(fun, args, argnums, "auto", chunk_size, memory_limit)
        decided[key] = plan.mode
        return jac

    jacobian_fun.decisions = decided  # type: ignore[attr-defined]  # modes chosen
    return jacobian_fun


# ------------------------------------------------------------------------------------------------
# Second order
# ------------------------------------------------------------------------------------------------


def hessian(fun, argnums=0):
    """The Hessian of ``fun`` (forward over reverse: ``jacfwd(jacrev(fun))``). For a scalar ``fun``
    of x with shape s it has shape s + s; block ``[i][j]`` for pytree inputs."""
    return jacfwd(jacrev(fun, argnums), argnums)


def hvp(fun, primals, tangents):
    """Hessian-vector product of scalar ``fun`` at ``primals`` along ``tangents`` (tuples, one entry
    per argument), forward over reverse: the JVP of the gradient, one pass each way, never forming
    the Hessian. Returns a pytree like ``primals[0]`` (a tuple over arguments for several)."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("hvp: primals and tangents must be tuples (one entry per argument of fun)")
    argnums = 0 if len(primals) == 1 else tuple(range(len(primals)))
    return jvp(grad(fun, argnums), tuple(primals), tuple(tangents))[1]
