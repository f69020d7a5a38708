"""Forward mode against reverse mode, measured, and how well ``jacobian(mode="auto")`` chooses.

Run with ``python benchmarks/bench_modes.py`` (about two minutes; ``--quick`` for a smaller run).
One run prints:

(a) the full gradient of an MLP loss with P parameters, P = 1e2 ... 1e5, by reverse mode (one
    VJP) and by forward mode (P JVPs, pushed ``CHUNK`` directions per batched pass), with the
    FLOPs each spent (``chainrule.count``). Where the forward run would take too long, its time and
    FLOPs are extrapolated from a sample of its passes spread evenly over the parameters (marked);
(b) jacfwd, jacrev and jacobian(mode="auto") on a tall (10 -> 1000) and a wide (1000 -> 10)
    network; auto both on a first call (its recording and cost model included) and once decided;
(c) a grid of shapes n -> m for two function families: for each, jacfwd and jacrev are timed and
    the cost model's pick is compared with the faster one (target: right in at least 90%);
(d) the cost model's constants as measured on this machine, next to the values it uses.

Method: one thread. Contenders of one measurement are
timed in interleaved repetitions (A, B, A, B, ...) so that a slow moment hits both alike; every
figure is a median over repetitions, every ratio the median of the ratios within repetitions.
"""

from __future__ import annotations

import os

# One thread everywhere, set before NumPy (and its BLAS) is imported. (Not pinned to a core: on a
# shared machine a pinned process cannot move away from a busy core.)
for _variable in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import chainrule as cr  # noqa: E402
import chainrule.numpy as cnp  # noqa: E402
from chainrule.transforms import cost  # noqa: E402
from chainrule.transforms.jacobians import _flat_inputs, _layout, _push_chunk  # noqa: E402

CHUNK = 128  # forward-mode directions per batched pass in (a)


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def measure(contenders, repeats=7, budget=0.02):
    """{name: [seconds per call, one per repetition]}, contenders interleaved."""
    numbers = {}
    for name, fn in contenders.items():
        fn()
        start = time.perf_counter()
        fn()
        numbers[name] = max(1, int(budget / max(time.perf_counter() - start, 1e-7)))
    samples = {name: [] for name in contenders}
    gc.collect()
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / numbers[name])
    return samples


def median(values):
    return statistics.median(values)


def ratio(samples, numerator, denominator):
    return median([a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)])


def fmt_seconds(seconds):
    if seconds >= 1:
        return f"{seconds:8.2f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.1f} us"


# ------------------------------------------------------------------------------------------------
# (a) a full gradient by forward and by reverse mode
# ------------------------------------------------------------------------------------------------

BATCH = 32
MLP_SIZES = [(8, 8, 4), (20, 32, 10), (64, 128, 10), (300, 300, 10)]  # (inputs, hidden, classes)


def mlp_problem(inputs, hidden, classes, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.standard_normal((inputs, hidden)) / math.sqrt(inputs),
        "b1": np.zeros(hidden),
        "w2": rng.standard_normal((hidden, classes)) / math.sqrt(hidden),
        "b2": np.zeros(classes),
    }
    x = rng.standard_normal((BATCH, inputs))
    labels = rng.integers(0, classes, BATCH)

    def loss(p):
        hidden_out = cnp.tanh(x @ p["w1"] + p["b1"])
        return cnp.mean(cnp.softmax_cross_entropy(hidden_out @ p["w2"] + p["b2"], labels))

    return params, loss


def forward_gradient_sampled(loss, params, samples):
    """Time and FLOPs of forward mode's full gradient, estimated from ``samples`` of its passes
    spread evenly over the parameters: total = number of passes x mean per pass."""
    arg_defs, leaves = _flat_inputs((params,), (0,), "bench")
    _, offsets, total = _layout([leaf.shape for leaf in leaves])
    starts = list(range(0, total, CHUNK))
    picked = [starts[int(i * len(starts) / samples)] for i in range(samples)]
    seconds, flops = [], []
    for start in picked:
        stop = min(start + CHUNK, total)
        with cr.count() as counter:
            began = time.perf_counter()
            _push_chunk(loss, (params,), (0,), arg_defs, leaves, offsets, start, stop)
            seconds.append(time.perf_counter() - began)
        flops.append(counter.flops)
    passes = len(starts)
    return passes * median(seconds), passes * int(np.mean(flops)), passes


