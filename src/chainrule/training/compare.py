"""Side-by-side comparisons: every (method, scheme) pair trained under the same budget, and the
cost of one gradient by each method as the number of parameters P grows.

``compare_training`` gives each combination the same wall-clock budget (or the same number of
network passes) on the same data, model and seed, and records the full training loss against
training time and against passes. The loss evaluations that draw the curves are not charged to
the budget. Step 1 of every run also measures its FLOPs and peak memory (that step's time is not
charged either, because measuring slows it down); FLOPs per run are step 1's times the steps.

``gradient_cost`` times one full gradient of an MLP loss by each method on MLPs of growing P and
fits the log-log slope of (gradient time / loss time) against P: about 1 for finite differences
and forward mode (P evaluations or P directions), about 0 for backprop (a constant number of
passes, the cheap-gradient principle). A method whose full gradient would exceed ``time_cap``
seconds is timed on a sample of coordinates and scaled up; such points are marked
``extrapolated`` and left out of the fitted slope.

``compare_training(..., device="cuda")`` trains every pair on a GPU (float32 unless ``dtype`` says
otherwise), the data copied there once per pair; CMA-ES, host-only, is then left out. A step's time
is read after :func:`chainrule.backend.device.synchronize`, so queued GPU work is counted.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..backend.device import Device, synchronize
from ..data.datasets import batches
from ..engine.arraylib import xp
from ..estimators import ALIASES, METHODS, get_method
from ..nn.layers import MLP
from ..nn.losses import get_loss
from ..optim.optimizers import SGD
from .schemes import SCHEME_ALIASES, SCHEMES, get_scheme
from .trainer import Trainer

#: Learning rates per method for ``compare_training`` (plain SGD, constant). Chosen once, on the
#: digits MLP of the README, as the largest of 0.2, 0.1, 0.05, ..., 0.001 that trained without
#: diverging for five epochs; the stochastic estimators need rates about P/50 times smaller
#: because their variance grows with P. Override with ``learning_rates``.
DEFAULT_LR = {
    "backprop": 0.1,
    "forward_mode": 0.1,
    "finite_differences": 0.1,
    "forward_gradient": 0.002,
    "spsa": 0.002,
    "mezo": 0.002,
    "evolution_strategies": 0.02,
}

#: LocoProp's local learning rate and target step: their product is backprop's 0.1, and the
#: local rate stays below the stability limit 2/λmax(XᵀX) of the batch-summed local loss (on
#: digits, 0.01 diverges and 0.002 and 0.001 both train; the smaller one is used).
LOCOPROP = {"lr": 0.001, "gamma": 100.0, "local_steps": 5}

DERIVATIVE_FREE = ("finite_differences", "spsa", "mezo", "evolution_strategies")


@dataclass
class Run:
    """One (method, scheme) pair's result."""

    method: str
    scheme: str
    skipped: str | None = None  # why the pair was not run
    steps: int = 0
    passes: int = 0
    local_passes: int = 0  # LocoProp's per-layer local steps (not network passes)
    flops: float | None = None
    seconds: float = 0.0
    peak_bytes: int | None = None
    final_loss: float | None = None
    test_accuracy: float | None = None
    curve: list = field(default_factory=list)  # (seconds, passes, train loss)
    diverged: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def valid_pair(method: str, scheme: str, device: str = "cpu") -> str | None:
    """Why ``method`` cannot drive ``scheme`` on ``device`` (``None`` when it can)."""
    if scheme.startswith("locoprop") and method != "backprop":
        return "LocoProp takes its targets from a backward pass"
    if scheme == "derivative_free" and method not in DERIVATIVE_FREE:
        return "derivative_free needs a method that only evaluates the loss"
    if scheme == "cmaes" and method != "backprop":
        return "CMA-ES uses no gradient method (listed once, under backprop)"
    if scheme == "cmaes" and device != "cpu":
        return "CMA-ES runs on the host only (the cma package is NumPy)"
    return None


def _full_loss(trainer, dataset) -> float:
    return trainer.evaluate(dataset)["loss"]


