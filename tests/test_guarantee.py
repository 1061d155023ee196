"""--guarantee (Learn then Test) on synthetic logits whose true drop is known, and the bootstrap intervals."""

from __future__ import annotations

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
