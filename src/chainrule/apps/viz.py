"""Draw a recorded graph: every node's op, shape, value and gradient, as Graphviz DOT and SVG.

``draw(fun, *args)`` runs ``fun`` on leaf tensors made from ``args`` (``draw(tensor)`` takes a
graph already recorded) and returns a :class:`Drawing`. The gradient shown on a node is the
derivative of the output with respect to that node (the cotangent that reaches it in the reverse
pass). An edge from a node to one of its consumers is labelled with that consumer's contribution,
so a node with several consumers (a *fan-out*) shows its gradient as the sum of the contributions
on its outgoing edges: the reason its gradient is known only after every consumer has been done.

The sweep here is a second, read-only reverse pass over the recorded nodes that keeps every
cotangent (the engine's own pass frees them as it goes); it uses the same VJP rules from the
primitive table and the engine's ``unbroadcast``, and never touches ``.grad`` or frees the graph.

The SVG comes from Graphviz's ``dot`` program (through the ``graphviz`` Python package when it is
installed); when ``dot`` is missing, ``Drawing.svg`` is ``None`` and ``Drawing.message`` says so,
and the DOT text is still there to render elsewhere.

>>> import numpy as np, chainrule.numpy as cnp
>>> drawing = draw(lambda x: cnp.sum(cnp.tanh(x) * x), np.array([0.5, -1.0]))
>>> [node.op for node in drawing.nodes]
['x', 'tanh', 'multiply', 'sum']
>>> drawing.nodes[0].consumers, drawing.nodes[0].fan_out
(2, True)
>>> drawing.dot.startswith("digraph")
True
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.arraylib import xp
from ..engine.core import raw
from ..engine.reverse import FREED, unbroadcast
from ..engine.tensor import Tensor

__all__ = ["Drawing", "GraphNode", "draw", "summarize"]


def summarize(value, digits: int = 3) -> str:
    """A short text for an array: the numbers when there are at most four, else mean and range."""
    if value is None:
        return "-"
    array = xp.asarray(raw(value))
    if array.size == 0:
        return "[]"
    if array.size == 1:
        return f"{float(array.reshape(())):.{digits}g}"
    if array.size <= 4:
        return "[" + ", ".join(f"{float(v):.{digits}g}" for v in array.ravel()) + "]"
    return (
        f"mean {float(array.mean()):.{digits}g}, "
        f"range [{float(array.min()):.{digits}g}, {float(array.max()):.{digits}g}]"
    )


@dataclass
class GraphNode:
    """One tensor of the drawn graph."""

    id: str
    op: str  # the primitive's name, or the input's name for a leaf, or "const"
    shape: tuple
    value: str
    grad: str
    grad_array: object = None
    consumers: int = 0
    inputs: list = field(default_factory=list)  # ids of the arguments, in order
    leaf: bool = False
    constant: bool = False

    @property
    def fan_out(self) -> bool:
        """Whether several recorded ops consume this node (its gradient is a sum)."""
        return self.consumers > 1


@dataclass
class GraphEdge:
    """``source`` is an argument of ``target``; ``contribution`` is what ``target`` sent back."""

    source: str
    target: str
    contribution: str
    contribution_array: object = None


@dataclass
class Drawing:
    """A drawn graph: the nodes and edges, the DOT text, and the SVG when ``dot`` is installed."""

    nodes: list
    edges: list
    dot: str
    svg: str | None
    message: str = ""

    def node(self, op: str) -> GraphNode:
        """The first node whose op (or input name) is ``op``."""
        for node in self.nodes:
            if node.op == op:
                return node
        raise KeyError(f"Drawing.node: no node named {op!r}; have {[n.op for n in self.nodes]}")

    def save(self, path) -> list[Path]:
        """Write ``path`` with suffix ``.dot`` and, when rendered, ``.svg``; returns the paths."""
        from ..util.files import atomic_write_text

        base = Path(path)
        written = [base.with_suffix(".dot")]
        atomic_write_text(written[0], self.dot)
        if self.svg is not None:
            written.append(base.with_suffix(".svg"))
            atomic_write_text(written[1], self.svg)
        return written

    def _repr_svg_(self):  # shown inline by Jupyter
        return self.svg


def _argument_names(fun, count):
    try:
        names = [
            p.name
            for p in inspect.signature(fun).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        names = []
    names = names[:count]
    return names + [f"arg{i}" for i in range(len(names), count)]


def _trace(fun, args, names):
    """Run ``fun`` on leaf tensors; returns (output tensor, {leaf tensor: name})."""
    if not callable(fun):
        raise TypeError(f"draw: expected a Tensor or a function, got {type(fun).__name__}")
    names = list(names) if names is not None else _argument_names(fun, len(args))
    if len(names) != len(args):
        raise ValueError(f"draw: {len(names)} names for {len(args)} arguments")
    leaves = {}
    tensors = []
    for name, arg in zip(names, args, strict=True):
        array = xp.asarray(raw(arg))
        if not xp.issubdtype(array.dtype, xp.floating):
            array = array.astype(xp.float64)
        leaf = Tensor(array, requires_grad=True)
        leaves[leaf] = name
        tensors.append(leaf)
    out = fun(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(
            "draw: the function must return a Tensor computed from its inputs, got "
            f"{type(out).__name__}"
        )
    return out, leaves


def _topological(root):
    """Tensors reachable from ``root`` (inputs before consumers) and each one's consumer count.

    Depth-first with an explicit stack: a node is placed after all of its arguments are placed
    (marked done when placed, so a node reached again through another path is not repeated).
    """
    consumers = {root: 0}
    order = []
    done = set()
    expanded = set()
    stack = [root]
    while stack:
        node = stack[-1]
        if node in done:
            stack.pop()
            continue
        if node._prim is FREED:
            raise RuntimeError(
                "draw: this tensor's graph was freed by a backward pass; call backward with "
                "retain_graph=True first, or pass the function and its inputs to draw instead"
            )
        if node not in expanded:
            expanded.add(node)
            if node._prim is not None:
                for arg in node._args:
                    if type(arg) is not Tensor:
                        continue
                    consumers[arg] = consumers.get(arg, 0) + 1
                    if arg not in done:
                        stack.append(arg)
            continue
        stack.pop()
        done.add(node)
        order.append(node)
    return order, consumers


def _cotangents(order, root):
    """{tensor: d root / d tensor} and {(arg, consumer): contribution}, by the table's VJP rules."""
    data = raw(root.data)
    grads = {root: xp.ones_like(data)}
    contributions = {}
    for node in reversed(order):
        cotangent = grads.get(node)
        if node._prim is None or cotangent is None:
            continue
        args = node._args
        values = [raw(arg.data) if type(arg) is Tensor else arg for arg in args]
        out = raw(node.data)
        rules = node._prim.vjp
        if type(rules) is tuple:
            results = [
                rules[i](cotangent, out, *values, **node._params)
                if type(arg) is Tensor and arg.requires_grad
                else None
                for i, arg in enumerate(args)
            ]
        else:
            results = list(rules(cotangent, out, *values, **node._params))
        for position, arg in enumerate(args):
            if type(arg) is not Tensor or not arg.requires_grad or results[position] is None:
                continue
            piece = xp.asarray(raw(unbroadcast(results[position], arg.shape)))
            contributions[(id(arg), id(node), position)] = piece
            previous = grads.get(arg)
            grads[arg] = piece if previous is None else previous + piece
    return grads, contributions


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _to_dot(nodes, edges, title):
    lines = [
        "digraph chainrule {",
        "  rankdir=LR;",
        '  node [shape=record, fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    if title:
        lines.append(f'  label="{_quote(title)}"; labelloc=t;')
    for node in nodes:
        shape = "x".join(str(s) for s in node.shape) or "scalar"
        fields = [node.op, f"shape {shape}", f"value {node.value}"]
        if not node.constant:
            fields.append(f"grad {node.grad}")
        if node.fan_out:
            fields.append(f"fan-out {node.consumers}: grad = sum of edges")
        # Left to right, a record's top-level fields stack vertically: one line per field.
        label = "|".join(
            _quote(f).replace("|", "\\|").replace("{", "\\{").replace("}", "\\}") for f in fields
        )
        style = ""
        if node.constant:
            style = ', style=dashed, color="gray50"'
        elif node.fan_out:
            style = ', style=filled, fillcolor="#fde2c8", color="#d9730d", penwidth=2'
        elif node.leaf:
            style = ', style=filled, fillcolor="#dbeafe"'
        lines.append(f'  {node.id} [label="{label}"{style}];')
    for edge in edges:
        label = f' [label="{_quote(edge.contribution)}"]' if edge.contribution else ""
        lines.append(f"  {edge.source} -> {edge.target}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_text: str) -> tuple[str | None, str]:
    """(SVG text, "") from Graphviz's ``dot``, or (None, why not) when it cannot run."""
    try:
        import graphviz  # noqa: PLC0415 (optional)
    except ImportError:
        graphviz = None
    if graphviz is not None:
        try:
            return graphviz.Source(dot_text).pipe(format="svg", encoding="utf-8"), ""
        except graphviz.ExecutableNotFound:
            return None, _missing_dot_message()
        except graphviz.CalledProcessError as error:
            return None, f"draw: Graphviz's dot failed ({error}); the DOT text is in Drawing.dot"
    program = shutil.which("dot")
    if program is None:
        return None, _missing_dot_message()
    completed = subprocess.run(
        [program, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=60, check=False
    )
    if completed.returncode != 0:
        return (
            None,
            f"draw: Graphviz's dot failed: {completed.stderr.strip()}; the DOT text is in "
            "Drawing.dot",
        )
    return completed.stdout, ""


def _missing_dot_message():
    return (
        "draw: Graphviz's `dot` program is not installed, so no SVG was made; the DOT text is in "
        "Drawing.dot (install it with `apt-get install graphviz` or scripts/setup_browser.sh)"
    )


def draw(tensor_or_fun, *args, names=None, title: str = "", svg: bool = True) -> Drawing:
    """Draw the graph that produced a tensor, with each node's op, shape, value and gradient.

    ``draw(fun, x, y)`` records ``fun(x, y)`` with ``x`` and ``y`` as leaves (named after
    ``fun``'s parameters, or ``names``); ``draw(tensor)`` draws a graph already recorded (not yet
    freed by a backward pass). Gradients are of the output (its sum, when not a scalar) with
    respect to each node. ``svg=False`` skips running ``dot``.
    """
    if isinstance(tensor_or_fun, Tensor):
        if args:
            raise TypeError(
                "draw(tensor) takes no further arguments; use draw(fun, *args) to trace a function"
            )
        root, leaf_names = tensor_or_fun, {}
    else:
        root, leaf_names = _trace(tensor_or_fun, args, names)
    order, consumers = _topological(root)
    grads, contributions = _cotangents(order, root) if root.requires_grad else ({}, {})
    ids = {node: f"n{i}" for i, node in enumerate(order)}
    nodes = []
    edges = []
    constants = 0
    for node in order:
        is_leaf = node._prim is None
        constant = is_leaf and not node.requires_grad
        if is_leaf:
            op = leaf_names.get(node) or (
                "const" if constant else f"input{len([n for n in nodes if n.leaf])}"
            )
        else:
            op = node._prim.name
        grad = grads.get(node)
        nodes.append(
            GraphNode(
                id=ids[node],
                op=op,
                shape=tuple(node.shape),
                value=summarize(node.data),
                grad=summarize(grad) if not constant else "-",
                grad_array=None if grad is None else xp.asarray(grad),
                consumers=consumers.get(node, 0),
                leaf=is_leaf,
                constant=constant,
            )
        )
    by_id = {n.id: n for n in nodes}
    for node in order:
        if node._prim is None:
            continue
        for position, arg in enumerate(node._args):
            if type(arg) is Tensor:
                source = ids[arg]
            else:  # a plain array or number: a constant node of its own
                source = f"c{constants}"
                constants += 1
                nodes.append(
                    GraphNode(
                        id=source,
                        op="const",
                        shape=tuple(xp.shape(raw(arg))),
                        value=summarize(arg),
                        grad="-",
                        consumers=1,
                        leaf=True,
                        constant=True,
                    )
                )
            by_id[ids[node]].inputs.append(source)
            piece = contributions.get((id(arg), id(node), position))
            edges.append(
                GraphEdge(source, ids[node], "" if piece is None else summarize(piece), piece)
            )
    dot_text = _to_dot(nodes, edges, title)
    svg_text, message = (
        render_svg(dot_text) if svg else (None, "draw: SVG not requested (svg=False)")
    )
    return Drawing(nodes=nodes, edges=edges, dot=dot_text, svg=svg_text, message=message)
