"""The search: placements x thresholds on validation logits, reported on the test split."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from typing import Callable

import numpy as np

from eecc.data.splits import NO_TEST
from eecc.errors import EeccError
from eecc.driver.executor import Executor, InProcess, chunks
from eecc.search.calibration import ece_per_exit
from eecc.search.confidence import DEFAULT_METRIC, LEARNED
from eecc.search.intervals import policy_intervals, result_intervals
from eecc.search.ensemble import aep_prune, decision_splits, stage_logits
from eecc.search.placement import Placement
from eecc.search.points import baseline_points, pareto_points
from eecc.search.policy import (Objective, PolicyResult, SplitScores, evaluate_policy, make_split, oracle,
                                position_costs)
from eecc.search.thresholds import retune
from eecc.search.types import ExitLogits, pair_name
from eecc.search.unit import DROPPED, UNITS, check_heads, cheaper_note, rank, reference_cost

CALIBRATION_WARNING = ("thresholds calibrated on the training set are optimistic: heads are "
                       "over-confident on data they were trained on; expect more errors at the exits")


@dataclass
class SearchOptions:
    metric: str = DEFAULT_METRIC
    method: str = "auto"                    # auto | exact | graph
    w_eff: float = 0.9
    w_acc: float = 0.1
    max_accuracy_drop: float | None = None  # fraction (0.005 = half a point)
    max_mean_macs: float | None = None      # absolute MACs per sample
    calibrate_on: str = "val"               # val | train (no validation set)
    correction: float = 1.0                 # train calibration: thresholds multiplied by this
    fine: bool = True
    max_exits: int | None = None            # without placements: subsets of 1..max_exits (default 2)
    pareto: bool = False
    pop_size: int = 60
    generations: int = 40
    seed: int = 0
    # What decides at an exit, and AEP pruning of sub-ensembles (eecc/search/ensemble.py).
    decision: str = "single"                # single | ensemble
    ensemble_weights: str = "desc"          # desc | asc | mix | unif
    prune: bool = False                     # with ensemble: also rank every sub-ensemble of the chosen exits
    # P: thresholds certified so the drop stays <= max_accuracy_drop on unseen data with probability >= P
    guarantee: float | None = None
    intervals: bool = True                  # 95 % bootstrap intervals on the test figures (eecc/search/intervals.py)
    # What the scalar cost counts: energy | latency | macs; None = energy with placements (processors with
    # power figures), macs without (logits alone know no device).
    objective: str | None = None
    # The processor of each stage, in order (--placement m0plus,m4): the search's placements with exits are those
    # on these processors only, beside the single-processor baselines; None = every placement (eecc/search/run.py).
    placement: tuple[str, ...] | None = None


@dataclass
class PlacementResult:
    exits: tuple[str, ...]
    indices: tuple[int, ...]
    processors: tuple[str, ...] | None
    thresholds: tuple[float, ...]
    test: PolicyResult
    oracle: PolicyResult
    val_cost: float       # what the choice is made on (the calibration split)
    cost: float           # the same scalar cost on the test split
    feasible: bool
    reasons: list[str]
    latency_s: float | None
    method: str
    seconds: float
    extra: dict = field(default_factory=dict)  # "ece": test ECE per position (last = final); "aep"
    heads: tuple[str, ...] = ()  # head design per exit when the search chose among several per location

    def to_json(self) -> dict:
        return {**self.extra, "exits": list(self.exits), "heads": list(self.heads),
                "processors": list(self.processors or []),
                "thresholds": [float(t) for t in self.thresholds],
                "accuracy": self.test.accuracy, "mean_macs": self.test.mean_macs,
                "oracle_macs": self.oracle.mean_macs,
                "exit_rates": [float(r) for r in self.test.exit_rates],
                "feasible": self.feasible, "cost": self.cost, "val_cost": self.val_cost,
                "reasons": self.reasons, "latency_s": self.latency_s, "method": self.method,
                "search_s": self.seconds}


@dataclass
class SearchResult:
    original: dict
    placements: list[PlacementResult]
    chosen: int | None
    pruned: list[dict] = field(default_factory=list)
    pareto: list[dict] = field(default_factory=list)
    baselines: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    infeasible: str | None = None  # when nothing is feasible: the binding constraint, one line
    objective: str = "macs"
    single: int | None = None  # the best single-processor deployment (no exit), when placements had processors
    no_candidate: str | None = None  # no placement with an exit was scored: why (eecc/search/run.py), else None
    # compile without --search: the one early-exit placement tried and how many --search would try (run.py)
    default_only: dict | None = None

    @property
    def best(self) -> PlacementResult | None:
        return None if self.chosen is None else self.placements[self.chosen]

    def to_json(self) -> dict:
        return {"original": self.original,
                "chosen": None if self.best is None else {"index": self.chosen, **self.best.to_json()},
                "placements": [p.to_json() for p in self.placements], "pruned": self.pruned,
                "pareto": self.pareto, "baselines": self.baselines, "timings": self.timings,
                "warnings": self.warnings, "options": self.options, "infeasible": self.infeasible,
                "objective": self.objective, "no_candidate": self.no_candidate, "default_only": self.default_only,
                "best_single": None if self.single is None else {"index": self.single,
                                                                  **self.placements[self.single].to_json()}}


def search(logits: ExitLogits, *, placements: list[Placement] | None = None,
           options: SearchOptions | None = None, strict: bool = True,
           executor: Executor | None = None,
           confidences: dict[str, np.ndarray] | None = None,
           on_step: Callable[[int, int], None] | None = None) -> SearchResult:
    """Best placement and thresholds; raises EeccError naming the binding constraint if none is
    feasible (unless strict=False, which returns the result with chosen=None). Placements are
    scored in chunks on `executor` (default: this process); each score is a pure function of the
    logits and the placement, so the choice does not depend on where it ran. `on_step(done, total)`:
    placements scored so far (a progress bar), called as chunks finish."""
    o = options or SearchOptions()
    executor = executor or InProcess()
    t_start = time.perf_counter()
    notes = []
    calib, test = _scores(logits, o, confidences)
    if o.calibrate_on == "train":  # a note in the result, printed once by the CLI (a warnings.warn doubled it)
        notes.append(CALIBRATION_WARNING)
    unit, ref, objective, test_obj = _objectives(logits, placements, calib, test, o)
    todo, pruned = _todo(logits, placements, o, unit)
    check_heads(todo, pruned, strict, notes)
    # a single exit's ECE is its row's, whichever placement holds it: once per row, not once per placement
    eces = ece_per_exit(stage_logits(logits, range(len(logits.tensors)), "test"), test.y) \
        if o.decision == "single" else None
    results = _score_all(todo, (logits, calib, test, objective, test_obj, o, eces), executor, on_step)
    feasible = [i for i, r in enumerate(results) if r.feasible]
    chosen = _choose(results, feasible, unit, ref, notes)
    if o.guarantee is not None and results:
        from eecc.search.certified import guaranteed_choice
        chosen = guaranteed_choice(results, logits, calib, test, objective, test_obj, o, notes)
    else:
        notes += [n for n in [cheaper_note(results, feasible, chosen, unit, o.w_eff, o.w_acc)] if n]
    right = test.final_pred == test.y
    singles = [i for i, r in enumerate(results) if not r.indices and r.processors]
    res = SearchResult(
        original={"accuracy": test.final_accuracy, "macs": int(logits.final_macs),
                  "val_accuracy": calib.final_accuracy, "reference_cost": ref, "unit": UNITS[unit],
                  "accuracy_interval": policy_intervals(right, np.zeros(test.n), right)["accuracy"]},
        placements=results, chosen=chosen, pruned=pruned, warnings=notes, options=asdict(o),
        objective=unit, single=min(singles, key=lambda i: rank(results[i])) if singles else None)
    t0 = time.perf_counter()
    if chosen is not None and results[chosen].indices:
        res.baselines = baseline_points(logits, calib, test, results[chosen], objective, test_obj, o)
        if o.decision == "ensemble" and o.prune:
            subs = aep_prune(logits, results[chosen].indices, objective, mode=o.ensemble_weights,
                             metric=o.metric, calibrate_on=o.calibrate_on, method=o.method, fine=o.fine)
            results[chosen].extra["aep"] = [s.to_json(logits) for s in subs]
    t1 = time.perf_counter()
    if o.pareto and results:
        res.pareto = pareto_points(logits, results, calib, test, objective, test_obj, unit, o)
    t2 = time.perf_counter()
    times = [r.seconds for r in results]
    res.timings = {"threshold_search_s_total": float(sum(times)),
                   "threshold_search_s_max": float(max(times, default=0.0)),
                   "baselines_s": t1 - t0, "pareto_s": t2 - t1,
                   "total_s": time.perf_counter() - t_start}
    if chosen is None:
        from eecc.search.limits import binding_constraint

        res.infeasible = binding_constraint(logits, calib, res, objective)
        if strict:
            raise EeccError(res.infeasible)
    return res


def _choose(results: list[PlacementResult], feasible: list[int], unit: str, ref: float, notes: list[str]):
    """The feasible placement of least validation cost (None when none is feasible). Under objective energy or
    latency a cascade that costs more than the original alone on its best processor (`ref`, on the calibration
    split) is not chosen, however accurate: the scalar cost's accuracy term would otherwise buy energy with exits
    more accurate than the final classifier without bound (nu11 F8: 2.21x the energy at +12 pt). A gain still
    counts among cheaper cascades. Ties of validation cost are broken by validation energy, then latency (unit.rank):
    under objective macs the same exits on other processors tie, and the first listed was chosen (nu12 F7: m0plus →
    m4 on psoc6, where m4 → m4 spends less energy and time)."""
    if not feasible:
        return None
    if unit == "macs" or not any(not results[i].indices for i in feasible):
        return min(feasible, key=lambda i: rank(results[i]))
    costlier = [i for i in feasible if results[i].indices and results[i].extra["val_mean_cost"] > ref * (1 + 1e-9)]
    keep = [i for i in feasible if i not in costlier]
    best = min(feasible, key=lambda i: rank(results[i]))
    if best in costlier:
        r = results[best]
        notes.append(f"the early-exit network on {' → '.join(r.processors)} scored best only through its accuracy "
                     f"gain while using {r.extra['val_mean_cost'] / ref:.2f}x the {unit} of the original model alone; "
                     f"objective {unit} does not choose a cascade costlier than the original (--objective macs "
                     "weighs accuracy against MACs instead)")
    return min(keep, key=lambda i: rank(results[i]))


def _objectives(logits: ExitLogits, placements, calib: SplitScores, test: SplitScores, o: SearchOptions):
    """The objective's unit, its reference cost, and the validation and test objectives."""
    unit = o.objective or ("energy" if placements else "macs")
    if unit not in UNITS:
        raise EeccError(f"search: unknown objective '{unit}'; choose energy, latency or macs")
    if unit != "macs" and placements is None:
        raise EeccError(f"search: objective '{unit}' needs placements on a platform; use --objective macs")
    ref = reference_cost(placements, unit, logits.final_macs)
    # A MAC limit in another unit than the objective's binds each placement's thresholds (`_one`).
    objective = Objective(ref, calib.final_accuracy, o.w_eff, o.w_acc, o.max_accuracy_drop,
                          o.max_mean_macs if unit == "macs" else None)
    return unit, ref, objective, Objective(ref, test.final_accuracy, o.w_eff, o.w_acc)


