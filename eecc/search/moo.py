"""Multi-objective mode: NSGA-II over exit subsets x per-exit thresholds (pymoo).

Objectives: validation accuracy drop and mean MACs, the latter through NACHOS' adaptive penalty
F_CM = phi * F_M + (1 - phi) * max(0, F_M - F_M_max), phi = share of MAC-feasible solutions in
the generation being evaluated. The accuracy limit and the exit count are hard constraints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eecc.search.policy import Objective, PolicyResult, SplitScores, evaluate_policy
from eecc.search.pareto import non_dominated
from eecc.search.thresholds import threshold_grid


@dataclass
class ParetoPoint:
    exits: tuple[int, ...]
    thresholds: tuple[float, ...]
    val: PolicyResult


def _decode(x, grids):
    k = len(grids)
    mask = np.round(x[:k]).astype(int) > 0
    exits = tuple(int(i) for i in np.flatnonzero(mask))
    th = tuple(float(grids[i][int(round(x[k + i]))]) for i in exits)
    return exits, th


def pareto_search(split: SplitScores, candidates, costs_of, objective: Objective, *, max_exits: int,
                  grid_size: int = 13, pop_size: int = 60, generations: int = 40,
                  seed: int = 0) -> list[ParetoPoint]:
    """`candidates`: indices into the split; `costs_of(exits)` -> [E+1] position MACs."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    candidates = list(candidates)
    k = len(candidates)
    grids = [threshold_grid(split.conf[c], grid_size) for c in candidates]
    cache: dict = {}

    def run(x):
        local, th = _decode(x, grids)
        key = (local, th)
        if key not in cache:
            exits = [candidates[i] for i in local]
            cache[key] = evaluate_policy(split, exits, th, costs_of(exits))
        return local, cache[key]

    m_max = None if objective.max_mean_macs is None else objective.max_mean_macs / objective.original_macs

    class _Problem(Problem):
        def __init__(self):
            super().__init__(n_var=2 * k, n_obj=2, n_ieq_constr=3, xl=np.zeros(2 * k),
                             xu=np.array([1] * k + [len(g) - 1 for g in grids], dtype=float), vtype=int)

        def _evaluate(self, xs, out, *args, **kwargs):
            rows = [run(x) for x in xs]
            n = np.array([len(local) for local, _ in rows], dtype=float)
            drop = np.array([objective.original_accuracy - r.accuracy for _, r in rows])
            fm = np.array([r.mean_macs for _, r in rows]) / objective.original_macs
            if m_max is None:
                fcm = fm
            else:
                phi = float(np.mean(fm <= m_max))
                fcm = phi * fm + (1.0 - phi) * np.maximum(0.0, fm - m_max)
            limit = objective.max_accuracy_drop
            out["F"] = np.column_stack([drop, fcm])
            out["G"] = np.column_stack([1.0 - n, n - max_exits,
                                        drop - limit if limit is not None else np.zeros(len(rows))])

    algo = NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    res = minimize(_Problem(), algo, ("n_gen", generations), seed=seed, verbose=False)
    xs = np.atleast_2d(res.X) if res.X is not None else np.zeros((0, 2 * k))
    points = {}
    for x in xs:
        local, r = run(x)
        if local and objective.feasible(r.accuracy, r.mean_macs):
            points[(local, r.thresholds)] = ParetoPoint(
                tuple(candidates[i] for i in local), r.thresholds, r)
    return non_dominated(list(points.values()), key=lambda p: (p.val.mean_macs, p.val.accuracy))
