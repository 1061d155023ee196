"""Thresholds whose accuracy drop holds on unseen data with probability ≥ P (Learn then Test, Pareto Testing).

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021, "Learn then Test: Calibrating
predictive algorithms to achieve risk control", arXiv:2110.01052) with fixed-sequence testing, ordered
as in Pareto Testing (Laufer-Goldshtein, Fisch, Barzilay, Jaakkola, ICLR 2023, "Efficiently controlling
multiple risks with Pareto Testing"):

1. The validation split is cut at random into an ordering half and a testing half.
2. On the ordering half, every threshold combination of a placement's grid is scored: its mean cost and
   the bound it is predicted to get on the testing half (`_Table`). Cost is the search's objective (MACs,
   or the device's joules or seconds per exit position: two placements with the same exits on other
   processors differ). The grid is fine (GRID_SIZE thresholds per exit, fewer when a placement's
   combinations would exceed MAX_COMBOS): fixed-sequence testing pays nothing for a longer sequence, and a
   coarse grid stops short of the cheapest thresholds that would pass. The combinations on the Pareto front
   of (mean cost, predicted bound) are the sequence, from the safest to the cheapest, opened by "never exit"
   on the cheapest single processor. Up to JOINT_LIMIT combinations in all (every default K = 1 search),
   the front is that of every placement's points together. Above it (--exits-per-processor 2 on kws: 4.1e8),
   ONE placement is chosen on the ordering half and the front is its own: the placement whose cheapest
   combination predicted to pass (predicted bound ≤ α) costs least, its "predicted certified cost" PC(p)
   (ties: the first placement). The joint front reaches further on a few placements (bench/guarantee.py's
   re-splits: 5/100 over the limit on test vs 7/100 with one placement, resnet_weak), hence both.
3. On the testing half, the null "drop(λ) > α" is tested for each λ in that order at level δ = 1 − P;
   testing stops at the first null that is not rejected. Fixed-sequence testing controls the
   family-wise error at δ (LTT, Prop. 1 with a data-independent order: the placement and the order come
   from the ordering half only): with probability ≥ 1 − δ no accepted λ has a true drop > α, so any of
   them may be chosen. The cheapest on the testing half is.

Choosing the one placement by branch and bound, exactly. Scoring every grid of every placement costs
placements x grid cells (kws with --exits-per-processor 2: 4002 placements, 4.1e8 cells, ~11 GB when held
at once). The placements are instead visited in order of a lower bound LB(p) ≤ PC(p) that needs no grid,
their grids scored one at a time (memory: one grid), and the visit stops at the first LB(p) above the best
PC found; the chosen placement is the same as scoring all (`prune=False`), ties included (the visit goes on
through LB = best, and the argmin is over (PC, index)). The bound, with n the ordering half's size, n_r / n_w
its samples the original model gets right / wrong, s = n_test / n and U, L the one-sided Clopper–Pearson
bounds at δ/2 of `drop_upper_bound`:
  - A combination's predicted bound is U(s·n10) − L(s·min(n01, n10)) ≥ U(s·n10) − L(s·min(n_w, n10)) =: w(n10),
    as n01 ≤ n_w and L increases. So predicted bound ≤ α implies n10 ≤ k* := max{k ≤ n_r : w(k) ≤ α}
    (no combination passes at all when that set is empty: then every PC is infinite and no grid is scored).
  - For any thresholds, a sample the original gets right costs at least r_i (the cheapest position of the
    placement whose prediction is right, the final classifier included) unless it is one of the n10 samples
    it gets wrong, which cost at least c_min (the cheapest position); every other sample costs at least
    c_min. With n10 ≤ k*, the mean cost is at least (Σ_right r_i − (the k* largest r_i − c_min) + n_w·c_min)/n
    = LB(p): the best case puts the k* samples that save most at the cheapest position.
  A bound from the default mode's thresholds (its best cost per placement) does not hold here: it is
  chosen on all validation data, on a coarser grid and a weighted objective, so a certified point can be
  cheaper on the ordering half than that figure.

The test for one λ uses the paired outcomes of the original model and the cascade on n samples:
n10 = original right and cascade wrong, n01 = original wrong and cascade right, so the drop is
p10 − p01. It is the exact unconditional score test of eecc/search/paired.py (Nam 1997 / Tango 1998
statistic, p-value maximised over the nuisance p01 in a Berger–Boos confidence set): its size is ≤ δ
on the whole null. It replaces a union of two Clopper–Pearson bounds (Clopper & Pearson 1934) at δ/2
each, U(n10) − L(n01), which ignores that most pairs agree and was about 1.5x as wide; that bound is
kept (`drop_upper_bound`) to predict how the testing half will fare when the sequence is ordered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from eecc.errors import EeccError
from eecc.search.paired import drop_bound, rejects
from eecc.search.policy import SplitScores, evaluate_policy, position_costs
from eecc.search.thresholds import NEVER, grid_tables, threshold_grid

ORDER_SHARE = 0.5
GRID_SIZE = 101       # thresholds per exit (quantiles of its confidences on the ordering half)
MAX_COMBOS = 200_000  # per placement; a finer grid only lengthens the ordered sequence
JOINT_LIMIT = 2_000_000  # combinations of all placements together up to which they share one front (64 MB)


class NotCertified(EeccError):
    """No threshold combination, not even "never exit", passes the test (too little validation data)."""


class NotAdmissible(EeccError):
    """Every certified combination breaks a limit besides the drop; `certified`: their (placement, thresholds)."""

    def __init__(self, reason: str, certified: list):
        super().__init__(reason)
        self.certified = certified


@dataclass
class Certified:
    placement: int                 # index into the placements given
    thresholds: tuple[float, ...]
    drop_bound: float              # the (1 − δ) upper bound on the drop, fraction, from the testing half
                                   # (the exact test inverted, eecc.search.paired.drop_bound)
    tested: int                    # hypotheses tested before the first non-rejection (or the end)
    front: int                     # length of the ordered sequence
    n_order: int
    n_test: int
    scored: int = 0                # placements whose grid was scored on the ordering half (branch and bound)
    placements: int = 0            # placements given

    def to_json(self) -> dict:
        return {"method": "learn-then-test, fixed sequence over the Pareto-ordered grid of the placement "
                          "chosen on the ordering half (branch and bound); exact unconditional paired score "
                          "test (Nam-Tango statistic, Berger-Boos)",
                "drop_bound": self.drop_bound, "tested": self.tested, "front": self.front,
                "n_order": self.n_order, "n_test": self.n_test, "placements_scored": self.scored,
                "placements": self.placements}


def cp_upper(k, n: int, delta: float) -> np.ndarray:
    """One-sided (1 − delta) Clopper–Pearson upper bound on a proportion, k events out of n."""
    k = np.asarray(k, dtype=np.float64)
    return np.where(k >= n, 1.0, beta.ppf(1 - delta, k + 1, np.maximum(n - k, 1e-12)))


def cp_lower(k, n: int, delta: float) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    return np.where(k <= 0, 0.0, beta.ppf(delta, np.maximum(k, 1e-12), n - k + 1))


def drop_upper_bound(n10, n01, n: int, delta: float) -> np.ndarray:
    """(1 − delta) upper bound on the paired accuracy drop p10 − p01 (fraction); see the module docstring."""
    return cp_upper(n10, n, delta / 2) - cp_lower(n01, n, delta / 2)


def union_bound_rejects(n10: int, n01: int, n: int, alpha: float, delta: float) -> bool:
    """The previous per-λ test: reject "drop ≥ alpha" when U(n10) − L(n01) ≤ alpha (kept for comparison)."""
    return bool(drop_upper_bound(n10, n01, n, delta) <= alpha)


def certify(logits, split: SplitScores, placements, *, max_drop: float, confidence: float, seed: int = 0,
            grid_size: int = GRID_SIZE, test_drop=rejects, costs=None, prune: bool = True,
            joint_limit: int | None = JOINT_LIMIT, admissible=None, max_macs: float | None = None,
            max_cost: float | None = None) -> Certified:
    """The cheapest (placement, thresholds) whose drop ≤ max_drop holds with probability ≥ confidence.

    placements: list of candidate-index tuples (network order). costs: per placement, the [E+1] cost of
    leaving at each position in the objective's unit (default: MACs, `position_costs`); the cheapest means
    least mean cost on the testing half. test_drop(n10, n01, n, alpha, delta) is
    the per-λ test (True = "drop ≥ alpha" rejected at level delta). Up to `joint_limit` combinations in all
    (None: never) every placement's points share one Pareto front; above it one placement is chosen by branch
    and bound (module docstring); prune=False scores every grid there (the same choice; for tests). Raises NotCertified (an
    EeccError) when not even the safest combination is certified (too little validation data for the limit).
    `max_macs`, `max_cost`: combinations whose mean MACs, or (placements with exits) mean cost, on the ordering
    half exceed them stay out of the sequence (the order still comes from the ordering half alone), and
    `admissible(placement, thresholds)`, None or why, says which certified ones may be chosen (any accepted
    combination keeps the guarantee, so choosing among them by another rule is free); raises NotAdmissible with
    the cheapest certified one's reason when every accepted combination has one.
    """
    if not 0 < confidence < 1:
        raise EeccError(f"--guarantee {confidence} must be a probability in (0, 1), e.g. 0.95")
    delta = 1.0 - confidence
    rng = np.random.default_rng(seed)
    perm = rng.permutation(split.n)
    cut = int(round(ORDER_SHARE * split.n))
    order, test = _rows(split, perm[:cut]), _rows(split, perm[cut:])
    costs = costs or [position_costs(logits, list(idx)) for idx in placements]
    table = _Table(order, test.n, delta, max_drop, limits=(logits, max_macs, max_cost))
    if joint_limit is not None and sum(_size(grid_size, len(i)) ** len(i) for i in placements) <= joint_limit:
        parts = [(p, *table.points(idx, c, grid_size)) for p, (idx, c) in enumerate(zip(placements, costs))]
        scored = len(parts)
    else:
        chosen, scored = _choose(order, placements, costs, grid_size, table, prune)
        parts = [] if chosen is None else [(chosen[0], *chosen[1])]
    seq = _sequence(placements, costs, parts, table)
    right = test.final_pred == test.y
    accepted, tested = [], 0
    for _, p, th in seq:
        r = evaluate_policy(test, placements[p], th, np.asarray(costs[p]))
        ok = r.prediction == test.y
        n10, n01 = int(np.sum(right & ~ok)), int(np.sum(~right & ok))
        tested += 1
        if not test_drop(n10, n01, test.n, max_drop, delta):
            break
        accepted.append((r.mean_macs, p, th, (n10, n01)))  # mean_macs: in the unit of `costs`
    if not accepted:
        raise NotCertified(f"--guarantee {confidence}: not even the safest thresholds keep the drop within "
                        f"{100 * max_drop:.2f} pt with that confidence on {test.n} validation samples; "
                        "give more validation data, a larger --max-acc-drop or a smaller --guarantee")
    accepted.sort(key=lambda a: a[0])
    why = [None if admissible is None else admissible(p, th) for _, p, th, _ in accepted]
    if all(w is not None for w in why):
        raise NotAdmissible(why[0], [(p, th) for _, p, th, _ in accepted])
    _, p, th, (n10, n01) = accepted[why.index(None)]
    bound = drop_bound(n10, n01, test.n, delta, hi=max_drop) if test_drop is rejects else \
        float(drop_upper_bound(n10, n01, test.n, delta))
    return Certified(p, tuple(float(t) for t in th), bound, tested, len(seq), order.n, test.n, scored,
                     len(placements))


def _rows(split: SplitScores, rows: np.ndarray) -> SplitScores:
    return SplitScores(conf=split.conf[:, rows], pred=split.pred[:, rows], final_pred=split.final_pred[rows],
                 y=split.y[rows])


class _Table:
    """The ordering half's predicted bounds as a table over its integer counts, and the branch and bound's k*.

    A combination with n10 / n01 flips on the ordering half is predicted to get U(s·n10) − L(s·min(n01, n10))
    on the testing half (s = n_test / n): its paired counts scaled to that size. The prediction credits
    no net gain (n01 is capped at n10): an exit that beat the original model on the ordering half was
    almost always lucky, and a lucky combination put early fails on the testing half. A combination that
    exits many samples has a wide bound, and failing it early ends the sequence.
    """

    def __init__(self, order: SplitScores, n_test: int, delta: float, alpha: float, limits=(None, None, None)):
        self.order, self.alpha, self.limits = order, alpha, limits
        self.right = order.final_pred == order.y
        n_r, n_w = int(self.right.sum()), int((~self.right).sum())
        k = np.arange(order.n + 1) * (n_test / max(order.n, 1))
        self.upper, self.lower = cp_upper(k, n_test, delta / 2), cp_lower(k, n_test, delta / 2)
        w = self.upper[:n_r + 1] - self.lower[np.minimum(np.arange(n_r + 1), n_w)]
        ok = np.flatnonzero(w <= alpha)
        self.k_star = int(ok.max()) if ok.size else -1  # most ordering-half flips a passing combination has

    def bound(self, n10: np.ndarray, n01: np.ndarray) -> np.ndarray:
        return self.upper[n10] - self.lower[np.minimum(n01, n10)]

    def lower_bound(self, idx, cost: np.ndarray) -> float:
        """LB(p) ≤ PC(p) of the module docstring, from the samples alone (no grid); inf when nothing passes."""
        if self.k_star < 0:
            return float("inf")
        o, cost = self.order, np.asarray(cost, dtype=np.float64)
        ok = np.vstack([o.pred[list(idx)] == o.y, np.ones((1, o.n), dtype=bool)])  # [E+1, n]: right there
        r = np.where(ok, cost[:, None], np.inf).min(axis=0)[self.right]  # the cheapest right position
        c_min = float(cost.min())
        save = np.sort(r - c_min)[::-1][:self.k_star]
        return float((r.sum() - save.sum() + (o.n - r.size) * c_min) / max(o.n, 1))

    def points(self, idx, cost, grid_size: int):
        """(grids, predicted bound, mean cost) of every combination of the placement's grid, flat, C order."""
        idx, o = list(idx), self.order
        grids = [threshold_grid(o.conf[k], _size(grid_size, len(idx))) for k in idx]
        cost = np.asarray(cost, dtype=np.float64)
        _, mean = grid_tables(o, idx, grids, cost)
        n10, n01 = (self._count(np.flatnonzero(rows), idx, grids, cost) for rows in (self.right, ~self.right))
        bound, mean = self.bound(int(self.right.sum()) - n10, n01).ravel(), mean.ravel()
        logits, max_macs, max_cost = self.limits
        if max_macs is not None:  # out of the sequence: a bound no test can pass
            bound = np.where(grid_tables(o, idx, grids, position_costs(logits, idx))[1].ravel() > max_macs, np.inf,
                             bound)
        if max_cost is not None and idx:
            bound = np.where(mean > max_cost, np.inf, bound)
        return grids, bound, mean

    def _count(self, rows, idx, grids, cost) -> np.ndarray:
        """Per combination: how many of `rows` the cascade gets right (integers)."""
        return np.rint(grid_tables(_rows(self.order, rows), idx, grids, cost)[0] * rows.size).astype(np.int64)


