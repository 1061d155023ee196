"""The whole search on cached logits: choice on validation, report on test, constraints, modes."""

import json

import numpy as np
import pytest

from eecc.errors import EeccError
from eecc.search.placement import ModelCost, enumerate_placements
from eecc.search.policy import evaluate_policy, make_split, position_costs
from eecc.search.search import SearchOptions, search
from eecc.search.synthetic import synthetic_logits
from eecc.search.types import CandidateCost
from eecc.targets.platform import Link, Platform, Processor


@pytest.fixture(scope="module")
def lg():
    return synthetic_logits(k=4, n_val=1200, n_test=1200, seed=7)


def test_chosen_is_cheapest_feasible_on_validation_and_reported_on_test(lg):
    res = search(lg, options=SearchOptions(max_accuracy_drop=0.01, max_exits=2))
    assert len(res.placements) == 4 + 6
    best = res.best
    feasible = [p for p in res.placements if p.feasible]
    assert best.val_cost == min(p.val_cost for p in feasible)
    test = make_split(lg, "test")
    r = evaluate_policy(test, best.indices, best.thresholds, position_costs(lg, best.indices))
    assert best.test.accuracy == r.accuracy and best.test.mean_macs == r.mean_macs
    assert res.original["accuracy"] == test.final_accuracy
    val = make_split(lg, "val")
    rv = evaluate_policy(val, best.indices, best.thresholds, position_costs(lg, best.indices))
    assert val.final_accuracy - rv.accuracy <= 0.01
    assert best.oracle.mean_macs <= best.test.mean_macs or best.test.accuracy < test.final_accuracy
    doc = json.loads(json.dumps(res.to_json()))
    assert set(doc) >= {"original", "chosen", "placements", "pareto", "timings"}
    assert set(doc["placements"][0]) >= {"exits", "thresholds", "accuracy", "mean_macs",
                                          "oracle_macs", "exit_rates", "feasible", "cost"}
    assert set(doc["baselines"]) == {"global_threshold", "nachos_greedy"}
    assert len(best.test.exit_index) == len(lg.y_test)  # per-sample simulation for the runtime


def test_infeasible_constraints_name_the_binding_one(lg):
    with pytest.raises(EeccError, match="max mean MACs .* below the cheapest"):
        search(lg, options=SearchOptions(max_mean_macs=0.05 * lg.final_macs, max_exits=1))
    with pytest.raises(EeccError, match="accuracy drop must stay <= 0.00 pt.*--max-acc-drop"):
        search(lg, options=SearchOptions(max_accuracy_drop=0.0, max_mean_macs=0.4 * lg.final_macs,
                                         max_exits=1))
    res = search(lg, options=SearchOptions(max_mean_macs=0.05 * lg.final_macs, max_exits=1),
                 strict=False)
    assert res.chosen is None and all(not p.feasible for p in res.placements)


def test_placements_from_a_platform_prune_before_and_report_hardware(lg):
    procs = (Processor("slow", "cortex-m0plus", 1e7, 10**6, 10**7, 0.02, 0.001),
             Processor("fast", "cortex-m4", 1e9, 10**6, 10**7, 0.03, 0.001))
    plat = Platform("two", procs, (Link("slow", "fast", 1e9, 0.0),), 0.5, False)
    costs = [CandidateCost(t, int(b), int(h), 4000, 1000 * i, 4000)
             for i, (t, b, h) in enumerate(zip(lg.tensors, lg.backbone_macs, lg.head_macs))]
    every = enumerate_placements(plat, costs, ModelCost(lg.final_macs, 10_000, 4000))
    # one exit on 'fast' with the rest of the network after it there: no hand-off, every cut fits
    assert all(p.fits for p in every if p.processors == ("fast", "fast")) and len(every) == 2 + 3 * 4
    pl = [p for p in every if p.processors != ("fast", "fast") and p.processors != ("slow", "slow")]  # NA's
    # the original model alone on 'slow' runs too long; deep cuts too
    assert [(p.exits, p.fits) for p in pl][:2] == [((), False), ((), True)]
    assert [p.fits for p in pl[2:]] == [True, True, False, False]
    res = search(lg, placements=pl, options=SearchOptions(objective="macs"))
    assert [p.exits for p in res.placements] == [(), (lg.tensors[0],), (lg.tensors[1],)]
    assert len(res.pruned) == 3 and "latency" in res.pruned[1]["reasons"][0]
    assert res.to_json()["best_single"]["processors"] == ["fast"]
    assert res.best.processors == ("slow", "fast") and res.best.latency_s <= 0.5
    # the larger space holds NA's placements: its best is no worse (here a deep cut that fits only on 'fast')
    wider = search(lg, placements=every, options=SearchOptions(objective="macs")).best
    assert wider.val_cost <= res.best.val_cost and wider.processors == ("fast", "fast")
    with pytest.raises(EeccError, match="worst-case latency"):
        tight = Platform("two", procs, plat.links, 0.001, False)
        search(lg, placements=enumerate_placements(tight, costs, ModelCost(lg.final_macs, 1, 1)))


