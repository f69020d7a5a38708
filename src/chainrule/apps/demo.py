"""The main job of the README: why backprop? One gradient of a small MLP loss, two ways.

Builds an MLP on scikit-learn-free synthetic data (no download), computes the gradient of its
softmax cross-entropy loss by reverse mode (one backward pass) and by central finite differences
(two loss evaluations per weight), and prints both, how far apart they are, and what each cost.
"""

from __future__ import annotations

import time

from .. import numpy as cnp
from ..engine.arraylib import xp
from ..transforms.api import value_and_grad
from ..transforms.numerical import numerical_grad
from ..transforms.pytree import ravel_pytree


def init_mlp(sizes, rng, dtype=xp.float64):
    """Glorot-uniform weights, zero biases, as a pytree {"layers": [{"w", "b"}, ...]}."""
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = (6.0 / (fan_in + fan_out)) ** 0.5
        w = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)
        layers.append({"w": w, "b": xp.zeros(fan_out, dtype=dtype)})
    return {"layers": layers}


def mlp_loss(params, inputs, labels):
    """Mean softmax cross-entropy of a tanh MLP."""
    hidden = inputs
    layers = params["layers"]
    for layer in layers[:-1]:
        hidden = cnp.tanh(hidden @ layer["w"] + layer["b"])
    logits = hidden @ layers[-1]["w"] + layers[-1]["b"]
    return cnp.mean(cnp.softmax_cross_entropy(logits, labels))


def _timed(fn, repeats):
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def run_demo(hidden=(32, 16), seed=0, features=8, classes=3, examples=64) -> int:
    rng = xp.random.default_rng(seed)
    inputs = rng.standard_normal((examples, features))
    labels = rng.integers(0, classes, size=examples)
    params = init_mlp((features, *hidden, classes), rng)
    theta, unravel = ravel_pytree(params)
    count = theta.size

    (loss, grads), t_reverse = _timed(lambda: value_and_grad(mlp_loss)(params, inputs, labels), 5)
    _, t_loss = _timed(lambda: mlp_loss(params, inputs, labels), 5)
    numeric, t_numeric = _timed(
        lambda: numerical_grad(lambda p: mlp_loss(p, inputs, labels), params), 1
    )

    g_rev, _ = ravel_pytree(grads)
    g_num, _ = ravel_pytree(numeric)
    error = float(xp.max(xp.abs(g_rev - g_num)) / max(1e-300, float(xp.max(xp.abs(g_num)))))
    sizes = "-".join(str(s) for s in (features, *hidden, classes))
    print(f"chainrule demo: MLP {sizes}, {count} weights, batch {examples}, float64")
    print(f"loss = {float(loss):.6f}")
    print(f"{'method':<28}{'time':>12}{'loss evals':>12}{'x one loss':>12}")
    print(
        f"{'reverse mode (backprop)':<28}{t_reverse * 1e3:>10.3f}ms{'~3':>12}{t_reverse / t_loss:>12.1f}"
    )
    print(
        f"{'central finite differences':<28}{t_numeric * 1e3:>10.1f}ms{2 * count:>12}{t_numeric / t_loss:>12.0f}"
    )
    print(f"max |reverse - finite diff| / max |grad| = {error:.2e}")
    print("first weights' gradient, reverse:    ", " ".join(f"{v:+.6f}" for v in g_rev[:5]))
    print("first weights' gradient, finite diff:", " ".join(f"{v:+.6f}" for v in g_num[:5]))
    ok = error < 1e-6
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1
