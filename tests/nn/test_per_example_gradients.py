"""Per-example gradients of ``nn`` models: ``vmap(grad)`` over a functional ``model.apply``
equals a loop of ``grad`` over the examples, for every activation and with LayerNorm."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule import nn

RNG = np.random.default_rng(0)
X, LABELS = RNG.normal(size=(5, 8)), RNG.integers(0, 4, 5)


def _models():
    for activation in ("relu", "tanh", "gelu", "sigmoid"):
        yield activation, nn.MLP([8, 6, 4], activation=activation, seed=1)
    yield "layernorm", nn.Sequential(nn.Linear(8, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 4))


@pytest.mark.parametrize(("name", "model"), list(_models()), ids=[n for n, _ in _models()])
def test_vmap_of_grad_over_a_model_equals_a_loop(name, model):
    params = model.parameters()

    def loss(params, x, label):  # one example
        return cnp.softmax_cross_entropy(model.apply(params, x), label)

    per_example = cr.vmap(cr.grad(loss), in_axes=(None, 0, 0))(params, X, LABELS)
    looped = [cr.grad(loss)(params, x, label) for x, label in zip(X, LABELS, strict=True)]
    for i, leaf in enumerate(cr.tree_leaves(per_example)):
        expected = np.stack([cr.tree_leaves(tree)[i] for tree in looped])
        np.testing.assert_allclose(leaf, expected, rtol=1e-12, atol=1e-14)
