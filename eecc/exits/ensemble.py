"""How an exit ensemble weighs its members: shared by the search, the insert_ensemble pass and the bundle.

With the ensemble decision, position j of a cascade decides on sum_{i<=j} w^(j+1)_i * z_i, the weighted
sum of the logits of every exit reached so far (eecc/search/ensemble.py). Weight modes over the m
members in network order (i = 1..m):
  unif: 1, ..., 1
  asc:  1, 2, ..., m            (deeper members count more)
  desc: m, m-1, ..., 1          (earlier members count more)
  mix:  m-1, ..., 1, m          (the deepest member counts most, the earlier ones descend) -- our
        reading of the thesis' mixed mode, whose text is not available offline
Weights are normalised so that an ensemble of one member is that member's own logits.
"""

from __future__ import annotations

import numpy as np

from eecc.errors import EeccError

WEIGHT_MODES = ("desc", "asc", "mix", "unif")
DEFAULT_WEIGHTS = "desc"


def ensemble_weights(m: int, mode: str = DEFAULT_WEIGHTS) -> np.ndarray:
    """[m] normalised weights of m members in network order."""
    if mode not in WEIGHT_MODES:
        raise EeccError(f"unknown ensemble weight mode '{mode}'; choose one of {', '.join(WEIGHT_MODES)}")
    if m < 1:
        raise ValueError(f"an ensemble needs at least one member, got {m}")
    i = np.arange(1, m + 1, dtype=np.float64)
    w = {"unif": np.ones(m), "asc": i, "desc": i[::-1].copy(),
         "mix": np.concatenate([np.arange(m - 1, 0, -1, dtype=np.float64), [float(m)]])}[mode]
    return w / w.sum()
