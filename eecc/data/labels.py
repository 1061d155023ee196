"""Labels in: the checks and advice for y_train / y_val / y_test (integer class indices, one per sample), moved
out of eecc/data/splits.py unchanged."""

from __future__ import annotations

import warnings

import numpy as np

from eecc.errors import EeccError, EeccWarning


def warn_missing_classes(present: np.ndarray, num_classes: int | None, origin: str) -> None:
    """A class of the model that y_train never shows: exit heads train on y_train alone, so they never predict it
    and every sample of it leaving at an exit is wrong (nu12 F11: 0 of 209 test samples of class 4)."""
    missing = sorted(set(range(num_classes or 0)) - set(present.tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        warnings.warn(f"{origin}: y_train has no sample of class{'es' if len(missing) > 1 else ''} {shown} of the "
                      f"model's {num_classes}: exit heads cannot learn to predict {'them' if len(missing) > 1 else 'it'} "
                      "(only the final classifier can); give training samples of every class", EeccWarning,
                      stacklevel=3)


def check_labels(name: str, y: np.ndarray, n: int, num_classes: int | None, origin: str) -> np.ndarray:
    if y.ndim == 2 and len(y) == n and y.shape[1] > 1:  # one-hot (or per-class score) rows, as Keras writes them
        raise EeccError(f"{origin}: y_{name} has shape {list(y.shape)}, want [{n}] (one integer label per "
                        f"sample of x_{name}); {rows_advice(name, y)}")
    if y.ndim != 1 or len(y) != n:
        column = y.ndim > 1 and len(y) == n and y.size == n  # [N, 1], as a DataFrame column or y[:, None] gives
        raise EeccError(f"{origin}: y_{name} has shape {list(y.shape)}, want [{n}] (one integer label per "
                        f"sample of x_{name})" + (f"; for a column of labels store y_{name}.reshape(-1)" if column
                                                  else ""))
    if not np.issubdtype(y.dtype, np.integer):
        whole = np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
        if whole:
            hint = f"they are whole numbers: store y_{name}.astype(np.int64)"
        else:  # astype would truncate 2.5 to 2 and "work" on labels that are not class indices (nu13 F7)
            bad = np.flatnonzero(~(np.isfinite(y) & (y == np.round(y)))) if np.issubdtype(y.dtype, np.floating) else []
            hint = ((f"they are not whole numbers (sample {bad[0]}: {y[bad[0]]:g}), so not class indices (eecc "
                     "compiles classifiers, not regression or soft-label models): " if len(bad) else "")
                    + f"store each sample's class index 0..K-1 as int64 in y_{name}")
        raise EeccError(f"{origin}: y_{name} has dtype {y.dtype}; labels must be integers (class indices): {hint}")
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min() if y.min() < 0 else y.max())
        raise EeccError(f"{origin}: y_{name} contains label {bad} outside the model's {num_classes} classes "
                        f"(0..{num_classes - 1}); {_remap_advice(name, y, num_classes)}")
    return y.astype(np.int64)


def _remap_advice(name: str, y: np.ndarray, num_classes: int) -> str:
    """Labels outside 0..K-1: when y holds exactly K distinct values (the original labels of a K-class subset,
    nu15 F3: {0,2,3,5,7,8,9} for a 7-output model), the way out is to number them 0..K-1 in the model's order."""
    labels = np.unique(y)
    if labels[0] >= 1 and labels[-1] == num_classes:  # nu15 F3 addendum: y = 1..10 for a 10-class model
        return (f"y_{name}'s labels run {labels[0]}..{num_classes} with no 0, as 1-based class numbers do: if "
                f"label k is the model's output k - 1, store every y_ split as y - 1 (0..{num_classes - 1})")
    if len(labels) != num_classes:
        return "fix the labels or use the matching model"
    shown = ", ".join(map(str, labels[:10])) + (", ..." if len(labels) > 10 else "")
    return (f"y_{name} has exactly {num_classes} distinct labels ({shown}), as many as the model's classes: if the "
            f"model's output k is the k-th smallest of them, store every y_ split as np.searchsorted(np.unique("
            f"y_{name}), y) (0..{num_classes - 1}); else fix the labels or use the matching model")


def rows_advice(name: str, y: np.ndarray) -> str:
    """The way out for label rows [N, K]: one-hot rows → argmax(1); 0/1 rows with no class or several classes set
    are multi-label data, which argmax would silently cut to one label (nu13 F7); per-class scores → argmax(1)."""
    binary = np.isin(y, (0, 1)).all()
    counts = (y != 0).sum(1) if binary else None
    if binary and (counts != 1).any():
        i = int(np.flatnonzero(counts != 1)[0])
        return (f"row {i} has {int(counts[i])} classes set: multi-label data; eecc compiles single-label classifiers "
                f"(one class per sample, a Sigmoid output read as one-vs-rest): give one class index per sample")
    return f"for one-hot rows store y_{name}.argmax(1)"
