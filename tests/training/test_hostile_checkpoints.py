"""Hostile checkpoints: every one is a one-line CheckpointError, refused before it is read in full.

Each test makes a real checkpoint with a tiny Trainer, damages it one way (a symlink to
/dev/zero, a FIFO, a huge or lying safetensors header, wrong names, shapes or dtypes, a JSON
nested 200,000 deep, NaN, negative, boolean or string counters, a bad seed, a deflate bomb in an
old-format .npz) and checks the error names what is wrong, that the trainer was left untouched,
and that nothing on disk changed.
"""

import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chainrule import data, nn, optim
from chainrule.training import CheckpointError, Trainer, latest_checkpoint, load_checkpoint
from chainrule.training.checkpoint import HEADER_LIMIT, NPZ_FORMAT

SIZES = [2, 8, 2]


def make_trainer(run_dir, seed=0):
    model = nn.MLP(SIZES, activation="tanh", seed=0)
    return Trainer(
        model, optim.SGD(0.1, momentum=0.9), batch_size=16, seed=seed, run_dir=run_dir, log=None
    )


@pytest.fixture
def run(tmp_path):
    """``(run_dir, checkpoint .json path)`` of a one-epoch run on 64 moons."""
    splits = data.load("moons", seed=0, size=64)
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(splits.train, 1)
    return tmp_path / "run", latest_checkpoint(tmp_path / "run" / "checkpoints")


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def refused(run_dir, pattern):
    """Restoring ``run_dir``'s newest checkpoint raises one line matching ``pattern`` and leaves
    a fresh trainer at step 0."""
    trainer = make_trainer(run_dir)
    with pytest.raises(CheckpointError, match=pattern) as caught:
        trainer.restore()
    assert "\n" not in str(caught.value)
    assert trainer.step == 0 and trainer.epoch == 0
    return str(caught.value)


def arrays_of(path):
    return path.with_suffix(".safetensors")


def split_safetensors(blob):
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]), blob[8 + size :]


def join_safetensors(header, data_bytes):
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data_bytes