def _scores(logits: ExitLogits, o: SearchOptions, confidences) -> tuple[SplitScores, SplitScores]:
    """(calibration, test) scores; NACHOS' learned confidences replace the metric on the logits."""
    if not len(logits.y_test):  # every test figure would be the mean of nothing: nan, 0 %, -100 % MACs (nu11)
        raise EeccError(NO_TEST)
    if o.metric != LEARNED:
        return make_split(logits, o.calibrate_on, o.metric), make_split(logits, "test", o.metric)
    if o.decision != "single":
        raise EeccError("search: metric 'learned' decides on each exit's own confidence; "
                        "use --decision single with it")
    return learned_split(logits, o.calibrate_on, confidences), learned_split(logits, "test", confidences)


def _todo(logits: ExitLogits, placements: list[Placement] | None, o: SearchOptions, unit: str):
    """(indices, processors, worst latency, per-position device figures) to score, and the pruned ones.

    Without placements: every subset of 1..max_exits candidates (default 2), no processors."""
    index = {t: i for i, t in enumerate(logits.tensors)}
    todo, pruned = [], []
    if placements is None:
        most = min(o.max_exits or 2, len(index))
        todo = [(c, None, None, None, tuple(logits.tensors[i] for i in c), ())
                for e in range(1, most + 1) for c in combinations(range(len(index)), e)]
    for p in placements or []:  # exits with `heads`: rows "<tensor>|<design>" of several heads per location
        names = [pair_name(t, d) for t, d in zip(p.exits, p.heads)] if p.heads else list(p.exits)
        missing = [t for t in names if t not in index]
        if not p.fits or missing:
            # a placement the platform rules out is not scored whatever its heads (nu13 F6: a trained head was
            # called dropped beside the missing link that pruned it)
            why = list(p.reasons) if not p.fits else [f"head for '{t}' {DROPPED}" for t in missing]
            pruned.append({"exits": list(p.exits), "processors": list(p.processors), "reasons": why,
                           "needs": [list(n) for n in p.needs]})
        else:
            device = {"unit": unit, "latency_s": p.exit_latency_s, "energy_j": p.exit_energy_j}
            todo.append((tuple(index[t] for t in names), p.processors, p.latency_s, device, p.exits, p.heads))
    return todo, pruned


