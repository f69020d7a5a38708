"""The ``chainrule`` command.

    chainrule demo                      why backprop: one gradient by reverse mode vs finite differences
    chainrule train [options]           train an MLP; progress, final table, curves, run directory
    chainrule train --resume RUN_DIR    continue a run from its newest checkpoint (bit for bit)
    chainrule train --device cuda       train on a GPU (CuPy), in float32 unless --dtype says otherwise
    chainrule evaluate RUN_DIR          loss and accuracy of a run's newest (or a given) checkpoint
    chainrule datasets                  the data sets that need no download

Bad input (unknown data set, data that cannot be trained on, a missing or damaged checkpoint, a
checkpoint of another architecture, a non-positive learning rate or batch size...) ends the
command with one line on stderr and exit code 2, before anything already saved is touched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  chainrule train --data digits --hidden 128,64 --activation relu --optimizer sgd --lr 0.1 \\
      --epochs 30 --seed 0
  chainrule train --data mnist1d --hidden 256,128 --dropout 0.2 --optimizer adam --lr 0.003 \\
      --batch-size 100 --epochs 40
  chainrule train --data my.csv --label-column species --hidden 32
  chainrule train --resume runs/digits-20250101-120000
  chainrule train --data mnist1d --hidden 256,128 --optimizer adam --lr 0.003 --device cuda
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _widths(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}"
        ) from None


def _label_column(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    from ..training.recipe import DEFAULTS

    parser = _Parser(
        prog="chainrule",
        description="Backpropagation done properly on NumPy: see a gradient computed, train a network.",
        epilog="Run 'chainrule COMMAND --help' for the options of each command.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full Python traceback on errors"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    demo = sub.add_parser(
        "demo",
        help="gradient of a small MLP loss by reverse mode vs finite differences, with timings",
        description="Compute one gradient of a small MLP's loss by backprop and by central finite "
        "differences, and show how far apart they are and what each cost.",
    )
    demo.add_argument(
        "--hidden", default="32,16", help="hidden layer widths, comma-separated (default: 32,16)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

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
    group = train.add_argument_group("data")
    group.add_argument(
        "--data",
        metavar="NAME|FILE",
        help=f"digits, mnist1d, spirals, moons, teacher, or a .csv/.npz path (default: {d['data']})",
    )
    group.add_argument(
        "--label-column",
        type=_label_column,
        metavar="NAME|INDEX",
        help="CSV label column: header name or 0-based index (default: last)",
    )
    group.add_argument(
        "--classes", type=int, metavar="N", help="number of classes (default: largest label + 1)"
    )
    group.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="default: regression for teacher, else classification",
    )
    group.add_argument(
        "--size", type=int, metavar="N", help="number of examples of a generated data set"
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help=f"share of the data held out for validation (default: {d['val_fraction']})",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help=f"share held out for the test (default: {d['test_fraction']})",
    )
    group.add_argument(
        "--scale",
        choices=("auto", "standard", "global", "none"),
        help="feature scaling fitted on the training set: per feature, one for all, none; "
        "auto = global for digits/mnist1d, standard otherwise (default: auto)",
    )

    group = train.add_argument_group("model")
    group.add_argument(
        "--hidden",
        type=_widths,
        metavar="W1,W2,...",
        help="hidden layer widths, comma-separated (default: 128,64)",
    )
    group.add_argument(
        "--activation",
        choices=("relu", "tanh", "sigmoid", "gelu", "identity"),
        help=f"hidden activation (default: {d['activation']})",
    )
    group.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm1d after each hidden Linear (default: off)",
    )
    group.add_argument(
        "--dropout",
        type=float,
        metavar="P",
        help="dropout probability after each hidden activation (default: 0)",
    )
    group.add_argument(
        "--init",
        choices=("glorot_uniform", "glorot_normal", "he_uniform", "he_normal"),
        help="weight initialiser (default: he_normal for relu/gelu, glorot_uniform otherwise)",
    )

    group = train.add_argument_group("optimization")
    group.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw", "rmsprop"),
        help=f"(default: {d['optimizer']}, plain gradient descent)",
    )
    group.add_argument("--lr", type=float, help=f"learning rate, > 0 (default: {d['lr']})")
    group.add_argument(
        "--momentum",
        type=float,
        metavar="M",
        help="momentum for sgd/rmsprop, in [0, 1) (default: 0)",
    )
    group.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum (sgd)"
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        metavar="L",
        help="L2 penalty (decoupled for adamw, default 0.01 there) (default: 0)",
    )
    group.add_argument(
        "--schedule",
        choices=("constant", "step", "cosine", "spsa"),
        help=f"learning-rate schedule; spsa: Spall's a/(A+k+1)^0.602 (default: {d['schedule']})",
    )
    group.add_argument(
        "--warmup-epochs",
        type=int,
        metavar="N",
        help="linear warm-up over this many epochs (default: 0)",
    )
    group.add_argument(
        "--step-epochs",
        type=int,
        metavar="N",
        help=f"step schedule: decay every this many epochs (default: {d['step_epochs']})",
    )
    group.add_argument(
        "--gamma",
        type=float,
        metavar="G",
        help=f"step schedule: decay factor (default: {d['gamma']})",
    )
    group.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"epochs to train; may be raised on --resume (default: {d['epochs']})",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"examples per step, > 0 (default: {d['batch_size']})",
    )
    group.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the split, the initial weights, the shuffling and dropout (default: 0)",
    )

    _add_method_arguments(train.add_argument_group("gradient method and update scheme"), d)
    group.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the MPI ranks of `mpirun -n N chainrule train ...` (needs mpi4py)",
    )

    _add_device_arguments(train.add_argument_group("device"), resumable=True, precision=True)

    group = train.add_argument_group("run directory and output")
    group.add_argument(
        "--run-dir",
        metavar="DIR",
        help="where to write the run (default: runs/DATA-TIMESTAMP); must not hold a run already",
    )
    group.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint"
    )
    group.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="also checkpoint every N steps within an epoch (default: 0, epoch ends only)",
    )
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        metavar="N",
        help=f"newest checkpoints kept (default: {d['keep_checkpoints']})",
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

    compare = sub.add_parser(
        "compare",
        help="every gradient method and update scheme side by side, under the same budget",
        description="Train each (method, scheme) pair on the same data, model and seed under the same\n"
        "wall-clock (or pass) budget and print one table, with loss-vs-time and loss-vs-passes plots;\n"
        "or, with --gradient-cost, time one full gradient by each method as P grows.",
        epilog="examples:\n"
        "  chainrule compare --data digits --hidden 32 --methods backprop,forward_gradient,spsa "
        "--schemes simultaneous,layerwise,locoprop-s --budget-seconds 20\n"
        "  chainrule compare --gradient-cost --params 1e2,1e3,1e4,1e5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument(
        "--data", default="digits", help="data set, as for train (default: digits)"
    )
    compare.add_argument(
        "--hidden", default="32", help="hidden widths, comma-separated (default: 32)"
    )
    compare.add_argument("--activation", default="relu", help="hidden activation (default: relu)")
    compare.add_argument(
        "--batchnorm", action="store_true", help="batch norm after each hidden Linear"
    )
    compare.add_argument(
        "--methods",
        help="comma-separated gradient methods (default: all seven; with --gradient-cost: "
        "backprop, forward_mode, finite_differences)",
    )
    compare.add_argument(
        "--schemes",
        default="simultaneous,layerwise,locoprop-s",
        help="comma-separated update schemes",
    )
    compare.add_argument(
        "--budget-seconds", type=float, metavar="S", help="training seconds per pair (default: 60)"
    )
    compare.add_argument(
        "--budget-passes", type=int, metavar="N", help="network passes per pair instead of seconds"
    )
    compare.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    compare.add_argument("--seed", type=int, default=0, help="(default: 0)")
    compare.add_argument(
        "--lr",
        action="append",
        default=[],
        metavar="METHOD=LR",
        help="learning rate for one method, e.g. --lr spsa=0.001 (repeatable; defaults in docs/methods.md)",
    )
    compare.add_argument(
        "--gradient-cost", action="store_true", help="time one gradient per method as P grows"
    )
    compare.add_argument(
        "--params", default="1e2,1e3,1e4,1e5", help="--gradient-cost: parameter counts"
    )
    compare.add_argument(
        "--time-cap", type=float, default=3.0, help="--gradient-cost: seconds before extrapolating"
    )
    compare.add_argument(
        "--out", metavar="DIR", default="runs/compare", help="where the table, JSON and PNG go"
    )
    _add_device_arguments(compare)

    evaluate = sub.add_parser(
        "evaluate",
        help="loss and accuracy of a run's checkpoint on its train/validation/test splits",
        description="Rebuild a run's data and model from RUN_DIR/config.json, load its newest "
        "checkpoint (or --checkpoint FILE), verify it, and print loss and accuracy per split.",
    )
    evaluate.add_argument(
        "run_dir", metavar="RUN_DIR", help="a directory written by chainrule train"
    )
    evaluate.add_argument(
        "--checkpoint", metavar="FILE", help="a checkpoint's .json (default: the run's newest)"
    )
    evaluate.add_argument(
        "--device",
        metavar="NAME",
        help="cpu, cuda or cuda:N: where to load the checkpoint (default: where the run trained)",
    )

    sub.add_parser(
        "datasets",
        help="list the built-in data sets (none needs a download)",
        description="List the built-in data sets. Any .csv or .npz file works too.",
    )
    from .lab.cli import add_lab_parser

    add_lab_parser(sub)
    return parser


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def _add_method_arguments(group, d):
    """The options shared by ``train`` and ``compare`` that choose and tune a gradient method."""
    from ..estimators import METHODS
    from ..training.schemes import SCHEMES

    group.add_argument(
        "--method",
        metavar="NAME",
        help=f"how the gradient is obtained: {', '.join(METHODS)} (es, fd accepted) (default: {d['method']})",
    )
    group.add_argument(
        "--scheme",
        metavar="NAME",
        help=f"how it is used: {', '.join(SCHEMES)} (default: {d['scheme']})",
    )
    group.add_argument(
        "--directions",
        type=int,
        metavar="K",
        help="forward_gradient: random directions averaged (default: 1)",
    )
    group.add_argument(
        "--perturbation",
        type=float,
        metavar="H",
        help="perturbation size: spsa c, mezo eps, es sigma, finite-difference step, cmaes sigma",
    )
    group.add_argument(
        "--population", type=int, metavar="N", help="es antithetic pairs / cmaes population"
    )
    group.add_argument(
        "--local-steps",
        type=int,
        metavar="T",
        help="locoprop: local steps per layer and update (default: 10)",
    )
    group.add_argument(
        "--target-step", type=float, metavar="G", help="locoprop: target step gamma (default: 1.0)"
    )
    return group


def _add_device_arguments(group, resumable=False, precision=False):
    """``--device`` and ``--dtype``, shared by ``train`` and ``compare`` (and, for ``train``,
    ``--matmul-precision``)."""
    where = "; a resumed run: where it last ran" if resumable else ""
    group.add_argument(
        "--device",
        metavar="NAME",
        help=f"cpu, cuda or cuda:N (a GPU, through CuPy) (default: cpu{where})",
    )
    group.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="floating dtype of parameters and data (default: float32 on a GPU, float64 on the CPU)",
    )
    if precision:
        group.add_argument(
            "--matmul-precision",
            choices=("highest", "tf32", "bf16"),
            help="float32 matrix products with TF32 or bfloat16 inputs (tensor cores on a GPU; on the "
            "CPU the same rounding is emulated, for its numerics, not its speed) (default: highest)",
        )
    return group


def _run_device(name: str, recorded: bool = False):
    """The :class:`~chainrule.backend.device.Device` called ``name``; a one-line ``ConfigError`` when it
    is unknown or absent (no CuPy, no GPU), raised before anything is written. ``recorded``: the
    name comes from the run's config, not from the command line, and the message says so."""
    from ..backend.device import Device
    from ..training.recipe import ConfigError

    try:
        return Device(name)
    except (TypeError, ValueError, RuntimeError) as error:
        if recorded:
            raise ConfigError(
                f"the run ran on {name!r}, which is not available here ({error}); "
                "choose another with --device cpu"
            ) from None
        raise ConfigError(f"--device {name}: {error}") from None


