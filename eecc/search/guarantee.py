"""Thresholds whose accuracy drop holds on unseen data with probability ≥ P (Learn then Test, Pareto Testing).

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021, "Learn then Test: Calibrating
predictive algorithms to achieve risk control", arXiv:2110.01052) with fixed-sequence testing, ordered
as in Pareto Testing (Laufer-Goldshtein, Fisch, Barzilay, Jaakkola, ICLR 2023, "Efficiently controlling
multiple risks with Pareto Testing"):

1. The validation split is cut at random into an ordering half and a testing half.
2. On the ordering half, every (placement, threshold combination) of the grid is scored; the ones on
   the Pareto front of (mean cost, predicted bound on the drop) are ordered from the safest (smallest
   predicted bound, most cost) to the cheapest. Cost is the search's objective (MACs, or the device's
   joules or seconds per exit position: two placements with the same exits on other processors differ). The grid is fine (GRID_SIZE thresholds per exit, fewer
   when a placement's combinations would exceed MAX_COMBOS): fixed-sequence testing pays nothing for
   a longer sequence, and a coarse grid stops short of the cheapest thresholds that would pass.
3. On the testing half, the null "drop(λ) > α" is tested for each λ in that order at level δ = 1 − P;
   testing stops at the first null that is not rejected. Fixed-sequence testing controls the
   family-wise error at δ (LTT, Prop. 1 with a data-independent order): with probability ≥ 1 − δ no
   accepted λ has a true drop > α, so any of them may be chosen. The cheapest is.

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

    def to_json(self) -> dict:
        return {"method": "learn-then-test, fixed sequence over a Pareto-ordered grid; "
                          "exact unconditional paired score test (Nam-Tango statistic, Berger-Boos)",
                "drop_bound": self.drop_bound, "tested": self.tested, "front": self.front,
                "n_order": self.n_order, "n_test": self.n_test}


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
            grid_size: int = GRID_SIZE, test_drop=rejects, costs=None) -> Certified:
    """The cheapest (placement, thresholds) whose drop ≤ max_drop holds with probability ≥ confidence.

    placements: list of candidate-index tuples (network order). costs: per placement, the [E+1] cost of
    leaving at each position in the objective's unit (default: MACs, `position_costs`); the cheapest means
    least mean cost on the testing half. test_drop(n10, n01, n, alpha, delta) is
    the per-λ test (True = "drop ≥ alpha" rejected at level delta). Raises EeccError when not even the
    safest combination is certified (too little validation data for the limit asked).
    """
    if not 0 < confidence < 1:
        raise EeccError(f"--guarantee {confidence} must be a probability in (0, 1), e.g. 0.95")
    delta = 1.0 - confidence
    rng = np.random.default_rng(seed)
    perm = rng.permutation(split.n)
    cut = int(round(ORDER_SHARE * split.n))
    order, test = _rows(split, perm[:cut]), _rows(split, perm[cut:])
    costs = costs or [position_costs(logits, list(idx)) for idx in placements]
    seq = _pareto_sequence(order, placements, costs, grid_size, test.n, delta)
    right = test.final_pred == test.y
    accepted, tested = [], 0
    for _, p, th in seq:
        idx = placements[p]
        r = evaluate_policy(test, idx, th, np.asarray(costs[p]))
        ok = r.prediction == test.y
        n10, n01 = int(np.sum(right & ~ok)), int(np.sum(~right & ok))
        tested += 1
        if not test_drop(n10, n01, test.n, max_drop, delta):
            break
        accepted.append((r.mean_macs, p, th, (n10, n01)))  # mean_macs: in the unit of `costs`
    if not accepted:
        raise EeccError(f"--guarantee {confidence}: not even the safest thresholds keep the drop within "
                        f"{100 * max_drop:.2f} pt with that confidence on {test.n} validation samples; "
                        "give more validation data, a larger --max-acc-drop or a smaller --guarantee")
    _, p, th, (n10, n01) = min(accepted, key=lambda a: a[0])
    bound = drop_bound(n10, n01, test.n, delta, hi=max_drop) if test_drop is rejects else \
        float(drop_upper_bound(n10, n01, test.n, delta))
    return Certified(p, tuple(float(t) for t in th), bound, tested, len(seq), order.n, test.n)


def _rows(split: SplitScores, rows: np.ndarray) -> SplitScores:
    return SplitScores(conf=split.conf[:, rows], pred=split.pred[:, rows], final_pred=split.final_pred[rows],
                 y=split.y[rows])


def _pareto_sequence(order: SplitScores, placements, costs, grid_size: int, n_test: int, delta: float) -> list:
    """[(predicted bound, placement, thresholds)] on the ordering half's Pareto front, safest first.

    Ordered by the bound each combination is predicted to get on the testing half (its paired counts
    scaled to that size), not by its raw drop: a combination that exits many samples has a wide bound,
    and failing it early ends the sequence. The prediction credits no net gain (n01 is capped at n10):
    an exit that beat the original model on the ordering half was almost always lucky, and a lucky
    combination put early fails on the testing half.
    """
    bounds, means, owner, cells, grids_of = [], [], [], [], []
    right = order.final_pred == order.y
    for p, idx in enumerate(placements):
        idx = list(idx)
        size = grid_size
        while size > 2 and size ** len(idx) > MAX_COMBOS:
            size -= 1
        grids = [threshold_grid(order.conf[k], size) for k in idx]
        costs_p = np.asarray(costs[p])
        _, mean = grid_tables(order, idx, grids, costs_p)
        n10 = right.sum() * (1 - grid_tables(_rows(order, np.flatnonzero(right)), idx, grids, costs_p)[0])
        n01 = (~right).sum() * grid_tables(_rows(order, np.flatnonzero(~right)), idx, grids, costs_p)[0]
        scale = n_test / max(order.n, 1)
        bounds.append(drop_upper_bound(n10 * scale, np.minimum(n01, n10) * scale, n_test, delta).ravel())
        means.append(mean.ravel())
        owner.append(np.full(mean.size, p))
        cells.append(np.arange(mean.size))
        grids_of.append(grids)
    bound, mean, owner, cell = (np.concatenate(a) for a in (bounds, means, owner, cells))
    # A 2-D sweep, not search/pareto.py's sorting: the grid of every placement can hold 10^5 points.
    front, best = [], np.inf
    for i in np.lexsort((bound, mean)):  # cheapest first; a point stays if safer than every cheaper one
        if bound[i] < best - 1e-12:
            front.append(i)
            best = bound[i]
    # The sequence opens with "never exit" (drop identically 0) on the placement whose heads cost least:
    # a cheaper combination with an equal predicted bound would otherwise take its place and may fail.
    never = min(range(len(placements)), key=lambda p: costs[p][-1])
    out = [(float(drop_upper_bound(0, 0, n_test, delta)), never, (NEVER,) * len(placements[never]))]
    for i in sorted(front, key=lambda i: (bound[i], -mean[i])):
        grids = grids_of[owner[i]]
        at = np.unravel_index(cell[i], [len(g) for g in grids])
        out.append((float(bound[i]), int(owner[i]), tuple(float(g[j]) for g, j in zip(grids, at))))
    return out


def guaranteed_choice(results: list, logits, calib: SplitScores, test: SplitScores, objective, test_obj,
                      options) -> int | None:
    """`search` with --guarantee: certify over every scored placement, rewrite the winner; its index.

    The winner's thresholds, test figures and intervals are replaced by the certified ones and
    `extra["guarantee"]` records the bound; the other placements keep their uncertified thresholds.
    """
    from eecc.search.intervals import result_intervals

    o = options
    if o.max_accuracy_drop is None:
        raise EeccError("--guarantee needs an accuracy limit to guarantee: give --max-acc-drop POINTS")
    if o.calibrate_on != "val" or o.decision != "single":
        raise EeccError("--guarantee certifies thresholds on held-out validation data with single-exit "
                        "decisions: drop --calibrate-on train / --decision ensemble, or drop --guarantee")
    units = [_unit_costs(logits, r) for r in results]
    cert = certify(logits, calib, [r.indices for r in results], max_drop=o.max_accuracy_drop,
                   confidence=o.guarantee, seed=o.seed, costs=units)
    best, unit = results[cert.placement], units[cert.placement]
    macs = position_costs(logits, best.indices)
    sel = evaluate_policy(calib, best.indices, cert.thresholds, unit)  # in the objective's unit, as search's
    sel_macs = evaluate_policy(calib, best.indices, cert.thresholds, macs).mean_macs
    r = evaluate_policy(test, best.indices, cert.thresholds, macs)  # the record keeps MACs, as search's
    best.thresholds, best.test, best.method = cert.thresholds, r, "ltt"
    _refresh_means(best, r.exit_index, unit)
    best.val_cost = float(objective.cost(sel.accuracy, sel.mean_macs))
    best.cost = float(test_obj.cost(r.accuracy, best.extra["mean_cost"]))
    macs_ok = o.max_mean_macs is None or sel_macs <= o.max_mean_macs
    best.feasible = bool(macs_ok)
    best.reasons = [] if macs_ok else [f"mean MACs {sel_macs:.4g} > max {o.max_mean_macs:.4g}"]
    best.extra["intervals"] = result_intervals(r, test)
    best.extra["guarantee"] = {"confidence": o.guarantee, "max_drop": o.max_accuracy_drop, **cert.to_json()}
    return cert.placement if macs_ok else None


def _unit_costs(logits, result) -> np.ndarray:
    """[E+1] cost of leaving at each position in the search's objective: the device's joules or seconds
    where the placement has processors (search._one's `extra`), else MACs."""
    per = {"energy": "exit_energy_j", "latency": "exit_latency_s"}.get(result.extra.get("objective"))
    if per is not None and per in result.extra:
        return np.asarray(result.extra[per], dtype=np.float64)
    return position_costs(logits, result.indices)


def _refresh_means(best, exit_index: np.ndarray, unit: np.ndarray) -> None:
    """The test-split means of `extra` (search._one) at the certified thresholds."""
    best.extra["mean_cost"] = float(unit[exit_index].mean()) if exit_index.size else 0.0
    for mean, per in (("mean_energy_j", "exit_energy_j"), ("mean_latency_s", "exit_latency_s")):
        if per in best.extra:
            best.extra[mean] = float(np.asarray(best.extra[per])[exit_index].mean())
