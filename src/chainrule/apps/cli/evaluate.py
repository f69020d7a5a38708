"""``chainrule evaluate RUN_DIR``: loss and accuracy of a run's newest (or a given) checkpoint."""

from __future__ import annotations

from pathlib import Path

from .common import run_device, say


def add_parser(sub):
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
    return evaluate


def cmd_evaluate(args) -> int:
    from ...backend.precision import matmul_precision
    from ...training.checkpoint import CheckpointError
    from ...training.metrics import format_table
    from ...training.recipe import (
        ConfigError,
        build_data,
        build_method,
        build_model,
        build_optimizer,
        build_scheme,
        read_run_config,
        validate_config,
    )
    from ...training.trainer import Trainer

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    config = read_run_config(run_dir)
    if args.device is not None:
        config["device"] = args.device
    validate_config(config)
    device = run_device(config["device"], recorded=args.device is None)
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
    say(
        f"checkpoint {path} (step {trainer.step}, {trainer.epoch} epochs complete), "
        f"on {device.name}"
    )
    say(format_table(results, splits.train.task))
    return 0