def _precision_note(config) -> str:
    mode = config.get("matmul_precision", "highest")
    return "" if mode == "highest" else f", {mode} matmuls"


def _say(text="", file=None):
    print(text, file=file or sys.stdout, flush=True)


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


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


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


def _read_run_config(run_dir: Path) -> dict:
    from ..training.checkpoint import read_json
    from ..training.recipe import ADDED_LATER, DEFAULTS, FORMAT, ConfigError

    path = run_dir / "config.json"
    config = read_json(path, "run config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a chainrule run configuration")
    missing = sorted(set(DEFAULTS) - set(config) - set(ADDED_LATER))
    if missing:
        raise ConfigError(f"{str(path)!r} is incomplete (no {', '.join(missing)})")
    return {**ADDED_LATER, **config}  # a run from before an option existed had its default


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
    from ..backend.precision import matmul_precision
    from ..data.sources import is_file_source
    from ..training.checkpoint import latest_checkpoint, write_json
    from ..training.metrics import format_table
    from ..training.recipe import (
        DEFAULTS,
        RESUMABLE,
        ConfigError,
        build_data,
        build_method,
        build_model,
        build_optimizer,
        build_scheme,
        make_config,
        validate_config,
    )
    from ..training.trainer import Trainer

    communicator = getattr(args, "communicator", None)  # made by main() for --distributed
    root = communicator is None or communicator.is_root
    if not root:  # the other ranks train in silence; rank 0 writes and prints
        args.quiet, args.no_plot, args.progress = True, True, False
    given = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key, None) is not None}
    if "data" in given and is_file_source(given["data"]):
        given["data"] = str(Path(given["data"]).resolve())  # a resumed run may start elsewhere
    resume = args.resume is not None
    if communicator is not None and not resume and args.run_dir is None:
        raise ConfigError(
            "--distributed needs --run-dir DIR (every rank must name the same directory)"
        )
    if resume:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
        if args.run_dir is not None and Path(args.run_dir).resolve() != run_dir.resolve():
            raise ConfigError(
                "--run-dir and --resume name different directories; --resume continues the run where it is"
            )
        saved = {**DEFAULTS, **_read_run_config(run_dir)}  # runs from before an option existed
        conflicts = [
            key for key, value in given.items() if key not in RESUMABLE and saved.get(key) != value
        ]
        if conflicts:
            key = conflicts[0]
            raise ConfigError(
                f"{_flag(key)} {given[key]!r} differs from the run's {saved.get(key)!r}; "
                "a resumed run keeps its configuration (only --epochs may change)"
            )
        config = {**saved, **{key: given[key] for key in RESUMABLE if key in given}}
        if config["epochs"] != saved["epochs"] and config["schedule"] == "cosine":
            raise ConfigError(
                "--epochs cannot change on --resume with a cosine schedule (it would change the schedule)"
            )
        validate_config(config)
    else:
        config = make_config(**given)
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(config["data"])
        if root and _is_run_dir_in_use(run_dir):
            raise ConfigError(
                f"run directory {str(run_dir)!r} already exists and is not empty; continue it with "
                f"--resume {run_dir} or choose another --run-dir"
            )
    if config["scheme"] == "cmaes":
        raise ConfigError(
            "the cmaes scheme's state cannot be checkpointed, so `chainrule train` does not run it; "
            "compare it with `chainrule compare --schemes cmaes`"
        )
    # Everything that can fail on bad input happens before the first byte is written, the
    # device included; the dtype is fixed when a run starts, so it resumes in it anywhere.
    device = _run_device(config["device"], recorded=resume and "device" not in given)
    config["device"] = device.name
    if config["dtype"] is None:
        from ..backend.device import float_dtype

        config["dtype"] = float_dtype(None, device).name
    splits = build_data(config)
    model = build_model(config, splits)
    optimizer = build_optimizer(config, len(splits.train))
    task = splits.train.task
    trainer = Trainer(
        model,
        optimizer,
        task=task,
        batch_size=config["batch_size"],
        seed=config["seed"],
        run_dir=run_dir,
        checkpoint_every=config["checkpoint_every"],
        keep_checkpoints=config["keep_checkpoints"],
        progress=args.progress,
        log=None if args.quiet else _say,
        config=config,
        method=build_method(config),
        scheme=build_scheme(config),
        communicator=communicator,
        device=device,
        dtype=config["dtype"],
    )
    if resume:
        restored = trainer.restore()
        if config != saved and root:
            write_json(run_dir / "config.json", config)
    else:
        if root:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "config.json", config)
        restored = None
    if communicator is not None:
        communicator.barrier()  # the run directory exists before any rank goes on
    if not args.quiet:
        _say(_describe(config, model, splits, run_dir))
        if resume and restored is None:
            _say("resuming from the start (the run has no checkpoint yet)")
        elif resume and trainer.epoch >= config["epochs"]:
            _say(
                f"the run is already complete ({trainer.epoch} epochs); evaluating its newest checkpoint"
            )
        elif resume:
            _say(
                f"resuming from step {trainer.step} (epoch {trainer.epoch + 1}, batch {trainer.batch})"
            )
    started = time.perf_counter()
    with matmul_precision(config["matmul_precision"]):
        trainer.fit(splits.train, config["epochs"], splits.val)
        results = {name: trainer.evaluate(dataset) for name, dataset in splits.items()}
    total_time = trainer.elapsed
    if not root:
        return 0
    _say(format_table(results, task))
    _say(
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
        from ..training.plots import plot_history

        sizes = "-".join(str(s) for s in model.sizes)
        path = plot_history(
            trainer.history,
            run_dir / "curves.png",
            f"{config['data']}: MLP {sizes}, {config['optimizer']} lr {config['lr']}",
        )
        if not args.quiet:
            _say(f"curves: {path}")
    return 0


def _names(text: str, what: str) -> list[str]:
    from ..training.recipe import ConfigError

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"--{what} needs at least one name")
    return names


