"""chainrule.data: bundled and generated sets, splits, deterministic batches, files, bad input."""

import random

import numpy as np
import pytest

from chainrule import data
from chainrule.data import DataError, Dataset


def test_digits_splits_are_disjoint_complete_stratified_and_seeded():
    splits = data.load("digits", seed=0, scale="none")
    sizes = [len(d) for _, d in splits.items()]
    assert sum(sizes) == 1797 and splits.train.num_features == 64 and splits.train.num_classes == 10
    assert len(splits.test) == pytest.approx(0.25 * 1797, abs=10)
    rows = lambda d: {row.tobytes() for row in d.features}
    assert not rows(splits.train) & rows(splits.test)
    # Stratified: each class's share of the test set is its share of the whole set, within rounding.
    full = np.bincount(data.digits_arrays()[1]) / 1797
    test = np.bincount(splits.test.labels, minlength=10) / len(splits.test)
    assert np.max(np.abs(full - test)) < 0.01
    again = data.load("digits", seed=0, scale="none")
    other = data.load("digits", seed=1, scale="none")
    assert np.array_equal(again.test.features, splits.test.features)
    assert not np.array_equal(other.test.features, splits.test.features)


def test_scaling_uses_training_statistics_only():
    per_feature = data.load("moons", seed=0, scale="standard")
    np.testing.assert_allclose(per_feature.train.features.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(per_feature.train.features.std(axis=0), 1.0, atol=1e-12)
    assert np.abs(per_feature.test.features.mean(axis=0)).max() > 1e-6  # test stats are not forced
    glob = data.load("digits", seed=0)  # auto: one mean and scale for all pixels
    assert glob.train.features.mean() == pytest.approx(0.0, abs=1e-12)
    assert glob.train.features.std() == pytest.approx(1.0)
    assert np.ptp(glob.train.features.std(axis=0)) > 0.5  # columns keep their relative spread
    with pytest.raises(DataError, match="unknown scaling"):
        data.load("moons", scale="minmax")


def test_batches_cover_each_example_once_and_are_fixed_by_seed_and_epoch():
    dataset = Dataset(np.arange(20.0).reshape(10, 2), np.arange(10) % 3)
    epoch0 = list(data.batches(dataset, 4, seed=3, epoch=0))
    assert [len(labels) for _, labels in epoch0] == [4, 4, 2]
    seen = np.concatenate([features[:, 0] for features, _ in epoch0])
    assert sorted(seen) == list(np.arange(0.0, 20.0, 2.0))
    same = list(data.batches(dataset, 4, seed=3, epoch=0))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0, same, strict=True))
    epoch1 = np.concatenate([f[:, 0] for f, _ in data.batches(dataset, 4, seed=3, epoch=1)])
    assert not np.array_equal(seen, epoch1)
    # Starting at batch k replays the tail of the same epoch: what a mid-epoch resume needs.
    tail = list(data.batches(dataset, 4, seed=3, epoch=0, start=1))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0[1:], tail, strict=True))
    assert [len(l) for _, l in data.batches(dataset, 4, seed=3, drop_last=True)] == [4, 4]
    ordered = np.concatenate([f[:, 0] for f, _ in data.batches(dataset, 3, shuffle=False)])
    assert np.array_equal(ordered, np.arange(0.0, 20.0, 2.0))


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_non_positive_batch_size_is_rejected(batch_size):
    dataset = Dataset(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="batch size must be a positive integer"):
        list(data.batches(dataset, batch_size))


def test_generated_sets_have_their_shapes_and_are_seeded():
    x, y = data.spirals_arrays(200, seed=1)
    assert x.shape == (200, 2) and set(y) == {0, 1}
    assert np.array_equal(x, data.spirals_arrays(200, seed=1)[0])
    x, y = data.moons_arrays(100, seed=0)
    assert x.shape == (100, 2) and np.bincount(y).tolist() == [50, 50]
    x, y = data.teacher_arrays(50, features=4, seed=0)
    assert x.shape == (50, 4) and y.shape == (50,) and y.dtype == np.float64
    splits = data.load("teacher", seed=0)
    assert splits.train.task == "regression" and splits.train.num_outputs == 1


def test_mnist1d_is_generated_offline_cached_and_leaves_global_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    x, y, x_test, y_test = data.mnist1d_arrays(num_samples=500)
    assert x.shape == (400, 40) and x_test.shape == (100, 40) and set(y) <= set(range(10))
    assert (
        np.array_equal(np.random.get_state()[1], numpy_state) and random.getstate() == python_state
    )
    cached = list(tmp_path.glob("mnist1d-n500-seed42.npz"))
    assert len(cached) == 1
    again = data.mnist1d_arrays(num_samples=500)
    assert all(np.array_equal(a, b) for a, b in zip((x, y, x_test, y_test), again, strict=True))
    cached[0].write_bytes(b"damaged")  # a broken cache is regenerated, not trusted
    assert np.array_equal(data.mnist1d_arrays(num_samples=500)[0], x)