def bench_gradient(quick):
    print(
        "(a) Full gradient of an MLP loss (batch 32): forward mode (P JVPs, batched) vs reverse "
        "mode"
    )
    print(
        f"    forward mode pushes {CHUNK} directions per pass; '~' marks figures extrapolated "
        "from a sample"
    )
    print(
        f"{'P':>8} {'reverse':>12} {'forward':>13} {'fwd/rev time':>13} {'rev FLOPs':>14} "
        f"{'fwd FLOPs':>15} "
        f"{'fwd/rev FLOPs':>14}"
    )
    rows = []
    sizes = MLP_SIZES[:3] if quick else MLP_SIZES
    for inputs, hidden, classes in sizes:
        params, loss = mlp_problem(inputs, hidden, classes)
        n_params = sum(v.size for v in params.values())
        reverse = lambda loss=loss, params=params: cr.grad(loss)(params)
        forward = lambda loss=loss, params=params: cr.jacfwd(loss, chunk_size=CHUNK)(params)
        extrapolated = n_params > 20000
        if not extrapolated:  # the two gradients must agree before their speeds mean anything
            np.testing.assert_allclose(
                cr.ravel_pytree(forward())[0], cr.ravel_pytree(reverse())[0], rtol=1e-8, atol=1e-10
            )
        with cr.count() as rev_count:
            reverse()
        if extrapolated:
            rev_time = median(measure({"rev": reverse}, repeats=5)["rev"])
            fwd_time, fwd_flops, _ = forward_gradient_sampled(
                loss, params, samples=6 if quick else 12
            )
        else:
            with cr.count() as fwd_count:
                forward()
            fwd_flops = fwd_count.flops
            samples = measure({"rev": reverse, "fwd": forward}, repeats=5, budget=0.05)
            rev_time, fwd_time = median(samples["rev"]), median(samples["fwd"])
        mark = "~" if extrapolated else " "
        print(
            f"{n_params:>8,} {fmt_seconds(rev_time):>12} {mark}{fmt_seconds(fwd_time):>12} "
            f"{mark}{fwd_time / rev_time:>11,.0f}x {rev_count.flops:>14,} {mark}{fwd_flops:>14,} "
            f"{mark}{fwd_flops / rev_count.flops:>12,.0f}x"
        )
        rows.append((n_params, rev_time, fwd_time, rev_count.flops, fwd_flops, extrapolated))
    print()
    return rows


# ------------------------------------------------------------------------------------------------
# (b) tall and wide Jacobians
# ------------------------------------------------------------------------------------------------