def cmd_compare(args) -> int:
    from ..training.checkpoint import atomic_write_bytes, write_json
    from ..training.compare import (
        compare_training,
        format_runs,
        gradient_cost,
        plot_gradient_cost,
        plot_runs,
    )
    from ..training.recipe import ConfigError, build_data, make_config

    out = Path(args.out)
    device = _run_device(args.device or "cpu")
    if args.gradient_cost:
        if device.kind != "cpu" or args.dtype is not None:
            raise ConfigError(
                "--gradient-cost times gradients on the CPU; leave out --device and --dtype"
            )
        try:
            targets = [float(part) for part in _names(args.params, "params")]
        except ValueError:
            raise ConfigError(
                f"--params must be numbers like 1e2,1e3, got {args.params!r}"
            ) from None
        if any(not t >= 10 for t in targets):
            raise ConfigError("--params must all be at least 10")
        methods = _names(args.methods or "backprop,forward_mode,finite_differences", "methods")
        _say("one full gradient of an MLP loss, time relative to one loss evaluation:")
        points, slopes = gradient_cost(
            targets, methods, time_cap=args.time_cap, seed=args.seed, log=_say
        )
        from ..training.compare import THEORY

        for name, slope in slopes.items():
            shown = "n/a (fewer than two measured points)" if slope is None else f"{slope:.2f}"
            _say(f"log-log slope {name:<20} {shown}   theory {THEORY.get(name, '-')}")
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            out / "gradient_cost.json",
            {"points": [{**p.__dict__, "ratio": p.ratio} for p in points], "slopes": slopes},
        )
        plot_gradient_cost(points, slopes, out / "gradient_cost.png")
        _say(f"wrote {out / 'gradient_cost.json'} and {out / 'gradient_cost.png'}")
        return 0
    if args.budget_seconds is not None and args.budget_passes is not None:
        raise ConfigError("give --budget-seconds or --budget-passes, not both")
    budget_seconds = args.budget_seconds if args.budget_passes is None else None
    if budget_seconds is None and args.budget_passes is None:
        budget_seconds = 60.0
    if budget_seconds is not None and not budget_seconds > 0:
        raise ConfigError(f"--budget-seconds must be positive, got {budget_seconds}")
    if args.budget_passes is not None and args.budget_passes <= 0:
        raise ConfigError(f"--budget-passes must be positive, got {args.budget_passes}")
    rates = {}
    for item in args.lr:
        name, _, value = item.partition("=")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--lr takes METHOD=LR, got {item!r}") from None
    try:
        hidden = _widths(args.hidden)
    except argparse.ArgumentTypeError as error:
        raise ConfigError(f"--hidden: {error}") from None
    config = make_config(data=args.data, hidden=hidden, seed=args.seed, batch_size=args.batch_size)
    splits = build_data(config)
    budget = (
        f"{budget_seconds:g} s" if budget_seconds is not None else f"{args.budget_passes} passes"
    )
    sizes = [splits.train.num_features, *hidden, splits.train.num_outputs]
    _say(
        f"{args.data}: MLP {'-'.join(str(n) for n in sizes)}, "
        f"batch {args.batch_size}, seed {args.seed}, budget {budget} per pair, on {device.name}"
    )
    try:
        runs = compare_training(
            splits,
            hidden,
            _names(args.methods or COMPARE_METHODS, "methods"),
            _names(args.schemes, "schemes"),
            budget_seconds=budget_seconds,
            budget_passes=args.budget_passes,
            batch_size=args.batch_size,
            seed=args.seed,
            learning_rates=rates,
            activation=args.activation,
            batchnorm=args.batchnorm,
            device=device.name,
            dtype=args.dtype,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    table = format_runs(runs)
    _say(table)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "compare.json", {"config": vars(args), "runs": [run.as_dict() for run in runs]}
    )
    atomic_write_bytes(out / "compare.txt", (table + "\n").encode())
    plot_runs(runs, out / "compare.png", f"{args.data}: same budget ({budget}) per pair")
    _say(f"wrote {out / 'compare.json'}, {out / 'compare.txt'} and {out / 'compare.png'}")
    return 0


