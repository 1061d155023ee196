"""95 % bootstrap intervals for what a policy scores on the test split (accuracy, drop, mean MACs).

Percentile bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13): the test
samples are resampled with replacement B times; an interval is the (α/2, 1 − α/2) quantiles of the
B resampled means. The drop is paired: the original model and the policy are scored on the same
resampled samples, so their shared difficulty cancels (a much narrower interval than two unpaired ones).
"""

from __future__ import annotations

import functools

import numpy as np

BOOTSTRAPS = 1000
LEVEL = 0.95
SEED = 0
_ROWS = 100  # resamples drawn at once: B × N int64 indices would be 40 MB at N = 5000, B = 1000


def bootstrap_means(columns: np.ndarray, *, n_boot: int = BOOTSTRAPS, seed: int = SEED) -> np.ndarray:
    """columns [N, M] per-sample values → [n_boot, M] means of resamples (rows drawn with replacement).

    A resample is a row of counts (how often each sample was drawn), so a mean is one matrix product;
    the counts depend only on (N, n_boot, seed) and are shared by every policy scored on one split,
    which also makes the intervals of two placements paired.
    """
    columns = np.asarray(columns, dtype=np.float64)
    n = len(columns)
    if n == 0:
        return np.zeros((n_boot, columns.shape[1]))
    if n * n_boot <= 20_000_000:  # a test split of <= 20k: one product with counts kept in memory
        return _cached_counts(n, n_boot, seed) @ columns / n
    return np.concatenate([w @ columns for w in _draw(n, n_boot, seed)]) / n


@functools.lru_cache(maxsize=2)
def _cached_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.concatenate(list(_draw(n, n_boot, seed)))


def _draw(n: int, n_boot: int, seed: int):
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _ROWS):
        rows = min(_ROWS, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def policy_intervals(correct: np.ndarray, macs: np.ndarray, final_correct: np.ndarray, *,
                     level: float = LEVEL, n_boot: int = BOOTSTRAPS, seed: int = SEED) -> dict:
    """Intervals of a policy on one split; correct, final_correct: [N] bool; macs: [N] MACs per sample.

    Returns {"level", "bootstraps", "accuracy", "accuracy_drop", "mean_macs", "original_accuracy"},
    each a [low, high] pair; accuracies and drop as fractions, MACs per sample.
    """
    correct = np.asarray(correct, dtype=np.float64)
    final = np.asarray(final_correct, dtype=np.float64)
    means = bootstrap_means(np.stack([correct, final - correct, np.asarray(macs, np.float64), final], axis=1),
                            n_boot=n_boot, seed=seed)
    names = ("accuracy", "accuracy_drop", "mean_macs", "original_accuracy")
    return {"level": level, "bootstraps": n_boot, **{k: interval(means[:, i], level) for i, k in enumerate(names)}}


def result_intervals(result, split, **kw) -> dict:
    """`policy_intervals` of a `PolicyResult` evaluated on `split` (a policy.Split)."""
    return policy_intervals(result.prediction == split.y, result.macs, split.final_pred == split.y, **kw)


def fmt(value: float, iv, scale: float = 100.0, digits: int = 2) -> str:
    """'92.31 [91.60, 93.02]': a figure with its interval, scaled (100 → percent)."""
    if not iv:
        return f"{scale * value:.{digits}f}"
    return f"{scale * value:.{digits}f} [{scale * iv[0]:.{digits}f}, {scale * iv[1]:.{digits}f}]"