def network(n_in, n_out, hidden=256, seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((hidden, n_in)) / math.sqrt(n_in)
    w2 = rng.standard_normal((n_out, hidden)) / math.sqrt(hidden)
    return lambda x: cnp.tanh(w2 @ cnp.tanh(w1 @ x))


def bench_tall_wide():
    print(
        "(b) jacfwd vs jacrev vs jacobian(mode='auto'): auto on a first call (recording and cost "
        "model"
    )
    print("    included) and once it has decided; ratios against the faster of jacfwd and jacrev")
    print(
        f"{'shape':>14} {'jacfwd':>12} {'jacrev':>12} {'auto, 1st':>12} {'auto':>12} {'picks':>6} "
        f"{'rev/fwd':>9} {'1st/best':>9} {'auto/best':>10}"
    )
    rows = []
    for n_in, n_out in ((10, 1000), (1000, 10)):
        f = network(n_in, n_out)
        x = np.random.default_rng(1).standard_normal(n_in)
        np.testing.assert_allclose(cr.jacfwd(f)(x), cr.jacrev(f)(x), rtol=1e-9, atol=1e-12)
        decided = cr.jacobian(f)
        samples = measure(
            {
                "fwd": lambda f=f, x=x: cr.jacfwd(f)(x),
                "rev": lambda f=f, x=x: cr.jacrev(f)(x),
                "first": lambda f=f, x=x: cr.jacobian(f)(x),
                "auto": lambda decided=decided, x=x: decided(x),
            },
            repeats=7,
        )
        pick = cr.explain_jacobian(f, x).mode
        best = "fwd" if median(samples["fwd"]) < median(samples["rev"]) else "rev"
        print(
            f"{f'{n_in} -> {n_out}':>14} {fmt_seconds(median(samples['fwd'])):>12} "
            f"{fmt_seconds(median(samples['rev'])):>12} "
            f"{fmt_seconds(median(samples['first'])):>12} "
            f"{fmt_seconds(median(samples['auto'])):>12} {pick:>6} "
            f"{ratio(samples, 'rev', 'fwd'):>8.2f}x "
            f"{ratio(samples, 'first', best):>8.2f}x {ratio(samples, 'auto', best):>9.2f}x"
        )
        rows.append((n_in, n_out, samples, pick))
    print()
    return rows


# ------------------------------------------------------------------------------------------------
# (c) does auto pick the faster mode?
# ------------------------------------------------------------------------------------------------


def deep_narrow(n_in, n_out, seed=0):
    """Six layers of width 16 with a layer norm in between: many small ops, overhead-bound."""
    rng = np.random.default_rng(seed)
    widths = [n_in, 16, 16, 16, 16, 16, n_out]
    weights = [
        rng.standard_normal((b, a)) / math.sqrt(a)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]

    def f(x):
        for w in weights[:-1]:
            x = cnp.tanh(w @ x)
            x = (x - cnp.mean(x)) / cnp.sqrt(cnp.var(x) + 1e-3)
        return weights[-1] @ x

    return f


FAMILIES = {
    "2-layer, hidden 64": lambda n, m: network(n, m, hidden=64),
    "6-layer, width 16": deep_narrow,
}


def bench_grid(quick):
    sizes = [1, 4, 16, 64, 256] if quick else [1, 4, 16, 64, 256, 1024]
    print(f"(c) Does auto pick the faster mode? n, m in {sizes}; times of jacfwd / jacrev")
    results = []
    for family, make in FAMILIES.items():
        print(
            f"    {family}: rows n (inputs), columns m (outputs); cell: fwd/rev time, auto's "
            "pick, ok/MISS"
        )
        corner = "n \\ m"
        print("    " + f"{corner:>6}" + "".join(f"{m:>19}" for m in sizes))
        for n in sizes:
            cells = []
            for m in sizes:
                f = make(n, m)
                x = np.random.default_rng(n * 7 + m).standard_normal(n)
                samples = measure(
                    {
                        "fwd": lambda f=f, x=x: cr.jacfwd(f)(x),
                        "rev": lambda f=f, x=x: cr.jacrev(f)(x),
                    },
                    repeats=9,
                    budget=0.015,
                )
                fwd, rev = median(samples["fwd"]), median(samples["rev"])
                relative = ratio(
                    samples, "fwd", "rev"
                )  # paired within repetitions: robust to drift
                faster = "fwd" if relative <= 1 else "rev"
                pick = cr.explain_jacobian(f, x).mode
                slowdown = 1.0 if pick == faster else max(relative, 1 / relative)
                results.append((family, n, m, fwd, rev, pick, faster, slowdown))
                cells.append(f"{relative:6.2f} {pick} {'ok' if pick == faster else 'MISS':>4}")
            print("    " + f"{n:>6}" + "".join(f"{c:>19}" for c in cells))
    right = sum(pick == faster for *_, pick, faster, _ in results)
    within = sum(slowdown <= 1.10 for *_, slowdown in results)
    worst = max(slowdown for *_, slowdown in results)
    mean_loss = statistics.mean(slowdown for *_, slowdown in results)
    share = 100 * right / len(results)
    print(
        f"    auto picked the faster mode in {right}/{len(results)} shapes ({share:.0f}%; target "
        ">= 90%); "
        f"within 10% of the faster in {within}/{len(results)}; worst pick {worst:.2f}x the faster "
        "time, "
        f"mean {mean_loss:.3f}x"
    )
    print()
    return results, right


# ------------------------------------------------------------------------------------------------
# (d) the cost model's constants, measured here
# ------------------------------------------------------------------------------------------------


def bench_calibration():
    print("(d) The cost model's constants, measured on this machine (chainrule.transforms.cost)")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((16, 256, 256))
    samples = measure({"matmul": lambda: a @ b}, repeats=5)
    matmul_rate = 2 * 16 * 256**3 / median(samples["matmul"])
    u, v = rng.standard_normal(200_000), rng.standard_normal(200_000)
    samples = measure({"multiply": lambda: u * v}, repeats=5)
    element_rate = u.size / median(samples["multiply"])
    per_op, per_call = {}, {}
    lengths = (2, 32)
    times = {}
    for length in lengths:
        weights = [rng.standard_normal((4, 4)) / 2 for _ in range(length)]

        def chain(x, weights=weights):
            for w in weights:
                x = cnp.tanh(w @ x)
            return x

        x = rng.standard_normal(4)
        samples = measure(
            {
                "fwd": lambda chain=chain, x=x: cr.jacfwd(chain)(x),
                "rev": lambda chain=chain, x=x: cr.jacrev(chain)(x),
            },
            repeats=7,
        )
        times[length] = {mode: median(samples[mode]) for mode in ("fwd", "rev")}
    for mode in ("fwd", "rev"):
        ops_short, ops_long = 2 * lengths[0], 2 * lengths[1]
        per_op[mode] = (times[lengths[1]][mode] - times[lengths[0]][mode]) / (ops_long - ops_short)
        per_call[mode] = times[lengths[0]][mode] - per_op[mode] * ops_short
    print(f"    {'constant':<28} {'measured':>14} {'in the model':>14}")
    print(f"    {'matmul FLOP/s':<28} {matmul_rate:>14.3g} {cost.MATMUL_FLOPS_PER_SECOND:>14.3g}")
    print(f"    {'element ops/s':<28} {element_rate:>14.3g} {cost.ELEMENTS_PER_SECOND:>14.3g}")
    for mode in ("fwd", "rev"):
        print(
            f"    {'seconds per op, ' + mode:<28} {per_op[mode]:>14.3g} "
            f"{cost.SECONDS_PER_OP[mode]:>14.3g}"
        )
    for mode in ("fwd", "rev"):
        label = "seconds per call, " + mode
        print(f"    {label:<28} {per_call[mode]:>14.3g} {cost.SECONDS_PER_CALL[mode]:>14.3g}")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer samples")
    args = parser.parse_args()
    print(
        f"chainrule {cr.__version__}, NumPy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, one thread"
    )
    print()
    started = time.perf_counter()
    bench_gradient(args.quick)
    bench_tall_wide()
    _, right = bench_grid(args.quick)
    bench_calibration()
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
