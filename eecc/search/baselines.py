"""Baselines beside the search: one global threshold (SDN style) and NACHOS' greedy lowering."""

from __future__ import annotations

import numpy as np

from eecc.search.policy import Objective, SplitScores, evaluate_policy
from eecc.search.thresholds import NEVER, grid_tables, threshold_grid


def _key(objective: Objective, r):
    return (not bool(objective.feasible(r.accuracy, r.mean_macs)),
            float(objective.cost(r.accuracy, r.mean_macs)))


def global_threshold(split: SplitScores, exits, costs, objective: Objective, *, steps: int = 101):
    """One threshold shared by every exit, the best of `steps` values on the split."""
    pooled = np.concatenate([split.conf[k] for k in exits])
    values = np.unique(np.concatenate([np.quantile(pooled, np.linspace(0, 1, steps)), [NEVER]]))
    best = min((_key(objective, evaluate_policy(split, exits, [t] * len(exits), costs)), float(t))
               for t in values)
    return (best[1],) * len(exits)


def nachos_greedy(split: SplitScores, exits, costs, objective: Objective, *, grid_size: int = 13,
                  max_mean_macs: float | None = None):
    """NACHOS: the best-accuracy point of the threshold grid, then lower the thresholds one grid
    step at a time, from the last early exit backwards, until mean MACs meet the constraint.

    Without a MAC constraint (`max_mean_macs` or the objective's) it lowers while the scalar cost
    improves.
    """
    exits = list(exits)
    grids = [threshold_grid(split.conf[k], grid_size) for k in exits]
    acc, macs = grid_tables(split, exits, grids, costs)
    # best accuracy; among ties the cheapest
    order = np.lexsort((macs.ravel(), -acc.ravel()))
    idx = list(np.unravel_index(int(order[0]), acc.shape))
    limit = max_mean_macs if max_mean_macs is not None else objective.max_mean_macs

    for j in reversed(range(len(exits))):
        while idx[j] > 0:
            if limit is not None and macs[tuple(idx)] <= limit:
                break
            trial = idx.copy()
            trial[j] -= 1
            if limit is None and objective.cost(acc[tuple(trial)], macs[tuple(trial)]) >= \
                    objective.cost(acc[tuple(idx)], macs[tuple(idx)]):
                break
            idx = trial
        if limit is not None and macs[tuple(idx)] <= limit:
            break
    return tuple(float(g[i]) for g, i in zip(grids, idx))
