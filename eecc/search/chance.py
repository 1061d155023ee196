"""Warnings for a model, or a chosen exit, that is no better on the validation split than always answering the most
frequent class (eecc.exits.heads.chance_level): every figure the search reports is relative to the model, and a
sample that leaves at such an exit is guessed."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eecc.exits.heads import chance_level
from eecc.search.types import ExitLogits


def below_chance(logits: ExitLogits, chosen: Sequence[str], numeric: str = "fp32") -> list[str]:
    """One warning for the original classifier and one per chosen exit (rows of `logits` named in `chosen`) whose
    validation accuracy is at or below chance; `numeric` names the numerics the logits were computed in."""
    y = np.asarray(logits.y_val)
    if not len(y):
        return []
    chance = chance_level(y, logits.final_val_logits.shape[-1])
    what = " (int8)" if numeric == "int8" else ""
    out = []
    acc = float((logits.final_val_logits.argmax(-1) == y).mean())
    if acc <= chance:
        out.append(f"the model itself{what} is no better than chance on the validation split ({100 * acc:.1f} % "
                   f"vs {100 * chance:.1f} % for always answering its most frequent class): check that y's class k "
                   "is the model's output k and that x is preprocessed as the model was trained (--scale, layout); "
                   "the exits and accuracy drops are measured against this model")
    index = {t: i for i, t in enumerate(logits.tensors)}
    for name in [n for n in chosen if n in index]:
        acc = float((logits.val_logits[index[name]].argmax(-1) == y).mean())
        if acc <= chance:
            out.append(f"the chosen exit at '{name}'{what} is no better than chance on the validation split "
                       f"({100 * acc:.1f} % vs {100 * chance:.1f} %): the samples that leave there are guessed; see "
                       "its exit rate, or compile with --search to consider other exits")
    return out
