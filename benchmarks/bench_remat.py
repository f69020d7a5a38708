"""What does checkpointing (``chainrule.checkpoint``) save, and what does it cost?

Run with ``python benchmarks/bench_remat.py [--quick] [--depths 8,16,32,48]``. A tanh MLP of
``L`` layers (width 128, batch 1024, float64; loss the mean square of the output) is
differentiated with ``chainrule.grad`` two ways:

* plain: backprop stores every layer's activations until the backward pass reads them;
* checkpointed: the layers run as about √L segments under ``chainrule.checkpoint``, so only the
  segment inputs are stored, and each segment is recomputed during the backward pass.

Method: one BLAS thread (threadpoolctl); the two contenders alternate in every repetition
(interleaved); peak memory is ``tracemalloc``'s peak over one gradient (NumPy reports its
allocations to it), time is ``time.perf_counter`` over one gradient in separate runs without
tracing; each figure is the median over repetitions, each ratio the median of per-repetition
ratios. Before measuring, the two gradients are checked equal bit for bit.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_limits

import chainrule as cr
import chainrule.numpy as cnp

WIDTH, BATCH = 128, 1024


def make_problem(depth, seed=0):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(WIDTH, WIDTH)) / math.sqrt(WIDTH) for _ in range(depth)]
    return weights, rng.normal(size=(BATCH, WIDTH))


def layers(weights, x):
    for w in weights:
        x = cnp.tanh(x @ w)
    return x


def loss_fn(segments):
    def loss(weights, x):
        if segments <= 1:
            return cnp.mean(layers(weights, x) ** 2)
        size = -(-len(weights) // segments)
        for start in range(0, len(weights), size):
            x = cr.checkpoint(layers)(weights[start : start + size], x)
        return cnp.mean(x**2)

    return cr.grad(loss)


def peak_bytes(gradient, weights, x):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    gradient(weights, x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def seconds(gradient, weights, x):
    gc.collect()
    start = time.perf_counter()
    gradient(weights, x)
    return time.perf_counter() - start


def measure(depth, repeats):
    weights, x = make_problem(depth)
    segments = max(1, round(math.sqrt(depth)))
    plain, checked = loss_fn(1), loss_fn(segments)
    for a, b in zip(plain(weights, x), checked(weights, x), strict=True):
        np.testing.assert_array_equal(a, b)
    mem = {"plain": [], "checked": []}
    tim = {"plain": [], "checked": []}
    for _ in range(repeats):
        for name, gradient in (("plain", plain), ("checked", checked)):
            mem[name].append(peak_bytes(gradient, weights, x))
        for name, gradient in (("plain", plain), ("checked", checked)):
            tim[name].append(seconds(gradient, weights, x))
    mem_ratio = statistics.median(c / p for c, p in zip(mem["checked"], mem["plain"], strict=True))
    time_ratio = statistics.median(c / p for c, p in zip(tim["checked"], tim["plain"], strict=True))
    return {
        "depth": depth,
        "segments": segments,
        "plain_mb": statistics.median(mem["plain"]) / 2**20,
        "checked_mb": statistics.median(mem["checked"]) / 2**20,
        "mem_ratio": mem_ratio,
        "plain_s": statistics.median(tim["plain"]),
        "checked_s": statistics.median(tim["checked"]),
        "time_ratio": time_ratio,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    parser.add_argument("--depths", default="48", help="comma-separated depths (default 48)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    print(f"tanh MLP, width {WIDTH}, batch {BATCH}, float64; medians of {repeats} interleaved runs")
    print(
        "| depth L | segments | peak plain (MiB) | peak checkpointed (MiB) | memory ratio | "
        "time plain (s) | time checkpointed (s) | time ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with threadpool_limits(1):
        for depth in (int(d) for d in args.depths.split(",")):
            r = measure(depth, repeats)
            print(
                f"| {r['depth']} | {r['segments']} | {r['plain_mb']:.1f} | {r['checked_mb']:.1f} "
                f"| {r['mem_ratio']:.2f}x | {r['plain_s']:.3f} | {r['checked_s']:.3f} "
                f"| {r['time_ratio']:.2f}x |"
            )


if __name__ == "__main__":
    main()
