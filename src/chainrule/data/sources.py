"""Where data comes from: bundled, generated and user files, all without a download.

=========  ====================================================================================
digits     scikit-learn's bundled 8×8 handwritten digits: 1,797 images, 64 pixels, 10 classes
mnist1d    MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package's own
           generator with its published settings (5,000 signals of length 40, 10 classes, the
           published 4,000/1,000 train/test split); cached as .npz after the first generation
spirals    two interleaved spirals in the plane, 2 classes
moons      two interleaving half circles, 2 classes
teacher    teacher-student regression: targets from a fixed random tanh network plus noise
*.csv      a CSV file: numeric feature columns plus one label column (default: the last)
*.npz      a NumPy .npz (never unpickled) with arrays ``x`` and ``y`` (or ``features``/``labels``),
           optionally ``x_test``/``y_test`` for a fixed test set
=========  ====================================================================================
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
from pathlib import Path

from ..engine.arraylib import xp
from .datasets import DataError, Dataset, Splits, split, split_indices, standardize

DATASETS = {
    "digits": (
        "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 64 features, 10 classes)"
    ),
    "mnist1d": "MNIST-1D generated locally (5,000 signals of length 40, 10 classes; 4,000 train / "
    "1,000 test)",
    "spirals": "two interleaved spirals (2 features, 2 classes)",
    "moons": "two interleaving half circles (2 features, 2 classes)",
    "teacher": "teacher-student regression (10 features, 1 target from a random tanh network)",
}


#: Data sets whose features share one unit (pixels, samples of a signal): scaled globally.
IMAGE_LIKE = ("digits", "mnist1d")


def cache_dir() -> Path:
    """``$CHAINRULE_CACHE``, else ``$XDG_CACHE_HOME/chainrule``, else ``~/.cache/chainrule``."""
    if os.environ.get("CHAINRULE_CACHE"):
        return Path(os.environ["CHAINRULE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chainrule"


# ------------------------------------------------------------------------------------------------
# Bundled and generated sets: each returns (features, labels, fixed_test or None, task)
# ------------------------------------------------------------------------------------------------


def digits_arrays():
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    features, labels = load_digits(return_X_y=True)
    return features.astype(xp.float64), labels.astype(xp.int64)


def _generate_mnist1d(num_samples: int, seed: int):
    import numpy  # the generator seeds NumPy's global RNG; restored afterwards

    global_numpy_state = numpy.random.get_state()
    global_python_state = random.getstate()
    try:
        from mnist1d.data import get_dataset_args, make_dataset  # the offline generator only
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise DataError(
            f"the mnist1d package is needed for MNIST-1D ({error}); pip install mnist1d"
        ) from None
    try:
        args = get_dataset_args()
        args.num_samples = int(num_samples)
        args.seed = int(seed)
        generated = make_dataset(args)
    finally:
        numpy.random.set_state(global_numpy_state)
        random.setstate(global_python_state)
    return (
        xp.asarray(generated["x"], dtype=xp.float64),
        xp.asarray(generated["y"], dtype=xp.int64),
        xp.asarray(generated["x_test"], dtype=xp.float64),
        xp.asarray(generated["y_test"], dtype=xp.int64),
    )


def mnist1d_arrays(num_samples: int = 5000, seed: int = 42, cache: bool = True):
    """``(x_train, y_train, x_test, y_test)`` of MNIST-1D with the published settings (seed 42)."""
    path = cache_dir() / f"mnist1d-n{int(num_samples)}-seed{int(seed)}.npz"
    if cache and path.is_file():
        try:
            with xp.load(path, allow_pickle=False) as stored:
                arrays = tuple(stored[k] for k in ("x", "y", "x_test", "y_test"))
            n_train = int(num_samples * 0.8)
            if arrays[0].shape == (n_train, 40) and arrays[2].shape == (num_samples - n_train, 40):
                return arrays
        except Exception:  # noqa: BLE001 - a damaged cache is regenerated, never trusted
            pass
    arrays = _generate_mnist1d(num_samples, seed)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".mnist1d-", suffix=".npz.tmp")
            with os.fdopen(handle, "wb") as out:
                xp.savez(out, x=arrays[0], y=arrays[1], x_test=arrays[2], y_test=arrays[3])
            os.replace(temp, path)
        except OSError:
            pass  # an unwritable cache only costs regeneration time
    return arrays


def spirals_arrays(n: int = 1000, noise: float = 0.2, seed: int = 0):
    """Two interleaved spirals: class c at angle t + cπ, radius ∝ t, with Gaussian noise."""
    rng = xp.random.default_rng(seed)
    labels = xp.arange(n) % 2
    t = xp.sqrt(rng.uniform(0.0, 1.0, n)) * 3.0 * xp.pi
    angle = t + labels * xp.pi
    radius = t / (3.0 * xp.pi) * 2.0
    features = xp.stack([radius * xp.cos(angle), radius * xp.sin(angle)], axis=1)
    features = features + noise * 0.1 * rng.standard_normal(features.shape)
    order = rng.permutation(n)
    return features[order], labels[order].astype(xp.int64)


def moons_arrays(n: int = 1000, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles (upper one centred at 0, lower one at (1, 0.5))."""
    rng = xp.random.default_rng(seed)
    labels = xp.arange(n) % 2
    angle = rng.uniform(0.0, xp.pi, n)
    upper = xp.stack([xp.cos(angle), xp.sin(angle)], axis=1)
    lower = xp.stack([1.0 - xp.cos(angle), 0.5 - xp.sin(angle)], axis=1)
    features = xp.where(labels[:, None] == 0, upper, lower) + noise * rng.standard_normal((n, 2))
    order = rng.permutation(n)
    return features[order], labels[order].astype(xp.int64)