COMPARE_METHODS = "backprop,forward_mode,finite_differences,forward_gradient,spsa,mezo,es"


def cmd_evaluate(args) -> int:
    from ..backend.precision import matmul_precision
    from ..training.checkpoint import CheckpointError
    from ..training.metrics import format_table
    from ..training.recipe import (
        ConfigError,
        build_data,
        build_method,
        build_model,
        build_optimizer,
        build_scheme,
        validate_config,
    )
    from ..training.trainer import Trainer

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    config = _read_run_config(run_dir)
    if args.device is not None:
        config["device"] = args.device
    validate_config(config)
    device = _run_device(config["device"], recorded=args.device is None)
    splits = build_data(config)
    model = build_model(config, splits)
    trainer = Trainer(
        model,
        build_optimizer(config, len(splits.train)),
        task=splits.train.task,
        batch_size=config["batch_size"],
        seed=config["seed"],
        run_dir=run_dir,
        log=None,
        method=build_method(config),
        scheme=build_scheme(config),
        device=device,
        dtype=config["dtype"],
    )
    if args.checkpoint is not None:
        path = trainer.restore(Path(args.checkpoint))
    else:
        path = trainer.restore()
        if path is None:
            raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoint yet")
    with matmul_precision(config["matmul_precision"]):
        results = {name: trainer.evaluate(dataset) for name, dataset in splits.items()}
    _say(
        f"checkpoint {path} (step {trainer.step}, {trainer.epoch} epochs complete), on {device.name}"
    )
    _say(format_table(results, splits.train.task))
    return 0


