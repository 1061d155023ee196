"""Warnings for a model, or a chosen exit, that is no better on the validation split than chance (always answering the
most frequent class, or on a skewed split 1/K in balanced accuracy: eecc/exits/chance.py): every figure the search
reports is relative to the model, and a sample that leaves at such an exit is guessed."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from eecc.exits.chance import balanced_accuracy, beats_chance, chance_level, drop_threshold, skewed, split_note
from eecc.exits.heads import TrainConfig
from eecc.search.types import ExitLogits


def below_chance(logits: ExitLogits, chosen: Sequence[str], numeric: str = "fp32") -> list[str]:
    """One warning for the original classifier and one per chosen exit (rows of `logits` named in `chosen`) whose
    validation accuracy is at or below chance; `numeric` names the numerics the logits were computed in."""
    y = np.asarray(logits.y_val)
    if not len(y):
        return []
    k = logits.final_val_logits.shape[-1]
    chance, present = chance_level(y, k), len(np.unique(y))
    what = " (int8)" if numeric == "int8" else ""
    out = []

    def guessed(z: np.ndarray) -> bool:  # at or below chance: plain accuracy, and on a skewed split balanced too
        pred = z.argmax(-1)
        return float((pred == y).mean()) <= chance and (not skewed(y) or balanced_accuracy(pred, y) <= 1 / present)

    acc = float((logits.final_val_logits.argmax(-1) == y).mean())
    if guessed(logits.final_val_logits):
        out.append(f"the model itself{what} is no better than chance on the validation split ({100 * acc:.1f} % "
                   f"vs {100 * chance:.1f} % for always answering its most frequent class): check that y's class k "
                   "is the model's output k and that x is preprocessed as the model was trained (--scale, layout); "
                   "the exits and accuracy drops are measured against this model")
    index = {t: i for i, t in enumerate(logits.tensors)}
    for name in [n for n in chosen if n in index]:
        acc = float((logits.val_logits[index[name]].argmax(-1) == y).mean())
        if guessed(logits.val_logits[index[name]]):
            out.append(f"the chosen exit at '{name}'{what} is no better than chance on the validation split "
                       f"({100 * acc:.1f} % vs {100 * chance:.1f} %): the samples that leave there are guessed; see "
                       "its exit rate, or compile with --search to consider other exits")
    return out


def dropped_reason(accuracy: float, logits: ExitLogits, num_classes: int) -> tuple[str, bool]:
    """(why a head at first-epoch validation `accuracy` was dropped, whether other exits might do: not when the
    model itself is at chance or when more validation data is the way out):
    the model itself at chance on the labels (say so: the labels or the preprocessing); else the bar it missed,
    chance + max(margin, 3σ) on the split's size (eecc/exits/chance.py drop_threshold), and, when it beat chance
    by more than the margin, about how many validation samples would let that accuracy count (3σ below the gap:
    n > 9 c (1 − c) / gap²); else no better than chance."""
    y, margin = np.asarray(logits.y_val), TrainConfig().drop_margin
    chance, bar = chance_level(y, num_classes), drop_threshold(y, num_classes, margin)
    pred = logits.final_val_logits.argmax(-1)
    model = float((pred == y).mean())
    if not beats_chance(pred, y, num_classes, margin):
        skew = split_note(y, num_classes)
        return (f"the model itself scores {100 * model:.1f} % on the validation labels (chance: {100 * chance:.1f} %"
                + (f"; {skew}: balanced accuracy {100 * balanced_accuracy(pred, y):.1f} %, chance "
                   f"{100 / len(np.unique(y)):.1f} %" if skew else "")
                + "): check that y's class k is the model's output k and that x is preprocessed as the model was "
                "trained (--scale, layout)"), False
    head = (f"reached {100 * accuracy:.1f} % validation accuracy when judged (after one epoch, or at halving's rung), "
            f"below the {100 * bar:.1f} % a head must reach on {len(y)} validation samples "
            f"(chance {100 * chance:.1f} % + max({100 * margin:.0f} pt, 3σ))")
    skew = split_note(y, num_classes)
    head += f" ({skew}; nor above chance in balanced accuracy)" if skew else ""
    gap = accuracy - chance
    if gap > margin:
        need = math.floor(9 * chance * (1 - chance) / gap ** 2) + 1
        return head + f"; {100 * accuracy:.1f} % counts on about {need} or more: give that many in x_val/y_val", False
    return head + ": no better than chance", True
