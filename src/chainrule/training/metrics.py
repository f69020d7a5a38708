"""Metrics: accuracy, running averages over an epoch, and the metrics log (JSON lines).

Predictions are compared on the device the outputs live on; only the count of correct ones
crosses to the host (``int`` of a 0-d array: one small explicit copy per batch).

>>> import numpy as np
>>> accuracy(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]))
0.5
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw
from .checkpoint import atomic_write_text


def predictions(outputs):
    """Class predictions from logits (argmax over the last axis; a single logit thresholds at 0)."""
    outputs = arraylib.asarray(raw(outputs))
    if outputs.ndim >= 1 and outputs.shape[-1] == 1:
        return (outputs[..., 0] > 0).astype(xp.int64)
    return xp.argmax(outputs, axis=-1)


def correct(outputs, labels) -> int:
    """How many rows of ``outputs`` predict their label (labels are moved to the outputs'
    device)."""
    predicted = predictions(outputs)
    labels = arraylib.to_device(raw(labels), arraylib.device_of(predicted))
    return int(xp.sum(predicted == labels))


def accuracy(outputs, labels) -> float:
    labels = raw(labels)
    return correct(outputs, labels) / max(1, len(labels))


class RunningMean:
    """Example-weighted mean of per-batch values (mean loss over an epoch)."""

    def __init__(self, total=0.0, count=0):
        self.total = float(total)
        self.count = int(count)

    def add(self, value, count) -> None:
        self.total += float(value) * int(count)
        self.count += int(count)

    @property
    def value(self):
        return self.total / self.count if self.count else float("nan")

    def state(self) -> dict:
        return {"total": self.total, "count": self.count}


def write_jsonl(path, records) -> None:
    """Rewrite the metrics log from the full history (atomically, so a kill cannot truncate it)."""
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    atomic_write_text(Path(path), text)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def format_table(results: dict, task="classification") -> str:
    """A plain-text table: one row per split with its loss (and accuracy)."""
    header = f"{'split':<8}{'examples':>10}{'loss':>12}" + (
        f"{'accuracy':>11}" if task == "classification" else ""
    )
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        line = f"{name:<8}{result['examples']:>10d}{result['loss']:>12.4f}"
        if task == "classification":
            line += f"{100 * result['accuracy']:>10.2f}%"
        lines.append(line)
    return "\n".join(lines)
