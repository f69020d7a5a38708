"""Question 5, ``derivative-free``: why not gradient-free optimisation?

The gradient-free and backprop-free methods of ``chainrule.estimators`` (forward gradient, SPSA,
MeZO, evolution strategies) each estimate the gradient from a few random directions, and CMA-ES
(the Trainer's ``cmaes`` scheme) searches without any gradient. A random direction sees a share of
the gradient that shrinks as the number of weights P grows: the cosine between a one-direction
estimate and the true gradient is about sqrt(2/(pi P)), and an average of n directions (ES's
population) about sqrt(n/(P+n+1)). An estimate that is that far off needs a step about P times
smaller to make progress (the stable learning rate of a one-direction estimate is 1/(P+2) of the
gradient's, from E|g_est|^2 = (P+2)|g|^2), so the number of steps to a given loss grows like P.

Two parts, on the MLP 64-H-10 (tanh) on a fixed set of digits (full batch), H growing:

1. the cosine between each method's estimate and backprop's gradient at the starting weights,
   averaged over many random keys, against P, with the theory's curves and fitted slopes;
2. training from the same start with plain SGD: backprop at learning rate 0.5, each one-direction
   estimator at 0.5/(P+2), ES (n directions) at 0.5 n/(P+n+1): the theory's stable rates, fixed
   in advance, never tuned per plot; CMA-ES with its own defaults (sigma 0.1). Steps, loss
   evaluations and wall time to reach the target loss (halfway from the starting loss to where
   backprop is after 40 steps), within a wall-time budget per run.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ... import data, nn, optim
from ...estimators import get_method
from ...nn.losses import softmax_cross_entropy
from ...training import Trainer, TrainingDiverged
from ...transforms.pytree import ravel_pytree
from . import common as lab

NAME = "derivative-free"
QUESTION = "Why not gradient-free optimisation?"
ESTIMATORS = ("forward_gradient", "spsa", "mezo", "es")
TRAINED = ("backprop", "forward_gradient", "spsa", "mezo", "es", "cmaes")
POPULATION = 16
BACKPROP_LR = 0.5
BACKPROP_STEPS = 40


def method_for(name):
    if name == "es":
        return get_method("evolution_strategies", population=POPULATION)
    return get_method(name)


def theory_cosine(name, weights):
    directions = POPULATION if name == "es" else 1
    if directions == 1:
        return math.sqrt(2 / (math.pi * weights))
    return math.sqrt(directions / (weights + directions + 1))


def learning_rate(name, weights):
    if name == "backprop":
        return BACKPROP_LR
    if name == "es":
        return BACKPROP_LR * POPULATION / (weights + POPULATION + 1)
    return BACKPROP_LR / (weights + 2)


def _problem(hidden, examples, seed):
    splits = data.load("digits", seed=seed)
    features = splits.train.features[:examples]
    labels = splits.train.labels[:examples]
    model = nn.MLP([64, hidden, 10], activation="tanh", seed=seed)

    def loss_fn(params, batch):
        x, y = batch
        return softmax_cross_entropy(model.apply(params, x, train=True), y)

    return model, data.Dataset(features, labels), loss_fn


def cosines(hidden, examples, keys, seed):
    model, dataset, loss_fn = _problem(hidden, examples, seed)
    params = model.parameters()
    batch = (dataset.features, dataset.labels)
    _, exact, _ = get_method("backprop")(loss_fn, params, batch, 0)
    true_vector, _ = ravel_pytree(exact)
    result = {"weights": int(true_vector.size), "hidden": hidden}
    for name in ("backprop", *ESTIMATORS):
        method = method_for(name)
        values = []
        started = time.perf_counter()
        for key in range(1 if name == "backprop" else keys):
            _, estimate, _ = method(loss_fn, params, batch, key)
            vector, _ = ravel_pytree(estimate)
            values.append(
                float(vector @ true_vector / (np.linalg.norm(vector) * np.linalg.norm(true_vector)))
            )
        result[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "seconds_per_estimate": (time.perf_counter() - started) / len(values),
        }
    return result


def train(name, hidden, examples, target, budget_seconds, max_steps, seed):
    model, dataset, _ = _problem(hidden, examples, seed)
    weights = model.num_parameters()
    if name == "cmaes":  # steps by its own sigma; the optimizer only has to be there
        rate, choice = 1.0, {"scheme": "cmaes"}
    else:
        rate = learning_rate(name, weights)
        choice = {"method": method_for(name)}
    trainer = Trainer(
        model,
        optim.SGD(rate),
        batch_size=examples,
        seed=seed,
        log=None,
        progress=False,
        **choice,
    )
    x, y = dataset.features, dataset.labels
    losses = [trainer.evaluate(dataset)["loss"]]
    times = [0.0]
    elapsed = 0.0
    reached = None
    diverged = ""
    while trainer.step < max_steps and elapsed < budget_seconds:
        started = time.perf_counter()
        try:
            trainer.train_step(x, y)
        except TrainingDiverged as error:
            diverged = str(error)
            break
        elapsed += time.perf_counter() - started
        loss = trainer.evaluate(dataset, params=trainer.params)["loss"]
        losses.append(loss)
        times.append(elapsed)
        if target is not None and reached is None and loss <= target:
            reached = trainer.step
            break
    cost = trainer.total_cost
    return {
        "method": name,
        "hidden": hidden,
        "weights": int(weights),
        "learning_rate": None if name == "cmaes" else learning_rate(name, weights),
        "steps": trainer.step,
        "steps_to_target": reached,
        "seconds": elapsed,
        "loss_evaluations": cost.loss_evaluations,
        "passes": cost.passes,
        "losses": losses[:: max(1, len(losses) // 400)]
        + ([losses[-1]] if len(losses) > 400 else []),
        "times": times[:: max(1, len(times) // 400)] + ([times[-1]] if len(times) > 400 else []),
        "final_loss": losses[-1],
        "diverged": diverged,
    }


def _wall_time_sentence(runs) -> str:
    """Which method reached the target first in wall time, at each P."""
    parts = []
    for weights in sorted({r["weights"] for r in runs}):
        reached = [r for r in runs if r["weights"] == weights and r["steps_to_target"] is not None]
        if not reached:
            parts.append(f"at P={weights} no method reached the target")
            continue
        ranked = sorted(reached, key=lambda r: r["seconds"])
        text = (
            f"at P={weights} {ranked[0]['method']} reached the target first "
            f"({ranked[0]['seconds']:.3g} s"
        )
        if len(ranked) > 1:
            text += f"; next {ranked[1]['method']}, {ranked[1]['seconds']:.3g} s"
        parts.append(text + ")")
    return "in wall time, " + "; ".join(parts) + "."


def run(quick: bool = False, seed: int = 0) -> lab.ExperimentResult:
    this_run = lab.ExperimentRun(NAME, QUESTION, quick, seed)
    examples = 128 if quick else 256
    cosine_widths = [1, 4, 16] if quick else [1, 4, 16, 64, 256]
    keys = 8 if quick else 48
    train_widths = [1, 2] if quick else [1, 2, 4]
    budget = 1.0 if quick else 8.0
    max_steps = 20000

    cos_rows = [cosines(h, examples, keys, seed) for h in cosine_widths]
    weights = [r["weights"] for r in cos_rows]
    cos_slopes = {
        name: lab.loglog_slope(weights, [r[name]["mean"] for r in cos_rows]) for name in ESTIMATORS
    }
    big = [r for r in cos_rows if r["weights"] >= 10 * POPULATION]
    es_slope = (
        lab.loglog_slope([r["weights"] for r in big], [r["es"]["mean"] for r in big])
        if len(big) >= 2
        else math.nan
    )

    runs = []
    targets = {}
    for hidden in train_widths:
        reference = train("backprop", hidden, examples, None, budget, BACKPROP_STEPS, seed)
        target = reference["losses"][0] - 0.5 * (reference["losses"][0] - reference["final_loss"])
        targets[hidden] = target
        for name in TRAINED:
            if name == "cmaes":
                try:
                    import cma  # noqa: F401, PLC0415
                except ImportError:
                    continue
            runs.append(train(name, hidden, examples, target, budget, max_steps, seed))
    train_weights = sorted({r["weights"] for r in runs})

    def steps_of(name):
        return [
            next(
                (r["steps_to_target"] for r in runs if r["method"] == name and r["weights"] == w),
                None,
            )
            for w in train_weights
        ]

    step_slopes = {}
    for name in TRAINED:
        values = steps_of(name)
        if values and all(v is not None for v in values):
            step_slopes[name] = lab.loglog_slope(train_weights, values)
        else:
            step_slopes[name] = math.nan

    cos_table = lab.Table(
        f"Cosine between each estimate and the true gradient (mean over {keys} keys), "
        f"MLP 64-H-10 on {examples} digits",
        ["H", "P"] + [f"{n} (theory)" for n in ESTIMATORS],
        [
            [r["hidden"], r["weights"]]
            + [f"{r[n]['mean']:.3f} ({theory_cosine(n, r['weights']):.3f})" for n in ESTIMATORS]
            for r in cos_rows
        ],
    )
    train_table = lab.Table(
        f"Training to the target loss (halfway to backprop's loss after {BACKPROP_STEPS} steps), "
        f"{budget:g} s budget per run; '-' = not reached",
        [
            "P",
            "target",
            "method",
            "learning rate",
            "steps to target",
            "loss evaluations",
            "network passes",
            "seconds",
            "final loss",
        ],
        [
            [
                r["weights"],
                f"{targets[r['hidden']]:.3f}",
                r["method"],
                "CMA-ES sigma 0.1" if r["learning_rate"] is None else f"{r['learning_rate']:.3g}",
                "-" if r["steps_to_target"] is None else r["steps_to_target"],
                r["loss_evaluations"],
                r["passes"],
                r["seconds"],
                r["final_loss"],
            ]
            for r in runs
        ],
    )

    def draw(figure):
        left, middle, right = figure.subplots(1, 3)
        for name in ESTIMATORS:
            line = left.loglog(
                weights,
                [r[name]["mean"] for r in cos_rows],
                "o-",
                label=f"{name} (slope {cos_slopes[name]:.2f})",
            )[0]
            left.loglog(
                weights, [theory_cosine(name, w) for w in weights], ":", color=line.get_color()
            )
        lab.label_axes(
            left,
            "number of weights P",
            "cosine with the true gradient",
            "estimate quality (dotted: theory)",
            7,
        )
        for name in TRAINED:
            values = steps_of(name)
            points = [(w, v) for w, v in zip(train_weights, values, strict=True) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                middle.loglog(xs, ys, "o-", label=name)
        lab.label_axes(
            middle,
            "number of weights P",
            "steps to the target loss",
            "steps to target (missing: not reached)",
            7,
        )
        largest = max(train_widths)
        for r in runs:
            if r["hidden"] == largest:
                right.semilogy(np.maximum(r["times"], 1e-4), r["losses"], label=r["method"])
        right.set_xscale("log")
        right.axhline(targets[largest], color="gray", linestyle="--", label="target")
        lab.label_axes(
            right,
            "wall seconds",
            "training loss",
            f"P = {max(train_weights)}: loss against time",
            7,
        )

    fg_ratio = cos_rows[-1]["forward_gradient"]["mean"] / theory_cosine(
        "forward_gradient", cos_rows[-1]["weights"]
    )
    figure = lab.drawn_figure(
        "derivative-free",
        "Left: cosine between each estimate and the true gradient against P (dotted: "
        "theory). Middle: steps to the target loss. Right: training loss against wall time "
        "at the largest P.",
        draw,
        13,
        4.4,
    )

    checks = [
        lab.Check(
            "backprop's cosine with the true gradient",
            min(r["backprop"]["mean"] for r in cos_rows),
            "1",
            1 - 1e-9,
            1 + 1e-9,
        ),
    ]
    for name in ("forward_gradient", "spsa", "mezo"):
        checks.append(
            lab.Check(
                f"slope of {name}'s cosine against P",
                cos_slopes[name],
                "-0.5 (cosine ~ 1/sqrt(P))",
                -0.62,
                -0.38,
                why_not=(
                    f"the mean over {keys} random keys is itself noisy (its spread is about the "
                    "mean)"
                ),
            )
        )
    checks.append(
        lab.Check(
            f"slope of ES's cosine against P (P >= {10 * POPULATION}, n = {POPULATION} directions)",
            es_slope,
            "-0.5 once P >> n",
            -0.62,
            -0.38,
            why_not="too few sizes with P much larger than the population (quick run)",
        )
    )
    checks.append(
        lab.Check(
            f"forward gradient's cosine / sqrt(2/(pi P)) at P={cos_rows[-1]['weights']}",
            fg_ratio,
            "1",
            0.75,
            1.25,
            why_not=f"the mean over {keys} random keys is noisy",
        )
    )
    checks.append(
        lab.Check(
            "slope of forward gradient's steps to target against P",
            step_slopes["forward_gradient"],
            "~1 (the stable step is 1/(P+2) of backprop's)",
            0.6,
            1.4,
            why_not="a run that did not reach the target within its budget has no step count; with "
            "fewer than two sizes reached, or sizes close together, the slope is not defined or "
            "noisy",
        )
    )
    checks.append(
        lab.Check(
            "slope of backprop's steps to target against P",
            step_slopes["backprop"],
            "~0 (independent of P)",
            -0.5,
            0.5,
            why_not=(
                "the target and the network change with P; backprop's step count depends on the "
                "problem's conditioning, not on P"
            ),
        )
    )
    missed = [f"{r['method']} at P={r['weights']}" for r in runs if r["steps_to_target"] is None]
    if missed:
        this_run.note(
            f"Did not reach the target within the {budget:g} s budget (or {max_steps} steps): "
            + ", ".join(missed)
            + "."
        )
    if not any(r["method"] == "cmaes" for r in runs):
        this_run.note("CMA-ES was skipped: the 'cma' package is not installed.")

    def summary(name):
        values = steps_of(name)
        return ", ".join("-" if v is None else str(v) for v in values)

    answer = (
        "Every gradient-free estimate looks at the loss along a few random directions. In P "
        "dimensions a random direction carries a share of about 1/sqrt(P) of the gradient: "
        "measured here, the "
        f"cosine between a one-direction estimate and the true gradient falls with slope "
        f"{cos_slopes['forward_gradient']:.2f} (forward gradient), {cos_slopes['spsa']:.2f} "
        "(SPSA) and "
        f"{cos_slopes['mezo']:.2f} (MeZO) against P (theory -0.5), and averaging n = {POPULATION} "
        "directions (ES) buys back only a factor sqrt(n) at n times the cost. With such noisy "
        "estimates the step has to shrink like 1/P to make progress, so the number of steps to a "
        "given loss grows with P: steps to the target for P = "
        f"{', '.join(str(w) for w in train_weights)} "
        f"were {summary('backprop')} for backprop, {summary('forward_gradient')} for forward "
        "gradient, "
        f"{summary('spsa')} for SPSA, {summary('mezo')} for MeZO, {summary('es')} for ES and "
        f"{summary('cmaes')} for CMA-ES ('-' = not reached within the budget). Each of their "
        "steps is cheap (one or two loss evaluations, no stored graph: MeZO's appeal for memory), "
        "but backprop gets the exact direction for a constant number of passes: "
        + _wall_time_sentence(runs)
        + " CMA-ES adapts a P x P covariance from a population of candidates per step: at these "
        "small P it "
        "needs few steps, but its state and its population grow with P, which is why it suits only "
        "small models."
    )
    data = {
        "examples": examples,
        "keys": keys,
        "population": POPULATION,
        "cosine": {
            name: {
                "weights": weights,
                "mean": [r[name]["mean"] for r in cos_rows],
                "std": [r[name]["std"] for r in cos_rows],
                "theory": [1.0 if name == "backprop" else theory_cosine(name, w) for w in weights],
            }
            for name in ("backprop", *ESTIMATORS)
        },
        "cosine_slopes": cos_slopes,
        "targets": {str(k): v for k, v in targets.items()},
        "runs": runs,
        "steps_slopes": step_slopes,
    }
    return this_run.result(
        answer, tables=[cos_table, train_table], figures=[figure], checks=checks, data=data
    )