def edit_meta(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def edit_header(path, change):
    """Rewrite the safetensors header of checkpoint ``path`` (and its checksum, so that only the
    checks on the header itself can refuse it)."""
    target = arrays_of(path)
    header, payload = split_safetensors(target.read_bytes())
    change(header)
    blob = join_safetensors(header, payload)
    target.write_bytes(blob)
    edit_meta(path, lambda meta: meta.update(sha256=hashlib.sha256(blob).hexdigest()))


# ------------------------------------------------------------------------------------------------
# The format: standard safetensors
# ------------------------------------------------------------------------------------------------


def test_a_checkpoint_is_standard_safetensors_with_its_metadata(run):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    _, path = run
    stored = load_file(arrays_of(path))
    arrays, meta = load_checkpoint(path)
    assert sorted(stored) == sorted(arrays) == sorted(meta["arrays"])
    assert all(np.array_equal(stored[k], arrays[k]) for k in stored)
    with safe_open(arrays_of(path), "np") as handle:
        assert handle.metadata() == {"format": "chainrule-checkpoint/2", "step": str(meta["step"])}


def test_pytorch_reads_the_weights(run):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    _, path = run
    tensors = load_file(str(arrays_of(path)))
    arrays, _ = load_checkpoint(path)
    weight = tensors["params.0.weight"]
    assert (
        isinstance(weight, torch.Tensor) and tuple(weight.shape) == arrays["params.0.weight"].shape
    )
    assert all(np.array_equal(tensors[k].numpy(), arrays[k]) for k in arrays)


# ------------------------------------------------------------------------------------------------
# Files that are not what they claim
# ------------------------------------------------------------------------------------------------


def test_a_symlink_to_dev_zero_is_refused_without_reading(run):
    run_dir, path = run
    arrays_of(path).unlink()
    arrays_of(path).symlink_to("/dev/zero")
    refused(run_dir, "is a symbolic link, not a regular file")
    # The sidecar itself, too.
    sidecar = path.read_bytes()
    path.unlink()
    path.symlink_to("/dev/zero")
    refused(run_dir, "is a symbolic link")
    path.unlink()
    path.write_bytes(sidecar)


def test_a_fifo_or_a_folder_is_refused(run):
    run_dir, path = run
    arrays_of(path).unlink()
    os.mkfifo(arrays_of(path))  # opening it for reading must not wait for a writer
    refused(run_dir, "is not a regular file")
    arrays_of(path).unlink()
    arrays_of(path).mkdir()
    refused(run_dir, "is not a regular file")


def test_an_oversized_header_is_refused_before_reading(run):
    run_dir, path = run
    target = arrays_of(path)
    blob = bytearray(target.read_bytes())
    blob[:8] = (2**40).to_bytes(8, "little")
    target.write_bytes(bytes(blob))
    refused(run_dir, f"declares a 1,099,511,627,776-byte header \\(at most {HEADER_LIMIT:,}\\)")


@pytest.mark.parametrize("change", ["append", "truncate", "header length"])
def test_a_file_whose_size_does_not_match_its_header_is_refused(run, change):
    run_dir, path = run
    target = arrays_of(path)
    blob = bytearray(target.read_bytes())
    if change == "append":
        blob += b"\0" * 8
    elif change == "truncate":
        blob = blob[:-8]
    else:
        blob[:8] = (int.from_bytes(blob[:8], "little") - 8).to_bytes(8, "little")
    target.write_bytes(bytes(blob))
    before = snapshot(run_dir)
    refused(run_dir, "has [0-9,]+ bytes, but its header")
    assert snapshot(run_dir) == before


def test_byte_ranges_that_overlap_or_lie_are_refused(run):
    run_dir, path = run

    def overlap(header):
        names = sorted(k for k in header if k != "__metadata__")
        first, second = header[names[0]], header[names[1]]
        second["data_offsets"] = list(first["data_offsets"])  # (sizes may differ: also refused)

    edit_header(path, overlap)
    refused(run_dir, "does not match its recorded|overlap or leave a gap")


def test_a_header_that_disagrees_with_the_sidecar_is_refused(run):
    run_dir, path = run
    edit_header(path, lambda header: header["params.0.weight"].update(dtype="I64"))
    refused(run_dir, "'params.0.weight' .* does not match its recorded shape/dtype")


def test_a_deeply_nested_header_is_refused(run):
    run_dir, path = run
    target = arrays_of(path)
    header, payload = split_safetensors(target.read_bytes())
    text = b"[" * 100_000 + b"]" * 100_000
    # Same data size as listed, so the header's length and the file's size agree.
    target.write_bytes(len(text).to_bytes(8, "little") + text + payload)
    refused(run_dir, "header is nested 100000 deep")


# ------------------------------------------------------------------------------------------------
# Arrays that do not fit the model: refused from the sidecar, before the arrays file is opened
# ------------------------------------------------------------------------------------------------


def test_wrong_names_shapes_and_dtypes_are_refused_before_the_data_are_read(run):
    run_dir, path = run
    arrays_of(path).unlink()
    arrays_of(path).symlink_to("/dev/zero")  # would be refused if it were opened at all

    def rename(meta):
        meta["arrays"]["params.0.weigth"] = meta["arrays"].pop("params.0.weight")

    good = path.read_text()
    edit_meta(path, rename)
    refused(run_dir, "different architecture: it lacks parameter '0.weight'.*extra parameter")
    path.write_text(good)
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(shape=[2, 8, 1]))
    refused(run_dir, "parameter '0.weight' has shape \\(2, 8, 1\\), expected \\(2, 8\\)")
    path.write_text(good)
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(shape=[10**12, 2]))
    refused(run_dir, "has shape \\(1000000000000, 2\\), expected")
    path.write_text(good)
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(dtype="<i8"))
    refused(run_dir, "parameter '0.weight' has dtype int64, expected float64")
    path.write_text(good)
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(dtype="|O"))
    refused(run_dir, "invalid shape or dtype")
    path.write_text(good)
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(shape=[-2, 8]))
    refused(run_dir, "invalid shape or dtype")
    path.write_text(good)
    refused(run_dir, "is a symbolic link")  # the sidecar is fine: now the file is opened


