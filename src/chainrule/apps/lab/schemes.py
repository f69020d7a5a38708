"""Question 4, ``schemes``: why update all layers simultaneously?

One backward pass gives the gradient of every layer at once, so the *simultaneous* update costs
one forward and one backward pass per step whatever the depth. The alternatives, all run through
the Trainer's update schemes (``chainrule.training.schemes``) on the same data and network:

* ``layerwise``: update the output layer, recompute the gradient of the next layer against the
  layers already moved above it, and so on down: L forward+backward passes per step (L parameter
  blocks), each aimed at a network that no longer moves under it (no *moving target*);
* ``cyclic``: one block per step, in turn: a step costs about one pass but moves 1/L of the
  weights;
* ``locoprop-s`` / ``locoprop-m``: one forward+backward pass sets a target for each layer, then
  each layer takes T local steps on its own small problem (LocoProp, Amid, Anil & Warmuth 2022).

The networks: the digits MLP 64-64-64-10, and a deeper, narrower one 64-16x6-10 where the
layers' simultaneous moves interact most (the moving-target effect), each with and without batch
norm. Every gradient scheme uses plain SGD at learning rate 0.1 with batch 32. LocoProp's local
optimizer is SGD at 1e-3 with gamma = 30 and T = 10 local steps (its first local step equals an SGD
step at 0.03). That setting was chosen once, on the digits MLP without batch norm, from three:
(3e-4, gamma 333), whose first local step equals the simultaneous step, made LocoProp-M's targets
leave the ReLU's range, so that its local problem has no minimum and the loss blew up;
(1e-3, gamma 1) learned far more slowly than every other scheme; (1e-3, gamma 30) is used for every
network, with and without batch norm, not tuned per plot. Reported: the training-set loss after
every epoch, against epochs and against wall time, and the cost of one
step (seconds, network passes, local passes) from the Trainer's cost record.
"""

from __future__ import annotations

import time

import numpy as np

from ... import data, nn, optim
from ...training import Trainer, TrainingDiverged
from ...training.schemes import get_scheme, parameter_blocks
from .common import Check, ExperimentResult, ExperimentRun, Table, drawn_figure

NAME = "schemes"
QUESTION = "Why update all layers simultaneously?"
SCHEMES = ("simultaneous", "layerwise", "cyclic", "locoprop-s", "locoprop-m")
LEARNING_RATE = 0.1
LOCAL_LEARNING_RATE = 1e-3
LOCOPROP_GAMMA = 30.0
BATCH = 32
NETWORKS = {
    "digits MLP 64-64-64-10": [64, 64, 64, 10],
    "deep narrow MLP 64-16x6-10": [64, 16, 16, 16, 16, 16, 16, 10],
}


def _trainer(sizes, batchnorm, scheme, seed):
    model = nn.MLP(sizes, activation="relu", batchnorm=batchnorm, seed=seed)
    if scheme.startswith("locoprop"):
        optimizer = optim.SGD(LOCAL_LEARNING_RATE)
        scheme_object = get_scheme(scheme, gamma=LOCOPROP_GAMMA)
    else:
        optimizer = optim.SGD(LEARNING_RATE)
        scheme_object = get_scheme(scheme)
    return Trainer(
        model,
        optimizer,
        batch_size=BATCH,
        seed=seed,
        log=None,
        progress=False,
        scheme=scheme_object,
    )


def train_one(network, sizes, batchnorm, scheme, splits, epochs, seed) -> dict:
    trainer = _trainer(sizes, batchnorm, scheme, seed)
    blocks = len(parameter_blocks(trainer.params))
    losses = [trainer.evaluate(splits.train)["loss"]]
    times = [0.0]
    diverged = ""
    elapsed = 0.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        try:
            trainer.fit(splits.train, epochs=epoch)
        except TrainingDiverged as error:
            diverged = str(error)
            break
        elapsed += time.perf_counter() - started
        loss = trainer.evaluate(splits.train)["loss"]
        losses.append(loss if np.isfinite(loss) else None)
        times.append(elapsed)
    steps = max(trainer.step, 1)
    cost = trainer.total_cost
    return {
        "network": network,
        "batchnorm": batchnorm,
        "scheme": scheme,
        "blocks": blocks,
        "epoch_loss": losses,
        "epoch_time": times,
        "steps": trainer.step,
        "seconds_per_step": cost.seconds / steps if trainer.step else elapsed / steps,
        "passes_per_step": (cost.forward_passes + cost.vjp_passes + cost.loss_evaluations) / steps,
        "vjp_passes_per_step": cost.vjp_passes / steps,
        "local_passes_per_step": cost.local_passes / steps,
        "val_accuracy": trainer.evaluate(splits.val)["accuracy"] if not diverged else None,
        "diverged": diverged,
    }