# ------------------------------------------------------------------------------------------------
# Bad input: one line naming the problem
# ------------------------------------------------------------------------------------------------


def test_features_and_labels_of_different_lengths():
    with pytest.raises(DataError, match="features have 5 rows but labels have 4"):
        Dataset(np.zeros((5, 2)), np.zeros(4, dtype=int))


def test_labels_outside_the_classes():
    with pytest.raises(DataError, match=r"label 3 at row 2 is outside \[0, 3\)"):
        Dataset(np.zeros((4, 2)), np.array([0, 1, 3, 2]), num_classes=3)
    with pytest.raises(DataError, match="label -1 at row 1 is negative"):
        Dataset(np.zeros((3, 2)), np.array([0, -1, 1]))
    with pytest.raises(DataError, match="whole numbers"):
        Dataset(np.zeros((3, 2)), np.array([0.0, 1.5, 1.0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_the_features(bad):
    features = np.zeros((4, 3))
    features[2, 1] = bad
    with pytest.raises(DataError, match="NaN or Inf .*row 2, column 1"):
        Dataset(features, np.array([0, 1, 0, 1]))


def test_nan_in_labels_and_regression_targets():
    with pytest.raises(DataError, match="labels contain NaN"):
        Dataset(np.zeros((2, 1)), np.array([0.0, np.nan]))
    with pytest.raises(DataError, match="targets contain NaN"):
        Dataset(np.zeros((2, 1)), np.array([0.5, np.inf]), task="regression")


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown dataset 'mnist'; choose digits, mnist1d"):
        data.load("mnist")


def test_split_fractions_must_leave_training_data():
    with pytest.raises(DataError, match="leave no training data"):
        data.load("moons", val_fraction=0.5, test_fraction=0.5)


# ------------------------------------------------------------------------------------------------
# User files
# ------------------------------------------------------------------------------------------------


def write(path, text):
    path.write_text(text)
    return str(path)


def test_csv_with_header_and_named_label_column(tmp_path):
    rows = "\n".join(f"{i},{i % 3},{i * 0.5}" for i in range(30))
    path = write(tmp_path / "d.csv", "a,label,b\n" + rows + "\n")
    splits = data.load(
        path, label_column="label", scale="none", val_fraction=0.0, test_fraction=0.2
    )
    assert splits.train.num_features == 2 and splits.train.num_classes == 3
    features = np.concatenate([splits.train.features, splits.test.features])
    assert sorted(features[:, 0]) == list(range(30))
    x, y, names = data.read_csv(path, label_column=1)
    assert names is None and y.tolist() == [i % 3 for i in range(30)]


def test_csv_text_labels_become_classes(tmp_path):
    path = write(tmp_path / "iris.csv", "1.0,2.0,setosa\n3.0,4.0,virginica\n5.0,6.0,setosa\n")
    features, labels, names = data.read_csv(path)
    assert names == ["setosa", "virginica"] and labels.tolist() == [0, 1, 0]
    assert features.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_csv_errors_name_the_line(tmp_path):
    with pytest.raises(DataError, match=r"line 3 column 1 \('b'\): 'x' is not a number"):
        data.read_csv(write(tmp_path / "a.csv", "a,b,y\n1,2,0\n3,x,1\n"))
    with pytest.raises(DataError, match="line 2 has 2 fields, expected 3"):
        data.read_csv(write(tmp_path / "b.csv", "1,2,0\n3,1\n"))
    with pytest.raises(DataError, match="does not exist"):
        data.load(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match="NaN or Inf"):
        data.load(write(tmp_path / "c.csv", "1,0\n2,1\nnan,0\n4,1\n"))


def test_npz_files_load_without_pickle(tmp_path):
    x = np.arange(40.0).reshape(20, 2)
    y = np.arange(20) % 2
    np.savez(tmp_path / "ok.npz", x=x, y=y, x_test=x[:4], y_test=y[:4])
    splits = data.load(str(tmp_path / "ok.npz"), scale="none", val_fraction=0.0)
    assert len(splits.train) == 20 and np.array_equal(splits.test.features, x[:4])
    np.savez(tmp_path / "short.npz", x=x, y=y[:-1])
    with pytest.raises(DataError, match="features have 20 rows but labels have 19"):
        data.load(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}] * 20, dtype=object), y=y)
    with pytest.raises(DataError, match="without pickle"):
        data.load(str(tmp_path / "objects.npz"))
    np.savez(tmp_path / "names.npz", inputs=x, y=y)
    with pytest.raises(DataError, match="needs arrays named 'x' and 'y'"):
        data.load(str(tmp_path / "names.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load(str(tmp_path / "junk.npz"))