def _choose(order: SplitScores, placements, costs, grid_size: int, table: _Table, prune: bool):
    """(chosen placement, its (grids, bound, mean) points) and how many grids were scored: the least PC(p),
    visited by LB(p) and stopped at the first LB above the best PC (module docstring). None: none passes."""
    lbs = [table.lower_bound(idx, c) for idx, c in zip(placements, costs)] if prune else [0.0] * len(placements)
    best, chosen, scored = (np.inf, len(placements)), None, 0
    for p in sorted(range(len(placements)), key=lambda p: (lbs[p], p)):
        if lbs[p] > best[0] + 1e-9 * abs(best[0]):  # slack: LB and PC are summed in other orders
            break
        if lbs[p] == np.inf:
            continue
        pts = table.points(placements[p], costs[p], grid_size)
        scored += 1
        passing = pts[2][pts[1] <= table.alpha]
        pc = float(passing.min()) if passing.size else np.inf
        if (pc, p) < best:
            best, chosen = (pc, p), (p, pts)
    return (chosen if best[0] < np.inf else None), scored


def _size(grid_size: int, exits: int) -> int:
    """Thresholds per exit: grid_size, fewer while a placement's combinations would exceed MAX_COMBOS."""
    size = grid_size
    while size > 2 and size ** exits > MAX_COMBOS:
        size -= 1
    return size


