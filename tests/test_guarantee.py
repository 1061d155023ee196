"""--guarantee (Learn then Test) on synthetic logits whose true drop is known, and the bootstrap intervals."""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import binom

from eecc.errors import EeccError
from eecc.search.guarantee import certify, cp_lower, cp_upper, drop_upper_bound, union_bound_rejects
from eecc.search.intervals import policy_intervals
from eecc.search.placement import Placement
from eecc.search.policy import evaluate_policy, make_split, position_costs
from eecc.search.search import SearchOptions, search
from eecc.search.synthetic import synthetic_logits

K = 4
PLACEMENTS = [c for e in (1, 2) for c in combinations(range(K), e)]
ALPHA = 0.005


@pytest.fixture(scope="module")
def population():
    """200k samples from the generator: the 'true' drop of any thresholds, to ±0.03 pt (one s.e.)."""
    lg = synthetic_logits(k=K, n_val=1, n_test=200_000, seed=999)
    return lg, make_split(lg, "test")


def _true(population, idx, th):
    lg, split = population
    r = evaluate_policy(split, idx, th, position_costs(lg, idx))
    return split.final_accuracy - r.accuracy, r.mean_macs / lg.final_macs


def test_clopper_pearson_bounds_are_exact():
    n, delta = 500, 0.05
    assert float(cp_upper(0, n, delta)) == pytest.approx(1 - delta ** (1 / n))
    for k in (1, 7, 40):  # the bound is the p at which seeing <= k events has probability delta
        assert binom.cdf(k, n, float(cp_upper(k, n, delta))) == pytest.approx(delta, rel=1e-6)
        assert binom.sf(k - 1, n, float(cp_lower(k, n, delta))) == pytest.approx(delta, rel=1e-6)
    assert float(drop_upper_bound(10, 10, n, delta)) > 0 > float(drop_upper_bound(0, 30, n, delta))


def test_guarantee_holds_where_the_default_search_does_not(population):
    """P = 0.9: the true drop of certified thresholds exceeds the limit in at most ~10 % of validation
    draws; the default search, which meets the limit on validation only, exceeds it in most draws.
    The exact paired test goes at least as far along every sequence as the union bound it replaced."""
    trials, over_g, over_d, macs_g, macs_union = 16, 0, 0, [], []
    for seed in range(trials):
        lg = synthetic_logits(k=K, n_val=1500, n_test=10, seed=seed)
        val = make_split(lg, "val")
        cert = certify(lg, val, PLACEMENTS, max_drop=ALPHA, confidence=0.9, seed=seed)
        drop, macs = _true(population, PLACEMENTS[cert.placement], cert.thresholds)
        over_g += drop > ALPHA
        macs_g.append(macs)
        assert cert.drop_bound <= ALPHA
        old = certify(lg, val, PLACEMENTS, max_drop=ALPHA, confidence=0.9, seed=seed, test_drop=union_bound_rejects)
        macs_union.append(_true(population, PLACEMENTS[old.placement], old.thresholds)[1])
        assert cert.tested >= old.tested and macs <= macs_union[-1] + 1e-9
        res = search(lg, options=SearchOptions(max_accuracy_drop=ALPHA, max_exits=2, w_acc=0.001), strict=False)
        over_d += _true(population, res.best.indices, res.best.thresholds)[0] > ALPHA
    assert over_g <= binom.ppf(0.99, trials, 0.1)  # 4 of 16
    assert over_d >= trials // 2
    assert np.mean(macs_g) < 0.95  # certified thresholds still let samples out early
    assert np.mean(macs_g) < np.mean(macs_union)


def test_search_option_records_the_certificate():
    lg = synthetic_logits(k=K, n_val=3000, n_test=3000, seed=1)
    res = search(lg, options=SearchOptions(max_accuracy_drop=0.01, max_exits=2, guarantee=0.95))
    chosen = res.to_json()["chosen"]
    g = chosen["guarantee"]
    assert chosen["method"] == "ltt" and g["confidence"] == 0.95 and g["drop_bound"] <= 0.01
    assert g["n_order"] + g["n_test"] == 3000 and 1 <= g["tested"] <= g["front"] + 1
    lo, hi = chosen["intervals"]["accuracy"]
    assert lo <= chosen["accuracy"] <= hi
    with pytest.raises(EeccError, match="--max-acc-drop"):
        search(lg, options=SearchOptions(max_exits=2, guarantee=0.95))
    with pytest.raises(EeccError, match="validation"):  # 1 pt on 20 samples: nothing can be shown
        small = synthetic_logits(k=K, n_val=40, n_test=40, seed=1)
        search(small, options=SearchOptions(max_accuracy_drop=0.01, max_exits=2, guarantee=0.95))


