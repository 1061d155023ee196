"""AEP exit ensembles (Sarti et al., Anticipate-Ensemble-Prune) evaluated on cached logits.

With `decision="ensemble"` the prediction at position j of a placement is a weighted sum of the
LOGITS of every exit reached so far (the issue's choice; the gate's softmax confidence is then taken
on that sum), and the final classifier's prediction is the ensemble of all exits plus the original
logits:

  z^(j) = sum_{i<=j} w^(j+1)_i * z_i,   w^(m) = weights(m, mode) / sum(weights(m, mode))

Weight modes (desc, asc, mix, unif) are defined in eecc/exits/ensemble.py.

AEP pruning: every non-empty subset of a placement's exits is evaluated as a cascade of its own
(thresholds searched on the calibration split) and the sub-ensemble with the best validation cost
is kept. Pure numpy; the cascade policy itself is `policy.evaluate_policy` on a `SplitScores` whose rows
are the ensembles, so thresholds, routing and costs are shared with the default decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from eecc.errors import EeccError
from eecc.exits.ensemble import DEFAULT_WEIGHTS, ensemble_weights
from eecc.search.confidence import DEFAULT_METRIC, confidence
from eecc.search.policy import Objective, SplitScores, evaluate_policy, position_costs
from eecc.search.types import ExitLogits

DECISIONS = ("single", "ensemble")


def cumulative_ensembles(members: np.ndarray, mode: str = DEFAULT_WEIGHTS) -> np.ndarray:
    """[M, N, C] -> [M, N, C]: row j is the ensemble of members 0..j (weights re-normalised per row)."""
    members = np.asarray(members, dtype=np.float64)
    out = np.empty_like(members)
    for j in range(len(members)):
        out[j] = np.tensordot(ensemble_weights(j + 1, mode), members[:j + 1], axes=1)
    return out


def stage_logits(logits: ExitLogits, exits, split: str = "test", *, decision: str = "single",
                 mode: str = DEFAULT_WEIGHTS) -> np.ndarray:
    """[E+1, N, C]: what decides at each position of the placement (last row = the final classifier)."""
    if decision not in DECISIONS:
        raise EeccError(f"unknown decision '{decision}'; choose one of {', '.join(DECISIONS)}")
    heads = getattr(logits, f"{split}_logits")
    final = getattr(logits, f"final_{split}_logits")
    if heads is None or final is None:
        raise EeccError(f"search: the exits stage recorded no '{split}' logits; rerun it with a {split} split")
    members = np.concatenate([heads[list(exits)].reshape(len(exits), *final.shape), final[None]], axis=0)
    return members.astype(np.float64) if decision == "single" else cumulative_ensembles(members, mode)


def ensemble_split(logits: ExitLogits, exits, split: str = "val", *, metric: str = DEFAULT_METRIC,
                   mode: str = DEFAULT_WEIGHTS) -> SplitScores:
    """`SplitScores` whose row j is the ensemble at position j: evaluate with exits = range(len(exits))."""
    z = stage_logits(logits, exits, split, decision="ensemble", mode=mode)
    y = getattr(logits, f"y_{split}")
    return SplitScores(conf=confidence(z[:-1], metric).reshape(len(exits), -1),
                       pred=np.argmax(z[:-1], axis=-1).reshape(len(exits), -1),
                       final_pred=np.argmax(z[-1], axis=-1), y=np.asarray(y, dtype=np.int64))


def decision_splits(logits: ExitLogits, exits, calib: SplitScores, test: SplitScores, *, decision: str,
                    metric: str, mode: str, calibrate_on: str):
    """(calib, test, positions) to run the threshold search and policy on, for either decision."""
    if decision == "single" or not len(exits):  # no exit (the original model alone): nothing to ensemble
        return calib, test, tuple(exits)
    if decision != "ensemble":
        raise EeccError(f"unknown decision '{decision}'; choose one of {', '.join(DECISIONS)}")
    return (ensemble_split(logits, exits, calibrate_on, metric=metric, mode=mode),
            ensemble_split(logits, exits, "test", metric=metric, mode=mode), tuple(range(len(exits))))


@dataclass
class SubEnsemble:
    exits: tuple[int, ...]
    thresholds: tuple[float, ...]
    val_cost: float
    feasible: bool
    accuracy: float       # test split
    mean_macs: float      # test split

    def to_json(self, logits: ExitLogits) -> dict:
        return {"exits": [logits.tensors[k] for k in self.exits], "thresholds": list(self.thresholds),
                "val_cost": self.val_cost, "feasible": self.feasible, "accuracy": self.accuracy,
                "mean_macs": self.mean_macs}


def aep_prune(logits: ExitLogits, exits, objective: Objective, *, mode: str = DEFAULT_WEIGHTS,
              metric: str = DEFAULT_METRIC, calibrate_on: str = "val", method: str = "auto",
              fine: bool = True) -> list[SubEnsemble]:
    """Every non-empty sub-ensemble of `exits`, best first (feasible, then lowest validation cost)."""
    from eecc.search.thresholds import search_thresholds

    out = []
    exits = tuple(int(k) for k in exits)
    for size in range(1, len(exits) + 1):
        for sub in combinations(exits, size):
            costs = position_costs(logits, sub)
            cal = ensemble_split(logits, sub, calibrate_on, metric=metric, mode=mode)
            test = ensemble_split(logits, sub, "test", metric=metric, mode=mode)
            pos = tuple(range(len(sub)))
            choice = search_thresholds(cal, pos, costs, objective, method=method, fine=fine)
            r = evaluate_policy(test, pos, choice.thresholds, costs)
            out.append(SubEnsemble(sub, tuple(choice.thresholds), choice.cost, choice.feasible,
                                   r.accuracy, r.mean_macs))
    return sorted(out, key=lambda s: (not s.feasible, s.val_cost))
