"""chainrule.apps.viz.draw: the drawn graph's structure, values and gradients, and the DOT/SVG
output."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.apps import viz


def fanout(w, x):
    h = cnp.tanh(w * x)
    return cnp.sum(cnp.sin(h) + 3.0 * h + cnp.exp(-h))


W = np.array([0.3, -0.7])
X = np.array([1.5, 0.5])


def test_nodes_carry_op_shape_value_and_gradient_of_every_node():
    drawing = viz.draw(fanout, W, X, svg=False)
    ops = [node.op for node in drawing.nodes if not node.constant]
    assert ops[:2] in (["w", "x"], ["x", "w"])
    assert {"multiply", "tanh", "sin", "exp", "negative", "add", "sum"} <= set(ops)
    tanh = drawing.node("tanh")
    assert tanh.shape == (2,)
    h = np.tanh(W * X)
    np.testing.assert_allclose(tanh.grad_array, np.cos(h) + 3.0 - np.exp(-h), rtol=1e-12)
    assert tanh.value == viz.summarize(h)
    assert drawing.node("sum").grad == "1"


def test_leaf_gradients_equal_the_engines_gradient():
    drawing = viz.draw(fanout, W, X, svg=False)
    grad_w, grad_x = cr.grad(fanout, argnums=(0, 1))(W, X)
    np.testing.assert_allclose(drawing.node("w").grad_array, grad_w, rtol=1e-12)
    np.testing.assert_allclose(drawing.node("x").grad_array, grad_x, rtol=1e-12)


def test_fan_out_gradient_is_the_sum_of_the_outgoing_edges():
    drawing = viz.draw(fanout, W, X, svg=False)
    tanh = drawing.node("tanh")
    assert tanh.consumers == 3 and tanh.fan_out
    outgoing = [edge.contribution_array for edge in drawing.edges if edge.source == tanh.id]
    assert len(outgoing) == 3
    np.testing.assert_allclose(sum(outgoing), tanh.grad_array, rtol=1e-12)
    assert "fan-out 3" in drawing.dot


def test_topological_order_puts_every_input_before_its_consumer():
    # y consumes x and the root consumes both: a naive "seen on push" walk gets this wrong.
    def f(x):
        y = x * 2.0
        return cnp.sum(x + y)

    drawing = viz.draw(f, np.ones(3), svg=False)
    position = {node.id: i for i, node in enumerate(drawing.nodes)}
    for node in drawing.nodes:
        for source in node.inputs:
            if not source.startswith("c"):
                assert position[source] < position[node.id]


def test_draw_a_recorded_tensor_and_leave_its_graph_usable():
    x = cr.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = cnp.sum(x * x)
    drawing = viz.draw(loss, svg=False)
    np.testing.assert_allclose(drawing.nodes[0].grad_array, [2.0, 4.0])
    assert x.grad is None  # draw does not touch .grad
    loss.backward()  # and the graph was not freed
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


def test_a_freed_graph_is_refused_with_a_clear_message():
    x = cr.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = cnp.sum(cnp.tanh(x))
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        viz.draw(loss)


def test_deep_chain_needs_no_recursion():
    def chain(x):
        for _ in range(3000):
            x = x * 1.0001
        return cnp.sum(x)

    drawing = viz.draw(chain, np.ones(1), svg=False)
    assert len(drawing.nodes) >= 3001


def test_svg_when_dot_is_installed_else_dot_text_and_a_message(monkeypatch, tmp_path):
    drawing = viz.draw(fanout, W, X)
    if shutil.which("dot"):
        assert drawing.svg is not None and "<svg" in drawing.svg
        paths = drawing.save(tmp_path / "graph")
        assert [p.suffix for p in paths] == [".dot", ".svg"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = viz.draw(fanout, W, X)
    assert missing.svg is None
    assert "dot" in missing.message and "not installed" in missing.message
    assert missing.dot.startswith("digraph")
    assert [p.suffix for p in missing.save(tmp_path / "fallback")] == [".dot"]
