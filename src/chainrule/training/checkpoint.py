"""Checkpoints: arrays in a safetensors file (never pickled) and a JSON sidecar, written atomically.

A checkpoint is two files side by side, ``step-00000120.safetensors`` and ``step-00000120.json``:

* the ``.safetensors`` holds every array (parameters, buffers, optimizer state) by flat name, in
  the safetensors format: 8 bytes (the little-endian length of the header), a JSON header giving
  each array's dtype, shape and byte range, then the raw little-endian bytes. No code, a bounded
  header, and PyTorch, JAX and others read it (``safetensors.torch.load_file``). Its
  ``__metadata__`` names the format and the step;
* the ``.json`` holds everything else (epoch, step, the seed from which every random draw is
  derived, optimizer and run configuration, metrics so far), the SHA-256 of the arrays file and
  the name, shape and dtype of every array.

Arrays are always stored as host (NumPy) arrays: arrays on a GPU are copied to the host
explicitly when saved, so a checkpoint does not depend on the device it came from. The Trainer
records that device (and the compute dtype) in the ``.json`` and loads the arrays onto the device
of the run that reads them: a run checkpointed on a GPU resumes on it, or on the CPU.

Each file is written atomically (:mod:`chainrule.util.files`: a temporary name in the same
folder, flushed and renamed over the final name), the arrays first: the ``.json`` is the commit
mark. A process killed at any instant therefore leaves either the previous checkpoint or the new
one, never a half-written file under a real name.

Loading trusts nothing it has not bounded. The ``.json`` is read with a size and a depth limit.
The arrays file must be a regular file (a symlink, to ``/dev/zero`` or anywhere, is refused
unread). Every array's name, shape and dtype is checked against what the caller expects (the
model being resumed: ``expected=``) and against the ``.json``, and the file's size against the
sum of those shapes, before its data are read; the safetensors header must be at most
:data:`HEADER_LIMIT` bytes and its byte ranges must cover the data exactly. Only then are the
bytes read, their checksum verified and the arrays made.

Checkpoints of the earlier format (``chainrule-checkpoint/1``: a NumPy ``.npz``) still load, with
the same checks first: each zip member's declared uncompressed size and its ``.npy`` header's
shape and dtype must match the array expected before it is decompressed, so a small deflate bomb
is refused without being inflated.

>>> import numpy as np, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = save_checkpoint(folder, 7, {"w": np.arange(3.0)}, {"epoch": 1})
>>> arrays, meta = load_checkpoint(path)
>>> arrays["w"], meta["epoch"], meta["step"], path.with_suffix(".safetensors").is_file()
(array([0., 1., 2.]), 1, 7, True)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
from pathlib import Path

from ..engine.arraylib import to_numpy, xp
from ..util.files import atomic_write_bytes, atomic_write_text, open_regular, parse_json, write_json
from ..util.files import read_json as _read_json

__all__ = [
    "FORMAT",
    "HEADER_LIMIT",
    "NPZ_FORMAT",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_training_state",
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

FORMAT = "chainrule-checkpoint/2"
#: The earlier format: the arrays in a NumPy ``.npz``; still loaded, never written.
NPZ_FORMAT = "chainrule-checkpoint/1"
#: Largest safetensors header accepted (the format's own readers use the same bound).
HEADER_LIMIT = 100 * 2**20
#: Largest ``.json`` sidecar accepted.
SIDECAR_LIMIT = 64 * 2**20
_NAME = re.compile(r"^step-(\d{8,})\.json$")
_SUFFIXES = (".safetensors", ".npz")
_NPY_HEADER_LIMIT = 65536 + 16  # NumPy's own bound on a .npy header, plus its preamble

# safetensors dtype names and the NumPy dtypes (little-endian) they mean.
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "|i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "|u1",
    "BOOL": "|b1",
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or does not fit the model it is loaded into."""


def read_json(path, what="file"):
    """:func:`chainrule.util.files.read_json` (bounded in size and depth), its one-line errors
    raised as :class:`CheckpointError` (what the Trainer and the ``chainrule`` command catch)."""
    return _read_json(path, what, error=CheckpointError, max_bytes=SIDECAR_LIMIT)


def checkpoint_path(directory, step: int) -> Path:
    return Path(directory) / f"step-{int(step):08d}.json"