def _label(run):
    return f"{run['scheme']} on {run['network']} (batch norm {'on' if run['batchnorm'] else 'off'})"


def _final(run):
    return next((v for v in reversed(run["epoch_loss"]) if v is not None), None)


def _verdicts(runs, networks, find):
    """Per network and batch-norm setting: the lowest final loss and the first to the target."""
    lines = []
    for network in networks:
        for batchnorm in (False, True):
            group = [find(network, batchnorm, s) for s in SCHEMES]
            finals = {
                r["scheme"]: _final(r) for r in group if _final(r) is not None and not r["diverged"]
            }
            best = min(finals, key=finals.get) if finals else "none"
            base_final = _final(find(network, batchnorm, "simultaneous"))
            target = None if base_final is None else 1.5 * base_final
            reach = {r["scheme"]: _time_to(r, target) for r in group} if target is not None else {}
            reach = {k: v for k, v in reach.items() if v is not None}
            first = min(reach, key=reach.get) if reach else "none"
            lines.append(
                f"{network} with batch norm {'on' if batchnorm else 'off'}: lowest loss after the "
                "last epoch "
                f"{best} ({finals.get(best, float('nan')):.3g}), "
                "first to 1.5x the simultaneous final loss in "
                f"wall time {first}"
            )
    return lines


def _time_to(run, target):
    for loss, seconds in zip(run["epoch_loss"], run["epoch_time"], strict=True):
        if loss is not None and loss <= target:
            return seconds
    return None


