"""Does replaying a captured training step beat running it eagerly, on the CPU?

Run with ``python benchmarks/bench_capture.py [--quick]``. For each MLP (ReLU hidden layers, fused
softmax cross-entropy, plain SGD, float32) it times one training step three ways:

* eager: ``chainrule.value_and_grad`` of the loss, then the update, every step;
* captured: the same step function under ``chainrule.backend.capture.capture``, replayed;
* by hand: forward and backward written in NumPy (the floor: no autodiff at all).

Method: one BLAS thread (threadpoolctl), contenders timed in interleaved repetitions, each figure
the median over repetitions, each ratio the median of the per-repetition ratios. Before timing,
the captured step's parameters after three steps are checked against the eager ones.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.backend.capture import capture

MLPS = {  # name: (layer widths, batch size)
    "tiny 64-32-10 b32": ((64, 32, 10), 32),
    "digits 64-256-256-10 b128": ((64, 256, 256, 10), 128),
}
LEARNING_RATE = 0.01
DTYPE = np.float32


def make_problem(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(DTYPE)
        params[f"b{i}"] = np.zeros(fan_out, DTYPE)
    x = rng.standard_normal((batch, sizes[0])).astype(DTYPE)
    y = rng.integers(0, sizes[-1], batch)
    return params, x, y


def loss(params, x, y):
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = cnp.maximum(h, 0)
    return cnp.mean(cnp.softmax_cross_entropy(h, y))


def eager_step(params, x, y):
    value, grads = cr.value_and_grad(loss)(params, x, y)
    return {k: params[k] - LEARNING_RATE * grads[k] for k in params}, value


def hand_step(params, x, y):
    """Forward and backward derived on paper, plain NumPy."""
    layers = len(params) // 2
    activations = [x]
    h = x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = np.maximum(h, 0)
        activations.append(h)
    logits = h
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    value = np.mean(np.log(total[:, 0]) - shifted[rows, y])
    grad_h = exp / total
    grad_h[rows, y] -= 1
    grad_h /= len(y)
    new = {}
    for i in reversed(range(layers)):
        new[f"w{i}"] = params[f"w{i}"] - LEARNING_RATE * (activations[i].T @ grad_h)
        new[f"b{i}"] = params[f"b{i}"] - LEARNING_RATE * grad_h.sum(axis=0)
        if i:
            grad_h = (grad_h @ params[f"w{i}"].T) * (activations[i] > 0)
    return new, value


def _calls_for(fn, budget):
    fn()
    start = time.perf_counter()
    fn()
    return max(1, int(budget / max(time.perf_counter() - start, 1e-7)))


def time_interleaved(contenders, repetitions, budget):
    """{name: [seconds per call, one per repetition]} with the contenders interleaved."""
    counts = {name: _calls_for(fn, budget) for name, fn in contenders.items()}
    times = {name: [] for name in contenders}
    for _ in range(repetitions):
        for name, fn in contenders.items():
            count = counts[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            times[name].append((time.perf_counter() - start) / count)
    return times


def check_same_training(captured, params, x, y):
    eager, replayed = params, params
    for _ in range(3):
        eager, eager_loss = eager_step(eager, x, y)
        replayed, replayed_loss = captured(replayed, x, y)
    np.testing.assert_allclose(replayed_loss, eager_loss, rtol=1e-5)
    for key in eager:
        np.testing.assert_allclose(replayed[key], eager[key], rtol=1e-4, atol=1e-6)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    args = parser.parse_args(argv)
    repetitions, budget = (7, 0.05) if args.quick else (15, 0.2)
    print(
        f"chainrule capture benchmark: numpy {np.__version__}, python {sys.version.split()[0]}, "
        f"one BLAS thread, {repetitions} interleaved repetitions, median ms per SGD step (float32)"
    )
    header = (
        f"{'MLP':28s} {'by hand':>8s} {'eager':>8s} {'captured':>9s} {'eager/captured':>15s} "
        f"{'captured/hand':>14s} {'tape calls':>11s}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    with threadpool_limits(limits=1):
        for name, (sizes, batch) in MLPS.items():
            params, x, y = make_problem(sizes, batch)
            captured = capture(eager_step, (params, x, y))
            check_same_training(captured, params, x, y)
            tape_calls = len(next(iter(captured.tapes.values())).calls)
            contenders = {
                "hand": lambda params=params, x=x, y=y: hand_step(params, x, y),
                "eager": lambda params=params, x=x, y=y: eager_step(params, x, y),
                "captured": lambda step=captured, params=params, x=x, y=y: step(params, x, y),
            }
            gc.collect()
            times = time_interleaved(contenders, repetitions, budget)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            speedup = statistics.median(
                e / c for e, c in zip(times["eager"], times["captured"], strict=True)
            )
            pairs = zip(times["captured"], times["hand"], strict=True)
            over_hand = statistics.median(captured_time / hand for captured_time, hand in pairs)
            rows.append((name, speedup))
            print(
                f"{name:28s} {med['hand']:8.3f} {med['eager']:8.3f} {med['captured']:9.3f} "
                f"{speedup:14.2f}x {over_hand:13.2f}x {tape_calls:11d}"
            )
    print()
    for name, speedup in rows:
        verdict = "replay is faster: keep it" if speedup > 1.05 else "no gain: run eagerly"
        print(f"{name}: {verdict} ({speedup:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
