"""``chainrule evaluate RUN_DIR``: loss and accuracy of a run's newest (or a given) checkpoint."""

from __future__ import annotations

from pathlib import Path

from .common import add_options, build_trainer, existing_run_dir, run_device, say


def add_parser(sub):
    evaluate = sub.add_parser(
        "evaluate",
        help="loss and accuracy of a run's checkpoint on its train/validation/test splits",
        description="Rebuild a run's data and model from RUN_DIR/config.json, load its newest "
        "checkpoint (or --checkpoint FILE), verify it, and print loss and accuracy per split.",
    )
    return add_options(
        evaluate,
        [
            ("run_dir", None, "RUN_DIR", "a directory written by chainrule train"),
            ("--checkpoint", None, "FILE", "a checkpoint's .json (default: the run's newest)"),
            (
                "--device",
                None,
                "NAME",
                "cpu, cuda or cuda:N: where to load the checkpoint (default: where the run "
                "trained)",
            ),
        ],
    )


def cmd_evaluate(args) -> int:
    from ...backend.precision import matmul_precision
    from ...training.checkpoint import CheckpointError
    from ...training.metrics import format_table
    from ...training.recipe import read_run_config, validate_config

    run_dir = existing_run_dir(args.run_dir)
    config = read_run_config(run_dir)
    if args.device is not None:
        config["device"] = args.device
    validate_config(config)
    device = run_device(config["device"], recorded=args.device is None)
    trainer, _, splits = build_trainer(config, run_dir, device, log=None)
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