def test_training_set_calibration_warns_and_applies_the_correction(lg):
    with_train = synthetic_logits(k=4, n_val=1200, n_test=1200, seed=7)
    with_train.train_logits, with_train.final_train_logits, with_train.y_train = (
        lg.val_logits, lg.final_val_logits, lg.y_val)
    plain = search(with_train, options=SearchOptions(calibrate_on="train", max_exits=1))
    corrected = search(with_train, options=SearchOptions(calibrate_on="train", correction=1.1, max_exits=1))
    for a, b in zip(plain.placements, corrected.placements):
        assert b.thresholds == tuple(min(t * 1.1, 2.0) if t < 2.0 else t for t in a.thresholds)
    assert plain.warnings and "optimistic" in plain.warnings[0] and "optimistic" in corrected.warnings[0]
    with pytest.raises(EeccError, match="no 'train' logits"):
        search(lg, options=SearchOptions(calibrate_on="train"))


def test_pareto_set_is_feasible_and_non_dominated(lg):
    res = search(lg, options=SearchOptions(max_exits=3, pareto=True, max_accuracy_drop=0.02,
                                           pop_size=30, generations=15))
    assert res.pareto
    val = make_split(lg, "val")
    pts = []
    for p in res.pareto:
        assert 1 <= len(p["exits"]) <= 3
        idx = [lg.tensors.index(t) for t in p["exits"]]
        r = evaluate_policy(val, idx, p["thresholds"], position_costs(lg, idx))
        assert val.final_accuracy - r.accuracy <= 0.02 + 1e-12
        pts.append((r.accuracy, r.mean_macs))
    for a in pts:
        assert not any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in pts)


def test_global_threshold_baseline_shares_one_threshold(lg):
    res = search(lg, options=SearchOptions(max_exits=2))
    g = res.baselines["global_threshold"]["thresholds"]
    assert len(set(g)) == 1 and len(g) == len(res.best.exits)
    assert np.isfinite(res.baselines["nachos_greedy"]["mean_macs"])


def test_graph_method_scores_the_single_processor_baselines_too(lg):
    """nu10: --method graph crashed every search (networkx NodeNotFound: a placement without exits builds no
    graph); a baseline has nothing to choose, and the exact table of its one combination scores it."""
    procs = (Processor("slow", "cortex-m0plus", 1e7, 10**6, 10**7, 0.02, 0.001),
             Processor("fast", "cortex-m4", 1e9, 10**6, 10**7, 0.03, 0.001))
    plat = Platform("two", procs, (Link("slow", "fast", 1e9, 0.0),), 0.5, False)
    costs = [CandidateCost(t, int(b), int(h), 4000, 1000 * i, 4000)
             for i, (t, b, h) in enumerate(zip(lg.tensors, lg.backbone_macs, lg.head_macs))]
    placements = enumerate_placements(plat, costs, ModelCost(lg.final_macs, 10_000, 4000))
    res = search(lg, placements=placements, options=SearchOptions(objective="macs", method="graph"))
    singles = [p for p in res.placements if not p.exits]
    assert singles and all(p.thresholds == () and p.method == "graph" for p in singles)
    assert res.best is not None and any(p.exits and p.method == "graph+fine" for p in res.placements)