def save_checkpoint(directory, step: int, arrays: dict, meta: dict) -> Path:
    """Write arrays and metadata as checkpoint ``step`` in ``directory``; returns the .json path."""
    import safetensors.numpy

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = checkpoint_path(directory, step)
    arrays_path = json_path.with_suffix(".safetensors")
    host = {}
    for name, value in arrays.items():
        value = to_numpy(value)  # device -> host copies
        little = value.dtype.newbyteorder("<")
        if little.str not in _DTYPES.values():
            raise TypeError(
                f"checkpoint array {name!r} has dtype {value.dtype}; only numeric arrays "
                "(floats, integers, booleans) are saved"
            )
        host[name] = xp.asarray(value, dtype=little, order="C")  # (keeps 0-d arrays 0-d)
    payload = safetensors.numpy.save(host, metadata={"format": FORMAT, "step": str(int(step))})
    record = dict(meta)
    record.update(
        {
            "format": FORMAT,
            "step": int(step),
            "arrays_file": arrays_path.name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "arrays": {
                name: {"shape": list(v.shape), "dtype": v.dtype.str} for name, v in host.items()
            },
        }
    )
    # Serialised before anything is written: NaN or Inf in the metadata fails here.
    text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(arrays_path, payload)
    atomic_write_text(json_path, text)
    return json_path


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _listed_arrays(meta, path, expected) -> dict:
    """``{name: (shape tuple, dtype str)}`` of the arrays the ``.json`` lists, validated, and
    equal to ``expected`` (same form) when given."""
    listed = meta.get("arrays")
    if not isinstance(listed, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} does not list its arrays")
    found = {}
    for name, info in listed.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if not (isinstance(shape, list) and all(_is_count(n) for n in shape)) or (
            dtype not in _DTYPES.values()
        ):
            raise CheckpointError(
                f"checkpoint {str(path)!r} lists array {name!r} with an invalid shape or dtype "
                f"({shape!r}, {dtype!r})"
            )
        found[name] = (tuple(shape), dtype)
    if expected is None:
        return found
    problems = _mismatches(found, expected)
    if problems:
        parts = [text for _, text in problems]
        what = (
            "is from a different architecture"
            if any(not name.startswith("opt.") for name, _ in problems)
            else "has optimizer state that does not fit"
        )
        shown = "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")
        raise CheckpointError(f"checkpoint {str(path)!r} {what}: {shown}")
    return found


_KINDS = {"params": "parameter", "buffers": "buffer", "opt": "optimizer state"}


def _describe_array(name: str) -> str:
    """``params.0.weight`` -> ``parameter '0.weight'`` (the names the model's own errors use)."""
    group, _, rest = name.partition(".")
    return f"{_KINDS[group]} {rest!r}" if group in _KINDS and rest else f"array {name!r}"


def _mismatches(found: dict, expected: dict) -> list:
    """``[(name, text)]``: every array of ``found`` missing, extra, or of another shape or dtype
    than ``expected`` says, in the order of ``expected``. Floating arrays may differ in precision
    (the loader casts them); integers and booleans may not."""
    problems = []
    for name, (shape, dtype) in expected.items():
        label = _describe_array(name)
        if name not in found:
            problems.append((name, f"it lacks {label}"))
            continue
        got_shape, got_dtype = found[name]
        if got_shape != tuple(shape):
            problems.append((name, f"{label} has shape {got_shape}, expected {tuple(shape)}"))
        elif got_dtype != dtype and not (xp.dtype(got_dtype).kind == xp.dtype(dtype).kind == "f"):
            # (a float32 checkpoint from a GPU loads into a float64 run on the CPU: cast on load)
            problems.append(
                (name, f"{label} has dtype {xp.dtype(got_dtype)}, expected {xp.dtype(dtype)}")
            )
    for name in found:
        if name not in expected:
            problems.append((name, f"it has an extra {_describe_array(name)}"))
    return problems


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, where the system says (``None`` elsewhere)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _nbytes(shape, dtype) -> int:
    return math.prod(shape) * xp.dtype(dtype).itemsize


