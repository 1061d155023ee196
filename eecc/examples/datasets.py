"""Real data sets that load with no network: sklearn digits, Debian's Fashion-MNIST, sktime's UCR sets.

Every loader returns ``{"x_train", "y_train", "x_val", "y_val", "x_test", "y_test"}`` with x float32
shaped for the models (NCHW for images, NCL for series) and y int64 class indices 0..C-1.
Splits are fixed, so two calls give identical arrays:

- ``digits``: 1797 8x8 images scaled to [0, 1]; stratified 60/20/20 split (seed 0).
- ``fashion-mnist``: 28x28 images scaled to [0, 1]; train = the official 60k; the official 10k test
  set is halved so that val and test are both unseen by a model trained on the 60k:
  val = its even-indexed samples, test = its odd-indexed ones.
- UCR sets bundled in the sktime wheel (``italy-power-demand``, ``gunpoint``, ...): train = the
  official train split; the official test split is halved the same way into val and test.
  UCR series come z-normalised from the archive and are left as they are.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from eecc.errors import EeccError
from eecc.files import replacing

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# eecc name -> sktime loader function; all are univariate, fixed-length, and ship inside the wheel.
_SKTIME_SETS = {
    "italy-power-demand": "load_italy_power_demand",
    "gunpoint": "load_gunpoint",
    "osuleaf": "load_osuleaf",
    "arrowhead": "load_arrow_head",
    "acsf1": "load_acsf1",
}

_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def names() -> list[str]:
    return ["digits", "fashion-mnist", *_SKTIME_SETS]


def load(name: str, *, limit_train: int | None = None) -> dict[str, np.ndarray]:
    """The named data set as arrays; ``limit_train`` keeps the first N training samples."""
    if name == "digits":
        data = _digits()
    elif name == "fashion-mnist":
        data = _fashion_mnist()
    elif name in _SKTIME_SETS:
        data = _sktime(name)
    else:
        raise EeccError(f"datasets: unknown data set '{name}'; choose one of {', '.join(names())}")
    if limit_train is not None:
        if limit_train < 1:
            raise EeccError(f"datasets: limit_train={limit_train} for '{name}' must be >= 1")
        data["x_train"] = data["x_train"][:limit_train]
        data["y_train"] = data["y_train"][:limit_train]
    # A fresh C-order copy: numpy gives size-1 axes (the channel of a 1-channel image) odd strides,
    # torch.from_numpy keeps them, and torch's dynamo ONNX exporter then emits an as_strided
    # Gather/Range chain instead of a plain Reshape. The copy also detaches from the idx cache.
    return {k: np.array(data[k], order="C", copy=True) for k in _KEYS}


def save_npz(data: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write the arrays to one .npz; the file appears whole or not at all."""
    path = Path(path)
    if path.suffix != ".npz":
        raise EeccError(f"datasets: output '{path}' must end in .npz (numpy appends it otherwise)")
    with replacing(path) as tmp:
        np.savez(tmp, **{k: np.asarray(v) for k, v in data.items()})
    return path


def _split_halves(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    # Interleaved halves keep both parts close to the official class balance.
    return x[0::2], y[0::2], x[1::2], y[1::2]


def _digits() -> dict[str, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise EeccError("datasets: 'digits' needs scikit-learn; run `pip install scikit-learn`") from exc
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    return dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)


@functools.lru_cache(maxsize=4)
def _read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EeccError(
            f"datasets: 'fashion-mnist' needs {path}; install the Debian package "
            "dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`)")
    raw = gzip.decompress(path.read_bytes())
    # idx header: two zero bytes, a type byte (0x08 = uint8), the rank, then big-endian uint32 dims.
    if raw[:3] != b"\x00\x00\x08":
        raise EeccError(f"datasets: {path} is not a uint8 idx file; reinstall dataset-fashion-mnist")
    rank = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=rank, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise EeccError(f"datasets: {path} is truncated; reinstall dataset-fashion-mnist")
    data = data.reshape(tuple(dims))
    data.flags.writeable = False
    return data


def _fashion_mnist() -> dict[str, np.ndarray]:
    root = Path(os.environ.get("EECC_FASHION_MNIST_DIR", FASHION_MNIST_DIR))

    def images(prefix: str) -> np.ndarray:
        return (_read_idx(root / f"{prefix}-images-idx3-ubyte.gz") / np.float32(255.0))[:, None]

    def labels(prefix: str) -> np.ndarray:
        return _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)

    x_val, y_val, x_test, y_test = _split_halves(images("t10k"), labels("t10k"))
    return dict(x_train=images("train"), y_train=labels("train"),
                x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)


def _sktime(name: str) -> dict[str, np.ndarray]:
    try:
        import sktime.datasets as skd
    except ImportError as exc:
        raise EeccError(f"datasets: '{name}' needs sktime; run `pip install sktime`") from exc
    loader = getattr(skd, _SKTIME_SETS[name])
    x_tr, y_tr = loader(split="train", return_X_y=True, return_type="numpy3D")
    x_te, y_te = loader(split="test", return_X_y=True, return_type="numpy3D")
    classes = sorted(set(y_tr), key=_label_key)
    index = {c: i for i, c in enumerate(classes)}
    unknown = set(y_te) - set(index)
    if unknown:
        raise EeccError(f"datasets: '{name}' test labels {sorted(unknown)} are absent from its train split")
    y_train = np.array([index[c] for c in y_tr], dtype=np.int64)
    y_test_all = np.array([index[c] for c in y_te], dtype=np.int64)
    x_val, y_val, x_test, y_test = _split_halves(x_te.astype(np.float32), y_test_all)
    return dict(x_train=x_tr.astype(np.float32), y_train=y_train,
                x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)


def _label_key(label) -> tuple:
    # UCR labels are strings such as "1", "2", "10": numeric order, not string order.
    text = str(label)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)