def compare_training(
    splits,
    hidden=(32,),
    methods=(
        "backprop",
        "forward_mode",
        "finite_differences",
        "forward_gradient",
        "spsa",
        "mezo",
        "es",
    ),
    schemes=("simultaneous", "layerwise", "locoprop-s"),
    budget_seconds: float | None = 60.0,
    budget_passes: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    learning_rates: dict | None = None,
    curve_points: int = 24,
    activation: str = "relu",
    batchnorm: bool = False,
    log=None,
    threads: int | None = 1,
    device: str = "cpu",
    dtype=None,
) -> list[Run]:
    """Train each valid (method, scheme) pair under the same budget; see the module docstring.
    ``threads`` caps the BLAS threads (``None``: as they are); ``device`` and ``dtype`` are the
    Trainer's."""
    if budget_seconds is None and budget_passes is None:
        raise ValueError("compare_training needs budget_seconds or budget_passes")
    rates = dict(DEFAULT_LR)
    rates.update(learning_rates or {})
    settings = _Settings(
        hidden=tuple(hidden),
        budget_seconds=budget_seconds,
        budget_passes=budget_passes,
        batch_size=batch_size,
        seed=seed,
        rates=rates,
        curve_points=curve_points,
        activation=activation,
        batchnorm=batchnorm,
        device=Device(device).name,
        dtype=dtype,
    )
    runs = []
    with blas_threads(threads):
        for method_name in methods:
            method_name = ALIASES.get(method_name, method_name)
            if method_name not in METHODS:
                raise ValueError(f"unknown method {method_name!r}; choose from {sorted(METHODS)}")
            for scheme_name in schemes:
                scheme_name = SCHEME_ALIASES.get(scheme_name, scheme_name)
                if scheme_name not in SCHEMES:
                    raise ValueError(
                        f"unknown scheme {scheme_name!r}; choose from {sorted(SCHEMES)}"
                    )
                reason = valid_pair(method_name, scheme_name, settings.device)
                if reason is not None:
                    runs.append(Run(method_name, scheme_name, skipped=reason))
                    continue
                run = _train_one(splits, method_name, scheme_name, settings)
                runs.append(run)
                if log is not None:
                    log(format_run(run))
    return runs


@dataclass(frozen=True)
class _Settings:
    """What every pair of one comparison shares."""

    hidden: tuple
    budget_seconds: float | None
    budget_passes: int | None
    batch_size: int
    seed: int
    rates: dict
    curve_points: int
    activation: str
    batchnorm: bool
    device: str = "cpu"
    dtype: object = None


