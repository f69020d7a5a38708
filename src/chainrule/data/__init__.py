"""Data: bundled and generated data sets, user CSV/NPZ files, splits and deterministic batches.

``chainrule.data.load("digits", seed=0)`` gives train/validation/test splits, standardised;
``batches(dataset, batch_size, seed, epoch)`` gives one epoch's mini-batches in an order fixed by
the seed and the epoch number alone.
"""

from .datasets import (
    SCALINGS,
    DataError,
    Dataset,
    Splits,
    Standardizer,
    batches,
    check_batch_size,
    epoch_order,
    num_batches,
    split,
    split_indices,
    standardize,
    validate,
)
from .sources import (
    DATASETS,
    IMAGE_LIKE,
    cache_dir,
    digits_arrays,
    load,
    mnist1d_arrays,
    moons_arrays,
    read_csv,
    read_npz,
    spirals_arrays,
    teacher_arrays,
)

__all__ = [
    "SCALINGS",
    "DATASETS",
    "IMAGE_LIKE",
    "DataError",
    "Dataset",
    "Splits",
    "Standardizer",
    "batches",
    "cache_dir",
    "check_batch_size",
    "digits_arrays",
    "epoch_order",
    "load",
    "mnist1d_arrays",
    "moons_arrays",
    "num_batches",
    "read_csv",
    "read_npz",
    "spirals_arrays",
    "split",
    "split_indices",
    "standardize",
    "teacher_arrays",
    "validate",
]
