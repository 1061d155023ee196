"""Confidence metrics, the one policy evaluation, the oracle and the ExitLogits file."""

import numpy as np
import pytest

from eecc.errors import EeccError
from eecc.search.confidence import METRICS, confidence
from eecc.search.policy import Objective, evaluate_policy, make_split, oracle, position_costs
from eecc.search.synthetic import synthetic_logits
from eecc.search.types import ExitLogits


def _reference(logits, metric):
    out = []
    for row in np.asarray(logits, dtype=np.float64):
        p = np.exp(row - row.max())
        p /= p.sum()
        s = np.sort(p)[::-1]
        if metric == "max_softmax":
            out.append(s[0])
        elif metric == "margin":
            out.append(s[0] - s[1])
        else:
            h = -sum(x * np.log(x) for x in p if x > 0)
            out.append(1 - h / np.log(len(p)))
    return np.array(out)


@pytest.mark.parametrize("metric", METRICS)
def test_confidence_matches_reference_and_orders_by_certainty(metric):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 7)) * 3
    z[0] = [100, 0, 0, 0, 0, 0, 0]  # saturated: must stay finite and max out at 1
    z[1] = 0.0                       # uniform: least confident
    c = confidence(z, metric)
    np.testing.assert_allclose(c, _reference(z, metric), atol=1e-9)
    assert c[0] == pytest.approx(1.0) and c[1] == pytest.approx(c.min())
    assert np.all((c >= 0) & (c <= 1 + 1e-12))


def test_unknown_metric_is_a_user_error():
    with pytest.raises(EeccError, match="entropy"):
        confidence(np.zeros((2, 3)), "energy")


def _tiny():
    # 2 candidates, 4 samples, 2 classes; head MACs 10 each, backbone 100 / 300, final 1000.
    val = np.array([[[5, 0], [0, 5], [1, 0], [0, 0.2]],
                    [[5, 0], [5, 0], [0, 5], [0, 0.1]]], dtype=np.float32)
    final = np.array([[5, 0], [0, 5], [0, 5], [0, 5]], dtype=np.float32)
    y = np.array([0, 1, 1, 1])
    return ExitLogits(tensors=["a", "b"], exit_macs=[110, 310], final_macs=1000, val_logits=val,
                      test_logits=val, final_val_logits=final, final_test_logits=final,
                      y_val=y, y_test=y, head_macs=[10, 10])


def test_policy_routes_first_confident_exit_and_charges_passed_heads():
    lg = _tiny()
    split = make_split(lg, "val")
    costs = position_costs(lg, [0, 1])
    np.testing.assert_array_equal(costs, [110, 320, 1020])  # passed heads still cost
    r = evaluate_policy(split, [0, 1], [0.9, 0.9], costs)
    # sample 0, 1: confident at a; sample 2: at b; sample 3: never -> final
    np.testing.assert_array_equal(r.exit_index, [0, 0, 1, 2])
    np.testing.assert_array_equal(r.prediction, [0, 1, 1, 1])
    np.testing.assert_array_equal(r.macs, [110, 110, 320, 1020])
    assert r.accuracy == 1.0 and r.mean_macs == pytest.approx((110 + 110 + 320 + 1020) / 4)
    np.testing.assert_allclose(r.exit_rates, [0.5, 0.25, 0.25])
    only_b = evaluate_policy(split, [1], [0.9], position_costs(lg, [1]))
    np.testing.assert_array_equal(only_b.macs, [310, 310, 310, 1010])


def test_oracle_leaves_where_prediction_already_matches_final():
    lg = _tiny()
    split = make_split(lg, "val")
    costs = position_costs(lg, [0, 1])
    o = oracle(split, [0, 1], costs)
    # final predicts [0,1,1,1]; a predicts [0,1,0,1]; b predicts [0,0,1,1]
    np.testing.assert_array_equal(o.exit_index, [0, 0, 1, 0])
    assert o.accuracy == split.final_accuracy
    # a lower bound for every policy that keeps the final classifier's predictions
    for th in ([0.9, 0.9], [0.9, 2.0], [2.0, 2.0]):
        r = evaluate_policy(split, [0, 1], th, costs)
        assert np.array_equal(r.prediction, split.final_pred)
        assert o.mean_macs < r.mean_macs


def test_objective_cost_and_constraints():
    obj = Objective(1000, 0.9, 0.9, 0.1, max_accuracy_drop=0.005, max_mean_macs=600)
    assert obj.cost(0.89, 500) == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)
    assert obj.feasible(0.896, 600) and not obj.feasible(0.894, 500) and not obj.feasible(0.9, 601)
    assert obj.violations(0.894, 700)[0].startswith("accuracy drop 0.60 pt")


def test_exit_logits_roundtrip_and_missing_head_macs(tmp_path):
    lg = synthetic_logits(k=3, n_val=50, n_test=40, seed=3)
    back = ExitLogits.load(lg.save(tmp_path / "l.npz"))
    assert back.tensors == lg.tensors and back.final_macs == lg.final_macs
    for name in ("exit_macs", "head_macs", "val_logits", "test_logits", "y_val", "y_test"):
        np.testing.assert_array_equal(getattr(back, name), getattr(lg, name))
    bare = ExitLogits(lg.tensors, lg.exit_macs, lg.final_macs, lg.val_logits, lg.test_logits,
                      lg.final_val_logits, lg.final_test_logits, lg.y_val, lg.y_test)
    with pytest.raises(ValueError, match="head_macs"):
        position_costs(bare, [0])
    with pytest.raises(ValueError, match="val_logits"):
        ExitLogits(lg.tensors[:2], lg.exit_macs[:2], 1, lg.val_logits, lg.test_logits[:2],
                   lg.final_val_logits, lg.final_test_logits, lg.y_val, lg.y_test)