def test_logits_without_test_samples_are_refused(lg):
    """Every test figure would be a mean of nothing (accuracy 0.00 %, nan energy, -100 % MACs, nu11): one error."""
    from dataclasses import replace

    empty = replace(lg, test_logits=lg.test_logits[:, :0], final_test_logits=lg.final_test_logits[:0],
                    y_test=lg.y_test[:0])
    with pytest.raises(EeccError, match=r"no test split .*add x_test and y_test"):
        search(empty, options=SearchOptions(max_exits=1))


def test_mac_limit_binds_the_thresholds_under_the_energy_objective(lg):
    """nu11 F9: with objective energy the MAC limit was checked only after each placement's thresholds were chosen,
    so a placement whose energy optimum broke it was dropped although thresholds within it existed. The MACs
    objective's search (constraint-aware since it began) is the independent check: a placement it finds thresholds
    for within the limits must be feasible under the energy objective too, and the chosen one keeps to the limit."""
    procs = (Processor("slow", "cortex-m0plus", 1e7, 10**6, 10**7, 0.02, 0.001),
             Processor("fast", "cortex-m4", 1e9, 10**6, 10**7, 0.03, 0.001))
    plat = Platform("two", procs, (Link("slow", "fast", 1e9, 0.0),), 5.0, False)
    costs = [CandidateCost(t, int(b), int(h), 4000, 1000 * i, 4000)
             for i, (t, b, h) in enumerate(zip(lg.tensors, lg.backbone_macs, lg.head_macs))]
    every = enumerate_placements(plat, costs, ModelCost(lg.final_macs, 10_000, 4000))
    free = search(lg, placements=every, options=SearchOptions(objective="energy", max_accuracy_drop=0.02))
    limit = 0.9 * min(p.test.mean_macs for p in free.placements if p.indices and p.processors[0] == "fast")
    o = dict(max_accuracy_drop=0.02, max_mean_macs=limit)
    by_macs = search(lg, placements=every, options=SearchOptions(objective="macs", **o), strict=False)
    by_energy = search(lg, placements=every, options=SearchOptions(objective="energy", **o), strict=False)
    reachable = {(p.indices, p.processors) for p in by_macs.placements if p.feasible}
    assert any(procs[0] == "fast" for _, procs in reachable)  # the case of F9: over the limit when unconstrained
    for p in by_energy.placements:
        assert p.feasible == ((p.indices, p.processors) in reachable), (p.processors, p.reasons)
    val = make_split(lg, "val")
    best = by_energy.best
    assert evaluate_policy(val, best.indices, best.thresholds, position_costs(lg, best.indices)).mean_macs <= limit


def test_energy_objective_does_not_buy_energy_with_accuracy_gains():
    """nu11 F8: exits more accurate than the final classifier earned 0.1·Δacc without bound, so objective energy chose
    a cascade at 2.21x the original's energy. Here the final classifier is worse than the exits and every exit stage
    runs on a core that spends 10x the energy per MAC: the gain no longer buys that energy, the search says why, and
    the advice (--objective macs) chooses the cascade."""
    lg = synthetic_logits(k=4, n_val=1200, n_test=1200, seed=7)
    rng = np.random.default_rng(1)
    lg.final_val_logits = lg.val_logits[0] + 3.0 * rng.normal(size=lg.val_logits[0].shape).astype(np.float32)
    lg.final_test_logits = lg.test_logits[0] + 3.0 * rng.normal(size=lg.test_logits[0].shape).astype(np.float32)
    procs = (Processor("hot", "cortex-m4", 1e8, 10**6, 10**7, 1.0, 0.001),
             Processor("cool", "cortex-m4", 1e8, 10**6, 10**7, 0.1, 0.001))
    plat = Platform("two", procs, (Link("hot", "cool", 1e9, 0.0),), 5.0, False)
    costs = [CandidateCost(t, int(b), int(h), 4000, 1000 * i, 4000)
             for i, (t, b, h) in enumerate(zip(lg.tensors, lg.backbone_macs, lg.head_macs))]
    every = [p for p in enumerate_placements(plat, costs, ModelCost(lg.final_macs, 10_000, 4000))
             if not p.exits or p.processors[0] == "hot"]
    assert any(p.exits for p in every)
    res = search(lg, placements=every, options=SearchOptions(objective="energy"))
    ref = res.original["reference_cost"]
    scalar_best = min((p for p in res.placements if p.feasible), key=lambda p: p.val_cost)
    assert scalar_best.indices and scalar_best.extra["val_mean_cost"] > ref  # the case of F8
    assert res.best.extra["val_mean_cost"] <= ref * (1 + 1e-9)
    assert not res.best.indices and res.best.processors == ("cool",)
    assert any("does not choose a cascade costlier than the original" in w for w in res.warnings), res.warnings
    by_macs = search(lg, placements=every, options=SearchOptions(objective="macs"))
    assert by_macs.best.indices and by_macs.best.test.accuracy > res.best.test.accuracy


