"""NACHOS confidence training (issue 10 item 2): loss terms, training behaviour, search on learned confidences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eecc.errors import EeccError
from eecc.exits.heads import HeadSpec
from eecc.search.calibration import ece_from_confidence
from eecc.search.policy import position_costs
from eecc.search.search import SearchOptions, search
from eecc.search.types import ExitLogits
from eecc.train.nachos import (NachosConfig, cumulative_confidence, nachos_terms, predict_nachos, support_rows,
                               train_nachos)

CLASSES = 4


def _spec(i: int, channels: int) -> HeadSpec:
    return HeadSpec(tensor=f"t{i}", in_shape=(channels, 4, 4), pool=(1, 1), width=None, num_classes=CLASSES,
                    backbone_macs=1000 * (i + 1))


def _data(n: int, seed: int):
    """Two exits on features where the class signal grows with depth and varies per sample (easy/hard)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    ease = rng.uniform(0.0, 2.5, n)  # per-sample difficulty: what a good confidence must pick up
    feats = []
    for depth, c in ((0.6, 6), (1.2, 8)):
        x = rng.normal(size=(n, c, 4, 4)).astype(np.float32)
        x[np.arange(n), y] += (depth * ease)[:, None, None]
        feats.append(x.astype(np.float16))
    final = np.eye(CLASSES, dtype=np.float32)[y] * 6 + rng.normal(size=(n, CLASSES)).astype(np.float32)
    return feats, y, final


SPECS = [_spec(0, 6), _spec(1, 8)]
COSTS = [1024, 2032, 10_000]  # leaving at exit 0, exit 1, the final classifier
CFG = NachosConfig(epochs=12, mu1=2, mu2=2, support_per_class=10, batch_size=128, lr=5e-2)


@pytest.fixture(scope="module")
def trained():
    feats, y, final = _data(1200, 0)
    return train_nachos(SPECS, feats, y, final, COSTS, 10_000, config=CFG), (feats, y, final)


def test_cumulative_confidence_matches_the_definition_and_sums_to_one():
    c = torch.tensor([[0.2, 0.9], [0.5, 0.1], [0.25, 0.0]])
    cbar = cumulative_confidence(c)
    expect = torch.tensor([[0.2, 0.9], [0.8 * 0.5, 0.1 * 0.1], [0.8 * 0.5 * 0.25, 0.1 * 0.9 * 0.0],
                           [0.8 * 0.5 * 0.75, 0.1 * 0.9 * 1.0]])
    assert torch.allclose(cbar, expect)
    assert torch.allclose(cbar.sum(0), torch.ones(2))


def test_cost_term_is_the_normalised_budget_violation():
    y = torch.tensor([0, 1])
    z = [torch.zeros(2, CLASSES)]
    costs = torch.tensor([100.0, 1000.0])
    low = nachos_terms(z, torch.tensor([[1.0, 1.0]]), torch.zeros(2, CLASSES), y, costs, 1000.0, 600.0)
    assert float(low["cost"]) == 0.0 and float(low["expected_macs"]) == pytest.approx(100.0)
    half = nachos_terms(z, torch.tensor([[0.0, 0.5]]), torch.zeros(2, CLASSES), y, costs, 1000.0, 600.0)
    # γ̃ = mean(1000, 550) = 775 → (775 − 600) / (1000 − 600)
    assert float(half["cost"]) == pytest.approx(175 / 400)
    assert float(half["peak"]) == 0.0
    peak = nachos_terms(z, torch.tensor([[0.0, 0.5]]), torch.zeros(2, CLASSES), y, costs, 1000.0, 600.0,
                        torch.tensor([[1.0, 0.5]]))
    assert float(peak["peak"]) == pytest.approx(0.5)


def test_support_rows_are_class_balanced():
    y = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    rows = support_rows(y, 2)
    assert list(rows) == [0, 1, 2, 3, 4, 6]
    assert np.bincount(y[rows]).tolist() == [2, 2, 2]


def test_learned_confidence_ranks_correct_above_wrong_and_is_deterministic(trained):
    result, _ = trained
    feats, y, _ = _data(800, 1)
    logits, conf = predict_nachos(result.module, feats)
    assert logits.shape == (2, 800, CLASSES) and conf.shape == (2, 800)
    assert ((conf >= 0) & (conf <= 1)).all()
    for k in range(2):
        right = logits[k].argmax(1) == y
        assert 0.3 < right.mean() < 0.98  # a split with both kinds of samples: the test can fail
        assert conf[k][right].mean() > conf[k][~right].mean() + 0.05
    again = train_nachos(SPECS, *_data(1200, 0), COSTS, 10_000, config=CFG)
    _, conf2 = predict_nachos(again.module, feats)
    np.testing.assert_array_equal(conf, conf2)
    assert [h["w_peak"] for h in result.history] == [0] * 4 + [1] * 8
    assert [h["w_cost"] for h in result.history] == [0] * 2 + [1] * 10


def test_a_tighter_mac_budget_lowers_the_expected_macs(trained):
    loose, (feats, y, final) = trained
    tight = train_nachos(SPECS, feats, y, final, COSTS, 10_000, budget_macs=1500,
                         config=NachosConfig(**{**CFG.__dict__, "w_cost": 10.0}))
    assert tight.budget_macs == 1500 and loose.budget_macs == pytest.approx(6000)
    assert tight.history[-1]["expected_macs"] < loose.history[-1]["expected_macs"] - 500


def test_search_thresholds_the_learned_confidence(trained):
    result, _ = trained
    (fv, yv, finv), (ft, yt, fint) = _data(600, 2), _data(600, 3)
    zv, cv = predict_nachos(result.module, fv)
    zt, ct = predict_nachos(result.module, ft)
    logits = ExitLogits(tensors=["t0", "t1"], exit_macs=np.array([1024, 2032]), final_macs=10_000,
                        val_logits=zv, test_logits=zt, final_val_logits=finv, final_test_logits=fint,
                        y_val=yv, y_test=yt, head_macs=np.array([24, 32]))
    assert list(position_costs(logits, (0, 1))) == [1024, 2056, 10_056]
    opts = SearchOptions(metric="learned", max_exits=2)
    res = search(logits, options=opts, confidences={"val": cv, "test": ct})
    best = res.best
    # thresholds come from the grid of the learned confidences, not of the softmax
    for t, k in zip(best.thresholds, best.indices):
        assert t >= 2.0 or np.isclose(cv[k], t).any()
    take = ct[best.indices[0]] >= best.thresholds[0]
    assert best.test.exit_rates[0] == pytest.approx(take.mean())
    assert 0 <= ece_from_confidence(ct[0], zt[0].argmax(1) == yt) <= 1
    with pytest.raises(EeccError, match="learned confidences"):
        search(logits, options=opts)
    with pytest.raises(EeccError, match="shape"):
        search(logits, options=opts, confidences={"val": cv[:1], "test": ct})


def test_mismatched_rows_are_refused():
    feats, y, final = _data(100, 0)
    with pytest.raises(EeccError, match="same rows"):
        train_nachos(SPECS, [feats[0], feats[1][:50]], y, final, COSTS, 10_000, config=CFG)
    with pytest.raises(EeccError, match="budget"):
        train_nachos(SPECS, feats, y, final, COSTS, 10_000, budget_macs=20_000, config=CFG)