def _sequence(placements, costs, parts, table: _Table) -> list:
    """[(predicted bound, placement, thresholds)]: "never exit" on the placement whose heads cost least
    (drop identically 0), then the Pareto front of the points of `parts` [(placement, grids, bound, mean)],
    safest first.

    The opener: a cheaper combination with an equal predicted bound would otherwise take its place and
    may fail. A 2-D sweep, not search/pareto.py's sorting: a grid can hold 10^5 points."""
    never = min(range(len(placements)), key=lambda p: costs[p][-1])
    out = [(float(table.bound(np.array(0), np.array(0))), never, (NEVER,) * len(placements[never]))]
    if not parts:
        return out
    bound, mean = (np.concatenate([part[k] for part in parts]) for k in (2, 3))
    owner = np.concatenate([np.full(part[2].size, j) for j, part in enumerate(parts)])
    start = np.cumsum([0] + [part[2].size for part in parts])
    front, best = [], np.inf
    for i in np.lexsort((bound, mean)):  # cheapest first; a point stays if safer than every cheaper one
        if bound[i] < best - 1e-12:
            front.append(i)
            best = bound[i]
    for i in sorted(front, key=lambda i: (bound[i], -mean[i])):
        p, grids, _, _ = parts[owner[i]]
        at = np.unravel_index(i - start[owner[i]], [len(g) for g in grids])
        out.append((float(bound[i]), p, tuple(float(g[j]) for g, j in zip(grids, at))))
    return out