def test_objective_macs_compares_with_the_cheapest_processor_and_says_when_the_cascade_costs_more():
    """nu12 F7: under objective macs every processor runs the original at the same MACs, so the best single
    processor was the first listed (the M0+, 22x the M4's energy) and the line hid what the cascade costs on the
    device. The tie is now broken by energy, then latency; the line states energy and time the cascade spends
    beyond the original alone on that processor."""
    from eecc.driver.deployment import deployment_record

    lg = synthetic_logits(k=4, n_val=1200, n_test=1200, seed=7)
    procs = (Processor("hot", "cortex-m4", 1e8, 10**6, 10**7, 1.0, 0.001),   # listed first, 10x the power
             Processor("cool", "cortex-m4", 1e8, 10**6, 10**7, 0.1, 0.001))
    plat = Platform("two", procs, (Link("hot", "cool", 1e9, 0.0),), 5.0, False)
    costs = [CandidateCost(t, int(b), int(h), 4000, 1000 * i, 4000)
             for i, (t, b, h) in enumerate(zip(lg.tensors, lg.backbone_macs, lg.head_macs))]
    every = enumerate_placements(plat, costs, ModelCost(lg.final_macs, 10_000, 4000))
    res = search(lg, placements=every, options=SearchOptions(objective="macs"))
    doc = res.to_json()
    assert doc["best_single"]["processors"] == ["cool"]
    singles = [p for p in res.placements if not p.exits]
    assert len(singles) == 2 and singles[0].val_cost == singles[1].val_cost  # a tie in MACs, not in energy
    # the cascade forced onto the hot core: fewer MACs, more energy than the original alone on cool, and said so
    hot = search(lg, placements=[p for p in every if not p.exits or p.processors == ("hot", "hot")],
                 options=SearchOptions(objective="macs"))
    line = deployment_record(hot.to_json())["line"]
    assert hot.best.indices and "the macs of the original model alone on cool" in line
    ratio = hot.best.extra["mean_energy_j"] / hot.to_json()["best_single"]["mean_energy_j"]
    assert ratio > 1 and f"on the platform it uses MORE energy ({ratio:.2f}x)" in line, line
    assert "--objective energy or latency weighs what the device spends" in line


