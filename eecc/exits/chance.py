"""What "better than chance" means for an exit head (the NA drop rule) and for the model: above always answering the
validation split's most frequent class, or, on a skewed split, above chance in balanced accuracy.

Why both: on a split that is 90 % one class, a good model trained on balanced data scores below the 90 % of always
answering that class (nu13 F3: 85.8 %, 88.4 % on the common class, 62.5 % on the others) and every head it could
have was dropped as "no better than chance". Balanced accuracy (the mean per-class recall, Brodersen et al. 2010,
"The balanced accuracy and its posterior distribution") is 1/K for any constant answer however skewed the split is.
On a balanced split the two bars are the same, so the rule there is the plain-accuracy one NA uses.
"""

from __future__ import annotations

import math

import numpy as np

# In the trained heads' cache keys of a skewed validation split only (eecc/exits/keys.py): elsewhere the rule is NA's.
DROP_RULE = "commonest class, or 1/K in balanced accuracy on a skewed split"


def chance_level(y: np.ndarray, num_classes: int) -> float:
    """Accuracy of always answering the most frequent validation class."""
    return float(np.bincount(y, minlength=num_classes).max() / max(len(y), 1))


def drop_threshold(y_val: np.ndarray, num_classes: int, margin: float) -> float:
    """First-epoch validation accuracy a head must reach to be kept: chance + max(margin, 3σ), σ the binomial
    standard deviation of an accuracy at chance on len(y_val) samples (above 1.0 on a tiny split)."""
    chance = chance_level(y_val, num_classes)
    return chance + max(margin, 3 * math.sqrt(chance * (1 - chance) / max(len(y_val), 1)))


def balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over the classes present in y [N] of the share of that class's samples predicted as it (pred [N])."""
    pred, y = np.asarray(pred), np.asarray(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)])) if len(y) else 0.0


def balanced_threshold(y_val: np.ndarray, margin: float) -> float:
    """Balanced accuracy a head must reach: 1/K + max(margin, 3σ), K the classes present in y_val, σ the standard
    deviation of the balanced accuracy of uniform guessing, sqrt(c (1 − c) Σ 1/n_k) / K with c = 1/K (each class's
    recall binomial on its n_k samples): a rare class with few samples widens it."""
    counts = np.bincount(np.asarray(y_val, dtype=np.int64))
    counts = counts[counts > 0]
    if not len(counts):
        return math.inf
    k = len(counts)
    c = 1.0 / k
    return c + max(margin, 3 * math.sqrt(c * (1 - c) * float(np.sum(1.0 / counts))) / k)


def skewed(y_val: np.ndarray) -> bool:
    """Whether the most frequent of the K classes present holds at least half of the way from a balanced share to
    all of the split, 1/K + (1 − 1/K)/2 (75 % of a binary split, 55 % of a 10-class one): the plain-accuracy chance
    level then says more about the split than about the model."""
    k = len(np.unique(y_val))
    return k > 1 and chance_level(np.asarray(y_val, dtype=np.int64), 0) >= 1 / k + (1 - 1 / k) / 2


def beats_chance(pred: np.ndarray, y_val: np.ndarray, num_classes: int, margin: float) -> bool:
    """Whether predictions `pred` [N] of the labels y_val [N] beat chance: accuracy above `drop_threshold`, or,
    on a skewed split (`skewed`), balanced accuracy above `balanced_threshold`."""
    pred, y_val = np.asarray(pred), np.asarray(y_val)
    if float((pred == y_val).mean()) >= drop_threshold(y_val, num_classes, margin):
        return True
    return skewed(y_val) and balanced_accuracy(pred, y_val) >= balanced_threshold(y_val, margin)


def split_note(y_val: np.ndarray, num_classes: int) -> str:
    """'' on a balanced split; else how skewed it is, for messages that quote a chance level."""
    if not skewed(y_val):
        return ""
    counts = np.bincount(np.asarray(y_val, dtype=np.int64), minlength=num_classes)
    top = int(counts.argmax())
    return f"the validation split is {100 * counts[top] / len(y_val):.0f} % class {top}"
