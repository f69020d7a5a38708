"""Datasets: a validated (features, labels) pair, splits, deterministic batching, and loaders.

Every dataset passes through :func:`validate` on its way in, so bad data fails at load time with
one line naming the problem (:class:`DataError`), never halfway through a run:
features and labels of different lengths, NaN or Inf, labels that are not whole numbers or lie
outside ``[0, classes)``.

>>> import numpy as np
>>> data = Dataset(np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1]))
>>> data.num_classes, len(data)
(2, 6)
>>> [labels.tolist() for _, labels in batches(data, batch_size=4, seed=0, epoch=0)]
[[1, 1, 1, 0], [0, 0]]
>>> Dataset(np.zeros((3, 2)), np.array([0, 1]))
Traceback (most recent call last):
...
chainrule.data.datasets.DataError: features have 3 rows but labels have 2; they must be equally long

Data sets live on the host unless moved: ``dataset.to("cuda")`` (or ``splits.to("cuda")``) copies
the validated arrays to a GPU once, optionally casting the features to a dtype, and
:func:`batches` then gathers every mini-batch on that device (one copy of the epoch's order per
epoch, none per batch). A data set built from device arrays is validated on a host copy (one
device-to-host copy at construction) and keeps its arrays where they were.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from ..engine import arraylib
from ..engine.arraylib import xp


class DataError(ValueError):
    """Data that cannot be trained on; the message names the problem in one line."""


def validate(features, labels, num_classes=None, task="classification"):
    """Checked copies of ``features`` (float, 2-d) and ``labels``; ``DataError`` otherwise.

    Arrays on a GPU are checked on a host copy and handed back on their device."""
    where = arraylib.device_of(features)
    where = where if where != "cpu" else arraylib.device_of(labels)
    if where == "cpu":
        return _validate_on_host(features, labels, num_classes, task)
    features, labels, num_classes = _validate_on_host(
        arraylib.to_numpy(features), arraylib.to_numpy(labels), num_classes, task
    )
    return arraylib.to_device(features, where), arraylib.to_device(labels, where), num_classes


def _validate_on_host(features, labels, num_classes, task):
    try:
        features = xp.asarray(features)
        labels = xp.asarray(labels)
    except (ValueError, TypeError) as error:
        raise DataError(f"data cannot be read as arrays: {error}") from None
    if features.dtype == object or labels.dtype == object:
        raise DataError("data must be numeric arrays, not Python objects")
    if features.ndim == 1:
        features = features.reshape(-1, 1)
    if features.ndim != 2:
        raise DataError(
            f"features must be a 2-d array (examples, features), got shape {features.shape}"
        )
    if labels.ndim < 1:
        raise DataError("labels must have one entry per example, got a scalar")
    if features.shape[0] != labels.shape[0]:
        raise DataError(
            f"features have {features.shape[0]} rows but labels have {labels.shape[0]}; "
            "they must be equally long"
        )
    if features.shape[0] == 0:
        raise DataError("the data set is empty")
    if features.shape[1] == 0:
        raise DataError("the data set has no feature columns")
    if not xp.issubdtype(features.dtype, xp.number) or xp.issubdtype(
        features.dtype, xp.complexfloating
    ):
        raise DataError(f"features must be real numbers, got dtype {features.dtype}")
    features = (
        features.astype(xp.float64) if not xp.issubdtype(features.dtype, xp.floating) else features
    )
    bad_rows = ~xp.all(xp.isfinite(features), axis=1)
    if xp.any(bad_rows):
        row = int(xp.argmax(bad_rows))
        col = int(xp.argmax(~xp.isfinite(features[row])))
        raise DataError(
            f"features contain NaN or Inf ({int(bad_rows.sum())} rows; first at row {row}, column "
            f"{col}: "
            f"{features[row, col]})"
        )
    if task == "regression":
        if not xp.issubdtype(labels.dtype, xp.number):
            raise DataError(f"regression targets must be numbers, got dtype {labels.dtype}")
        labels = labels.astype(features.dtype)
        finite_rows = xp.isfinite(labels).reshape(len(labels), -1).all(axis=1)
        if not xp.all(finite_rows):
            raise DataError(
                f"targets contain NaN or Inf (first at row {int(xp.argmax(~finite_rows))})"
            )
        return features, labels, None
    if task != "classification":
        raise DataError(f"unknown task {task!r}; use 'classification' or 'regression'")
    if labels.ndim != 1:
        raise DataError(f"class labels must be a 1-d array, got shape {labels.shape}")
    if labels.dtype.kind == "b":
        labels = labels.astype(xp.int64)
    if labels.dtype.kind == "f":
        finite = xp.isfinite(labels)
        if not xp.all(finite):
            raise DataError(f"labels contain NaN or Inf (first at row {int(xp.argmax(~finite))})")
        if not xp.all(labels == xp.round(labels)):
            row = int(xp.argmax(labels != xp.round(labels)))
            raise DataError(
                f"labels must be whole numbers (class indices); row {row} has {labels[row]}"
            )
        labels = labels.astype(xp.int64)
    if labels.dtype.kind not in "iu":
        raise DataError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(xp.int64)
    if num_classes is None:
        if labels.min() < 0:
            row = int(xp.argmin(labels))
            raise DataError(
                f"label {labels[row]} at row {row} is negative; class labels must be in [0, "
                "classes)"
            )
        num_classes = int(labels.max()) + 1
    num_classes = int(num_classes)
    if num_classes < 2:
        raise DataError(f"classification needs at least 2 classes, got {num_classes}")
    bad = (labels < 0) | (labels >= num_classes)
    if xp.any(bad):
        row = int(xp.argmax(bad))
        raise DataError(
            f"label {labels[row]} at row {row} is outside [0, {num_classes}) for {num_classes} "
            "classes"
        )
    return features, labels, num_classes


@dataclass
class Dataset:
    """Features (examples × features, float) and labels (class indices, or regression targets)."""

    features: object
    labels: object
    num_classes: int | None = None
    task: str = "classification"
    name: str = "data"

    def __post_init__(self):
        self.features, self.labels, self.num_classes = validate(
            self.features, self.labels, self.num_classes, self.task
        )

    def __len__(self):
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_outputs(self) -> int:
        if self.task == "classification":
            return int(self.num_classes)
        return 1 if self.labels.ndim == 1 else int(self.labels.shape[1])

    @property
    def device(self) -> str:
        """Where the arrays live: ``"cpu"``, ``"cuda"``..."""
        return arraylib.device_of(self.features)

    def subset(self, indices, name=None) -> Dataset:
        if self.device != "cpu":  # rows of validated data: valid, and no round trip to the host
            return Dataset._validated(
                self.features[indices],
                self.labels[indices],
                self.num_classes,
                self.task,
                name or self.name,
            )
        return Dataset(
            self.features[indices],
            self.labels[indices],
            self.num_classes,
            self.task,
            name or self.name,
        )

    def to(self, device, dtype=None) -> Dataset:
        """This data set on ``device`` (``"cpu"``, ``"cuda"``...), its features (and regression
        targets) cast to the floating ``dtype`` when given; ``self`` when nothing changes. One
        copy of each array, checked already, so not checked again.

        >>> import numpy as np
        >>> data = Dataset(np.zeros((4, 2)), np.array([0, 1, 1, 0]))
        >>> data.to("cpu", "float32").features.dtype, data.to("cpu") is data
        (dtype('float32'), True)
        """
        cast = None if dtype is None else xp.dtype(dtype)
        if cast is not None and cast.kind != "f":
            raise DataError(
                f"Dataset.to: dtype must be a floating dtype such as 'float32', got {dtype!r}"
            )
        target = arraylib.device_name(*arraylib.parse_device(getattr(device, "name", device)))
        if target == self.device and (cast is None or self.features.dtype == cast):
            return self
        features = _moved(self.features, target, cast)
        labels = _moved(self.labels, target, cast if self.task == "regression" else None)
        return Dataset._validated(features, labels, self.num_classes, self.task, self.name)

    @classmethod
    def _validated(cls, features, labels, num_classes, task, name) -> Dataset:
        """A data set of arrays that already passed :func:`validate` (moved or sliced rows)."""
        data = cls.__new__(cls)
        data.features, data.labels = features, labels
        data.num_classes, data.task, data.name = num_classes, task, name
        return data


def _moved(array, target: str, cast):
    """``array`` cast to ``cast`` (``None``: kept) where it is, then moved to ``target``: from the
    host, a narrowing cast halves the bytes that cross to the GPU."""
    if cast is not None and array.dtype != cast:
        array = array.astype(cast)
    return arraylib.to_device(array, target)


@dataclass
class Splits:
    """Train, validation (possibly ``None``) and test sets of one data source."""

    train: Dataset
    val: Dataset | None
    test: Dataset

    def items(self):
        return [
            (n, d)
            for n, d in (("train", self.train), ("val", self.val), ("test", self.test))
            if d is not None
        ]

    def to(self, device, dtype=None) -> Splits:
        """Every split on ``device`` (see :meth:`Dataset.to`)."""
        return Splits(
            self.train.to(device, dtype),
            None if self.val is None else self.val.to(device, dtype),
            self.test.to(device, dtype),
        )


def _check_fraction(value, what):
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise DataError(f"{what} must be in [0, 1), got {value}")
    return value


def split_indices(labels, val_fraction=0.1, test_fraction=0.25, seed=0, stratify=True):
    """Deterministic (train, val, test) index arrays; stratified by class when ``stratify``."""
    val_fraction = _check_fraction(val_fraction, "validation fraction")
    test_fraction = _check_fraction(test_fraction, "test fraction")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"validation ({val_fraction}) and test ({test_fraction}) fractions leave no training "
            "data"
        )
    rng = xp.random.default_rng(seed)
    labels = xp.asarray(labels)
    n = len(labels)
    groups = (
        [xp.flatnonzero(labels == c) for c in xp.unique(labels)]
        if stratify and labels.ndim == 1
        else [xp.arange(n)]
    )
    parts = ([], [], [])
    for group in groups:
        group = rng.permutation(group)
        n_test = int(round(test_fraction * len(group)))
        n_val = int(round(val_fraction * len(group)))
        parts[2].append(group[:n_test])
        parts[1].append(group[n_test : n_test + n_val])
        parts[0].append(group[n_test + n_val :])
    train, val, test = (xp.sort(xp.concatenate(p)) if p else xp.zeros(0, xp.int64) for p in parts)
    if len(train) == 0 or (test_fraction > 0 and len(test) == 0):
        raise DataError(f"{n} examples are too few for the requested split")
    return train, val, test


def split(data: Dataset, val_fraction=0.1, test_fraction=0.25, seed=0) -> Splits:
    """Split one data set into train / validation / test (stratified for classification)."""
    train, val, test = split_indices(
        data.labels, val_fraction, test_fraction, seed, data.task == "classification"
    )
    return Splits(
        data.subset(train, "train"),
        data.subset(val, "val") if len(val) else None,
        data.subset(test, "test"),
    )


def epoch_order(n: int, seed: int, epoch: int):
    """The order of examples in ``epoch``: a permutation fixed by (seed, epoch) alone, so a run
    resumed mid-epoch replays exactly the batches it would have seen."""
    return xp.random.default_rng([int(seed), 0x5EED, int(epoch)]).permutation(n)


def num_batches(n: int, batch_size: int, drop_last=False) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or int(batch_size) <= 0:
        raise DataError(f"batch size must be a positive integer, got {batch_size}")
    return int(batch_size)


def batches(
    data: Dataset,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle=True,
    drop_last=False,
    start=0,
) -> Iterator:
    """``(features, labels)`` mini-batches of one epoch, starting at batch number ``start``.

    The order is drawn on the host (the same on every device); for a data set on a GPU it is
    copied there once per epoch, and every batch is then gathered on the device."""
    batch_size = check_batch_size(batch_size)
    n = len(data)
    order = epoch_order(n, seed, epoch) if shuffle else xp.arange(n)
    where = arraylib.device_of(data.features)
    if where != "cpu":
        order = arraylib.to_device(order, where)
    for index in range(start, num_batches(n, batch_size, drop_last)):
        chosen = order[index * batch_size : (index + 1) * batch_size]
        yield data.features[chosen], data.labels[chosen]


class Standardizer:
    """Shift and scale features with statistics of the training set.

    ``per_feature=True`` gives each column zero mean and unit variance (constant columns are only
    centred): right for tabular data whose columns have different units. ``per_feature=False``
    uses one mean and one standard deviation for all columns: right for images and signals, whose
    columns share a unit, and it keeps nearly-constant border pixels from being blown up into noise.
    """

    def __init__(self, mean, scale):
        self.mean = xp.asarray(mean, dtype=xp.float64)
        self.scale = xp.asarray(scale, dtype=xp.float64)

    @classmethod
    def fit(cls, features, per_feature=True) -> Standardizer:
        features = arraylib.to_numpy(features)  # a few statistics: computed on the host
        mean = features.mean(axis=0) if per_feature else features.mean()
        std = features.std(axis=0) if per_feature else features.std()
        return cls(mean, xp.where(std > 1e-12, std, 1.0))

    def __call__(self, data: Dataset) -> Dataset:
        where = data.device
        mean, scale = arraylib.to_device(self.mean, where), arraylib.to_device(self.scale, where)
        features = (data.features - mean) / scale
        return Dataset(features, data.labels, data.num_classes, data.task, data.name)


SCALINGS = ("standard", "global", "none")


def standardize(splits: Splits, mode: str = "standard") -> Splits:
    """The same splits with features scaled by the training set's statistics: ``"standard"``
    (per feature), ``"global"`` (one mean and scale for all features) or ``"none"``."""
    if mode not in SCALINGS:
        raise DataError(f"unknown scaling {mode!r}; choose from {SCALINGS}")
    if mode == "none":
        return splits
    scaler = Standardizer.fit(splits.train.features, per_feature=mode == "standard")
    return Splits(
        scaler(splits.train),
        scaler(splits.val) if splits.val is not None else None,
        scaler(splits.test),
    )
