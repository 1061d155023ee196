"""Per-placement threshold search on cached validation logits: exact, graph (NA paper), refine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from eecc.search.policy import DROP_TOLERANCE, Objective, PolicyResult, SplitScores, evaluate_policy

GRID_SIZE = 13          # the NA paper's number of thresholds per exit
EXACT_LIMIT = 1_000_000  # exact search while the number of combinations stays at or below this
NEVER = 2.0              # a threshold no confidence (all metrics lie in [0, 1]) ever reaches
METHODS = ("auto", "exact", "graph")


@dataclass
class ThresholdChoice:
    thresholds: tuple[float, ...]
    val: PolicyResult
    cost: float
    feasible: bool
    method: str
    combinations: int
    seconds: float
    violations: list[str] = field(default_factory=list)


def threshold_grid(conf: np.ndarray, size: int = GRID_SIZE) -> np.ndarray:
    """Thresholds at evenly spaced exit rates 100 %, ..., 0 % of this exit's confidences."""
    s = np.sort(np.asarray(conf, dtype=np.float64))
    if s.size == 0:
        return np.array([NEVER])
    idx = np.round(np.linspace(0.0, 1.0, size) * s.size).astype(np.int64)
    return np.unique(np.where(idx < s.size, s[np.minimum(idx, s.size - 1)], NEVER))


def _transform(a: np.ndarray, j: int, sizes) -> np.ndarray:
    """Aggregate a cell histogram into per-combination totals for samples leaving at position j.

    Cell c = (c_1..c_E), c_i = number of grid thresholds <= conf_i; threshold index a_i lets the
    sample out at i iff a_i < c_i. Leaving at j means c_i <= a_i for i < j and c_j > a_j.
    Counts are whole numbers (exact in float64), so the suffix sums taken as total - prefix and the prefix
    views instead of copies give the same tables bit for bit, at half the time (nu9: K = 2 searches).
    """
    e = len(sizes)
    for i in range(j + 1, e):
        a = a.sum(axis=i, keepdims=True)
    for i in range(min(j, e)):
        a = np.cumsum(a, axis=i)[(slice(None),) * i + (slice(0, sizes[i]),)]
    if j < e:  # samples with c_j > a_j for a_j = 0..T_j - 1
        a = a.sum(axis=j, keepdims=True) - np.cumsum(a, axis=j)[(slice(None),) * j + (slice(0, sizes[j]),)]
    return a