def test_without_a_model_a_sidecar_listing_more_than_memory_is_refused(run):
    _, path = run
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(shape=[2**40, 2**20]))
    with pytest.raises(CheckpointError, match="more than this machine's memory"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# The sidecar: bounded JSON, every counter and the seed validated by name
# ------------------------------------------------------------------------------------------------


def test_a_sidecar_nested_200000_deep_is_a_clean_error(run):
    run_dir, path = run
    path.write_text('{"format": ' + "[" * 200_000 + "]" * 200_000 + "}")
    refused(run_dir, "nested 200001 deep \\(at most 64\\)")


def test_an_oversized_sidecar_is_refused(run, monkeypatch):
    from chainrule.training import checkpoint

    run_dir, path = run
    monkeypatch.setattr(checkpoint, "SIDECAR_LIMIT", 1000)
    refused(run_dir, "is too large \\([0-9,]+ bytes; at most 1,000\\)")


BAD_VALUES = [float("nan"), float("inf"), -1, True, "3", 1.5, None, [1], 2**64]


@pytest.mark.parametrize("field", ["epoch", "batch", "step", "seed"])
@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_bad_counters_and_seeds_are_refused_naming_the_field(run, field, value):
    run_dir, path = run
    edit_meta(path, lambda meta: meta.update({field: value}))
    before = snapshot(run_dir)
    refused(run_dir, f"has an invalid {field}: ")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "field, value",
    [
        ("accumulators.loss_total", float("nan")),
        ("accumulators.loss_total", "1.0"),
        ("accumulators.count", -3),
        ("accumulators.count", float("inf")),
        ("accumulators.hits", False),
        ("elapsed", -1.0),
        ("elapsed", float("nan")),
        ("first_loss", float("inf")),
        ("cost.forward_passes", -5),
        ("cost.seconds", float("nan")),
        ("batch_size", 0),
        ("history[0].train_loss", float("nan")),
    ],
)
def test_bad_running_sums_and_costs_are_refused_naming_the_field(run, field, value):
    run_dir, path = run

    def change(meta):
        target, *keys = field.replace("[0]", ".0").split(".")
        holder = meta
        for key in [target, *keys][:-1]:
            holder = holder[int(key)] if key.isdigit() else holder[key]
        last = [target, *keys][-1]
        holder[last] = value

    edit_meta(path, change)
    refused(run_dir, f"has an invalid {re.escape(field)}: ")


def test_a_sidecar_that_is_not_an_object_or_lacks_arrays_is_refused(run):
    run_dir, path = run
    path.write_text("[1, 2, 3]")
    refused(run_dir, "is not a chainrule checkpoint")
    path.write_text(json.dumps({"format": "chainrule-checkpoint/2", "arrays_file": "../x"}))
    refused(run_dir, "invalid arrays file")


# ------------------------------------------------------------------------------------------------
# The earlier format (.npz): still loads, but a deflate bomb is refused before it is inflated
# ------------------------------------------------------------------------------------------------


def to_npz_format(path):
    """Rewrite checkpoint ``path`` in the earlier format, as chainrule wrote it before
    (``np.savez`` of the arrays, the .json naming the .npz)."""
    arrays, _ = load_checkpoint(path)
    npz = path.with_suffix(".npz")
    np.savez(npz, **arrays)
    arrays_of(path).unlink()
    payload = npz.read_bytes()
    edit_meta(
        path,
        lambda meta: meta.update(
            format=NPZ_FORMAT, arrays_file=npz.name, sha256=hashlib.sha256(payload).hexdigest()
        ),
    )
    return npz


def test_an_old_npz_checkpoint_still_resumes_to_the_same_weights(tmp_path):
    splits = data.load("moons", seed=0, size=64)
    straight = make_trainer(tmp_path / "straight")
    straight.fit(splits.train, 2)
    old = make_trainer(tmp_path / "old")
    old.fit(splits.train, 1)
    to_npz_format(latest_checkpoint(tmp_path / "old" / "checkpoints"))
    resumed = make_trainer(tmp_path / "old")
    assert resumed.restore() is not None and resumed.epoch == 1
    resumed.fit(splits.train, 2)
    for name, value in straight.state_arrays().items():
        assert np.array_equal(np.asarray(value), np.asarray(resumed.state_arrays()[name])), name