def teacher_arrays(
    n: int = 2000, features: int = 10, hidden: int = 32, noise: float = 0.1, seed: int = 0
):
    """Regression targets y = teacher(x) + noise from a fixed random 1-hidden-layer tanh network."""
    rng = xp.random.default_rng(seed)
    inputs = rng.standard_normal((n, features))
    w1 = rng.standard_normal((features, hidden)) / xp.sqrt(features)
    w2 = rng.standard_normal((hidden, 1)) / xp.sqrt(hidden)
    targets = xp.tanh(inputs @ w1) @ w2
    return inputs, (targets + noise * rng.standard_normal(targets.shape)).ravel()


# ------------------------------------------------------------------------------------------------
# User files
# ------------------------------------------------------------------------------------------------


def _parse_float(text):
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path, label_column=None):
    """``(features, labels, class_names)`` from a CSV with an optional header row.

    ``label_column`` is a header name or a 0-based index (negative counts from the end; default
    the last column). Labels that are all numbers are taken as they are; otherwise each distinct
    text becomes a class, numbered in sorted order (``class_names`` lists them).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise DataError(f"data file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read CSV {str(path)!r}: {error}") from None
    if not rows:
        raise DataError(f"CSV {str(path)!r} is empty")
    header = None
    # The first row is a header when it has text where the next row has a number (a column of
    # text class names is text in every row), or when it is all text.
    first, second = rows[0], rows[1] if len(rows) > 1 else []
    text_over_number = any(
        _parse_float(a) is None and _parse_float(b) is not None
        for a, b in zip(first, second, strict=False)
    )
    if text_over_number or all(_parse_float(cell) is None for cell in first):
        header, rows = [cell.strip() for cell in first], rows[1:]
    if not rows:
        raise DataError(f"CSV {str(path)!r} has a header but no data rows")
    width = len(header) if header else len(rows[0])
    if width < 2:
        raise DataError(f"CSV {str(path)!r} needs at least one feature column and a label column")
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(
                f"CSV {str(path)!r} line {number} has {len(row)} fields, expected {width}"
            )
    if label_column is None:
        label_index = width - 1
    elif header and str(label_column) in header:
        label_index = header.index(str(label_column))
    else:
        try:
            label_index = int(label_column)
        except ValueError:
            raise DataError(
                f"label column {label_column!r} is not in the CSV header {header}"
            ) from None
        if not -width <= label_index < width:
            raise DataError(f"label column {label_index} is out of range for {width} columns")
        label_index %= width
    features = xp.empty((len(rows), width - 1))
    raw_labels = []
    for r, row in enumerate(rows):
        c_out = 0
        for c, cell in enumerate(row):
            if c == label_index:
                raw_labels.append(cell.strip())
                continue
            value = _parse_float(cell)
            if value is None:
                line = r + (2 if header else 1)
                name = f" ({header[c]!r})" if header else ""
                raise DataError(
                    f"CSV {str(path)!r} line {line} column {c}{name}: {cell.strip()!r} is not a "
                    "number"
                )
            features[r, c_out] = value
            c_out += 1
    numeric = [_parse_float(v) for v in raw_labels]
    if all(v is not None for v in numeric):
        return features, xp.asarray(numeric), None
    names = sorted(set(raw_labels))
    index = {name: i for i, name in enumerate(names)}
    return features, xp.asarray([index[v] for v in raw_labels], dtype=xp.int64), names


_X_KEYS = ("x", "features", "X")
_Y_KEYS = ("y", "labels", "Y", "targets")


def read_npz(path):
    """``(x, y, x_test, y_test)`` from an .npz file, loaded without pickle (test arrays
    optional)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # np.load would take any other file for a pickle
            raise DataError(f"{str(path)!r} is not a readable .npz file (not a zip archive)")
    try:
        with xp.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except ValueError as error:
        raise DataError(f"cannot load {str(path)!r} without pickle: {error}") from None
    except Exception as error:  # noqa: BLE001 - zip and format errors of a damaged file
        raise DataError(
            f"{str(path)!r} is not a readable .npz file ({type(error).__name__}: {error})"
        ) from None
    x_key = next((k for k in _X_KEYS if k in arrays), None)
    y_key = next((k for k in _Y_KEYS if k in arrays), None)
    if x_key is None or y_key is None:
        raise DataError(
            f"{str(path)!r} needs arrays named 'x' and 'y' (or 'features' and 'labels'); "
            f"it has {sorted(arrays)}"
        )
    return arrays[x_key], arrays[y_key], arrays.get("x_test"), arrays.get("y_test")


