"""Baselines beside the search: one global threshold (SDN style) and NACHOS' greedy lowering."""

from __future__ import annotations

import numpy as np

from eecc.search.policy import Objective, SplitScores, evaluate_policy
from eecc.search.thresholds import NEVER, grid_tables, threshold_grid


def _key(objective: Objective, r, macs: float):
    """(infeasible, scalar cost) of policy result `r` (its mean cost in the objective's unit) at mean MACs `macs`."""
    ok = bool(objective.feasible(r.accuracy, r.mean_macs)) and bool(objective.within_macs(macs))
    return (not ok, float(objective.cost(r.accuracy, r.mean_macs)))


def global_threshold(split: SplitScores, exits, costs, objective: Objective, *, steps: int = 101):
    """One threshold shared by every exit, the best of `steps` values on the split.

    `costs` [E+1]: leaving at each position in the objective's unit (MACs, or J / s when `objective.original_macs` is
    the original's energy / latency); a MAC limit in another unit comes as `objective.position_macs`/`limit_macs`."""
    pooled = np.concatenate([split.conf[k] for k in exits])
    values = np.unique(np.concatenate([np.quantile(pooled, np.linspace(0, 1, steps)), [NEVER]]))
    pos_macs = None if objective.position_macs is None else np.asarray(objective.position_macs, dtype=np.float64)

    def key(t):
        r = evaluate_policy(split, exits, [t] * len(exits), costs)
        return _key(objective, r, 0.0 if pos_macs is None else float(pos_macs[r.exit_index].mean()))

    best = min((key(t), float(t)) for t in values)
    return (best[1],) * len(exits)


def nachos_greedy(split: SplitScores, exits, costs, objective: Objective, *, grid_size: int = 13):
    """NACHOS: the best-accuracy point of the threshold grid, then lower the thresholds one grid
    step at a time, from the last early exit backwards, until mean MACs meet the constraint.

    `costs` [E+1]: leaving at each position in the objective's unit, as `global_threshold`'s. The MAC constraint is
    the objective's (`max_mean_macs` under objective macs, `limit_macs` over `position_macs` under energy / latency). Without one it lowers while the scalar cost improves: priced in the
    objective's unit, not MACs against a joule reference (nu14 F3: every threshold fell to the grid's bottom).
    """
    exits = list(exits)
    grids = [threshold_grid(split.conf[k], grid_size) for k in exits]
    acc, cost = grid_tables(split, exits, grids, costs)
    limit, macs = objective.max_mean_macs, cost
    if objective.limit_macs is not None:
        limit = objective.limit_macs
        macs = grid_tables(split, exits, grids, np.asarray(objective.position_macs, dtype=np.float64))[1]
    # best accuracy; among ties the cheapest
    order = np.lexsort((cost.ravel(), -acc.ravel()))
    idx = list(np.unravel_index(int(order[0]), acc.shape))

    for j in reversed(range(len(exits))):
        while idx[j] > 0:
            if limit is not None and macs[tuple(idx)] <= limit:
                break
            trial = idx.copy()
            trial[j] -= 1
            if limit is None and objective.cost(acc[tuple(trial)], cost[tuple(trial)]) >= \
                    objective.cost(acc[tuple(idx)], cost[tuple(idx)]):
                break
            idx = trial
        if limit is not None and macs[tuple(idx)] <= limit:
            break
    return tuple(float(g[i]) for g, i in zip(grids, idx))
