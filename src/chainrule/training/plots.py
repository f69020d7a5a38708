"""Loss and accuracy curves as a PNG, drawn with matplotlib's Agg canvas (no display needed).

The figure is built on a ``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg``: no
pyplot, no global backend state, the same picture on a laptop and on a headless CI machine.
"""

from __future__ import annotations

import io
from pathlib import Path

from .checkpoint import atomic_write_bytes


def plot_history(history: list[dict], path, title: str = "") -> Path:
    """Write train/validation loss (and accuracy, when recorded) per epoch to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [record["epoch"] for record in history]
    has_accuracy = any(record.get("train_accuracy") is not None for record in history)
    figure = Figure(figsize=(10 if has_accuracy else 5.5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if has_accuracy else 1, squeeze=False)[0]
    panels = [("loss", "loss", False)] + (
        [("accuracy", "accuracy (%)", True)] if has_accuracy else []
    )
    for ax, (key, label, percent) in zip(axes, panels, strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            values = [record.get(f"{split}_{key}") for record in history]
            points = [
                (e, v * (100 if percent else 1))
                for e, v in zip(epochs, values, strict=True)
                if v is not None
            ]
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    marker="o",
                    markersize=3,
                    label=split,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if key == "loss" and all(
            (record.get("train_loss") or 1) > 0 and (record.get("val_loss") or 1) > 0
            for record in history
        ):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