@contextmanager
def blas_threads(threads: int | None):
    """Cap the BLAS threads inside the block (one thread gives the steadiest figures on a shared
    machine); ``None`` leaves them as they are."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def _train_one(splits, method_name, scheme_name, settings: _Settings) -> Run:
    train = splits.train
    sizes = [train.num_features, *settings.hidden, train.num_outputs]
    model = MLP(
        sizes, activation=settings.activation, batchnorm=settings.batchnorm, seed=settings.seed
    )
    if scheme_name.startswith("locoprop"):
        optimizer = SGD(LOCOPROP["lr"])
        scheme = get_scheme(
            scheme_name, gamma=LOCOPROP["gamma"], local_steps=LOCOPROP["local_steps"]
        )
    elif scheme_name == "cmaes":
        optimizer = SGD(settings.rates[method_name])  # unused: CMA-ES moves θ itself
        scheme = get_scheme(scheme_name, seed=settings.seed)
    else:
        optimizer = SGD(settings.rates[method_name])
        scheme = get_scheme(scheme_name)
    batch_size, seed = settings.batch_size, settings.seed
    budget_seconds, budget_passes = settings.budget_seconds, settings.budget_passes
    curve_points = settings.curve_points
    trainer = Trainer(
        model,
        optimizer,
        batch_size=batch_size,
        seed=seed,
        log=None,
        progress=False,
        method=get_method(method_name),
        scheme=scheme,
        device=settings.device,
        dtype=settings.dtype,
    )
    placed = trainer.place(train)  # on the device once: the batches are gathered there
    run = Run("none" if scheme_name == "cmaes" else method_name, scheme_name)
    # Curve points on a geometric grid of the budget (time or passes).
    budget = budget_seconds if budget_seconds is not None else float(budget_passes)
    marks = [budget * (10 ** (3 * (i / (curve_points - 1) - 1))) for i in range(curve_points)]
    next_mark = 0
    run.curve.append((0.0, 0, _full_loss(trainer, train)))
    spent_seconds, epoch = 0.0, 0
    trainer.measure_next = True
    done = False
    while not done:
        for features, labels in batches(placed, batch_size, seed, epoch):
            measured = trainer.measure_next
            started = time.perf_counter()
            try:
                trainer.train_step(features, labels)
            except FloatingPointError:
                run.diverged = True
                done = True
                break
            synchronize(settings.device)
            elapsed = time.perf_counter() - started
            cost = trainer.last_cost
            if measured:
                run.flops = cost.flops
                run.peak_bytes = cost.peak_bytes
            else:
                spent_seconds += elapsed
            run.steps += 1
            run.passes += cost.passes
            run.local_passes += cost.local_passes
            used = spent_seconds if budget_seconds is not None else run.passes
            if next_mark < len(marks) and used >= marks[next_mark]:
                run.curve.append((spent_seconds, run.passes, _full_loss(trainer, train)))
                while next_mark < len(marks) and used >= marks[next_mark]:
                    next_mark += 1
            if used >= budget:
                done = True
                break
        epoch += 1
    model.load_parameters(trainer.params)
    run.seconds = spent_seconds
    if run.flops is not None:
        run.flops = float(run.flops) * run.steps
    final = trainer.evaluate(train)["loss"]
    run.final_loss = final if math.isfinite(final) else float("inf")
    if not run.curve or run.curve[-1][1] != run.passes:
        run.curve.append((spent_seconds, run.passes, run.final_loss))
    test = (
        splits.test
        if getattr(splits, "test", None) is not None and len(splits.test)
        else splits.val
    )
    if test is not None and len(test):
        run.test_accuracy = trainer.evaluate(test)["accuracy"]
    return run


def format_run(run: Run) -> str:
    if run.skipped:
        return f"{run.method:>20} {run.scheme:<15} n/a: {run.skipped}"
    accuracy = "-" if run.test_accuracy is None else f"{100 * run.test_accuracy:6.2f}%"
    flops = "-" if run.flops is None else f"{run.flops:9.3g}"
    memory = "-" if run.peak_bytes is None else f"{run.peak_bytes / 1e6:7.2f}"
    loss = "diverged" if run.diverged else f"{run.final_loss:8.4f}"
    return (
        f"{run.method:>20} {run.scheme:<15} {loss:>8} {accuracy:>8} {run.steps:>7} {run.passes:>9} "
        f"{run.local_passes or '-':>8} {flops:>9} {run.seconds:7.1f} {memory:>8}"
    )


def format_runs(runs) -> str:
    header = (
        f"{'method':>20} {'scheme':<15} {'loss':>8} {'test acc':>8} {'steps':>7} {'passes':>9} "
        f"{'local':>8} {'FLOPs':>9} {'wall s':>7} {'peak MB':>8}"
    )
    lines = [header, "-" * len(header), *(format_run(run) for run in runs if not run.skipped)]
    reasons: dict = {}
    for run in runs:
        if run.skipped:
            reasons.setdefault(run.skipped, []).append(f"{run.method}/{run.scheme}")
    for reason, pairs in reasons.items():
        lines.append(f"not run ({reason}): {', '.join(pairs)}")
    return "\n".join(lines)


def plot_runs(runs, path, title="") -> None:
    """Training loss against wall time and against passes, one line per pair (log x)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .checkpoint import atomic_write_bytes

    shown = [run for run in runs if not run.skipped and len(run.curve) >= 2]
    figure = Figure(figsize=(12, 5 + 0.12 * len(shown)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    start = max((run.curve[0][2] for run in shown), default=1.0)
    lowest = start
    styles = ["-", "--", ":", "-."]
    for number, run in enumerate(shown):
        blown = run.diverged or any(
            not math.isfinite(loss) or loss > 3 * start for *_, loss in run.curve
        )
        label = (
            f"{run.method} / {run.scheme}" if run.scheme != "cmaes" else "CMA-ES (no gradient)"
        ) + (" (diverged: cut at 3x the initial loss)" if blown else "")
        points = [(s, p, min(loss, 3 * start)) for s, p, loss in run.curve if not math.isnan(loss)]
        lowest = min([lowest, *(loss for *_, loss in points)])
        style = styles[(number // 10) % len(styles)]
        axes[0].plot(
            [max(s, 1e-3) for s, _, _ in points], [loss for *_, loss in points], style, label=label
        )
        axes[1].plot(
            [max(p, 1) for _, p, _ in points], [loss for *_, loss in points], style, label=label
        )
    for ax, xlabel in zip(axes, ("training time (s)", "network passes"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(lowest * 0.8, 3.3 * start)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (whole training set)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.03 * ((len(shown) + 2) // 3 + 1), 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


# -- the cost of one gradient as P grows
# ---------------------------------------------------------------
@dataclass
class GradientCost:
    method: str
    params: int
    seconds: float  # one full gradient (extrapolated when ``extrapolated``)
    loss_seconds: float  # one loss evaluation
    extrapolated: bool = False

    @property
    def ratio(self) -> float:
        return self.seconds / self.loss_seconds


def mlp_for(params_target: int, inputs: int = 64, outputs: int = 10, depth: int = 2):
    """Hidden width h of an MLP [inputs, h x depth, outputs] whose parameter count is closest to
    ``params_target``, and that count."""
    best = None
    for h in range(1, 4096):
        count = inputs * h + h + (depth - 1) * (h * h + h) + h * outputs + outputs
        if best is None or abs(count - params_target) < abs(best[1] - params_target):
            best = (h, count)
        if count > params_target:
            break
    return best


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gradient_cost(
    params_targets=(1e2, 1e3, 1e4, 1e5),
    methods=("backprop", "forward_mode", "finite_differences"),
    batch_size: int = 32,
    time_cap: float = 3.0,
    seed: int = 0,
    repeats: int = 5,
    log=None,
    threads: int | None = 1,
) -> tuple[list[GradientCost], dict]:
    """Time one gradient per method and P; returns the points and the fitted slope per method.

    ``threads`` caps the BLAS threads while timing (one thread gives the steadiest figures on a
    shared machine; ``None`` leaves them as they are)."""
    with blas_threads(threads):
        return _gradient_cost(params_targets, methods, batch_size, time_cap, seed, repeats, log)


def _gradient_cost(params_targets, methods, batch_size, time_cap, seed, repeats, log):
    rng = xp.random.default_rng(seed)
    points: list[GradientCost] = []
    cross_entropy = get_loss("cross_entropy")
    for target in params_targets:
        width, count = mlp_for(int(target))
        model = MLP([64, width, width, 10], activation="tanh", seed=seed)
        params = model.parameters()
        batch = (rng.standard_normal((batch_size, 64)), rng.integers(0, 10, batch_size))

        def loss_fn(p, b, model=model):
            return cross_entropy(model.apply(p, b[0], train=True), b[1])

        loss_seconds = _median_seconds(lambda p=params, b=batch: loss_fn(p, b), max(repeats, 9))
        for name in methods:
            name = ALIASES.get(name, name)
            method = get_method(name)
            predicted = _predicted_seconds(name, count, loss_seconds)
            extrapolated = predicted > time_cap
            if extrapolated:
                sample = max(8, int(count * time_cap / predicted / 2))
                if (
                    name == "forward_mode"
                ):  # whole sweeps, so a direction costs what it costs in a full run
                    chunk = method.chunk_size
                    sample = max(1, sample // chunk) * chunk
                sampled = get_method(name, sample=sample)
                seconds = sampled(loss_fn, params, batch, 0)[2].seconds * count / sample
            else:
                seconds = statistics.median(
                    method(loss_fn, params, batch, key)[2].seconds
                    for key in range(repeats if predicted < 0.2 else 1)
                )
            point = GradientCost(name, count, seconds, loss_seconds, extrapolated)
            points.append(point)
            if log is not None:
                log(
                    f"P={count:>8}  {name:<20} {seconds * 1e3:10.2f} ms  = {point.ratio:10.1f} x "
                    "loss" + ("  (extrapolated from a sample)" if extrapolated else "")
                )
    return points, fit_slopes(points)


def _predicted_seconds(name: str, count: int, loss_seconds: float) -> float:
    if name == "finite_differences":
        return 2 * count * loss_seconds
    if name == "forward_mode":
        return 3 * count * loss_seconds
    return 5 * loss_seconds


def fit_slopes(points) -> dict:
    """Least-squares slope of log(gradient time / loss time) against log P per method, over the
    measured (not extrapolated) points; ``None`` with fewer than two."""
    slopes = {}
    for name in dict.fromkeys(p.method for p in points):
        measured = [p for p in points if p.method == name and not p.extrapolated]
        if len({p.params for p in measured}) < 2:
            slopes[name] = None
            continue
        xs = [math.log(p.params) for p in measured]
        ys = [math.log(p.ratio) for p in measured]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slopes[name] = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
    return slopes


THEORY = {"backprop": 0.0, "forward_mode": 1.0, "finite_differences": 1.0}


def plot_gradient_cost(points, slopes, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .checkpoint import atomic_write_bytes

    figure = Figure(figsize=(6.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for name in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == name]
        slope = slopes.get(name)
        label = name + (
            "" if slope is None else f" (slope {slope:.2f}, theory {THEORY.get(name, '?')})"
        )
        line = ax.plot([p.params for p in mine], [p.ratio for p in mine], "-", label=label)[0]
        ax.plot(
            [p.params for p in mine if not p.extrapolated],
            [p.ratio for p in mine if not p.extrapolated],
            "o",
            color=line.get_color(),
        )
        ax.plot(
            [p.params for p in mine if p.extrapolated],
            [p.ratio for p in mine if p.extrapolated],
            "o",
            mfc="none",
            color=line.get_color(),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters P")
    ax.set_ylabel("gradient time / loss time")
    ax.set_title("one full gradient (open markers: extrapolated)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


__all__ = [
    "DEFAULT_LR",
    "GradientCost",
    "Run",
    "compare_training",
    "fit_slopes",
    "format_runs",
    "gradient_cost",
    "mlp_for",
    "plot_gradient_cost",
    "plot_runs",
    "valid_pair",
]
