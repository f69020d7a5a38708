"""``chainrule train``: train an MLP, with progress, a final table, curves and a run directory.

    chainrule train [options]         train an MLP; progress, final table, curves, run directory
    chainrule train --resume RUN_DIR  continue a run from its newest checkpoint (bit for bit)
    chainrule train --device cuda     train on a GPU (CuPy), float32 unless --dtype says otherwise

The options are the keys of :data:`chainrule.training.recipe.DEFAULTS`; the library builds the
run from them (``make_config``, or ``resume_config`` on ``--resume``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (
    add_device_arguments,
    add_options,
    build_trainer,
    existing_run_dir,
    fraction,
    label_column,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_device,
    say,
    widths,
)

EXAMPLES = """examples:
  chainrule train --data digits --hidden 128,64 --activation relu --optimizer sgd --lr 0.1 \\
      --epochs 30 --seed 0
  chainrule train --data mnist1d --hidden 256,128 --dropout 0.2 --optimizer adam --lr 0.003 \\
      --batch-size 100 --epochs 40
  chainrule train --data my.csv --label-column species --hidden 32
  chainrule train --resume runs/digits-20250101-120000
  chainrule train --data mnist1d --hidden 256,128 --optimizer adam --lr 0.003 --device cuda
"""


def add_parser(sub):
    from ...training.recipe import DEFAULTS

    train = sub.add_parser(
        "train",
        help="train an MLP, with progress, a final table, loss curves and checkpoints",
        description="Train an MLP classifier (or regressor) by mini-batch gradient descent.\n"
        "Writes a run directory with config.json, metrics.jsonl, curves.png, summary.json and\n"
        "checkpoints/, which --resume continues bit for bit after an interruption.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
    _add_data_arguments(train.add_argument_group("data"), d)
    _add_model_arguments(train.add_argument_group("model"), d)
    optimization = _add_optimization_arguments(train.add_argument_group("optimization"), d)
    _add_method_arguments(train.add_argument_group("gradient method and update scheme"), d)
    optimization.add_argument(  # listed with the optimization options, after the method ones
        "--distributed",
        action="store_true",
        help="data-parallel over the MPI ranks of `mpirun -n N chainrule train ...` (needs mpi4py)",
    )
    add_device_arguments(train.add_argument_group("device"), resumable=True, precision=True)
    _add_output_arguments(train.add_argument_group("run directory and output"), d)
    return train


def _add_data_arguments(group, d):
    add_options(
        group,
        [
            (
                "--data",
                None,
                "NAME|FILE",
                "digits, mnist1d, spirals, moons, teacher, or a .csv/.npz path "
                f"(default: {d['data']})",
            ),
            (
                "--label-column",
                label_column,
                "NAME|INDEX",
                "CSV label column: header name or 0-based index (default: last)",
            ),
            ("--classes", positive_int, "N", "number of classes (default: largest label + 1)"),
            (
                "--task",
                ("classification", "regression"),
                None,
                "default: regression for teacher, else classification",
            ),
            (
                "--size",
                positive_int,
                "N",
                "number of examples of a generated data set (mnist1d, spirals, moons, "
                "teacher); an error for digits and files",
            ),
            (
                "--val-fraction",
                fraction,
                "F",
                f"share of the data held out for validation (default: {d['val_fraction']})",
            ),
            (
                "--test-fraction",
                fraction,
                "F",
                f"share held out for the test (default: {d['test_fraction']})",
            ),
            (
                "--scale",
                ("auto", "standard", "global", "none"),
                None,
                "feature scaling fitted on the training set: per feature, one for all, none; "
                "auto = global for digits/mnist1d, standard otherwise (default: auto)",
            ),
        ],
    )


def _add_model_arguments(group, d):
    add_options(
        group,
        [
            (
                "--hidden",
                widths,
                "W1,W2,...",
                "hidden layer widths, comma-separated (default: 128,64)",
            ),
            (
                "--activation",
                ("relu", "tanh", "sigmoid", "gelu", "identity"),
                None,
                f"hidden activation (default: {d['activation']})",
            ),
        ],
    )
    group.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm1d after each hidden Linear (default: off)",
    )
    add_options(
        group,
        [
            (
                "--dropout",
                fraction,
                "P",
                "dropout probability after each hidden activation (default: 0)",
            ),
            (
                "--init",
                ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal"),
                None,
                "weight initialiser (default: he_normal for relu/gelu, glorot_uniform otherwise)",
            ),
        ],
    )


def _add_optimization_arguments(group, d):
    """The optimizer and its hyperparameters, then the schedule (one help group)."""
    add_options(
        group,
        [
            (
                "--optimizer",
                ("sgd", "adam", "adamw", "rmsprop"),
                None,
                f"(default: {d['optimizer']}, plain gradient descent)",
            ),
            (
                "--lr",
                positive_float,
                None,
                f"learning rate, finite and > 0; a rate so large that the loss blows up stops the "
                f"run at that step (default: {d['lr']})",
            ),
            ("--momentum", fraction, "M", "momentum for sgd/rmsprop, in [0, 1) (default: 0)"),
        ],
    )
    group.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum (sgd)"
    )
    add_options(
        group,
        [
            (
                "--weight-decay",
                non_negative_float,
                "L",
                "L2 penalty (decoupled for adamw, default 0.01 there) (default: 0)",
            ),
        ],
    )
    _add_schedule_arguments(group, d)
    return group


def _add_schedule_arguments(group, d):
    """The learning-rate schedule, the length of the run, the batch size and the seed."""
    return add_options(
        group,
        [
            (
                "--schedule",
                ("constant", "step", "cosine", "spsa"),
                None,
                f"learning-rate schedule; spsa: Spall's a/(A+k+1)^0.602 (default: {d['schedule']})",
            ),
            (
                "--warmup-epochs",
                non_negative_int,
                "N",
                "linear warm-up over this many epochs (default: 0)",
            ),
            (
                "--step-epochs",
                positive_int,
                "N",
                f"step schedule: decay every this many epochs (default: {d['step_epochs']})",
            ),
            (
                "--gamma",
                positive_float,
                "G",
                f"step schedule: decay factor (default: {d['gamma']})",
            ),
            (
                "--epochs",
                positive_int,
                "N",
                f"epochs to train; may be raised on --resume (default: {d['epochs']})",
            ),
            (
                "--batch-size",
                positive_int,
                "N",
                f"examples per step, > 0 (default: {d['batch_size']})",
            ),
            (
                "--seed",
                non_negative_int,
                "N",
                "seed of the split, the initial weights, the shuffling and dropout (default: 0)",
            ),
        ],
    )


def _add_method_arguments(group, d):
    """The options that choose and tune the gradient method and the update scheme."""
    from ...estimators import METHODS
    from ...training.schemes import SCHEMES

    return add_options(
        group,
        [
            (
                "--method",
                None,
                "NAME",
                f"how the gradient is obtained: {', '.join(METHODS)} (es, fd accepted) "
                f"(default: {d['method']})",
            ),
            (
                "--scheme",
                None,
                "NAME",
                f"how it is used: {', '.join(SCHEMES)} (default: {d['scheme']})",
            ),
            (
                "--directions",
                positive_int,
                "K",
                "forward_gradient: random directions averaged (default: 1)",
            ),
            (
                "--perturbation",
                positive_float,
                "H",
                "perturbation size: spsa c, mezo eps, es sigma, finite-difference step, "
                "cmaes sigma",
            ),
            ("--population", positive_int, "N", "es antithetic pairs / cmaes population"),
            (
                "--local-steps",
                positive_int,
                "T",
                "locoprop: local steps per layer and update (default: 10)",
            ),
            ("--target-step", positive_float, "G", "locoprop: target step gamma (default: 1.0)"),
        ],
    )


def _add_output_arguments(group, d):
    add_options(
        group,
        [
            (
                "--run-dir",
                None,
                "DIR",
                "where to write the run (default: runs/DATA-TIMESTAMP); "
                "must not hold a run already",
            ),
            ("--resume", None, "RUN_DIR", "continue the run in RUN_DIR from its newest checkpoint"),
            (
                "--checkpoint-every",
                non_negative_int,
                "STEPS",
                "also checkpoint every N steps within an epoch (default: 0, epoch ends only)",
            ),
            (
                "--keep-checkpoints",
                positive_int,
                "N",
                f"newest checkpoints kept (default: {d['keep_checkpoints']})",
            ),
        ],
    )
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    group.add_argument(
        "--quiet", action="store_true", help="no per-epoch lines (the final table is still printed)"
    )
    group.add_argument("--no-plot", action="store_true", help="do not write curves.png")


def _precision_note(config) -> str:
    mode = config.get("matmul_precision", "highest")
    return "" if mode == "highest" else f", {mode} matmuls"


def _default_run_dir(data: str) -> Path:
    stem = Path(data).stem if ("." in data or "/" in data) else data
    base = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, counter = base, 1
    while path.exists():
        counter += 1
        path = base.with_name(f"{base.name}-{counter}")
    return path


def _is_run_dir_in_use(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _describe(config, model, splits, run_dir) -> str:
    sizes = "-".join(str(s) for s in model.sizes)
    extras = [
        e
        for e, on in (
            ("batchnorm", config["batchnorm"]),
            (f"dropout {config['dropout']}", config["dropout"]),
        )
        if on
    ]
    steps = -(-len(splits.train) // config["batch_size"])
    return (
        f"chainrule train: {config['data']} ({len(splits.train)} train / "
        f"{len(splits.val) if splits.val else 0} val / {len(splits.test)} test), "
        f"MLP {sizes} {config['activation']}{''.join(', ' + e for e in extras)}, "
        f"{model.num_parameters():,} parameters, {_describe_optimizer(config)}, "
        f"{config['epochs']} epochs x {steps} steps of {config['batch_size']}, "
        f"on {config['device']} ({config['dtype']}{_precision_note(config)}), run dir {run_dir}"
    )


def _describe_optimizer(config) -> str:
    text = f"{config['optimizer']} lr {config['lr']:g}"
    if config["momentum"] and config["optimizer"] in ("sgd", "rmsprop"):
        text += f" momentum {config['momentum']:g}" + (" (Nesterov)" if config["nesterov"] else "")
    if config["weight_decay"]:
        text += f" weight decay {config['weight_decay']:g}"
    if config["schedule"] != "constant":
        text += f", {config['schedule']} schedule"
    if config["warmup_epochs"]:
        text += f", {config['warmup_epochs']} warm-up epochs"
    return text


def cmd_train(args) -> int:
    from ...backend.precision import matmul_precision

    communicator = getattr(args, "communicator", None)  # made by main() for --distributed
    root = communicator is None or communicator.is_root
    if not root:  # the other ranks train in silence; rank 0 writes and prints
        args.quiet, args.no_plot, args.progress = True, True, False
    given = _given(args)
    config, saved, run_dir = _run_config(args, given, communicator, root)
    resume = saved is not None
    # Everything that can fail on bad input happens before the first byte is written, the
    # device included; the dtype is fixed when a run starts, so it resumes in it anywhere.
    device = run_device(config["device"], recorded=resume and "device" not in given)
    config["device"] = device.name
    if config["dtype"] is None:
        from ...backend.device import float_dtype

        config["dtype"] = float_dtype(None, device).name
    trainer, model, splits = _make_trainer(args, config, run_dir, device, communicator)
    restored = _start_run(args, trainer, config, saved, run_dir, root)
    if communicator is not None:
        communicator.barrier()  # the run directory exists before any rank goes on
    if not args.quiet:
        _say_start(trainer, config, model, splits, run_dir, resume, restored)
    started = time.perf_counter()
    with matmul_precision(config["matmul_precision"]):
        trainer.fit(splits.train, config["epochs"], splits.val)
        results = {name: trainer.evaluate(dataset) for name, dataset in splits.items()}
    if root:
        _finish_run(args, trainer, config, model, splits, run_dir, device, results, started)
    return 0


def _given(args) -> dict:
    """The run options named on the command line, by config key (a data file by its absolute
    path: a resumed run may start elsewhere)."""
    from ...data.sources import is_file_source
    from ...training.recipe import DEFAULTS

    given = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key, None) is not None}
    if "data" in given and is_file_source(given["data"]):
        given["data"] = str(Path(given["data"]).resolve())
    return given


def _run_config(args, given, communicator, root):
    """``(config, saved, run_dir)``: the run's configuration, the one a resumed run saved
    (``None`` for a new run) and its directory, every conflict a one-line ``ConfigError``."""
    from ...training.recipe import ConfigError, make_config, resume_config

    resume = args.resume is not None
    if communicator is not None and not resume and args.run_dir is None:
        raise ConfigError(
            "--distributed needs --run-dir DIR (every rank must name the same directory)"
        )
    if resume:
        run_dir = existing_run_dir(args.resume)
        if args.run_dir is not None and Path(args.run_dir).resolve() != run_dir.resolve():
            raise ConfigError(
                "--run-dir and --resume name different directories; --resume continues the run "
                "where it is"
            )
        config, saved = resume_config(run_dir, given)
    else:
        config, saved = make_config(**given), None
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(config["data"])
        if root and _is_run_dir_in_use(run_dir):
            raise ConfigError(
                f"run directory {str(run_dir)!r} already exists and is not empty; continue it with "
                f"--resume {run_dir} or choose another --run-dir"
            )
    if config["scheme"] == "cmaes":
        raise ConfigError(
            "the cmaes scheme's state cannot be checkpointed, so `chainrule train` does not run "
            "it; compare it with `chainrule compare --schemes cmaes`"
        )
    return config, saved, run_dir


def _make_trainer(args, config, run_dir, device, communicator):
    """``(trainer, model, splits)`` of ``config``, checkpointing and logging as the options say."""
    return build_trainer(
        config,
        run_dir,
        device,
        checkpoint_every=config["checkpoint_every"],
        keep_checkpoints=config["keep_checkpoints"],
        progress=args.progress,
        log=None if args.quiet else say,
        config=config,
        communicator=communicator,
    )


def _start_run(args, trainer, config, saved, run_dir, root):
    """Restore a resumed run (rewriting its config.json if ``--epochs`` or ``--device`` changed
    it) or create a new run's directory; the restored checkpoint's path, or ``None``."""
    from ...util.files import write_json

    if saved is not None:
        restored = trainer.restore()
        if config != saved and root:
            write_json(run_dir / "config.json", config)
        return restored
    if root:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config)
    return None


def _say_start(trainer, config, model, splits, run_dir, resume, restored):
    say(_describe(config, model, splits, run_dir))
    if resume and restored is None:
        say("resuming from the start (the run has no checkpoint yet)")
    elif resume and trainer.epoch >= config["epochs"]:
        say(
            f"the run is already complete ({trainer.epoch} epochs); evaluating its newest "
            "checkpoint"
        )
    elif resume:
        say(f"resuming from step {trainer.step} (epoch {trainer.epoch + 1}, batch {trainer.batch})")


def _finish_run(args, trainer, config, model, splits, run_dir, device, results, started):
    """Rank 0's end of a run: the final table, summary.json and curves.png."""
    from ...training.checkpoint import latest_checkpoint
    from ...training.metrics import format_table
    from ...util.files import write_json

    total_time = trainer.elapsed
    say(format_table(results, splits.train.task))
    say(
        f"training time {total_time:.1f} s ({time.perf_counter() - started:.1f} s this session), "
        f"{trainer.step} steps, {trainer.epoch} epochs; run dir {run_dir}"
    )
    newest = latest_checkpoint(trainer.checkpoint_dir)
    summary = {
        "results": results,
        "steps": trainer.step,
        "epochs": trainer.epoch,
        "training_seconds": total_time,
        "checkpoint": None if newest is None else str(newest.relative_to(run_dir)),
        "device": device.name,
        "dtype": config["dtype"],
    }
    write_json(run_dir / "summary.json", summary)
    if not args.no_plot and trainer.history:
        from ...training.plots import plot_history

        sizes = "-".join(str(s) for s in model.sizes)
        path = plot_history(
            trainer.history,
            run_dir / "curves.png",
            f"{config['data']}: MLP {sizes}, {config['optimizer']} lr {config['lr']}",
        )
        if not args.quiet:
            say(f"curves: {path}")