def cmd_datasets(args) -> int:
    from ..data.sources import DATASETS

    for name, text in DATASETS.items():
        _say(f"{name:<10}{text}")
    _say(f"{'FILE':<10}a .csv (features + label column) or .npz (arrays x and y) of your own")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            hidden = tuple(_widths(args.hidden))
        except argparse.ArgumentTypeError as error:
            parser.exit(2, f"chainrule demo: error: {error}\n")
        return run_demo(hidden=hidden, seed=args.seed)
    if getattr(args, "distributed", False):
        try:
            from ..distributed import MPICommunicator

            args.communicator = MPICommunicator()
        except ImportError as error:
            print(
                f"chainrule {args.command}: error: --distributed: {error}",
                file=sys.stderr,
                flush=True,
            )
            return 2
        # A rank whose command fails (even cleanly, with status 2) must end the whole job: the
        # other ranks would otherwise wait for it in their next collective forever.
        return args.communicator.run(_run_command, args)
    return _run_command(args)


def _run_command(args) -> int:
    from ..data.datasets import DataError
    from ..training.checkpoint import CheckpointError
    from ..training.recipe import ConfigError
    from ..training.trainer import TrainingDiverged
    from .lab.cli import run_lab

    commands = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "datasets": cmd_datasets,
        "compare": cmd_compare,
        "lab": run_lab,
    }
    try:
        return commands[args.command](args)
    except (
        DataError,
        ConfigError,
        CheckpointError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
    ) as error:
        if args.traceback:
            raise
        message = (
            str(error) if not isinstance(error, OSError) else f"{error.strerror}: {error.filename}"
        )
        print(f"chainrule {args.command}: error: {message}", file=sys.stderr, flush=True)
        return 2
    except TrainingDiverged as error:
        if args.traceback:
            raise
        print(f"chainrule {args.command}: error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            f"chainrule {args.command}: interrupted; continue with --resume",
            file=sys.stderr,
            flush=True,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
