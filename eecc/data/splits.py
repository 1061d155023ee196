"""Data in: validated train/val/test splits that stream in chunks, from numpy arrays or an .npz file."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from eecc.data.labels import check_labels, warn_missing_classes
from eecc.data.layout import layout_advice
from eecc.errors import EeccError, EeccWarning

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{a}_{s}" for s in SPLITS for a in "xy")  # x_train, y_train, x_val, ...
VAL_FRACTION = 0.2
_CHECK_ROWS = 4096


@dataclass
class Split:
    """Rows `index` of `x` (all rows if None), read lazily so a memory-mapped `x` never loads whole."""

    name: str
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None
    scale: float | None = None

    def __len__(self) -> int:
        return len(self.y)

    def rows(self, start: int, stop: int) -> np.ndarray:
        x = self.x[start:stop] if self.index is None else self.x[self.index[start:stop]]
        x = np.asarray(x, dtype=np.float32)
        return x * np.float32(self.scale) if self.scale is not None else x

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self), size):
            yield start, self.rows(start, min(start + size, len(self)))

    def fingerprint(self) -> str:
        """Content hash of exactly what the model will see (values, order, scale): the digest of the shape and of
        every 4096-row block's own digest in order, blocks hashed on all cores (hashlib releases the GIL; one
        core took ~0.2 s for Fashion-MNIST's training rows, while the other waited)."""
        from concurrent.futures import ThreadPoolExecutor

        def block(start: int) -> bytes:
            stop = min(start + _CHECK_ROWS, len(self))
            raw = self.x[start:stop] if self.index is None else self.x[self.index[start:stop]]
            return hashlib.blake2b(np.ascontiguousarray(raw).data, digest_size=16).digest()

        h = hashlib.blake2b(digest_size=16)
        h.update(repr((self.x.dtype.str, self.x.shape[1:], len(self), self.scale, "blocks")).encode())
        starts = range(0, len(self), _CHECK_ROWS)
        with ThreadPoolExecutor(max(1, min(len(starts), os.cpu_count() or 1))) as pool:
            for digest in pool.map(block, starts):
                h.update(digest)
        return h.hexdigest()


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split | None

    def items(self) -> list[tuple[str, Split]]:
        return [(s.name, s) for s in (self.train, self.val, self.test) if s is not None]


NO_TEST = ("the data has no test split (x_test, y_test); eecc reports the cascade's accuracy on held-out test data "
           "only: add x_test and y_test")


MIN_SAMPLES = 20  # fewest a test or validation split may hold (an accuracy on fewer: uncertain by over ±22 pt)


def uncertainty_pt(n: int) -> float:
    """Half-width in points of the widest 95 % interval of an accuracy measured on n samples (normal
    approximation at 50 %: 1.96 · √(0.25 / n))."""
    return 100 * 1.96 * math.sqrt(0.25 / max(n, 1))


def require_test(splits: Splits) -> Split:
    """The test split; EeccError (NO_TEST) without one, or with fewer than MIN_SAMPLES samples: search and compile
    report on it and on nothing else (a 2-sample split was reported as if 0 or 100 % meant something)."""
    if splits.test is None:
        raise EeccError(NO_TEST)
    n = len(splits.test)
    if n < MIN_SAMPLES:
        raise EeccError(f"the test split holds {n} sample(s): an accuracy measured on so few is uncertain by up to "
                        f"±{uncertainty_pt(n):.0f} pt (95 %); give at least {MIN_SAMPLES} in x_test/y_test (about 400 "
                        "for ±5 pt)")
    return splits.test


