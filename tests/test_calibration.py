"""ECE (15 bins): the formula against a loop written from its definition, its behaviour on calibrated and
over-confident data, and its place in `eecc exits` and the search JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.cli import main
from eecc.exits.run import run_exits
from eecc.search.calibration import ece, ece_by_tensor, ece_from_confidence, ece_per_exit
from eecc.search.confidence import softmax
from eecc.search.search import SearchOptions, search
from eecc.search.synthetic import synthetic_logits

MODEL = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


def _reference(logits, y, bins=15):
    """ECE straight from its definition: equal-width bins of (0, 1], |acc - conf| weighted by bin share."""
    p = softmax(logits)
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


def test_matches_the_definition_on_random_logits():
    rng = np.random.default_rng(0)
    for scale in (0.3, 2.0, 8.0):
        z = rng.normal(size=(500, 7)) * scale
        y = rng.integers(0, 7, 500)
        assert ece(z, y) == pytest.approx(_reference(z, y), abs=1e-12)
        assert ece(z, y, bins=4) == pytest.approx(_reference(z, y, bins=4), abs=1e-12)


def test_calibrated_is_near_zero_and_overconfident_shows_its_gap():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 1.0, 200_000)
    assert ece_from_confidence(conf, rng.uniform(size=conf.size) < conf) < 0.01
    over = ece_from_confidence(conf, rng.uniform(size=conf.size) < conf - 0.2)
    assert over == pytest.approx(0.2, abs=0.01)


def test_extremes():
    y = np.array([0, 1, 2])
    sure = np.eye(3) * 100.0
    assert ece(sure, y) == pytest.approx(0.0, abs=1e-9)  # confident and right
    assert ece(sure, (y + 1) % 3) == pytest.approx(1.0, abs=1e-9)  # confident and wrong
    assert ece(np.zeros((0, 3)), np.zeros(0)) == 0.0
    with pytest.raises(ValueError):
        ece(np.zeros((4, 3)), np.zeros(3))


def test_search_reports_ece_for_every_position_of_every_placement():
    lg = synthetic_logits(k=3, n_val=800, n_test=800, seed=3)
    res = search(lg, options=SearchOptions(max_exits=2))
    doc = json.loads(json.dumps(res.to_json()))
    chosen = doc["chosen"]
    want = ece_per_exit(lg.test_logits[chosen_indices(lg, chosen)], lg.y_test) + [ece(lg.final_test_logits, lg.y_test)]
    assert chosen["ece"] == pytest.approx(want)
    assert all(len(p["ece"]) == len(p["exits"]) + 1 for p in doc["placements"])
    by = ece_by_tensor(lg)
    assert set(by) == set(lg.tensors) | {"final"} and by["final"] == pytest.approx(want[-1])


def chosen_indices(lg, chosen):
    return [lg.tensors.index(t) for t in chosen["exits"]]


@pytest.mark.skipif(not MODEL.exists(), reason="fixture models not generated")
def test_exits_json_and_table_carry_ece(tmp_path, capsys):
    data = datasets.load("digits")
    np.savez(tmp_path / "d.npz", **data)
    cache = tmp_path / "cache"
    assert main(["exits", str(MODEL), "--data", str(tmp_path / "d.npz"), "--json", "--quiet",
                 "--cache-dir", str(cache)]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = run_exits(MODEL, data, cache_dir=cache)  # warm: the same heads
    kept = [c for c in doc["candidates"] if not c["dropped"]]
    assert kept and all(0.0 <= c["ece"] <= 1.0 for c in kept)
    for c in kept:
        k = res.logits.tensors.index(c["tensor"])
        assert c["ece"] == pytest.approx(ece(res.logits.test_logits[k], data["y_test"]))
    assert all(c["ece"] is None for c in doc["candidates"] if c["dropped"])
    assert doc["final_ece"] == pytest.approx(ece(res.logits.final_test_logits, data["y_test"]))
    assert main(["exits", str(MODEL), "--data", str(tmp_path / "d.npz"), "--quiet",
                 "--cache-dir", str(cache)]) == 0
    assert "ECE" in capsys.readouterr().out
