"""Multi-objective mode: NSGA-II over exit subsets x per-exit thresholds (pymoo).

Objectives: validation accuracy drop and mean MACs, the latter through NACHOS' adaptive penalty
F_CM = phi * F_M + (1 - phi) * max(0, F_M - F_M_max), phi = share of MAC-feasible solutions in
the generation being evaluated. The accuracy limit and the exit count are hard constraints.
Genes per location (a tensor, whose head designs are several candidates): which design exits there, if any,
and its threshold; a solution so holds one head per location, as compile's placements build (nu14 F13: every
solution of a one-gene-per-candidate search stacked two or more designs on one tensor). Solutions that send every
validation sample out at the same exit are one policy and are listed once (`merge_same_policies`).
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
    merged: int = 0  # other listed solutions that were the same policy on validation (`merge_same_policies`)


def _decode(x, grids, groups):
    """(local candidate indices ascending, their thresholds): gene g picks design x[g] - 1 of location g (0: no
    exit there), gene G + g its threshold, scaled from the location's longest grid onto the chosen one's."""
    n = len(groups)
    picks = []
    for g, members in enumerate(groups):
        choice = int(round(x[g]))
        if choice > 0:
            c = members[choice - 1]
            top = max(len(grids[m]) for m in members) - 1
            i = int(round(x[n + g])) if top == 0 else int(round(round(x[n + g]) * (len(grids[c]) - 1) / top))
            picks.append((c, float(grids[c][i])))
    picks.sort()
    return tuple(c for c, _ in picks), tuple(t for _, t in picks)


def _objectives(rows, objective: Objective, max_exits: int) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II's F [n, 2] (accuracy drop, MAC fraction, the latter penalised past the MAC limit as NACHOS's f_cm) and
    G [n, 3] (at least one exit, at most `max_exits`, the drop within the limit) of `rows` [(exit locations, result)]."""
    n = np.array([len(local) for local, _ in rows], dtype=float)
    drop = np.array([objective.original_accuracy - r.accuracy for _, r in rows])
    fm = np.array([r.mean_macs for _, r in rows]) / objective.original_macs
    fcm = fm
    if objective.max_mean_macs is not None:
        m_max = objective.max_mean_macs / objective.original_macs
        phi = float(np.mean(fm <= m_max))
        fcm = phi * fm + (1.0 - phi) * np.maximum(0.0, fm - m_max)
    limit = objective.max_accuracy_drop
    g = np.column_stack([1.0 - n, n - max_exits, drop - limit if limit is not None else np.zeros(len(rows))])
    return np.column_stack([drop, fcm]), g


def pareto_search(split: SplitScores, candidates, costs_of, objective: Objective, *, max_exits: int,
                  grid_size: int = 13, pop_size: int = 60, generations: int = 40, seed: int = 0,
                  groups: list[list[int]] | None = None) -> list[ParetoPoint]:
    """`candidates`: indices into the split; `costs_of(exits)` -> [E+1] position MACs; `groups`: positions in
    `candidates` of the head designs of each location (default: each candidate its own location). Points with
    equal exits and equal validation results (thresholds no sample reaches) are one."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    candidates = list(candidates)
    groups = [list(g) for g in groups] if groups is not None else [[i] for i in range(len(candidates))]
    k = len(groups)
    grids = [threshold_grid(split.conf[c], grid_size) for c in candidates]
    cache: dict = {}

    def run(x):
        local, th = _decode(x, grids, groups)
        key = (local, th)
        if key not in cache:
            exits = [candidates[i] for i in local]
            cache[key] = evaluate_policy(split, exits, th, costs_of(exits))
        return local, cache[key]

    class _Problem(Problem):
        def __init__(self):
            super().__init__(n_var=2 * k, n_obj=2, n_ieq_constr=3, xl=np.zeros(2 * k),
                             xu=np.array([len(g) for g in groups] + [max(len(grids[m]) for m in g) - 1
                                                                     for g in groups], dtype=float), vtype=int)

        def _evaluate(self, xs, out, *args, **kwargs):
            out["F"], out["G"] = _objectives([run(x) for x in xs], objective, max_exits)

    algo = NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    res = minimize(_Problem(), algo, ("n_gen", generations), seed=seed, verbose=False)
    xs = np.atleast_2d(res.X) if res.X is not None else np.zeros((0, 2 * k))
    points = {}
    for x in xs:
        local, r = run(x)
        if local and objective.feasible(r.accuracy, r.mean_macs):
            key = (local, r.accuracy, r.mean_macs, tuple(r.exit_rates))  # not the thresholds: see the docstring
            points.setdefault(key, ParetoPoint(tuple(candidates[i] for i in local), r.thresholds, r))
    return merge_same_policies(list(points.values()))


def merge_same_policies(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The non-dominated `points` (cheapest first), one per policy: points whose solutions send each validation
    sample out at the same exit (or none to the final classifier) predict alike, so they differ at most in the cost
    of heads no sample leaves at, and only the cheapest, then the one with fewest exits (fewest stages to build),
    stays, its `merged` counting the others the front would have listed (nu14 F13: 9 of 15 digits solutions, whose
    first two exits took every sample, differed only in exits never reached)."""
    def figures(p):
        return p.val.mean_macs, p.val.accuracy

    def decisions(p) -> bytes:  # [N] the candidate each validation sample leaves at, -1 the final classifier
        return np.append(np.asarray(p.exits, dtype=np.int64), -1)[p.val.exit_index].tobytes()

    kept: dict[bytes, ParetoPoint] = {}
    for p in points:
        best = kept.setdefault(decisions(p), p)
        if (p.val.mean_macs, len(p.exits), p.exits) < (best.val.mean_macs, len(best.exits), best.exits):
            kept[decisions(p)] = p
    front = non_dominated(list(kept.values()), key=figures)
    listed = [decisions(q) for q in non_dominated(points, key=figures)]  # unmerged: equal figures are all kept
    for p in front:
        p.merged = listed.count(decisions(p)) - 1
    return front
