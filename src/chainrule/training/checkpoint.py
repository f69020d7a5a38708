"""Checkpoints: arrays in a NumPy ``.npz`` (never pickled) plus a JSON sidecar, written atomically.

A checkpoint is two files side by side, ``step-00000120.npz`` and ``step-00000120.json``:

* the ``.npz`` holds every array (parameters, buffers, optimizer state) by flat name;
* the ``.json`` holds everything else (epoch, step, RNG state, optimizer and run configuration,
  metrics so far), the SHA-256 of the ``.npz`` and the name, shape and dtype of every array.

Arrays are always stored as host (NumPy) arrays: arrays on a GPU are copied to the host
explicitly when saved, so a checkpoint does not depend on the device it came from. The Trainer
records that device (and the compute dtype) in the ``.json`` and loads the arrays onto the device
of the run that reads them: a run checkpointed on a GPU resumes on it, or on the CPU.

Each file is written atomically (:mod:`chainrule.util.files`: a temporary name in the same
folder, flushed and renamed over the final name), the ``.npz`` first: the ``.json`` is the commit
mark. A process killed at any instant therefore leaves either the previous checkpoint or the new
one, never a half-written file under a real name. Loading verifies the checksum before NumPy parses
the archive, and reads it with ``allow_pickle=False``, so a hostile file cannot run code.

>>> import numpy as np, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = save_checkpoint(folder, 7, {"w": np.arange(3.0)}, {"epoch": 1})
>>> arrays, meta = load_checkpoint(path)
>>> arrays["w"], meta["epoch"], meta["step"]
(array([0., 1., 2.]), 1, 7)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

from ..engine.arraylib import to_numpy, xp
from ..util.files import atomic_write_bytes, atomic_write_text, write_json
from ..util.files import read_json as _read_json

__all__ = [
    "FORMAT",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "read_json",
    "remove_temporaries",
    "save_checkpoint",
    "write_json",
]

FORMAT = "chainrule-checkpoint/1"
_NAME = re.compile(r"^step-(\d{8,})\.json$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or does not fit the model it is loaded into."""


def read_json(path, what="file"):
    """:func:`chainrule.util.files.read_json`, its one-line errors raised as
    :class:`CheckpointError` (what the Trainer and the ``chainrule`` command catch)."""
    return _read_json(path, what, error=CheckpointError)


def checkpoint_path(directory, step: int) -> Path:
    return Path(directory) / f"step-{int(step):08d}.json"


def save_checkpoint(directory, step: int, arrays: dict, meta: dict) -> Path:
    """Write arrays and metadata as checkpoint ``step`` in ``directory``; returns the .json path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = checkpoint_path(directory, step)
    npz_path = json_path.with_suffix(".npz")
    arrays = {name: to_numpy(value) for name, value in arrays.items()}  # device -> host copies
    for name, value in arrays.items():
        if value.dtype == object:
            raise TypeError(
                f"checkpoint array {name!r} has dtype object; only numeric arrays are saved"
            )
    buffer = io.BytesIO()
    xp.savez(buffer, **arrays)
    payload = buffer.getvalue()
    record = dict(meta)
    record.update(
        {
            "format": FORMAT,
            "step": int(step),
            "arrays_file": npz_path.name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "arrays": {
                name: {"shape": list(v.shape), "dtype": v.dtype.str} for name, v in arrays.items()
            },
        }
    )
    text = (
        json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n"
    )  # fail before writing
    atomic_write_bytes(npz_path, payload)
    atomic_write_text(json_path, text)
    return json_path


def load_checkpoint(path) -> tuple[dict, dict]:
    """``(arrays, meta)`` of the checkpoint whose ``.json`` (or ``.npz``) is ``path``, verified."""
    path = Path(path)
    if path.suffix == ".npz":
        path = path.with_suffix(".json")
    meta = read_json(path, "checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a chainrule checkpoint (format {FORMAT!r} expected)"
        )
    arrays_file = meta.get("arrays_file")
    if not isinstance(arrays_file, str) or os.path.basename(arrays_file) != arrays_file:
        raise CheckpointError(
            f"checkpoint {str(path)!r} names an invalid arrays file {arrays_file!r}"
        )
    npz_path = path.parent / arrays_file
    try:
        payload = npz_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint arrays {str(npz_path)!r} are missing") from None
    if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {str(npz_path)!r} is corrupted (SHA-256 does not match its .json)"
        )
    try:
        with xp.load(io.BytesIO(payload), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except Exception as error:  # noqa: BLE001 - any parse failure of a damaged archive
        raise CheckpointError(f"checkpoint {str(npz_path)!r} cannot be read: {error}") from None
    listed = meta.get("arrays", {})
    if set(listed) != set(arrays):
        raise CheckpointError(
            f"checkpoint {str(npz_path)!r} holds other arrays than its .json lists"
        )
    for name, info in listed.items():
        if list(arrays[name].shape) != info.get("shape") or arrays[name].dtype.str != info.get(
            "dtype"
        ):
            raise CheckpointError(
                f"checkpoint array {name!r} does not match its recorded shape/dtype"
            )
    return arrays, meta


def list_checkpoints(directory) -> list[Path]:
    """The committed checkpoints (their .json files) in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def remove_temporaries(directory) -> None:
    """Delete temporary files a killed writer left behind (only our own ``.*.tmp`` names)."""
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                try:
                    path.unlink()
                except OSError:
                    pass


def prune_checkpoints(directory, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (only after a newer one is safely committed)."""
    if keep <= 0:
        return
    for json_path in list_checkpoints(directory)[:-keep]:
        for path in (json_path, json_path.with_suffix(".npz")):  # un-commit first, then the data
            try:
                path.unlink()
            except FileNotFoundError:
                pass
