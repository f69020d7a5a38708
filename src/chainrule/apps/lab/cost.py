"""Question 1, ``cost``: why backprop, and not nudging each weight or pushing every direction
forward?

One full gradient of an MLP loss with P weights, three ways:

* **finite differences** (central): nudge each weight up and down and watch the loss, 2P loss
  evaluations;
* **forward mode**: one JVP pass per weight (the derivative along the basis direction e_i),
  P passes, each a small constant times one loss evaluation;
* **forward mode, batched**: the same P directions carried 128 at a time through one sweep
  (``chainrule.estimators``' ``forward_mode``), the "whole Jacobian at once" idea: fewer passes, the
  same P-fold arithmetic, and memory that grows with the directions carried (measured up to
  P = 2e4);
* **reverse mode** (backprop): one forward pass that records the graph and one backward pass,
  a small constant times one loss evaluation whatever P is (the cheap-gradient principle: the
  gradient costs at most about five function evaluations, Griewank & Walther, *Evaluating
  Derivatives*, ch. 4; about three in matrix-product FLOPs, forward plus two products per layer
  backward).

So, measured relative to one loss evaluation, finite differences and forward mode grow like P
(slope 1 on a log-log plot) and reverse mode stays flat (slope 0). The network is a tanh MLP
8-H-H-4 on a batch of 64 (``chainrule.apps.demo.mlp_loss``) with H chosen so that P runs from 1e2 to
1e6. FLOPs are counted by ``chainrule.count()``. Finite differences and forward mode are timed in
full while that is cheap; beyond, a timed sample of weights is extrapolated to all P (marked in the
table and drawn with open markers): every weight costs the same work, so the sample's mean
per-weight time times P is the estimate.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ...engine.tensor import Tensor
from ...estimators import get_method
from ...transforms.api import jvp, value_and_grad
from ...transforms.counting import count
from ...transforms.numerical import numerical_grad
from ...transforms.pytree import ravel_pytree, tree_map
from ..demo import init_mlp, mlp_loss
from . import common as lab

NAME = "cost"
QUESTION = (
    "Why backprop instead of nudging each weight and watching the loss, and why not compute the "
    "gradient of the whole network at once?"
)
FEATURES, CLASSES, BATCH = 8, 4, 64
#: The cheap-gradient bound on reverse mode's cost, in loss evaluations.
REVERSE_BOUND = 5.0
METHODS = ("finite differences", "forward mode", "reverse mode")
#: Directions carried together by the batched forward mode (the estimators' chunk size).
BATCHED_DIRECTIONS = 128


def hidden_width(weights: float) -> int:
    """The H for which the MLP 8-H-H-4 has about ``weights`` weights (H^2 + 14 H + 4 of them)."""
    return max(1, round((-14 + math.sqrt(14**2 - 4 * (4 - weights))) / 2))


def _problem(weights, seed):
    rng = np.random.default_rng(seed)
    hidden = hidden_width(weights)
    params = init_mlp((FEATURES, hidden, hidden, CLASSES), rng)
    inputs = rng.standard_normal((BATCH, FEATURES))
    labels = rng.integers(0, CLASSES, BATCH)
    return hidden, params, lambda p: mlp_loss(p, inputs, labels)


def _basis(size, index):
    direction = np.zeros(size)
    direction[index] = 1.0
    return direction


def _sampled_seconds(per_weight, size, budget, minimum, rng):
    """(seconds for all ``size`` weights, weights timed): all of them when they fit the budget,
    else a random sample whose mean time per weight is multiplied by ``size``."""
    first = rng.integers(size)
    start = time.perf_counter()
    per_weight(first)
    one = time.perf_counter() - start
    if one * size <= budget:
        start = time.perf_counter()
        for index in range(size):
            per_weight(index)
        return time.perf_counter() - start, size
    sample = max(minimum, min(size, int(budget / max(one, 1e-9))))
    indices = rng.choice(size, size=sample, replace=False)
    start = time.perf_counter()
    for index in indices:
        per_weight(int(index))
    return (time.perf_counter() - start) / sample * size, sample


def batched_forward(loss, params, size):
    """The whole gradient by forward mode carrying 128 directions per sweep (the estimators'
    ``forward_mode``): seconds, FLOPs, peak bytes above the start, sweeps."""
    method = get_method("forward_mode", chunk_size=BATCHED_DIRECTIONS)
    _, grads, measured = method(lambda p, batch: loss(p), params, None, 0, measure=True)
    _, _, timed = method(lambda p, batch: loss(p), params, None, 0)
    vector, _ = ravel_pytree(grads)
    return {
        "seconds": timed.seconds,
        "flops": measured.flops,
        "peak_bytes": measured.peak_bytes,
        "sweeps": measured.forward_passes,
        "directions": measured.jvp_passes,
        "directions_per_sweep": BATCHED_DIRECTIONS,
    }, vector


def measure(weights, seed, budget, minimum_sample, repeats, batched_limit=0):
    hidden, params, loss = _problem(weights, seed)
    theta, unravel = ravel_pytree(params)
    size = theta.size
    grad_fn = value_and_grad(loss)

    # On plain arrays ``@`` is NumPy's own; on (non-recording) Tensors every op is a counted
    # primitive.
    with count() as loss_count:
        loss_value = float(loss(tree_map(Tensor, params)))
    with count() as reverse_count:
        _, reverse_grads = grad_fn(params)
    with count() as jvp_count:
        jvp(loss, (params,), (unravel(_basis(size, 0)),))
    reverse_vector, _ = ravel_pytree(reverse_grads)

    medians = lab.interleaved_medians(
        {"loss": lambda: loss(params), "reverse": lambda: grad_fn(params)},
        repeats=repeats,
        min_seconds=0.02,
    )

    def central_difference(index):
        step = np.finfo(float).eps ** (1 / 3) * max(1.0, abs(theta[index]))
        up, down = theta.copy(), theta.copy()
        up[index] += step
        down[index] -= step
        return (float(loss(unravel(up))) - float(loss(unravel(down)))) / (up[index] - down[index])

    def forward_direction(index):
        return jvp(loss, (params,), (unravel(_basis(size, index)),))[1]

    rng = np.random.default_rng(seed + 1)
    fd_seconds, fd_timed = _sampled_seconds(central_difference, size, budget, minimum_sample, rng)
    fwd_seconds, fwd_timed = _sampled_seconds(forward_direction, size, budget, minimum_sample, rng)

    # Correctness: every method's derivatives on a few weights (all three in full when P is small).
    check_indices = rng.choice(size, size=min(size, 8), replace=False)
    fd_error = max(abs(central_difference(int(i)) - reverse_vector[i]) for i in check_indices)
    fwd_error = max(
        abs(float(forward_direction(int(i))) - reverse_vector[i]) for i in check_indices
    )
    if size <= 2000:
        full_fd, _ = ravel_pytree(numerical_grad(loss, params))
        fd_error = max(fd_error, float(np.max(np.abs(full_fd - reverse_vector))))
    scale = max(float(np.max(np.abs(reverse_vector))), 1e-300)

    _, _, reverse_measured = get_method("backprop")(
        lambda p, batch: loss(p), params, None, 0, measure=True
    )
    batched = None
    if size <= batched_limit:
        batched, batched_vector = batched_forward(loss, params, size)
        batched["relative_error_vs_reverse"] = (
            float(np.max(np.abs(batched_vector - reverse_vector))) / scale
        )

    loss_flops = loss_count.flops
    return {
        "reverse_peak_bytes": reverse_measured.peak_bytes,
        "batched_forward": batched,
        "target": weights,
        "weights": int(size),
        "hidden": hidden,
        "loss": loss_value,
        "loss_seconds": medians["loss"],
        "loss_flops": loss_flops,
        "seconds": {
            "finite differences": fd_seconds,
            "forward mode": fwd_seconds,
            "reverse mode": medians["reverse"],
        },
        "timed_weights": {
            "finite differences": fd_timed,
            "forward mode": fwd_timed,
            "reverse mode": size,
        },
        "extrapolated": {
            "finite differences": fd_timed < size,
            "forward mode": fwd_timed < size,
            "reverse mode": False,
        },
        "flops": {
            "finite differences": 2 * size * loss_flops,
            "forward mode": size * jvp_count.flops,
            "reverse mode": reverse_count.flops,
        },
        "passes": {
            "finite differences": {"forward": 2 * size},
            "forward mode": {"forward": size, "jvp": size},
            "reverse mode": {k: v for k, v in reverse_count.passes.items() if v},
        },
        "relative_error_vs_reverse": {
            "finite differences": fd_error / scale,
            "forward mode": fwd_error / scale,
        },
    }


def run(quick: bool = False, seed: int = 0) -> lab.ExperimentResult:
    this_run = lab.ExperimentRun(NAME, QUESTION, quick, seed)
    targets = [1e2, 1e3, 1e4, 1e5] if quick else [1e2, 1e3, 1e4, 1e5, 1e6]
    budget = 0.15 if quick else 1.5
    batched_limit = 10_000 if quick else 20_000
    rows = [
        measure(t, seed, budget, 2 if quick else 4, 3 if quick else 7, batched_limit)
        for t in targets
    ]
    weights = [r["weights"] for r in rows]

    time_ratio = {m: [r["seconds"][m] / r["loss_seconds"] for r in rows] for m in METHODS}
    flop_ratio = {m: [r["flops"][m] / r["loss_flops"] for r in rows] for m in METHODS}
    time_slope = {m: lab.loglog_slope(weights, time_ratio[m]) for m in METHODS}
    flop_slope = {m: lab.loglog_slope(weights, flop_ratio[m]) for m in METHODS}
    reverse_time_ratio = time_ratio["reverse mode"]
    reverse_flop_ratio = flop_ratio["reverse mode"]

    table = lab.Table(
        "One full gradient of the MLP loss (8-H-H-4, batch 64): time and FLOPs; * = extrapolated "
        "from a timed sample",
        [
            "P",
            "H",
            "loss s",
            "fin. diff. s",
            "forward s",
            "reverse s",
            "fin. diff. / loss",
            "forward / loss",
            "reverse / loss",
            "fin. diff. FLOPs",
            "forward FLOPs",
            "reverse FLOPs",
            "reverse FLOPs / loss",
        ],
        [
            [
                r["weights"],
                r["hidden"],
                r["loss_seconds"],
                _mark(r, "finite differences"),
                _mark(r, "forward mode"),
                r["seconds"]["reverse mode"],
                time_ratio["finite differences"][i],
                time_ratio["forward mode"][i],
                reverse_time_ratio[i],
                r["flops"]["finite differences"],
                r["flops"]["forward mode"],
                r["flops"]["reverse mode"],
                reverse_flop_ratio[i],
            ]
            for i, r in enumerate(rows)
        ],
    )
    errors = lab.Table(
        "Agreement with reverse mode (largest error on sampled weights / largest |gradient|)",
        ["P", "finite differences", "forward mode"],
        [
            [
                r["weights"],
                r["relative_error_vs_reverse"]["finite differences"],
                r["relative_error_vs_reverse"]["forward mode"],
            ]
            for r in rows
        ],
    )
    batched_rows = [r for r in rows if r["batched_forward"] is not None]
    at_once = lab.Table(
        f"The whole gradient at once in forward mode ({BATCHED_DIRECTIONS} directions per sweep) "
        "against reverse mode: time, FLOPs and peak memory (measured)",
        [
            "P",
            "sweeps",
            "batched forward s",
            "reverse s",
            "batched forward FLOPs",
            "reverse FLOPs",
            "batched forward peak MB",
            "reverse peak MB",
            "max error vs reverse",
        ],
        [
            [
                r["weights"],
                r["batched_forward"]["sweeps"],
                r["batched_forward"]["seconds"],
                r["seconds"]["reverse mode"],
                r["batched_forward"]["flops"],
                r["flops"]["reverse mode"],
                r["batched_forward"]["peak_bytes"] / 1e6,
                r["reverse_peak_bytes"] / 1e6,
                r["batched_forward"]["relative_error_vs_reverse"],
            ]
            for r in batched_rows
        ],
    )
    batched_weights = [r["weights"] for r in batched_rows]
    batched_slope = lab.loglog_slope(
        batched_weights, [r["batched_forward"]["flops"] / r["loss_flops"] for r in batched_rows]
    )

    def draw(figure):
        left, right = figure.subplots(1, 2)
        styles = {"finite differences": "o", "forward mode": "s", "reverse mode": "^"}
        for method in METHODS:
            color = left.plot([], [])[0].get_color()
            xs = np.array(weights)
            ys = np.array([r["seconds"][method] for r in rows])
            extra = np.array([r["extrapolated"][method] for r in rows])
            left.loglog(
                xs, ys, "-", color=color, label=f"{method} (slope {time_slope[method]:.2f} vs loss)"
            )
            left.loglog(xs[~extra], ys[~extra], styles[method], color=color)
            if extra.any():
                left.loglog(
                    xs[extra], ys[extra], styles[method], color=color, markerfacecolor="none"
                )
            right.loglog(
                weights,
                flop_ratio[method],
                styles[method] + "-",
                color=color,
                label=f"{method} (slope {flop_slope[method]:.2f})",
            )
        if batched_rows:
            left.loglog(
                batched_weights,
                [r["batched_forward"]["seconds"] for r in batched_rows],
                "d--",
                color="tab:purple",
                label=f"forward mode, {BATCHED_DIRECTIONS} directions per sweep",
            )
        left.loglog(weights, [r["loss_seconds"] for r in rows], "k:", label="one loss evaluation")
        lab.label_axes(
            left,
            "number of weights P",
            "seconds for one full gradient",
            "time (open markers: extrapolated)",
            7,
        )
        right.loglog(
            weights,
            reverse_time_ratio,
            "^:",
            color="tab:green",
            markerfacecolor="none",
            label="reverse mode, time / loss time",
        )
        right.axhline(
            REVERSE_BOUND,
            color="gray",
            linestyle="--",
            label=f"cheap-gradient bound {REVERSE_BOUND:g}",
        )
        lab.label_axes(
            right,
            "number of weights P",
            "cost / cost of one loss evaluation",
            "FLOPs (and reverse mode's time) relative to one loss",
            7,
        )

    figure = lab.drawn_figure(
        "cost",
        "Left: seconds for one full gradient by each method (dotted: one loss evaluation; "
        "open markers extrapolated from a timed sample). Right: FLOPs relative to one loss "
        "evaluation, counted by chainrule.count(), and reverse mode's measured time ratio "
        "(dotted, open triangles); the dashed line is the cheap-gradient bound.",
        draw,
        11.5,
        4.6,
    )

    largest = rows[-1]
    checks = [
        lab.Check(
            "slope of finite differences' time / loss time against P",
            time_slope["finite differences"],
            "1",
            0.8,
            1.2,
            why_not=(
                "a loss evaluation at small P is mostly fixed interpreter overhead, which the copy "
                "and unravel of the nudged weight vector do not share"
            ),
        ),
        lab.Check(
            "slope of forward mode's time / loss time against P",
            time_slope["forward mode"],
            "1",
            0.8,
            1.2,
            why_not=(
                "a JVP pass carries the primal and a tangent: at small P its fixed overhead per op "
                "differs from a plain loss evaluation's, so the ratio per weight is not yet "
                "constant"
            ),
        ),
        lab.Check(
            "slope of reverse mode's time / loss time against P",
            time_slope["reverse mode"],
            "0",
            -0.2,
            0.2,
            why_not=(
                "at small P both times are interpreter overhead and reverse mode records roughly "
                "twice as many ops; as P grows the matrix products take over and the ratio settles"
            ),
        ),
        lab.Check(
            "slope of finite differences' FLOPs / loss FLOPs against P",
            flop_slope["finite differences"],
            "1",
            0.95,
            1.05,
        ),
        lab.Check(
            "slope of forward mode's FLOPs / loss FLOPs against P",
            flop_slope["forward mode"],
            "1",
            0.95,
            1.05,
        ),
        lab.Check(
            "slope of reverse mode's FLOPs / loss FLOPs against P",
            flop_slope["reverse mode"],
            "0",
            -0.05,
            0.05,
        ),
        lab.Check(
            f"reverse mode's FLOPs / loss FLOPs at P={largest['weights']:,}",
            reverse_flop_ratio[-1],
            f"a small constant: about 3, at most {REVERSE_BOUND:g}",
            1.0,
            REVERSE_BOUND,
        ),
        lab.Check(
            f"reverse mode's time / loss time at P={largest['weights']:,}",
            reverse_time_ratio[-1],
            f"a small constant, at most {REVERSE_BOUND:g}",
            1.0,
            REVERSE_BOUND,
            why_not="the measured time includes recording the graph and NumPy's temporaries, which "
            "the FLOP bound does not count; on a busy shared machine the noise adds to it",
        ),
        lab.Check(
            "slope of batched forward mode's FLOPs / loss FLOPs against P (P <= "
            f"{batched_limit:,})",
            batched_slope,
            "1 (carrying directions together saves passes, not arithmetic)",
            0.85,
            1.15,
            why_not=(
                "at small P a direction's work is largely element-wise (tanh, softmax, the seeded "
                "identity), whose share relative to one loss evaluation shrinks as the layers "
                "widen; the slope approaches 1 once the matrix products dominate"
            ),
        ),
        lab.Check(
            "largest relative error of finite differences vs reverse mode",
            max(r["relative_error_vs_reverse"]["finite differences"] for r in rows),
            "~1e-9 (central differences: truncation + rounding)",
            0.0,
            1e-6,
        ),
        lab.rounding_check(
            "largest relative error of forward mode vs reverse mode",
            max(r["relative_error_vs_reverse"]["forward mode"] for r in rows),
        ),
    ]
    extrapolated = [
        f"{m} at P={r['weights']:,} ({r['timed_weights'][m]:,} weights timed)"
        for r in rows
        for m in METHODS
        if r["extrapolated"][m]
    ]
    if extrapolated:
        this_run.note("Extrapolated from a timed sample: " + "; ".join(extrapolated) + ".")
    big = rows[-1]
    fd_worst = max(r["relative_error_vs_reverse"]["finite differences"] for r in rows)
    fd_big, fwd_big = big["seconds"]["finite differences"], big["seconds"]["forward mode"]
    answer = (
        "Nudging each weight and watching the loss works (it agrees with backprop to about "
        f"{fd_worst:.0e}), but it needs two loss "
        "evaluations per weight, so its cost relative to one loss evaluation grows like P: fitted "
        "slope "
        f"{time_slope['finite differences']:.2f} in time and "
        f"{flop_slope['finite differences']:.2f} in FLOPs "
        "(theory 1). Forward mode computes exact derivatives during the forward pass, but one "
        "input direction at a time, so a whole gradient needs P passes: slope "
        f"{time_slope['forward mode']:.2f} in time, {flop_slope['forward mode']:.2f} in FLOPs "
        "(theory 1). Pushing all P directions through together (the whole Jacobian at once) saves "
        "passes, not arithmetic: "
        f"{_batched_sentence(batched_rows)} Reverse mode runs the network once and "
        "then walks back once, carrying one number per value (the loss's sensitivity), so its cost "
        "is a constant multiple of one loss evaluation whatever P is: slope "
        f"{time_slope['reverse mode']:.2f} "
        f"in time and {flop_slope['reverse mode']:.2f} in FLOPs (theory 0), and at "
        f"P={big['weights']:,} "
        f"the gradient costs {reverse_time_ratio[-1]:.1f} loss evaluations in time and "
        f"{reverse_flop_ratio[-1]:.1f} in FLOPs (the cheap-gradient bound: a small constant, at "
        "most "
        f"about {REVERSE_BOUND:g}). At P={big['weights']:,} finite differences would take "
        f"{fd_big:.3g} s and forward mode {fwd_big:.3g} s, "
        f"against {big['seconds']['reverse mode']:.3g} s for backprop."
    )
    data = {
        "rows": rows,
        "time_ratio": time_ratio,
        "flop_ratio": flop_ratio,
        "time_slope": time_slope,
        "flop_slope": flop_slope,
        "reverse_bound": REVERSE_BOUND,
        "batched_flop_slope": batched_slope,
    }
    return this_run.result(
        answer, tables=[table, at_once, errors], figures=[figure], checks=checks, data=data
    )


def _batched_sentence(batched_rows):
    if not batched_rows:
        return ""
    row = batched_rows[-1]
    batched = row["batched_forward"]
    return (
        f"at P={row['weights']:,}, {BATCHED_DIRECTIONS} directions per sweep took "
        f"{batched['sweeps']} sweeps, "
        f"{batched['flops'] / row['loss_flops']:,.0f} loss evaluations' worth of FLOPs, "
        f"{batched['seconds']:.3g} s and {batched['peak_bytes'] / 1e6:.1f} MB at its peak, against "
        f"{row['seconds']['reverse mode']:.3g} s and {row['reverse_peak_bytes'] / 1e6:.2f} MB for "
        "reverse mode (carrying all P directions in a single sweep would need about P / "
        f"{BATCHED_DIRECTIONS} times that memory)."
    )


def _mark(row, method):
    seconds = row["seconds"][method]
    text = f"{seconds:.3g}"
    return text + "*" if row["extrapolated"][method] else text