STEPS = 25  # progress updates over one search's placements


def _score_all(todo: list, job: tuple, executor: Executor, on_step) -> list[PlacementResult]:
    """Every placement of `todo` scored, in order: STEPS groups of chunks, each group one `executor.map` (as
    many chunks as the executor runs at once, 4 per worker), `on_step` after each group."""
    per_group = 1 if executor.workers == 1 else 4 * executor.workers
    groups = chunks(chunks(todo, STEPS * per_group), STEPS)
    results = []
    for group in groups:
        results += [r for part in executor.map(_score_chunk, group, shared=job) for r in part]
        if on_step is not None:
            on_step(len(results), len(todo))
    return results


def _score_chunk(job, part) -> list[PlacementResult]:
    logits, calib, test, objective, test_obj, o, eces = job
    return [_one(logits, calib, test, idx, procs, latency, objective, test_obj, o, device, exits, heads, eces)
            for idx, procs, latency, device, exits, heads in part]


def _one(logits, calib, test, idx, procs, latency, objective, test_obj, o, device=None, exits=(),
         heads=(), eces=None) -> PlacementResult:
    macs = position_costs(logits, idx)
    unit = "macs" if device is None else device["unit"]
    costs = macs if unit == "macs" else np.asarray(device["energy_j" if unit == "energy" else "latency_s"])
    # Ensemble decisions swap in splits whose rows are the per-position ensembles.
    calib, test, pos = decision_splits(logits, idx, calib, test, decision=o.decision, metric=o.metric,
                                       mode=o.ensemble_weights, calibrate_on=o.calibrate_on)
    if unit != "macs" and o.max_mean_macs is not None:  # the MAC limit binds the thresholds, not just the result
        objective = replace(objective, position_macs=tuple(float(m) for m in macs), limit_macs=o.max_mean_macs)
    rt = retune(calib, pos, costs, objective, o)
    sel = rt.selected  # calibration split, in the objective's unit
    r = evaluate_policy(test, pos, rt.thresholds, macs)  # the record keeps MACs; device figures go to `extra`
    reasons = objective.violations(sel.accuracy, sel.mean_macs)
    sel_macs = float(macs[sel.exit_index].mean()) if sel.exit_index.size else 0.0
    if unit != "macs" and o.max_mean_macs is not None and sel_macs > o.max_mean_macs:
        reasons.append(f"mean MACs {sel_macs:.4g} > max {o.max_mean_macs:.4g}")
    ece = [eces[i] for i in (*idx, -1)] if eces is not None else ece_per_exit(
        stage_logits(logits, idx, "test", decision=o.decision, mode=o.ensemble_weights), test.y)
    extra = {"ece": ece, "objective": unit,
             "mean_cost": float(costs[r.exit_index].mean()) if r.exit_index.size else 0.0,
             "val_mean_cost": float(sel.mean_macs),  # calibration split, in the objective's unit
             **({"intervals": result_intervals(r, test)} if o.intervals else {})}
    if device is not None:
        lat, energy = np.asarray(device["latency_s"]), np.asarray(device["energy_j"])
        if sel.exit_index.size:  # calibration split: unit.rank's tie-break
            extra.update(val_mean_latency_s=float(lat[sel.exit_index].mean()),
                         val_mean_energy_j=float(energy[sel.exit_index].mean()))
        extra.update(mean_latency_s=float(lat[r.exit_index].mean()), worst_case_latency_s=float(lat.max()),
                     mean_energy_j=float(energy[r.exit_index].mean()), worst_case_energy_j=float(energy.max()),
                     exit_latency_s=[float(v) for v in lat], exit_energy_j=[float(v) for v in energy])
    return PlacementResult(
        exits=tuple(exits), indices=tuple(idx), processors=procs, heads=tuple(heads),
        thresholds=rt.thresholds, test=r, oracle=oracle(test, pos, macs),
        val_cost=float(objective.cost(sel.accuracy, sel.mean_macs)),
        cost=float(test_obj.cost(r.accuracy, extra["mean_cost"])),
        feasible=bool(objective.feasible(sel.accuracy, sel.mean_macs)) and not reasons,
        reasons=reasons, latency_s=latency, method=rt.method, seconds=rt.seconds, extra=extra)


# --- NACHOS learned confidences ---
def learned_split(logits: ExitLogits, split: str, confidences: dict[str, np.ndarray] | None):
    """The split's predictions from the logits, its confidences from the exits' learned outputs."""
    base = make_split(logits, split, DEFAULT_METRIC)
    conf = None if confidences is None else confidences.get(split)
    if conf is None:
        raise EeccError(f"search: metric 'learned' needs the exits' learned confidences on the '{split}' "
                        "split; train the exits with the NACHOS trainer (eecc.train.nachos)")
    conf = np.asarray(conf, dtype=np.float64)
    if conf.shape != base.conf.shape:
        raise EeccError(f"search: learned confidences on '{split}' have shape {conf.shape}, "
                        f"the logits want {base.conf.shape} (one row per candidate exit)")
    return replace(base, conf=conf)
# --- end NACHOS ---