def test_bootstrap_intervals_match_the_normal_approximation():
    rng = np.random.default_rng(3)
    n = 4000
    final = rng.random(n) < 0.92
    correct = np.where(rng.random(n) < 0.05, ~final, final)  # 5 % of answers flipped vs the original
    macs = rng.uniform(1e5, 1e6, n)
    iv = policy_intervals(correct, macs, final)
    half = 1.96 * np.sqrt(correct.mean() * (1 - correct.mean()) / n)
    assert iv["accuracy"] == pytest.approx([correct.mean() - half, correct.mean() + half], abs=0.003)
    m_half = 1.96 * macs.std() / np.sqrt(n)
    assert iv["mean_macs"] == pytest.approx([macs.mean() - m_half, macs.mean() + m_half], rel=0.01)
    # paired: narrower than the two accuracies' intervals side by side
    width = iv["accuracy_drop"][1] - iv["accuracy_drop"][0]
    assert width < (iv["accuracy"][1] - iv["accuracy"][0])
    assert iv["accuracy_drop"][0] < 0.05 * (0.92 - 0.08) < iv["accuracy_drop"][1]  # the expected drop


def test_every_placement_reports_intervals():
    lg = synthetic_logits(k=3, n_val=1000, n_test=1000, seed=2)
    doc = search(lg, options=SearchOptions(max_exits=2)).to_json()
    assert len(doc["original"]["accuracy_interval"]) == 2
    for p in doc["placements"]:
        iv = p["intervals"]
        assert iv["accuracy"][0] <= p["accuracy"] <= iv["accuracy"][1]
        assert iv["mean_macs"][0] <= p["mean_macs"] <= iv["mean_macs"][1]


def _placement(exits, processors, energy):
    return Placement(exits=tuple(exits), processors=tuple(processors), stage_macs=(0,) * len(processors),
                     exit_latency_s=tuple(energy), exit_energy_j=tuple(energy), reasons=())


def test_guarantee_chooses_in_the_objective_unit():
    """Energy objective: one exit on the same candidate, on a costly first core ("a → b") or on the cheap
    one ("b → b", listed second): same MACs, same certified risk, so only the device's joules tell them apart,
    and the certified choice must be the cheaper, with its energy at the certified thresholds. The sequence's
    "never exit" opens on the cheapest single processor, not the first one."""
    lg = synthetic_logits(k=K, n_val=3000, n_test=3000, seed=1)
    placements = [_placement([], ["a"], [4.0]), _placement([], ["b"], [2.0]),
                  _placement(["block1.out"], ["a", "b"], [1.5, 3.5]), _placement(["block1.out"], ["b", "b"], [0.5, 2.2])]
    res = search(lg, placements=placements, strict=False,
                 options=SearchOptions(max_accuracy_drop=0.01, guarantee=0.95, objective="energy"))
    best = res.best
    assert best.processors == ("b", "b") and best.method == "ltt"
    energy = np.asarray([0.5, 2.2])[best.test.exit_index].mean()
    assert best.extra["mean_energy_j"] == pytest.approx(energy) and best.extra["mean_cost"] == pytest.approx(energy)
    assert 0.5 < energy < 2.0  # samples leave early: cheaper than b alone


def test_guarantee_falls_back_to_the_original_when_nothing_is_certified():
    """1 pt on 20 testing samples cannot be shown even for "never exit"; with a single-processor placement
    scored (the original model alone: no drop by construction) that one is built, with the reason, instead of
    refusing. Without one (MAC-only search above) the refusal stands."""
    small = synthetic_logits(k=K, n_val=40, n_test=40, seed=1)
    placements = [_placement([], ["a"], [4.0]), _placement([], ["b"], [2.0]),
                  _placement(["block1.out"], ["b", "b"], [0.5, 2.2])]
    res = search(small, placements=placements, strict=False,
                 options=SearchOptions(max_accuracy_drop=0.01, guarantee=0.95, objective="energy"))
    assert res.best.indices == () and res.best.processors == ("b",)  # the cheaper processor alone
    assert any("not even the safest" in w and "chose the original model alone" in w for w in res.warnings)
    assert not any("built" in w for w in res.warnings)  # `search` builds nothing (nu14 F9)


def _priced_placements(lg, seed):
    """1-3 exits of 5 candidates, each twice: with its MACs and with a random price per stage (as a
    processor assignment would give), so the bound's order differs from the list's."""
    rng = np.random.default_rng(seed)
    placements, costs = [()], [np.asarray([float(lg.final_macs)])]
    for e in (1, 2, 3):
        for c in combinations(range(5), e):
            macs = position_costs(lg, c)
            stage = np.diff(np.concatenate([[0.0], macs])) * rng.uniform(0.5, 2.0, e + 1)
            placements += [c, c]
            costs += [macs, np.cumsum(stage)]
    return placements, costs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_branch_and_bound_chooses_as_scoring_every_grid(seed):
    """certify visits placements by a lower bound on their predicted certified cost and stops early; it must
    end where scoring every placement's grid ends (same placement, thresholds, bound, sequence), scoring
    fewer grids, and the bound must hold for every placement (LB ≤ the cheapest predicted-passing cost)."""
    from eecc.search.guarantee import ORDER_SHARE, GRID_SIZE, _Table, _rows

    lg = synthetic_logits(k=5, n_val=2000, n_test=10, seed=seed)
    val = make_split(lg, "val")
    placements, costs = _priced_placements(lg, seed)
    kw = dict(max_drop=0.01, confidence=0.9, seed=seed, costs=costs, grid_size=41, joint_limit=None)
    fast = certify(lg, val, placements, **kw)
    full = certify(lg, val, placements, prune=False, **kw)
    assert (fast.placement, fast.thresholds, fast.drop_bound, fast.tested, fast.front) == \
        (full.placement, full.thresholds, full.drop_bound, full.tested, full.front)
    assert full.scored == len(placements) == fast.placements and 1 <= fast.scored < 0.75 * len(placements)
    joint = certify(lg, val, placements, **{**kw, "joint_limit": 10 ** 9})  # below the limit: one joint front
    assert joint.scored == len(placements) and joint.drop_bound <= 0.01
    perm = np.random.default_rng(seed).permutation(val.n)
    order = _rows(val, perm[:int(round(ORDER_SHARE * val.n))])
    table = _Table(order, val.n - order.n, 0.1, 0.01)
    assert table.k_star >= 1
    for idx, c in zip(placements, costs):
        _, bound, mean = table.points(idx, c, 41)
        pc = mean[bound <= 0.01].min() if (bound <= 0.01).any() else np.inf
        assert table.lower_bound(idx, c) <= pc * (1 + 1e-12)


