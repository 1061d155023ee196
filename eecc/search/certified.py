"""`search --guarantee`: the scored placement and thresholds that eecc/search/guarantee.py certifies, chosen under
the same rules as the default search (eecc/search/search.py `_choose` and `_one`): the mean MACs within --max-macs
and, under objective energy / latency, no cascade whose mean cost is above the original model alone on its best
processor (nu11 F8), both on the calibration split. Any certified combination keeps the guarantee, so these rules
choose among them (the cheapest that keeps both); before, the cheapest certified one was taken and the MAC limit
checked after it, which left no choice where a dearer certified one was within the limit."""

from __future__ import annotations

import numpy as np

from eecc.errors import EeccError
from eecc.search.guarantee import NotAdmissible, NotCertified, certify
from eecc.search.policy import SplitScores, evaluate_policy, position_costs
from eecc.search.unit import device_means, exit_costs, rank


def guaranteed_choice(results: list, logits, calib: SplitScores, test: SplitScores, objective, test_obj,
                      options, notes: list[str] | None = None) -> int | None:
    """`search` with --guarantee: certify over the scored placements (`certify` chooses one of them on its
    ordering half, `_rules` among the certified), rewrite the winner; its index.

    When nothing with exits can be certified (NotCertified) but a placement without exits was scored, that
    one is chosen (the original model has no drop by construction, so it needs no certificate) and the
    reason is appended to `notes`; without such a placement NotCertified propagates. When every certified
    choice breaks --max-macs: an EeccError naming the --max-macs that the cheapest in MACs keeps.

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
    rules = _rules(results, logits, calib, units, objective.original_macs, o.max_mean_macs, notes)
    max_cost = None if rules.unit is None else objective.original_macs * (1 + 1e-9)

    def run(max_macs, admissible):
        return certify(logits, calib, [r.indices for r in results], max_drop=o.max_accuracy_drop,
                       confidence=o.guarantee, seed=o.seed, costs=units, admissible=admissible, max_macs=max_macs,
                       max_cost=max_cost)

    try:
        cert = run(o.max_mean_macs, rules)
    except NotCertified as exc:
        alone = [i for i, r in enumerate(results) if not r.indices and r.feasible]
        if not alone:
            raise
        if notes is not None:
            notes.append(f"{exc}; chose the original model alone (no exits, so no drop)")
        return min(alone, key=lambda i: rank(results[i]))
    except NotAdmissible:
        raise EeccError(f"--guarantee {o.guarantee}: no certified choice of thresholds keeps the mean MACs within "
                        f"--max-macs {o.max_mean_macs:g} on the validation split; "
                        + _macs_advice(run, rules, o.max_mean_macs)) from None
    best, unit = results[cert.placement], units[cert.placement]
    macs = position_costs(logits, best.indices)
    sel = evaluate_policy(calib, best.indices, cert.thresholds, unit)  # in the objective's unit, as search's
    r = evaluate_policy(test, best.indices, cert.thresholds, macs)  # the record keeps MACs, as search's
    best.thresholds, best.test, best.method = cert.thresholds, r, "ltt"
    _refresh_means(best, r.exit_index, unit)
    best.val_cost = float(objective.cost(sel.accuracy, sel.mean_macs))
    best.cost = float(test_obj.cost(r.accuracy, best.extra["mean_cost"]))
    best.extra["val_mean_cost"] = float(sel.mean_macs)
    best.feasible, best.reasons = True, []
    best.extra["intervals"] = result_intervals(r, test)
    best.extra["guarantee"] = {"confidence": o.guarantee, "max_drop": o.max_accuracy_drop, **cert.to_json()}
    return cert.placement


def _macs_advice(run, rules, low: float, tries: int = 6) -> str:
    """A --max-macs under which a choice is certified: the first of the mean MACs (rounded up) of the choices
    certified without the limit that works, then halved towards `low` (the limit given) while a value works,
    `tries` certify runs each (`run(max_macs, admissible)`: the sequence depends on the limit, so each is run)."""
    def works(limit: float) -> bool:
        rules.max_macs = limit
        try:
            run(limit, rules)
        except NotAdmissible:
            return False
        return True

    try:
        run(None, lambda p, th: "listed")
    except NotAdmissible as free:
        high = next((x for x in sorted({_round_up(rules.macs(p, th)) for p, th in free.certified})[:tries]
                     if works(x)), None)
        if high is not None:
            for _ in range(tries):
                mid = _round_up((low + high) / 2)
                if mid >= high:
                    break
                low, high = (low, mid) if works(mid) else (mid, high)
            return f"raise --max-macs to {high:g} or more, or lower --guarantee"
    return "raise --max-macs or lower --guarantee"


class _rules:
    """certify's `admissible`: why a certified (placement, thresholds) may not be chosen, on the calibration split:
    mean MACs above `max_macs`; or, under objective energy / latency with a feasible placement without exits
    (search._choose's condition), a cascade whose mean cost is above `ref`, the original alone on its best
    processor (noted once in `notes` when it is the cheapest certified one)."""

    def __init__(self, results, logits, calib, units, ref: float, max_macs: float | None, notes):
        self.results, self.logits, self.calib, self.units, self.ref = results, logits, calib, units, ref
        self.max_macs, self.notes, self.first = max_macs, notes, True
        unit = next((r.extra.get("objective") for r in results), "macs")
        self.unit = unit if unit in ("energy", "latency") and any(
            not r.indices and r.feasible for r in results) else None

    def macs(self, p: int, th) -> float:
        idx = self.results[p].indices
        return float(evaluate_policy(self.calib, idx, th, position_costs(self.logits, idx)).mean_macs)

    def __call__(self, p: int, th) -> str | None:
        first, self.first = self.first, False
        r = self.results[p]
        if self.max_macs is not None and self.macs(p, th) > self.max_macs:
            return f"mean MACs {self.macs(p, th):.4g} > max {self.max_macs:.4g}"
        cost = float(evaluate_policy(self.calib, r.indices, th, self.units[p]).mean_macs)
        if self.unit is None or not r.indices or cost <= self.ref * (1 + 1e-9):
            return None
        if first and self.notes is not None:
            self.notes.append(f"the cheapest certified early-exit network, on {' → '.join(r.processors)}, uses "
                              f"{cost / self.ref:.2f}x the {self.unit} of the original model alone on the validation "
                              f"split; objective {self.unit} does not choose a cascade costlier than the original")
        return f"{cost / self.ref:.2f}x the {self.unit} of the original alone"


def _round_up(x: float) -> float:
    from eecc.search.limits import _round_up as up

    return up(x)


def _unit_costs(logits, result) -> np.ndarray:
    """[E+1] cost of leaving at each position in the search's objective (unit.exit_costs)."""
    return exit_costs(result.extra, position_costs(logits, result.indices))


def _refresh_means(best, exit_index: np.ndarray, unit: np.ndarray) -> None:
    """The test-split means of `extra` (search._one) at the certified thresholds."""
    best.extra["mean_cost"] = float(unit[exit_index].mean()) if exit_index.size else 0.0
    best.extra.update(device_means(best.extra, exit_index))
