"""One recorded evaluation of a function, shared by ``jacrev``, the cost model and ``jacobian``.

:class:`ReverseTrace` lifts the chosen arguments to tensors of a fresh level, runs the function
once with recording on, and keeps the result. From it one can

* pull back any number of (possibly batched) cotangents in one backward sweep (:meth:`pull`),
* walk the recorded graph to measure it (:meth:`recorded_nodes`), which is what the cost model of
  :mod:`chainrule.transforms.cost` does before choosing a mode.

So ``jacobian(mode="auto")`` records once, measures, and, when reverse mode wins, pulls back on
the very graph it measured.
"""

from __future__ import annotations

from ..engine import arraylib, ops
from ..engine.core import enable_grad, new_level
from ..engine.reverse import backward_pass
from ..engine.tensor import Tensor, current_epoch
from .api import _argnums_tuple as argnums_tuple
from .api import _plain as plain
from .api import check_outputs, lift_tree
from .counting import note_pass
from .pytree import tree_flatten, tree_unflatten


class ReverseTrace:
    """``fun(*args)`` evaluated once with the arguments ``argnums`` watched by reverse mode."""

    def __init__(self, fun, args, argnums, transform="jacrev"):
        self.transform = transform
        self.argnums = argnums_tuple(argnums, len(args), transform)
        self.level = level = new_level()
        args = list(args)
        self.arg_defs = []  # one treedef per differentiated argument
        self.inputs = []  # the lifted leaves, all arguments together, in order
        for n in self.argnums:
            args[n], treedef, lifted = lift_tree(args[n], level, transform)
            self.arg_defs.append(treedef)
            self.inputs.extend(lifted)
        note_pass("forward")
        with enable_grad():
            result = fun(*args)
        self.out_leaves, self.out_def = tree_flatten(result)
        check_outputs(result, self.out_leaves, transform)

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def input_shapes(self):
        return [ops.shape(t.data) for t in self.inputs]

    @property
    def output_shapes(self):
        return [ops.shape(leaf) for leaf in self.out_leaves]

    def is_traced(self, value) -> bool:
        return type(value) is Tensor and value._level == self.level and value.requires_grad

    def output_value(self):
        """The function's value, one level down (what the caller would have got)."""
        lowered = []
        for leaf in self.out_leaves:
            if type(leaf) is Tensor and leaf._level == self.level:
                leaf = leaf.data
            lowered.append(plain(leaf))
        return tree_unflatten(self.out_def, lowered)

    # -- the backward sweep -----------------------------------------------------------------------
    def pull(self, seeds, retain_graph=False):
        """Cotangents of the inputs (``None`` where unreached) for one cotangent per output leaf
        (``None`` for a zero one). Seeds may be Batched: one sweep carries them all."""
        roots, root_seeds = [], []
        for leaf, seed in zip(self.out_leaves, seeds, strict=True):
            if seed is None or not self.is_traced(leaf):
                continue
            if not arraylib.is_float_dtype(
                leaf.dtype
            ):  # read at call time: use_namespace rebinds it
                raise TypeError(
                    f"{self.transform}: outputs must be floating-point, got dtype {leaf.dtype}"
                )
            roots.append(leaf)
            root_seeds.append(seed)
        if not roots:
            return [None] * len(self.inputs)
        return backward_pass(
            roots, root_seeds, epoch=current_epoch(), retain_graph=retain_graph, leaves=self.inputs
        )

    # -- the graph, for the cost model
    # --------------------------------------------------------------
    def recorded_nodes(self):
        """Every recorded op on a path from the inputs to the outputs, each once (iterative walk):
        a list of ``(prim, args, params, out)`` with values one level down, plus
        ``active``: the argument positions that carry a derivative, and ``node``: the tensor."""
        level = self.level
        seen = set()
        stack = [leaf for leaf in self.out_leaves if self.is_traced(leaf)]
        found = []
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node._prim is None:
                continue
            args = node._args
            values = [a.data if type(a) is Tensor and a._level == level else a for a in args]
            active = [i for i, a in enumerate(args) if self.is_traced(a)]
            found.append((node._prim, values, node._params, node.data, active, node))
            for i in active:
                stack.append(args[i])
        return found