def test_branch_and_bound_scores_no_grid_when_nothing_can_pass():
    """A limit no combination can be predicted to pass (0.05 pt on 500 testing samples): k* is empty, no
    grid is scored, and the sequence is "never exit" alone."""
    lg = synthetic_logits(k=5, n_val=1000, n_test=10, seed=4)
    placements, costs = _priced_placements(lg, 4)
    with pytest.raises(EeccError, match="not even the safest"):
        certify(lg, make_split(lg, "val"), placements, max_drop=0.0005, confidence=0.9, costs=costs)


def test_guarantee_keeps_the_mac_limit_as_the_default_search_does():
    """--max-macs binds the certified choice (nu11 F9's rule for the default search), not only its check after:
    the cheapest certified cascade in energy (an exit after block 3 on b) averages > 8.1 M MACs, a dearer one (an
    exit after block 0 on a) stays within 8 M; certify's sequence now holds the placements' points within the limit
    (on the ordering half), so that one is certified and built. Before, the cheap one was certified and then
    refused for its MACs: no placement at all. Where none is within the limit, the one-line advice's --max-macs
    (found by certifying under it) builds."""
    lg = synthetic_logits(k=K, n_val=3000, n_test=3000, seed=1, strength=14.0)
    placements = [_placement([], ["a"], [4.0]), _placement([], ["b"], [2.0]),
                  _placement(["block0.out"], ["a", "b"], [1.0, 3.0]), _placement(["block3.out"], ["b", "b"], [0.3, 2.2])]

    def run(limit):
        return search(lg, placements=placements, strict=False, options=SearchOptions(
            max_accuracy_drop=0.01, guarantee=0.95, objective="energy", max_mean_macs=limit))

    assert run(None).best.exits == ("block3.out",)  # the cheapest in energy
    best = run(8e6).best
    assert best.exits == ("block0.out",) and best.method == "ltt" and best.feasible
    calib = make_split(lg, "val")
    assert evaluate_policy(calib, best.indices, best.thresholds, position_costs(lg, best.indices)).mean_macs <= 8e6
    with pytest.raises(EeccError, match=r"no certified choice of thresholds keeps the mean MACs within --max-macs "
                                        r"6e\+06 on the validation split; raise --max-macs to ([\d.e+]+) or more") as e:
        run(6e6)
    advised = float(re.search(r"raise --max-macs to ([\d.e+]+)", str(e.value)).group(1))
    assert 6e6 < advised <= 8e6 and run(advised).best.exits == ("block0.out",)


def test_guarantee_never_chooses_a_cascade_costlier_than_the_original_alone():
    """nu11 F8's rule on the certified choice, on the calibration split as the default search's: with the original
    alone on its best processor feasible, a certified cascade whose mean energy there is above it may not be chosen
    (noted once when it is the cheapest certified); without a feasible original alone (a MAC limit below it) the
    rule does not apply, as in the default search."""
    from types import SimpleNamespace

    from eecc.search.certified import _rules

    lg = synthetic_logits(k=K, n_val=500, n_test=10, seed=2)
    calib = make_split(lg, "val")
    results = [SimpleNamespace(indices=(), processors=("b",), feasible=True, extra={"objective": "energy"}),
               SimpleNamespace(indices=(0,), processors=("a", "b"), feasible=True, extra={"objective": "energy"})]
    units = [np.asarray([2.0]), np.asarray([1.9, 3.0])]
    notes = []
    rules = _rules(results, lg, calib, units, 2.0, None, notes)
    never, always = (1.1,), (0.0,)  # no sample leaves at the exit: 3.0 J each; every sample leaves: 1.9 J
    assert rules(1, never) == "1.50x the energy of the original alone" and "costlier than the original" in notes[0]
    assert rules(1, always) is None and rules(0, ()) is None and len(notes) == 1
    results[0].feasible = False
    assert _rules(results, lg, calib, units, 2.0, None, []).unit is None
