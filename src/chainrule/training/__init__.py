"""Training: the Trainer, checkpoints, metrics, progress display, plots and run recipes.

``chainrule train`` is a thin layer over this package: :mod:`.recipe` turns one config dict into
data, model and optimizer; :class:`Trainer` runs it and checkpoints it; :mod:`.checkpoint`
writes files atomically and verifies them on load.
"""

from .checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_json,
    save_checkpoint,
    write_json,
)
from .metrics import RunningMean, accuracy, format_table, predictions, read_jsonl
from .plots import plot_history
from .recipe import ConfigError, build_data, build_model, build_optimizer, make_config
from .trainer import Trainer, TrainingDiverged

__all__ = [
    "CheckpointError",
    "ConfigError",
    "RunningMean",
    "Trainer",
    "TrainingDiverged",
    "accuracy",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_data",
    "build_model",
    "build_optimizer",
    "format_table",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "make_config",
    "plot_history",
    "predictions",
    "read_json",
    "read_jsonl",
    "save_checkpoint",
    "write_json",
]
