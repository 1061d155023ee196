"""The offline loaders: documented shapes, dtypes, fixed splits, and errors that name the package."""

import functools
import sys

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.errors import EeccError

KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
# name -> (per-sample shape, classes, train, val, test)
EXPECTED = {
    "digits": ((1, 8, 8), 10, 1077, 360, 360),
    "fashion-mnist": ((1, 28, 28), 10, 60000, 5000, 5000),
    "italy-power-demand": ((1, 24), 2, 67, 515, 514),
    "gunpoint": ((1, 150), 2, 50, 75, 75),
}


# Loading Fashion-MNIST costs a second or two; tests that only read share one load per name.
_load = functools.lru_cache(maxsize=None)(datasets.load)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_returns_documented_arrays(name):
    shape, classes, n_train, n_val, n_test = EXPECTED[name]
    data = _load(name)
    assert tuple(data) == KEYS
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (n, *shape) and y.shape == (n,)
        assert x.flags.c_contiguous and x.flags.writeable
        assert np.isfinite(x).all()
        assert set(np.unique(y)) == set(range(classes)), f"{name} {split} misses a class"


@pytest.mark.parametrize("name", ["digits", "fashion-mnist"])
def test_images_are_scaled_to_unit_range(name):
    x = _load(name)["x_test"]
    assert x.min() == 0.0 and x.max() == 1.0


def test_one_channel_axis_has_canonical_strides():
    # torch.from_numpy keeps numpy's strides, and the dynamo exporter's graph depends on them.
    x = _load("digits")["x_train"]
    assert x.strides == (256, 256, 32, 4)


def test_every_listed_name_loads():
    for name in datasets.names():
        data = datasets.load(name, limit_train=5)
        assert len(data["x_train"]) == 5 and data["x_test"].ndim in (3, 4)


def test_loads_are_deterministic():
    a, b = datasets.load("digits"), datasets.load("digits")
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key])


def test_fashion_mnist_val_and_test_halve_the_official_test_set():
    data = _load("fashion-mnist")
    counts = np.bincount(data["y_val"], minlength=10), np.bincount(data["y_test"], minlength=10)
    assert all(c.min() >= 400 for c in counts)  # interleaving keeps both halves near 500 per class
    assert not np.array_equal(data["x_val"][:100], data["x_test"][:100])


def test_limit_train_keeps_the_first_samples():
    full, few = datasets.load("digits"), datasets.load("digits", limit_train=100)
    np.testing.assert_array_equal(few["x_train"], full["x_train"][:100])
    np.testing.assert_array_equal(few["x_test"], full["x_test"])
    with pytest.raises(EeccError, match="limit_train"):
        datasets.load("digits", limit_train=0)


def test_unknown_name_lists_the_choices():
    with pytest.raises(EeccError, match="fashion-mnist"):
        datasets.load("cifar10")


def test_missing_debian_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("EECC_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(EeccError, match="dataset-fashion-mnist"):
        datasets.load("fashion-mnist")


def test_missing_sktime_is_named(monkeypatch):
    # A None entry in sys.modules makes `import sktime.datasets` raise ImportError, as if uninstalled.
    monkeypatch.setitem(sys.modules, "sktime", None)
    monkeypatch.setitem(sys.modules, "sktime.datasets", None)
    with pytest.raises(EeccError, match="pip install sktime"):
        datasets.load("italy-power-demand")


def test_save_npz_round_trips(tmp_path):
    data = _load("italy-power-demand")
    path = datasets.save_npz(data, tmp_path / "ipd.npz")
    with np.load(path) as back:
        assert sorted(back.files) == sorted(KEYS)
        for key in KEYS:
            np.testing.assert_array_equal(back[key], data[key])
            assert back[key].dtype == data[key].dtype
    assert [p.name for p in tmp_path.iterdir()] == ["ipd.npz"]
    with pytest.raises(EeccError, match=r"\.npz"):
        datasets.save_npz(data, tmp_path / "ipd.data")