# ------------------------------------------------------------------------------------------------
# One entry point
# ------------------------------------------------------------------------------------------------


def is_file_source(name: str) -> bool:
    return str(name).lower().endswith((".csv", ".npz")) or os.sep in str(name)


def load(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.25,
    scale: str = "auto",
    label_column=None,
    num_classes=None,
    task=None,
    size=None,
) -> Splits:
    """Train/validation/test splits of a named data set or a user's .csv/.npz file.

    ``seed`` fixes the split (and the generated sets' noise, except MNIST-1D, which keeps its
    published seed and test set); ``scale`` shifts and scales features with the training set's
    statistics: "standard" (per feature), "global" (one mean and scale, for images and signals),
    "none", or "auto" (global for digits and mnist1d, standard otherwise); ``size`` overrides the
    number of examples of a generated set.
    """
    name = str(name)
    fixed_test = None
    default_task = "classification"
    if name == "digits":
        features, labels = digits_arrays()
    elif name == "mnist1d":
        x, y, x_test, y_test = mnist1d_arrays(num_samples=size or 5000)
        features, labels, fixed_test = x, y, (x_test, y_test)
    elif name == "spirals":
        features, labels = spirals_arrays(n=size or 1000, seed=seed)
    elif name == "moons":
        features, labels = moons_arrays(n=size or 1000, seed=seed)
    elif name == "teacher":
        features, labels = teacher_arrays(n=size or 2000, seed=seed)
        default_task = "regression"
    elif is_file_source(name):
        if name.lower().endswith(".npz"):
            features, labels, x_test, y_test = read_npz(name)
            if (x_test is None) != (y_test is None):
                raise DataError(f"{name!r} has only one of 'x_test' and 'y_test'")
            if x_test is not None:
                fixed_test = (x_test, y_test)
        elif name.lower().endswith(".csv"):
            features, labels, _ = read_csv(name, label_column)
        else:
            raise DataError(f"data file {name!r} must end in .csv or .npz")
    else:
        choices = ", ".join(DATASETS)
        raise DataError(
            f"unknown dataset {name!r}; choose {choices}, or give a path to a .csv or .npz file"
        )
    task = task or default_task
    full = Dataset(features, labels, num_classes, task, name)
    if fixed_test is not None:
        test = Dataset(fixed_test[0], fixed_test[1], full.num_classes, task, "test")
        if test.num_features != full.num_features:
            raise DataError(
                f"test features have {test.num_features} columns but training features "
                f"{full.num_features}"
            )
        train_idx, val_idx, _ = split_indices(
            full.labels, val_fraction, 0.0, seed, task == "classification"
        )
        splits = Splits(
            full.subset(train_idx, "train"),
            full.subset(val_idx, "val") if len(val_idx) else None,
            test,
        )
    else:
        splits = split(full, val_fraction, test_fraction, seed)
    if scale == "auto":
        scale = "global" if name in IMAGE_LIKE else "standard"
    return standardize(splits, scale)