def test_baselines_are_priced_in_the_objectives_unit(lg):
    """nu14 F3: under objective energy the baselines priced MACs against the original's energy in joules (the MAC term
    x1e8), so NACHOS' greedy lowering took every threshold to the grid's bottom (res.onnx on psoc6: 85.40 % at 115k
    MACs, a 3.95 pt drop, vs 89.75 % at 2.9M under objective macs) and every `cost` read ~1e8. On one core with no
    link a placement's energy is its MACs times one factor, and so is the reference: the energy objective's baselines
    must be the MACs objective's, their costs equal, named in their units, with the energy their exits spend."""
    procs = (Processor("slow", "cortex-m0plus", 1e7, 10**6, 10**7, 0.02, 0.001),
             Processor("fast", "cortex-m4", 1e9, 10**6, 10**7, 0.03, 0.001))
    plat = Platform("two", procs, (Link("slow", "fast", 1e9, 0.0),), 5.0, False)
    costs = [CandidateCost(t, int(b), int(h), 4000, 1000 * i, 4000)
             for i, (t, b, h) in enumerate(zip(lg.tensors, lg.backbone_macs, lg.head_macs))]
    fast = [p for p in enumerate_placements(plat, costs, ModelCost(lg.final_macs, 10_000, 4000))
            if set(p.processors) == {"fast"}]
    o = dict(pareto=True, pop_size=20, generations=8)
    by_energy = search(lg, placements=fast, options=SearchOptions(objective="energy", **o))
    by_macs = search(lg, placements=fast, options=SearchOptions(objective="macs", **o))
    assert by_energy.best.indices and by_energy.best.indices == by_macs.best.indices
    for name, b in by_energy.baselines.items():
        m = by_macs.baselines[name]
        assert b["thresholds"] == m["thresholds"] and b["accuracy"] == m["accuracy"], name
        assert b["cost"] == pytest.approx(m["cost"], rel=1e-9) and abs(b["cost"]) < 10
        assert (b["cost_unit"], m["cost_unit"]) == ("J", "MACs")
        rates, energy = np.asarray(b["exit_rates"]), np.asarray(by_energy.best.extra["exit_energy_j"])
        assert b["mean_energy_j"] == pytest.approx(float(rates @ energy), rel=1e-9)
    # the greedy lowering stops where the accuracy term outweighs the energy saved: above the grid's bottom
    assert res_drop(by_energy, "nachos_greedy") < 0.01
    assert [p["cost"] for p in by_energy.pareto] == [p["cost"] for p in by_macs.pareto]
    assert {p["cost_unit"] for p in by_energy.pareto} == {"MACs"}
    # a MAC limit binds the baselines under objective energy too (on the calibration split, as the search's)
    limit = 0.9 * by_energy.baselines["nachos_greedy"]["mean_macs"]
    capped = search(lg, placements=fast, options=SearchOptions(objective="energy", max_mean_macs=limit))
    val = make_split(lg, "val")
    for name, b in capped.baselines.items():
        idx = [lg.tensors.index(t) for t in b["exits"]]
        assert evaluate_policy(val, idx, b["thresholds"], position_costs(lg, idx)).mean_macs <= limit, name


def res_drop(res, name: str) -> float:
    """Test-split accuracy drop of baseline `name` of search result `res`, as a fraction."""
    return res.original["accuracy"] - res.baselines[name]["accuracy"]


def test_a_cheaper_placement_within_the_limits_is_named_and_w_acc_0_chooses_it():
    """nu15 F7: the default weights chose m4 → m4 → m4 at 0.257 mJ / 89.70 % and never said that m4 → m4 at
    0.199 mJ / 87.74 % was within the 1 pt limit too; the note names it and its advice, --w-acc 0, is followed."""
    lg = synthetic_logits(k=4, seed=0, n_val=1000, n_test=1000)
    res = search(lg, options=SearchOptions(max_exits=2), strict=False)
    feasible = [r for r in res.placements if r.feasible]
    cheapest = min(feasible, key=lambda r: r.extra["val_mean_cost"])
    chosen = res.best
    assert cheapest.extra["val_mean_cost"] < 0.95 * chosen.extra["val_mean_cost"]  # the case nu15 met
    note = next(w for w in res.warnings if w.startswith("the scalar cost"))
    assert (f"(--w-eff 0.9 on MACs, --w-acc 0.1 per accuracy point) chose exits at {', '.join(chosen.exits)} at "
            f"{chosen.extra['mean_cost']:,.0f} MACs mean, {100 * chosen.test.accuracy:.2f} % (test split) over exits "
            f"at {', '.join(cheapest.exits)} at {cheapest.extra['mean_cost']:,.0f} MACs mean, "
            f"{100 * cheapest.test.accuracy:.2f} % (test split), also within the limits") in note, note
    assert note.endswith("fewer MACs on the validation split; --w-acc 0 chooses on MACs alone within the limits")
    advised = search(lg, options=SearchOptions(max_exits=2, w_acc=0.0), strict=False)
    assert advised.best.feasible and advised.best.extra["val_mean_cost"] <= cheapest.extra["val_mean_cost"]
    assert not any(w.startswith("the scalar cost") for w in advised.warnings)