def make_splits(x_train, y_train, x_val=None, y_val=None, x_test=None, y_test=None, *,
                input_shape: Sequence[int], num_classes: int, scale: float | None = None,
                val_fraction: float = VAL_FRACTION, seed: int = 0, origin: str = "data") -> Splits:
    """Validate numpy arrays; without x_val, hold out a stratified `val_fraction` of the training set."""
    arrays = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    checked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    _warn_other_float({name: x for name, (x, _) in arrays.items()}, origin)
    _check_one_dtype(arrays, origin)
    for name, (x, y) in arrays.items():
        if x is None and y is None:
            continue
        if x is None or y is None:
            raise EeccError(f"{origin}: x_{name} and y_{name} must be given together; add the missing one")
        checked[name] = _check(name, x, y, tuple(input_shape), num_classes, scale, origin)
    if "train" not in checked:
        raise EeccError(f"{origin}: no training data; provide x_train and y_train")
    x, y = checked["train"]
    present = np.unique(y)
    if len(present) < 2:  # every head would score 100 % (or chance) and be dropped with a misleading reason
        raise EeccError(f"{origin}: y_train holds only class {present.tolist()} of the model's {num_classes}; "
                        "exit heads learn to tell classes apart: give training samples of every class")
    warn_missing_classes(present, num_classes, origin)
    if "val" in checked:
        only = np.unique(checked["val"][1])
        if len(only) < 2:  # every head would be dropped, blamed on the split's size (nu11)
            raise EeccError(f"{origin}: y_val holds only class {only.tolist()} of the model's {num_classes}; the "
                            "validation split judges the exit heads and sets their thresholds: give validation "
                            "samples of every class, or leave x_val/y_val out (eecc then holds out a stratified "
                            "share of the training data)")
        train = Split("train", x, y, None, scale)
        val = Split("val", *checked["val"], None, scale)
    else:
        tr_idx, va_idx = stratified_holdout(y, val_fraction, seed)
        if len(va_idx) == 0 or len(tr_idx) == 0:
            raise EeccError(f"{origin}: {len(y)} training samples are too few to hold out a validation split; "
                            "provide x_val and y_val or more training data")
        train = Split("train", x, y[tr_idx], tr_idx, scale)
        val = Split("val", x, y[va_idx], va_idx, scale)
    test = Split("test", *checked["test"], None, scale) if "test" in checked else None
    return Splits(train, val, test)


def normalise(data, *, input_shape: Sequence[int], num_classes: int, scale: float | None = None,
              seed: int = 0, origin: str = "data") -> Splits:
    """The one way data comes in: an .npz path, a dict of x_/y_ arrays or `Splits`, validated against the model.

    Raises EeccError (one line) for keys other than KEYS, for another type, and for every check of
    make_splits.
    """
    if isinstance(data, Splits):
        return data
    kw = dict(input_shape=input_shape, num_classes=num_classes, scale=scale, seed=seed)
    if isinstance(data, (str, os.PathLike)):
        return load_npz(data, **kw)
    if isinstance(data, dict):
        _check_keys(data, origin)
        return make_splits(**data, **kw, origin=origin)
    raise EeccError(f"{origin}: expected an .npz path, a dict of x_/y_ arrays or Splits, not {type(data).__name__}; "
                    "pass numpy arrays as a dict such as {'x_train': ..., 'y_train': ...}")


def load_npz(path: str | Path, *, input_shape: Sequence[int], num_classes: int, scale: float | None = None,
             seed: int = 0) -> Splits:
    """Read x_/y_{train,val,test}; uncompressed members are memory-mapped (data larger than RAM)."""
    path = Path(path)
    check_data_file(path, "give an .npz with x_train and y_train")
    try:
        arrays = _open_npz(path)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise EeccError(f"data file '{path}' is not a readable .npz ({exc}); write it with numpy.savez") from None
    _check_keys(arrays, f"data file '{path}'")
    return make_splits(*(arrays.get(f"{a}_{s}") for s in SPLITS for a in "xy"), input_shape=input_shape,
                       num_classes=num_classes, scale=scale, seed=seed, origin=str(path))