def load_checkpoint(path, expected: dict | None = None) -> tuple[dict, dict]:
    """``(arrays, meta)`` of the checkpoint whose ``.json`` (or arrays file) is ``path``,
    verified. ``expected``: ``{name: (shape, dtype str)}`` of the arrays the caller needs (the
    model's); any other name or shape, or a dtype of another kind, is refused before the arrays
    file is read."""
    path = Path(path)
    if path.suffix in _SUFFIXES:
        path = path.with_suffix(".json")
    # NaN and Infinity parse here so that check_training_state can name the field that has one.
    meta = _read_json(
        path, "checkpoint", error=CheckpointError, max_bytes=SIDECAR_LIMIT, constants=True
    )
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, NPZ_FORMAT):
        raise CheckpointError(
            f"{str(path)!r} is not a chainrule checkpoint (format {FORMAT!r} expected)"
        )
    arrays_file = meta.get("arrays_file")
    suffix = ".safetensors" if meta["format"] == FORMAT else ".npz"
    if (
        not isinstance(arrays_file, str)
        or os.path.basename(arrays_file) != arrays_file
        or not arrays_file.endswith(suffix)
    ):
        raise CheckpointError(
            f"checkpoint {str(path)!r} names an invalid arrays file {arrays_file!r}"
        )
    if not isinstance(meta.get("sha256"), str):
        raise CheckpointError(f"checkpoint {str(path)!r} has no valid sha256")
    listed = _listed_arrays(meta, path, expected)
    needed, memory = sum(_nbytes(*info) for info in listed.values()), memory_bytes()
    if memory is not None and needed > memory:  # (without ``expected``, the .json's word only)
        raise CheckpointError(
            f"checkpoint {str(path)!r} lists {needed:,} bytes of arrays, more than this "
            f"machine's memory ({memory:,} bytes)"
        )
    arrays_path = path.parent / arrays_file
    stream, size = open_regular(arrays_path, "checkpoint arrays", CheckpointError)
    with stream:
        if suffix == ".npz":
            arrays = _read_npz(stream, size, arrays_path, listed, meta["sha256"])
        else:
            arrays = _read_safetensors(stream, size, arrays_path, listed, meta["sha256"])
    return arrays, meta


def _read_exactly(stream, size, path) -> bytearray:
    buffer = bytearray(size)
    if stream.readinto(buffer) != size or stream.read(1):
        raise CheckpointError(f"checkpoint {str(path)!r} changed size while it was read")
    return buffer


def _verify(payload, sha256, path) -> None:
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted (SHA-256 does not match its .json)"
        )


def _read_safetensors(stream, size, path, listed, sha256) -> dict:
    """The arrays of the safetensors file open as ``stream`` (``size`` bytes), every bound
    checked before the data are read."""
    where = f"checkpoint {str(path)!r}"
    data_size = sum(_nbytes(shape, dtype) for shape, dtype in listed.values())
    if size < 8:
        raise CheckpointError(f"{where} is truncated ({size} bytes)")
    header_size = int.from_bytes(stream.read(8), "little")
    if header_size > HEADER_LIMIT:
        raise CheckpointError(
            f"{where} declares a {header_size:,}-byte header (at most {HEADER_LIMIT:,})"
        )
    if 8 + header_size + data_size != size:
        raise CheckpointError(
            f"{where} has {size:,} bytes, but its header ({header_size:,} bytes) and the arrays "
            f"listed ({data_size:,} bytes) make {8 + header_size + data_size:,}"
        )
    try:
        header_text = stream.read(header_size).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{where} has a header that is not UTF-8") from None
    header = parse_json(header_text, f"{where}'s header", CheckpointError, max_depth=3)
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}'s header is not a JSON object")
    header.pop("__metadata__", None)
    if set(header) != set(listed):
        raise CheckpointError(f"{where} holds other arrays than its .json lists")
    ranges = []
    for name, (shape, dtype) in listed.items():
        entry = header[name]
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or _DTYPES.get(entry.get("dtype")) != dtype
            or entry.get("shape") != list(shape)
            or not (isinstance(offsets, list) and len(offsets) == 2)
            or not all(_is_count(n) for n in offsets)
            or offsets[1] - offsets[0] != _nbytes(shape, dtype)
        ):
            raise CheckpointError(
                f"checkpoint array {name!r} in {str(path)!r} does not match its recorded "
                "shape/dtype/size"
            )
        ranges.append((offsets[0], offsets[1], name))
    position = 0
    for begin, stop, name in sorted(ranges):
        if begin != position:
            raise CheckpointError(f"{where}: the bytes of array {name!r} overlap or leave a gap")
        position = stop
    # Everything is bounded: read the data (their size is now known exactly) and verify them.
    stream.seek(0)
    payload = _read_exactly(stream, size, path)
    _verify(payload, sha256, path)
    base = 8 + header_size
    return {
        name: xp.frombuffer(
            payload, dtype=listed[name][1], count=math.prod(listed[name][0]), offset=base + begin
        ).reshape(listed[name][0])
        for begin, _, name in ranges
    }


