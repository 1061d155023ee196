"""Expected calibration error (ECE) of a classifier's softmax confidence.

  ECE = sum_b (n_b / N) * |acc(b) - conf(b)|

over `bins` equal-width confidence bins of (0, 1] (Guo et al. 2017, 15 bins): conf = max softmax
probability, acc(b) = share of correct top-1 predictions among the samples whose confidence falls
in bin b, conf(b) their mean confidence. 0 = perfectly calibrated. It is reported beside every exit
because the cascade's gates threshold exactly this confidence: an over-confident exit lets wrong
samples out early, whichever decision mode is in use.
"""

from __future__ import annotations

import numpy as np

from eecc.search.confidence import softmax

DEFAULT_BINS = 15


def ece(logits: np.ndarray, y: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """ECE of `logits` [N, C] against integer labels `y` [N]; 0.0 for an empty split."""
    logits = np.asarray(logits)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"ece: logits {logits.shape} and labels {y.shape} must be [N, C] and [N]")
    if bins < 1:
        raise ValueError(f"ece: bins={bins} must be at least 1")
    if y.size == 0:
        return 0.0
    p = softmax(logits)
    return ece_from_confidence(p.max(axis=1), p.argmax(axis=1) == y, bins)


def ece_from_confidence(conf: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """ECE from per-sample confidence in [0, 1] and correctness (for gates whose confidence is not a softmax)."""
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.size == 0:
        return 0.0
    # Bin b holds (b/B, (b+1)/B]; confidence 0 joins the first bin rather than falling outside.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    # Per bin: n_b * (acc(b) - conf(b)) = sum(correct) - sum(conf) over its samples.
    gap = np.bincount(idx, weights=correct, minlength=bins) - np.bincount(idx, weights=conf, minlength=bins)
    return float(np.abs(gap).sum() / conf.size)


def ece_per_exit(exit_logits: np.ndarray, y: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """ECE of every head in a stack [K, N, C] (e.g. `ExitLogits.test_logits`)."""
    return [ece(z, y, bins) for z in np.asarray(exit_logits)]


def ece_by_tensor(logits, split: str = "test", bins: int = DEFAULT_BINS) -> dict[str, float]:
    """{candidate tensor: ECE} over one split of an `ExitLogits` (test by default: every reported figure
    comes from it), plus the original classifier under the key "final"; {} when the split is empty."""
    y = getattr(logits, f"y_{split}")
    heads, final = getattr(logits, f"{split}_logits"), getattr(logits, f"final_{split}_logits")
    if y is None or heads is None or len(y) == 0:
        return {}
    out = dict(zip(logits.tensors, ece_per_exit(heads, y, bins)))
    out["final"] = ece(final, y, bins)
    return out