def sample_shape(data) -> tuple[int, ...] | None:
    """x_train's sample shape (without the batch dim) of `data` (an .npz path or a dict of arrays), read without
    loading the samples; None when it cannot be read (the data checks say why later)."""
    try:
        arrays = data if isinstance(data, dict) else _open_npz(Path(data)) if data is not None else {}
        x = arrays.get("x_train")
        return None if x is None else tuple(int(d) for d in np.shape(x)[1:])
    except (OSError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def check_data_file(path: Path, advice: str) -> None:
    """EeccError unless `path` is a file: missing, or a folder (named as one, with the .npz files inside it)."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.npz"))[:3]
        raise EeccError(f"data file '{path}' is a folder, not a file; "
                        + (f"give one of the .npz files in it ({', '.join(inside)})" if inside else advice))
    if not path.is_file():
        raise EeccError(f"data file '{path}' does not exist; {advice}")


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) row indices; each class with ≥ 2 samples gives round(fraction·n), ≥ 1, to val."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) >= 2:
            take = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
            val.append(rng.permutation(rows)[:take])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    mask = np.ones(len(y), bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def _check_one_dtype(arrays: dict, origin: str) -> None:
    """uint8 codes in one split and floats in another: --scale suits the one and is refused on the other, so each
    error alone sent the user to the other (nu12 F4). Said once, naming both."""
    codes = [f"x_{n}" for n, (x, _) in arrays.items() if x is not None and _dtype(x) == np.uint8]
    floats = [f"x_{n}" for n, (x, _) in arrays.items() if x is not None and np.issubdtype(_dtype(x), np.floating)]
    if codes and floats:
        kinds = sorted({str(_dtype(arrays[n[2:]][0])) for n in floats})
        raise EeccError(f"{origin}: {', '.join(codes)} {'is' if len(codes) == 1 else 'are'} uint8 but "
                        f"{', '.join(floats)} {'is' if len(floats) == 1 else 'are'} {'/'.join(kinds)}: store every "
                        "split in one dtype (float32, as the model reads it, or uint8 codes for --scale)")


def _check_keys(data: dict, origin: str) -> None:
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise EeccError(f"{origin} has unexpected arrays {unknown}; allowed are {', '.join(KEYS)}")


def _dtype(x) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _other_float(x) -> bool:
    return np.issubdtype(_dtype(x), np.floating) and _dtype(x) != np.float32


def _warn_other_float(arrays: dict, origin: str, bundle: bool = False) -> None:
    """One warning for every x that is float but not float32. numpy's default float is float64 (sklearn, pandas);
    eecc analyses every model in float32 (a float16 one too: passes/normalize_float.py) and writes float32 stages,
    so the conversion loses nothing the stages could use; `bundle`: the data are for `eecc run` (nu15 F5: a float16
    model's bundle said 'the model's input type', which was float16)."""
    names = [f"x_{name} ({_dtype(x)})" for name, x in arrays.items() if x is not None and _other_float(x)]
    if names:
        kind = "the bundle's input type (eecc writes float32 stages)" if bundle else \
            "the type eecc analyses the model in and writes its stages in"
        warnings.warn(f"{origin}: {', '.join(names)} read as float32, {kind} (store x.astype(np.float32) to skip the "
                      "conversion and its in-memory copy)", EeccWarning, stacklevel=3)


def check_arrays(name: str, x, y, input_shape: Sequence[int], num_classes: int | None, scale: float | None,
                 origin: str, bundle: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The data checks of `compile`, for one split; `y` may be None (`eecc run` without labels) and
    `num_classes` None (label range unknown); `bundle`: checked for `eecc run` against a built bundle's input
    (layout.layout_advice). Returns x and int64 y; raises EeccError (one line)."""
    _warn_other_float({name: x}, origin, bundle)
    return _check(name, x, y, tuple(input_shape), num_classes, scale, origin, bundle)


def _check(name, x, y, input_shape, num_classes, scale, origin, bundle=False) -> tuple[np.ndarray, np.ndarray | None]:
    where = f"{origin}: x_{name}"
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == np.uint8 and scale is None:
        raise EeccError(f"{where} is uint8; pass --scale (e.g. --scale 0.00392156862745098 for 1/255; the model "
                        "reads scale·x, no offset) or store float32 as the model reads it")
    if scale is not None and x.dtype != np.uint8:  # S · x is for uint8 codes; on floats it silently rescales
        raise EeccError(f"{where} is {x.dtype}, but --scale applies to uint8 data only; drop --scale (float data "
                        "is used as it is)")
    if _other_float(x):  # read as float32 (`_warn_other_float`); beyond float32's range: inf, refused below
        with np.errstate(over="ignore"):
            x = x.astype(np.float32)
    if x.dtype not in (np.float32, np.uint8):
        raise EeccError(f"{where} has dtype {x.dtype}; store float32 (x.astype(np.float32)) or uint8 with --scale")
    if tuple(x.shape[1:]) != input_shape:
        raise EeccError(f"{where} has samples shaped {list(x.shape[1:])} but the model wants {list(input_shape)} "
                        f"(without the batch dim); {layout_advice(tuple(x.shape[1:]), tuple(input_shape), bundle)}")
    if len(x) == 0:
        raise EeccError(f"{where} is empty; give at least one sample per split or leave the split out")
    if y is not None:
        y = check_labels(name, np.asarray(y), len(x), num_classes, origin)
    if x.dtype == np.float32:
        for start in range(0, len(x), _CHECK_ROWS):
            block = x[start:start + _CHECK_ROWS]
            if not np.isfinite(block).all():
                row = start + int(np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))[0])
                raise EeccError(f"{where} has NaN or infinite values (first at sample {row}); clean the data")
    return x, y


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type == zipfile.ZIP_STORED:
                arrays[key] = _memmap_member(path, raw, info)
            else:
                with zf.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _memmap_member(path: Path, raw, info: zipfile.ZipInfo) -> np.ndarray:
    raw.seek(info.header_offset + 26)  # local file header: name and extra-field lengths sit at byte 26
    name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    raw.seek(start)
    version = np.lib.format.read_magic(raw)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"member {info.filename} uses .npy format {version}; re-save with numpy.savez")
    shape, fortran, dtype = readers[version](raw)
    if dtype.hasobject:
        raise ValueError(f"member {info.filename} holds Python objects")
    order = "F" if fortran else "C"
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype, order=order)
    return np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape, order=order)