def _read_npz(stream, size, path, listed, sha256) -> dict:
    """The arrays of the (earlier format's) ``.npz`` open as ``stream``: the file's size, each
    member's declared uncompressed size and its ``.npy`` header are checked against ``listed``
    before anything is decompressed; NumPy's pickle path is never used."""
    where = f"checkpoint {str(path)!r}"
    bound = sum(_nbytes(s, d) + 2 * _NPY_HEADER_LIMIT for s, d in listed.values()) + 2**20
    if size > bound:
        raise CheckpointError(
            f"{where} has {size:,} bytes, more than the arrays listed need (at most {bound:,})"
        )
    payload = _read_exactly(stream, size, path)
    _verify(payload, sha256, path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(payload)))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{where} cannot be read: {error}") from None
    with archive:
        members = archive.infolist()
        names = [m.filename[: -len(".npy")] for m in members if m.filename.endswith(".npy")]
        if len(names) != len(members) or sorted(names) != sorted(listed):
            raise CheckpointError(f"{where} holds other arrays than its .json lists")
        return {
            name: _read_npy_member(archive, member, name, listed[name], path)
            for member, name in zip(members, names, strict=True)
        }


def _read_npy_member(archive, member, name, expected, path):
    """One ``.npy`` member, its declared size and header checked before its data are inflated."""
    where = f"checkpoint {str(path)!r}"
    shape, dtype = expected
    nbytes = _nbytes(shape, dtype)
    if member.file_size > nbytes + _NPY_HEADER_LIMIT:
        raise CheckpointError(
            f"{where}: member {member.filename!r} declares {member.file_size:,} bytes "
            f"uncompressed, more than array {name!r} of shape {list(shape)} needs"
        )
    try:
        with archive.open(member) as npy:
            version = xp.lib.format.read_magic(npy)
            if version == (1, 0):
                stored_shape, fortran, stored_dtype = xp.lib.format.read_array_header_1_0(npy)
            elif version == (2, 0):
                stored_shape, fortran, stored_dtype = xp.lib.format.read_array_header_2_0(npy)
            else:
                raise ValueError(f".npy version {version} is not supported")
            if tuple(stored_shape) != tuple(shape) or stored_dtype.str != dtype:
                raise CheckpointError(
                    f"checkpoint array {name!r} in {str(path)!r} does not match its recorded "
                    "shape/dtype"
                )
            data = npy.read(nbytes + 1)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure of a damaged archive
        raise CheckpointError(f"{where} cannot be read: {error}") from None
    if len(data) != nbytes:
        raise CheckpointError(f"{where}: array {name!r} has {len(data):,} bytes, not {nbytes:,}")
    array = xp.frombuffer(bytearray(data), dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def _check(condition, path, field, value, want) -> None:
    if not condition:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has an invalid {field}: {value!r} (expected {want})"
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_training_state(meta: dict, path) -> None:
    """Refuse a checkpoint whose counters, seed or running sums are not what a run writes: each
    field's type, sign and finiteness is checked, and the error names the field that is wrong.
    (Every random draw of a run is derived from its seed and the step number, so the seed and
    the counters are its whole random state.)"""
    for field in ("epoch", "batch", "step", "seed"):
        _check(_is_count(meta.get(field)), path, field, meta.get(field), "an integer >= 0")
    if "batch_size" in meta:
        value = meta["batch_size"]
        _check(_is_count(value) and value >= 1, path, "batch_size", value, "an integer >= 1")
    value = meta.get("elapsed", 0.0)
    _check(_is_number(value) and value >= 0, path, "elapsed", value, "a finite number >= 0")
    value = meta.get("first_loss")
    _check(value is None or _is_number(value), path, "first_loss", value, "a finite number")
    accumulators = meta.get("accumulators")
    _check(isinstance(accumulators, dict), path, "accumulators", accumulators, "an object")
    value = accumulators.get("loss_total")
    _check(_is_number(value), path, "accumulators.loss_total", value, "a finite number")
    for field in ("count", "hits"):
        value = accumulators.get(field)
        ok = _is_count(value) or (field == "hits" and value is None)
        _check(ok, path, f"accumulators.{field}", value, "an integer >= 0")
    cost = meta.get("cost", {})
    _check(isinstance(cost, dict), path, "cost", cost, "an object")
    for field, value in cost.items():
        ok = value is None or (_is_number(value) and value >= 0)
        _check(ok, path, f"cost.{field}", value, "a finite number >= 0")
    history = meta.get("history")
    _check(
        isinstance(history, list) and all(isinstance(r, dict) for r in history),
        path,
        "history",
        type(history).__name__,
        "a list of objects",
    )
    for index, record in enumerate(history):
        for field, value in record.items():
            ok = value is None or isinstance(value, (bool, str)) or _is_number(value)
            _check(ok, path, f"history[{index}].{field}", value, "a finite number")


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
        # un-commit first, then the data (of either format)
        for path in (json_path, *(json_path.with_suffix(s) for s in _SUFFIXES)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