def run(quick: bool = False, seed: int = 0) -> ExperimentResult:
    this_run = ExperimentRun(NAME, QUESTION, quick, seed)
    splits = data.load("digits", seed=seed)
    epochs = 2 if quick else 12
    networks = dict(list(NETWORKS.items())[:1]) if quick else NETWORKS
    runs = []
    for network, sizes in networks.items():
        for batchnorm in (False, True):
            for scheme in SCHEMES:
                runs.append(train_one(network, sizes, batchnorm, scheme, splits, epochs, seed))

    def find(network, batchnorm, scheme):
        return next(
            r
            for r in runs
            if r["network"] == network and r["batchnorm"] == batchnorm and r["scheme"] == scheme
        )

    rows = []
    checks = []
    for network in networks:
        for batchnorm in (False, True):
            base = find(network, batchnorm, "simultaneous")
            target = base["epoch_loss"][-1] * 1.5 if base["epoch_loss"][-1] is not None else None
            for scheme in SCHEMES:
                r = find(network, batchnorm, scheme)
                final = next((v for v in reversed(r["epoch_loss"]) if v is not None), None)
                reach = _time_to(r, target) if target is not None else None
                rows.append(
                    [
                        network,
                        "yes" if batchnorm else "no",
                        scheme,
                        r["blocks"],
                        r["passes_per_step"],
                        r["local_passes_per_step"],
                        1e3 * r["seconds_per_step"],
                        r["seconds_per_step"] / base["seconds_per_step"],
                        final if final is not None else "diverged",
                        "-" if reach is None else f"{reach:.2f}",
                        "-" if r["val_accuracy"] is None else f"{100 * r['val_accuracy']:.1f}%",
                    ]
                )
            layer = find(network, batchnorm, "layerwise")
            label = f"{network}, batch norm {'on' if batchnorm else 'off'}"
            checks.append(
                Check(
                    f"layer-wise passes per step / simultaneous ({label})",
                    layer["vjp_passes_per_step"] / max(base["vjp_passes_per_step"], 1e-12),
                    f"L = {layer['blocks']} parameter blocks",
                    layer["blocks"],
                    layer["blocks"],
                )
            )
            checks.append(
                Check(
                    f"layer-wise time per step / simultaneous ({label})",
                    layer["seconds_per_step"] / base["seconds_per_step"],
                    f"about L = {layer['blocks']} (at most L: the upper layers' backward passes "
                    "are shorter)",
                    0.3 * layer["blocks"],
                    1.5 * layer["blocks"],
                    why_not=(
                        "a block's backward pass stops at that block, so the passes of the upper "
                        "layers are shorter than a full one (below L), while each block's update "
                        "also pays its own optimizer call and parameter merge (above L); short "
                        "runs on a shared machine are noisy"
                    ),
                )
            )
            cyc = find(network, batchnorm, "cyclic")
            checks.append(
                Check(
                    f"cyclic passes per step / simultaneous ({label})",
                    cyc["vjp_passes_per_step"] / max(base["vjp_passes_per_step"], 1e-12),
                    "1 (one block's gradient per step)",
                    1,
                    1,
                )
            )
            if not quick:
                finals = {
                    s: next(
                        (
                            v
                            for v in reversed(find(network, batchnorm, s)["epoch_loss"])
                            if v is not None
                        ),
                        np.inf,
                    )
                    for s in ("simultaneous", "cyclic")
                }
                checks.append(
                    Check(
                        f"cyclic loss / simultaneous loss after {epochs} epochs ({label})",
                        finals["cyclic"] / finals["simultaneous"],
                        "> 1 (cyclic moves one block in L per step)",
                        1.0,
                        np.inf,
                        why_not=(
                            "per step, cyclic moves a single block, so at equal epochs it should "
                            "lag"
                        ),
                    )
                )

    table = Table(
        f"Update schemes, {epochs} epochs of SGD (batch {BATCH}); "
        "'to 1.5x' = wall seconds to reach 1.5 times the simultaneous scheme's final training loss",
        [
            "network",
            "batch norm",
            "scheme",
            "blocks L",
            "network passes / step",
            "local passes / step",
            "ms / step",
            "time / step vs simultaneous",
            "final training loss",
            "s to 1.5x",
            "val. accuracy",
        ],
        rows,
    )

    figures = []
    for network in networks:

        def draw(figure, network=network):
            axes = figure.subplots(2, 2, squeeze=False)
            for column, batchnorm in enumerate((False, True)):
                for scheme in SCHEMES:
                    r = find(network, batchnorm, scheme)
                    points = [
                        (e, l, t)
                        for e, (l, t) in enumerate(
                            zip(r["epoch_loss"], r["epoch_time"], strict=True)
                        )
                        if l is not None
                    ]
                    if not points:
                        continue
                    epochs_axis, losses, times = zip(*points, strict=True)
                    style = "--" if r["diverged"] else "-"
                    axes[0][column].semilogy(
                        epochs_axis, losses, style, marker="o", markersize=3, label=scheme
                    )
                    axes[1][column].semilogy(
                        times, losses, style, marker="o", markersize=3, label=scheme
                    )
                axes[0][column].set_title(f"batch norm {'on' if batchnorm else 'off'}")
                axes[0][column].set_xlabel("epoch")
                axes[1][column].set_xlabel("wall seconds")
                axes[0][column].set_ylabel("training loss")
                axes[1][column].set_ylabel("training loss")
                axes[0][column].legend(fontsize=7)
            figure.suptitle(network)

        slug = "schemes-" + ("digits" if network.startswith("digits") else "deep")
        figures.append(
            drawn_figure(
                slug,
                f"{network}: training loss against epochs (top) and against wall time (bottom), "
                "without (left) and with (right) batch norm.",
                draw,
                11,
                7.5,
            )
        )

    for r in runs:
        finite = [v for v in r["epoch_loss"] if v is not None]
        if not r["diverged"] and finite and finite[-1] > 10 * finite[0]:
            this_run.note(
                f"{_label(r)} blew up: the training loss went from {finite[0]:.3g} "
                f"to {finite[-1]:.3g} (finite, so training did not stop)"
            )
        if r["diverged"]:
            this_run.note(f"{_label(r)} diverged: {r['diverged']}")
    per_step = {
        s: np.median(
            [
                r["seconds_per_step"]
                / find(r["network"], r["batchnorm"], "simultaneous")["seconds_per_step"]
                for r in runs
                if r["scheme"] == s
            ]
        )
        for s in SCHEMES
    }
    answer = (
        "A single backward pass already yields every layer's gradient, so updating all layers at "
        "once costs one forward and one backward pass per step. Updating layer by layer, each "
        "against the layers already moved above it, avoids the moving target but needs one forward "
        "and backward "
        f"pass per parameter block: counted here exactly L per step, and a step takes a median "
        f"{per_step['layerwise']:.1f}x the simultaneous step's time. Cyclic updates cost one pass "
        "per step but move one block in L, so they fall behind per epoch"
        f" (median time per step {per_step['cyclic']:.1f}x simultaneous). LocoProp spends one "
        "forward and backward pass plus T local steps per layer "
        f"({per_step['locoprop-s']:.1f}x and {per_step['locoprop-m']:.1f}x the simultaneous "
        "step's time for -S and -M): the local problems can make more progress per step, but each "
        "step costs more. The plots show the loss per epoch (where layer-wise and LocoProp may do "
        "as well or better, the moving-target argument) and per wall-clock second (where the "
        "simultaneous update's cheaper steps count). Batch norm changes how far each layer's step "
        "moves the layers above it, so the gaps between schemes differ with and without it. "
        "Measured here: " + "; ".join(_verdicts(runs, networks, find)) + "."
    )
    return this_run.result(
        answer,
        tables=[table],
        figures=figures,
        checks=checks,
        data={
            "epochs": epochs,
            "learning_rate": LEARNING_RATE,
            "local_learning_rate": LOCAL_LEARNING_RATE,
            "locoprop_gamma": LOCOPROP_GAMMA,
            "batch_size": BATCH,
            "runs": runs,
        },
    )