def write_bomb(npz, name, count, array_name_in_header=None):
    """A deflated ``.npz`` whose one member ``name.npy`` holds ``count`` float64 zeros: a few MB
    on disk, ``8 * count`` bytes once inflated."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (count,)}
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            chunk = bytes(16 * 2**20)
            left = 8 * count
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))


def bomb_checkpoint(path, count, sidecar_agrees):
    """Turn checkpoint ``path`` into an old-format one whose ``params.0.weight`` is a deflate bomb
    of ``count`` elements; its .json lists the bomb's shape or (``sidecar_agrees=False``) the
    model's, and its checksum matches the bomb either way."""
    npz = to_npz_format(path)
    arrays, _ = load_checkpoint(path)
    arrays.pop("params.0.weight")
    write_bomb(npz, "params.0.weight", count)
    with zipfile.ZipFile(npz, "a") as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value)
    payload = npz.read_bytes()

    def change(meta):
        meta["sha256"] = hashlib.sha256(payload).hexdigest()
        if sidecar_agrees:
            meta["arrays"]["params.0.weight"]["shape"] = [count]

    edit_meta(path, change)
    return npz


def test_a_deflate_bomb_is_refused_before_it_is_inflated(run):
    run_dir, path = run
    count = 2**22  # 32 MiB inflated, some 150 kB on disk: within the bound on the file's size
    npz = bomb_checkpoint(path, count, sidecar_agrees=False)
    assert npz.stat().st_size < 2**20
    refused(run_dir, "member 'params.0.weight.npy' declares [0-9,]+ bytes uncompressed")
    # A sidecar that agrees with the bomb: refused by the model's shapes, before the file is read.
    edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(shape=[count]))
    refused(run_dir, "parameter '0.weight' has shape \\(4194304,\\), expected \\(2, 8\\)")


def test_a_bigger_bomb_is_refused_by_the_size_of_its_file(run):
    run_dir, path = run
    bomb_checkpoint(path, 2**26, sidecar_agrees=False)  # 512 MiB inflated, 2 MB on disk
    refused(run_dir, "has [0-9,]+ bytes, more than the arrays listed need")


LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from chainrule.apps.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("kind", ["bomb", "oversized"])
def test_a_hostile_checkpoint_under_a_memory_limit_is_a_clean_error(tmp_path, kind):
    """The command-line resume of a run whose checkpoint would need gigabytes, in a process that
    may use 1.5 GB of address space: one line, exit status 2 (bad input), no MemoryError."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", LIMITED, str(int(1.5 * 2**30))]
    common = ["--data", "moons", "--size", "64", "--hidden", "8", "--batch-size", "16"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    made = subprocess.run(
        [*command, "train", *common, "--epochs", "1", "--quiet", "--no-plot", "--run-dir",
         str(run_dir)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = latest_checkpoint(run_dir / "checkpoints")
    if kind == "bomb":  # 2 GiB inflated, about 2 MB deflated, and the sidecar agrees with it
        bomb_checkpoint(path, 2**28, sidecar_agrees=True)
    else:  # a sidecar and a header that claim 4 GiB, in a file of a few kilobytes
        edit_meta(path, lambda meta: meta["arrays"]["params.0.weight"].update(shape=[2**29]))
        edit_header(path, lambda header: header["params.0.weight"].update(shape=[2**29]))
    before = snapshot(run_dir)
    result = subprocess.run(
        [*command, "train", "--resume", str(run_dir), "--epochs", "2", "--no-plot"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("chainrule train: error: checkpoint"), lines[0]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert snapshot(run_dir) == before


def test_the_memory_limit_is_real():
    """The limit of the test above does stop a process that inflates 2 GiB."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({int(1.5 * 2**30)}, {int(1.5 * 2**30)}))\n"
        "try:\n    bytearray(2**31)\nexcept MemoryError:\n    sys.exit(3)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    assert resource.RLIMIT_AS  # (the module exists on this platform)
