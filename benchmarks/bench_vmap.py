"""Per-example gradients, five ways: chainrule.vmap (jitted or not), a loop of grad, PyTorch, hand.

Run with ``python benchmarks/bench_vmap.py [--quick]``. The digits MLP (64-256-256-10, ReLU,
softmax cross-entropy, float32) and a batch of 128 examples; the loss is written for ONE example
(``x`` of shape (64,), ``y`` one integer label), and each contender returns the gradient of
every example's loss with respect to every parameter (a params dict of arrays with a leading
batch axis of 128):

* by hand in NumPy: the batch's forward pass, then the backward formulas with the per-example
  weight gradients as one batched outer product each (``einsum("bi,bj->bij")``), the floor;
* ``chainrule.vmap(chainrule.grad(loss), in_axes=(None, 0, 0))(params, x, y)``: one pass over
  the batch, every primitive through its batching rule;
* the same under ``chainrule.jit``: staged once, then replayed as one compiled program;
* a Python loop of ``chainrule.grad(loss)`` over the 128 examples, stacked: what vmap replaces;
* ``torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))`` when PyTorch is installed
  (an optional peer, ``make bench-peers``); without it its row is skipped, with a line saying so.

Method: as ``bench_step_peers``: one thread everywhere (``bench_engine`` pins the core and sets
the thread variables before NumPy loads; torch is told one thread too), contenders interleaved
in every repetition, figures are medians, ratios are medians of per-repetition ratios. Before
timing, the vmap and loop gradients are checked equal to rounding (the largest difference is
printed), and every contender is checked against the hand-written gradients.
"""

from __future__ import annotations

import argparse
import sys

# isort: off
import bench_engine  # noqa: F401  (first: it sets one thread and pins a core before NumPy loads)

# isort: on
import numpy as np

import chainrule as cr
import chainrule.numpy as cnp
from bench_engine import measure, median, named_mlp_logits, paired_ratio, print_table, torch

SIZES, BATCH = (64, 256, 256, 10), 128
RTOL, ATOL = 2e-4, 2e-6  # float32 gradients, summed in different orders


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=False)):
        scale = np.float32(1 / np.sqrt(fan_in))
        params[f"w{i}"] = rng.standard_normal((fan_in, fan_out)).astype(np.float32) * scale
        params[f"b{i}"] = rng.standard_normal(fan_out).astype(np.float32) * np.float32(0.1)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    return params, x, y


# -- by hand -------------------------------------------------------------------------------------


def hand_per_example_grads(params, x, y):
    """d loss_b / d params for every example b: the batch's forward and backward passes, with the
    per-example weight gradient as the outer product of a layer's input and its delta."""
    layers = len(params) // 2
    activations, h = [x], x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = np.maximum(h, 0)
        activations.append(h)
    exp = np.exp(h - h.max(axis=1, keepdims=True))
    delta = exp / exp.sum(axis=1, keepdims=True)  # softmax - onehot: d loss_b / d logits_b
    delta[np.arange(len(y)), y] -= 1
    grads = {}
    for i in reversed(range(layers)):
        grads[f"w{i}"] = np.einsum("bi,bj->bij", activations[i], delta)
        grads[f"b{i}"] = delta
        if i:
            delta = (delta @ params[f"w{i}"].T) * (activations[i] > 0)
    return grads


# -- chainrule -----------------------------------------------------------------------------------


def chainrule_loss(params, x, y):
    """The loss of ONE example: ``x`` of shape (64,), ``y`` one integer label."""
    h = named_mlp_logits(params, x, cnp.relu)
    return cnp.softmax_cross_entropy(h, y)


def chainrule_vmap():
    return cr.vmap(cr.grad(chainrule_loss), in_axes=(None, 0, 0))


def chainrule_loop():
    gradient = cr.grad(chainrule_loss)

    def per_example(params, x, y):
        grads = [gradient(params, x[b], y[b]) for b in range(len(y))]
        return {key: np.stack([g[key] for g in grads]) for key in params}

    return per_example


# -- PyTorch -------------------------------------------------------------------------------------


def torch_vmap():
    def loss_of(params, x, y):
        h = named_mlp_logits(params, x, torch.relu)
        return torch.nn.functional.cross_entropy(h, y)  # one example: (10,) logits, () label

    per_example = torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))

    def run(params, x, y):
        with torch.no_grad():
            return per_example(params, x, y)

    return run


# -- the run -------------------------------------------------------------------------------------


def contenders_for(params, x, y):
    """{name: (per-example gradient function, its params, its x, its y)}."""
    contenders = {
        "hand NumPy": (hand_per_example_grads, params, x, y),
        "chainrule vmap(grad)": (chainrule_vmap(), params, x, y),
        "chainrule jit(vmap(grad))": (cr.jit(chainrule_vmap()), params, x, y),
        "chainrule loop of grad": (chainrule_loop(), params, x, y),
    }
    if torch is not None:
        tp = {k: torch.tensor(v) for k, v in params.items()}
        contenders["torch.func vmap(grad)"] = (torch_vmap(), tp, torch.tensor(x), torch.tensor(y))
    return contenders


def check(contenders):
    """Every contender's per-example gradients match the hand-written ones; vmap's match the
    loop's to rounding; returns the largest difference between those two."""
    got = {name: fn(p, cx, cy) for name, (fn, p, cx, cy) in contenders.items()}
    expected = got["hand NumPy"]
    for name, grads in got.items():
        for key in expected:
            value = np.asarray(grads[key])
            assert value.shape == (BATCH, *contenders["hand NumPy"][1][key].shape), (name, key)
            np.testing.assert_allclose(
                value, expected[key], rtol=RTOL, atol=ATOL, err_msg=f"{name}: {key}"
            )
    vmapped, looped = got["chainrule vmap(grad)"], got["chainrule loop of grad"]
    for key in expected:
        np.testing.assert_allclose(
            vmapped[key], looped[key], rtol=RTOL, atol=ATOL, err_msg=f"vmap vs loop: {key}"
        )
    return max(float(np.max(np.abs(vmapped[key] - looped[key]))) for key in expected)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    args = parser.parse_args(argv)
    repeats, budget = (3, 0.05) if args.quick else (9, 0.2)
    if torch is not None:
        torch.set_num_threads(1)
    params, x, y = make_problem()
    contenders = contenders_for(params, x, y)
    difference = check(contenders)
    print(f"vmap(grad) vs loop of grad: largest difference {difference:.3g} (allclose: yes)")
    if torch is None:
        print("torch.func vmap(grad): PyTorch not installed (`make bench-peers`); row skipped")
    calls = {name: (lambda c=c: c[0](c[1], c[2], c[3])) for name, c in contenders.items()}
    samples = measure(calls, repeats, budget)
    rows = [
        [
            name,
            f"{median(samples[name]) * 1e3:.3f}",
            f"{paired_ratio(samples, name, 'hand NumPy'):.2f}",
        ]
        for name in calls
    ]
    print_table(
        f"Per-example gradients, digits MLP 64-256-256-10, batch {BATCH}, float32, one thread "
        f"(medians of {repeats} interleaved repetitions)",
        ["contender", "ms", "÷ hand NumPy"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