def grid_tables(split: SplitScores, exits, grids, costs) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, mean MACs) of EVERY threshold combination of `grids`, each shaped (T_1..T_E)."""
    exits = list(exits)
    sizes = [len(g) for g in grids]
    dims = [t + 1 for t in sizes]
    levels = [np.searchsorted(g, split.conf[k], side="right") for g, k in zip(grids, exits)]
    flat = np.ravel_multi_index(levels, dims) if exits else np.zeros(split.n, dtype=np.int64)
    cells = int(np.prod(dims))
    hist = np.bincount(flat, minlength=cells).astype(np.float64).reshape(dims)
    preds = [split.pred[k] for k in exits] + [split.final_pred]
    acc = np.zeros(sizes)
    macs = np.zeros(sizes)
    for j, p in enumerate(preds):
        right = np.bincount(flat, weights=(p == split.y), minlength=cells).reshape(dims)
        acc = acc + _transform(right, j, sizes)
        macs = macs + costs[j] * _transform(hist, j, sizes)
    n = max(split.n, 1)
    return acc / n, macs / n


def _limit_table(split, exits, grids, objective: Objective):
    """Mean MACs of every combination when the objective carries a MAC limit in another unit, else None."""
    if objective.limit_macs is None:
        return None
    return grid_tables(split, exits, grids, np.asarray(objective.position_macs, dtype=np.float64))[1]


def _pick(acc, macs, objective: Objective, limit_table=None):
    cost = objective.cost(acc, macs)
    ok = objective.feasible(acc, macs)
    if limit_table is not None:
        ok = ok & objective.within_macs(limit_table)
    pool = np.where(ok, cost, np.inf)
    flat = int(np.argmin(pool)) if ok.any() else int(np.argmin(cost))
    return np.unravel_index(flat, acc.shape), bool(ok.any())


def exact_search(split, exits, grids, costs, objective):
    """Best combination of `grids` by exhaustive, vectorised evaluation on the split."""
    acc, macs = grid_tables(split, exits, grids, costs)
    idx, _ = _pick(acc, macs, objective, _limit_table(split, exits, grids, objective))
    return tuple(float(g[i]) for g, i in zip(grids, idx)), int(acc.size)


def graph_search(split, exits, grids, costs, objective, *, order: int = 2, rounds: int = 2):
    """NA paper: a graph of (exit, threshold) nodes, Bellman-Ford shortest path source -> sink.

    Every sample is first charged as if it left at the final classifier; the edge into exit j
    with threshold b adds what changes for the samples exit j takes among those that the exits
    the edge can see passed on. With order=1 (the paper's nodes) an edge sees one exit back, so a
    sample taken two or more exits earlier is counted again; order=2 makes nodes
    (exit, previous threshold, threshold) and is exact up to three exits. Rounds after the first
    re-weight the edges on the samples that the previous path lets through the exits the edge
    cannot see, and the best path by its true cost is kept. order=1, rounds=1 = the plain method.
    """
    exits = list(exits)
    e = len(exits)
    right = [split.pred[k] == split.y for k in exits] + [split.final_pred == split.y]
    value = [objective.w_eff * costs[j] / objective.original_macs - objective.w_acc * 100.0 * right[j]
             for j in range(e + 1)]
    gain = [value[j] - value[e] for j in range(e)]
    take = [(split.conf[k][None, :] >= g[:, None]).astype(np.float32) for g, k in zip(grids, exits)]
    reach = [np.ones(split.n, dtype=np.float32) for _ in range(e)]
    best, seen = None, set()
    for _ in range(max(rounds, 1)):
        g = nx.DiGraph()
        states = {(): np.ones(split.n, dtype=np.float32)}  # last `order` indices -> passed mask
        for j in range(e):
            nxt = {}
            keys = list(states)
            masks = np.stack([states[s] for s in keys]) * reach[j][None, :]
            w = masks @ (take[j] * gain[j]).T  # [states, thresholds]
            for si, st in enumerate(keys):
                for b in range(len(grids[j])):
                    ns = (st + (b,))[-order:]
                    g.add_edge((j - 1, st) if j else "src", (j, ns), weight=float(w[si, b]))
                    if ns not in nxt:
                        window = (st + (b,))[-order:]
                        nxt[ns] = np.prod([1.0 - take[j - len(window) + 1 + i][a]
                                           for i, a in enumerate(window)], axis=0)
            states = nxt
        for st in states:
            g.add_edge((e - 1, st), "sink", weight=0.0)
        nodes = nx.bellman_ford_path(g, "src", "sink", weight="weight")[1:-1]
        path = tuple(st[-1] for _, st in nodes)
        th = tuple(float(grids[j][a]) for j, a in enumerate(path))
        r = evaluate_policy(split, exits, th, costs)
        key = float(objective.cost(r.accuracy, r.mean_macs))
        if best is None or key < best[0]:
            best = (key, th)
        if path in seen:
            break
        seen.add(path)
        for j in range(e):  # reach[j]: passed by the exits before the window of edges into j
            reach[j] = np.prod([1.0 - take[i][path[i]] for i in range(j - order)]
                               + [np.ones(split.n, dtype=np.float32)], axis=0)
    return best[1], g.number_of_nodes() - 2


def _key(split, exits, th, costs, objective: Objective) -> tuple[bool, float]:
    """(infeasible, cost) of thresholds `th`: the order every step of the search ranks them by."""
    r = evaluate_policy(split, exits, th, costs)
    return (not _feasible(r, objective), float(objective.cost(r.accuracy, r.mean_macs)))


def _feasible(r, objective: Objective) -> bool:
    return bool(objective.feasible(r.accuracy, r.mean_macs)) and bool(
        objective.within_macs(_limit_mean(r, objective)))


def _limit_mean(r, objective: Objective) -> float:
    """Mean MACs of a policy result (its exit positions priced by `position_macs`); 0 without a MAC limit."""
    if objective.limit_macs is None or not r.exit_index.size:
        return 0.0
    return float(np.asarray(objective.position_macs, dtype=np.float64)[r.exit_index].mean())


def _graph_constrained(split, exits, grids, costs, objective):
    """Constraints do not fit a shortest path: raise the weight of a violated term until it holds."""
    w_eff, w_acc, best = objective.w_eff, objective.w_acc, None
    for _ in range(24):
        obj = Objective(objective.original_macs, objective.original_accuracy, w_eff, w_acc)
        th, nodes = graph_search(split, exits, grids, costs, obj)
        r = evaluate_policy(split, exits, th, costs)
        ok = _feasible(r, objective)
        key = (not ok, float(objective.cost(r.accuracy, r.mean_macs)))
        best = min(best, (key, th), key=lambda x: x[0]) if best else (key, th)
        if ok or (objective.max_accuracy_drop is None and objective.max_mean_macs is None
                  and objective.limit_macs is None):
            break
        drop = objective.original_accuracy - r.accuracy
        if objective.max_accuracy_drop is not None and drop > objective.max_accuracy_drop + DROP_TOLERANCE:
            w_acc *= 2.0
        if ((objective.max_mean_macs is not None and r.mean_macs > objective.max_mean_macs)
                or not objective.within_macs(_limit_mean(r, objective))):
            w_eff *= 2.0
    return best[1], nodes


def _local_grid(conf, grid, t, m):
    i = int(np.searchsorted(grid, t))
    lo = grid[max(i - 1, 0)]
    hi = grid[min(i + 1, len(grid) - 1)]
    inside = conf[(conf >= lo) & (conf <= hi)]
    qs = np.quantile(inside, np.linspace(0, 1, m), method="inverted_cdf") if inside.size else []
    return np.unique(np.concatenate([qs, [lo, hi, t]]))


def refine(split, exits, grids, chosen, costs, objective, limit=200_000):
    """Finer second pass: a denser grid between the chosen thresholds' grid neighbours."""
    e = len(exits)
    m = max(2, int(limit ** (1.0 / max(e, 1))) - 3)
    local = [_local_grid(split.conf[k], g, t, m) for k, g, t in zip(exits, grids, chosen)]
    if int(np.prod([len(g) for g in local])) <= limit:
        return exact_search(split, exits, local, costs, objective)
    th = list(chosen)  # too many exits for a product grid: coordinate descent, two sweeps
    for _ in range(2):
        for j in range(e):
            options = []
            for v in local[j]:
                trial = th[:j] + [float(v)] + th[j + 1:]
                options.append((_key(split, exits, trial, costs, objective), float(v)))
            th[j] = min(options)[1]
    return tuple(th), len(local) * sum(len(g) for g in local)


def search_thresholds(split: SplitScores, exits, costs, objective: Objective, *, method="auto",
                      grid_size=GRID_SIZE, fine=True, exact_limit=EXACT_LIMIT) -> ThresholdChoice:
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose one of {METHODS}")
    t0 = time.perf_counter()
    exits = list(exits)
    grids = [threshold_grid(split.conf[k], grid_size) for k in exits]
    combos = int(np.prod([len(g) for g in grids]))
    if method == "auto":
        method = "exact" if combos <= exact_limit else "graph"
    if method == "exact" or not exits:  # no exit (the original model alone): nothing for a path to choose
        chosen, evaluated = exact_search(split, exits, grids, costs, objective)
    else:
        chosen, evaluated = _graph_constrained(split, exits, grids, costs, objective)
    if fine and exits:
        candidate, more = refine(split, exits, grids, chosen, costs, objective)
        evaluated += more
        chosen = _better(split, exits, costs, objective, chosen, candidate)
    r = evaluate_policy(split, exits, chosen, costs)
    violations = objective.violations(r.accuracy, r.mean_macs)
    if not objective.within_macs(_limit_mean(r, objective)):
        violations.append(f"mean MACs {_limit_mean(r, objective):.4g} > max {objective.limit_macs:.4g}")
    return ThresholdChoice(
        thresholds=chosen, val=r, cost=float(objective.cost(r.accuracy, r.mean_macs)),
        feasible=_feasible(r, objective),
        method=method + ("+fine" if fine and exits else ""), combinations=evaluated,
        seconds=time.perf_counter() - t0, violations=violations)


def _better(split, exits, costs, objective, a, b):
    return b if _key(split, exits, b, costs, objective) < _key(split, exits, a, costs, objective) else a


@dataclass
class Retuned:
    """Thresholds of one placement searched on a calibration split, and the policy they give."""

    thresholds: tuple[float, ...]
    method: str
    cost: float                  # calibration cost of the search's own choice (before any correction)
    seconds: float
    selected: PolicyResult       # calibration split, final thresholds: what feasibility is judged on
    test: PolicyResult | None    # test split, final thresholds (when a test split was given)

    def figures(self, objective: Objective, test_objective: Objective) -> dict:
        """val_cost, cost, feasible and reasons as PlacementResult records them."""
        s, r = self.selected, self.test
        return {"val_cost": float(objective.cost(s.accuracy, s.mean_macs)),
                "cost": float(test_objective.cost(r.accuracy, r.mean_macs)),
                "feasible": bool(objective.feasible(s.accuracy, s.mean_macs)),
                "reasons": objective.violations(s.accuracy, s.mean_macs)}


def retune(calib: SplitScores, exits, costs, objective: Objective, options, *, test: SplitScores | None = None,
           fine: bool | None = None, grid_size: int = GRID_SIZE) -> Retuned:
    """The one threshold (re-)search of a fixed placement: the search runs it for every placement, and
    int8 stages, joint fine-tuning and NACHOS' learned confidences run it again after their numerics
    changed. `options` is a SearchOptions (method, fine, calibrate_on, correction); with calibration on
    the training split, thresholds are multiplied by `options.correction` (NEVER stays NEVER)."""
    choice = search_thresholds(calib, exits, costs, objective, method=options.method,
                               fine=options.fine if fine is None else fine, grid_size=grid_size)
    th, method = choice.thresholds, choice.method
    if options.calibrate_on == "train" and options.correction != 1.0:
        th = tuple(min(t * options.correction, NEVER) if t < NEVER else t for t in th)
        method += f"+correction{options.correction:g}"
    return Retuned(th, method, choice.cost, choice.seconds, evaluate_policy(calib, exits, th, costs),
                   None if test is None else evaluate_policy(test, exits, th, costs))
