"""The search's test-split points beside the chosen placement: the NSGA-II front over the scored placements' exits
(`--pareto`) and the two baselines on the chosen exits (one global threshold; NACHOS' greedy lowering)."""

from __future__ import annotations

from dataclasses import replace

from eecc.search.baselines import global_threshold, nachos_greedy
from eecc.search.intervals import result_intervals
from eecc.search.moo import pareto_search
from eecc.search.policy import Objective, SplitScores, evaluate_policy, oracle, position_costs
from eecc.search.types import PAIR, ExitLogits
from eecc.search.unit import UNITS, device_means, exit_costs, priced_in


def pareto_points(logits: ExitLogits, results, calib: SplitScores, test: SplitScores, objective: Objective,
                  test_obj: Objective, unit: str, o) -> list[dict]:
    """NSGA-II front over the exits of the evaluated placements (`results`, search.PlacementResult), as test-split
    points (`point_json`, their `cost` in MACs: cost_unit "MACs"; `merged`: how many other solutions were the same
    policy on validation, eecc.search.moo.merge_same_policies); `o`: the search.SearchOptions."""
    cands = sorted({i for r in results for i in r.indices})
    # NSGA-II searches exits and thresholds without processors, so its front is in MACs.
    mac_obj, mac_test = objective, test_obj
    if unit != "macs":
        ref = float(logits.final_macs)
        mac_obj = replace(objective, original_macs=ref, max_mean_macs=o.max_mean_macs)
        mac_test = replace(test_obj, original_macs=ref)
    groups = locations(logits.tensors, cands)
    points = pareto_search(calib, cands, lambda e: position_costs(logits, e), mac_obj,
                           max_exits=o.max_exits or len(groups), pop_size=o.pop_size, generations=o.generations,
                           seed=o.seed, groups=groups)
    return [{**point_json(logits, test, p.exits, p.thresholds, mac_test), "merged": p.merged} for p in points]


def locations(tensors: list[str], cands: list[int]) -> list[list[int]]:
    """Positions in `cands` (row indices into `tensors`) grouped by location: rows "<tensor>|<design>" of one tensor
    (eecc.search.types.pair_name) are one location, in the order the locations first appear."""
    groups: dict[str, list[int]] = {}
    for pos, row in enumerate(cands):
        groups.setdefault(tensors[row].split(PAIR)[0], []).append(pos)
    return list(groups.values())


def point_json(logits, test, exits, th, test_obj, extra: dict | None = None) -> dict:
    """Exits `exits` at thresholds `th` on the `test` split: accuracy, mean MACs, intervals, oracle, exit rates, and
    the scalar `cost` of `test_obj` in the unit of `extra` (a search.PlacementResult's: the device's per-exit J or s
    where it has processors; MACs without `extra`), named by `cost_unit`, with mean energy / latency when known."""
    costs = position_costs(logits, exits)
    r = evaluate_policy(test, exits, th, costs)
    extra = extra or {}
    per = exit_costs(extra, costs)
    mean_cost = float(per[r.exit_index].mean()) if r.exit_index.size else 0.0
    return {"exits": [logits.tensors[i] for i in exits], "thresholds": [float(t) for t in th],
            "accuracy": r.accuracy, "mean_macs": r.mean_macs, "intervals": result_intervals(r, test),
            "oracle_macs": oracle(test, exits, costs).mean_macs,
            "exit_rates": [float(x) for x in r.exit_rates],
            "cost": float(test_obj.cost(r.accuracy, mean_cost)), "cost_unit": UNITS[priced_in(extra)],
            **device_means(extra, r.exit_index)}


def baseline_points(logits, calib, test, best, objective, test_obj, o) -> dict:
    """The baselines' thresholds on the exits of `best` (search.PlacementResult), chosen on `calib` in the
    objective's unit (its per-exit energy or latency where it has processors; nu14 F3), a MAC limit binding them."""
    idx, macs = best.indices, position_costs(logits, best.indices)
    costs = exit_costs(best.extra, macs)
    if priced_in(best.extra) != "macs" and o.max_mean_macs is not None:
        objective = replace(objective, position_macs=tuple(float(m) for m in macs), limit_macs=o.max_mean_macs)
    out = {}
    for name, th in (("global_threshold", global_threshold(calib, idx, costs, objective)),
                     ("nachos_greedy", nachos_greedy(calib, idx, costs, objective))):
        out[name] = point_json(logits, test, idx, th, test_obj, best.extra)
    return out
