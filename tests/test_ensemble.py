"""AEP ensembles on cached logits: weight modes, the cascade against a per-sample loop, the search option,
AEP pruning, and the CLI."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.cli import main
from eecc.errors import EeccError
from eecc.search.confidence import confidence
from eecc.exits.ensemble import WEIGHT_MODES, ensemble_weights
from eecc.search.ensemble import aep_prune, cumulative_ensembles, ensemble_split, stage_logits
from eecc.search.policy import Objective, evaluate_policy, make_split, position_costs
from eecc.search.search import SearchOptions, search
from eecc.search.synthetic import synthetic_logits
from eecc.search.types import ExitLogits

MODEL = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


@pytest.fixture(scope="module")
def lg():
    return synthetic_logits(k=3, n_val=900, n_test=900, seed=11)


def test_weight_modes():
    assert ensemble_weights(4, "unif").tolist() == [0.25] * 4
    assert ensemble_weights(4, "asc").tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert ensemble_weights(4, "desc").tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert ensemble_weights(4, "mix").tolist() == pytest.approx([0.3, 0.2, 0.1, 0.4])
    for mode in WEIGHT_MODES:
        assert ensemble_weights(1, mode).tolist() == [1.0]  # one member = that member's logits
    with pytest.raises(EeccError, match="weight mode 'heavy'"):
        ensemble_weights(2, "heavy")


def test_cumulative_rows_are_the_weighted_sums_of_the_members_reached():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 5, 4))
    z = cumulative_ensembles(m, "asc")
    np.testing.assert_allclose(z[0], m[0])
    np.testing.assert_allclose(z[1], (1 * m[0] + 2 * m[1]) / 3)
    np.testing.assert_allclose(z[2], (1 * m[0] + 2 * m[1] + 3 * m[2]) / 6)


@pytest.mark.parametrize("mode", WEIGHT_MODES)
def test_cascade_matches_a_per_sample_loop(lg, mode):
    exits, th = (0, 2), (0.8, 0.6)
    split = ensemble_split(lg, exits, "test", mode=mode)
    r = evaluate_policy(split, range(len(exits)), th, position_costs(lg, exits))
    costs = position_costs(lg, exits)
    for n in range(0, 900, 7):
        seen, out = [], None
        for j, k in enumerate(exits):
            seen.append(lg.test_logits[k, n].astype(np.float64))
            w = ensemble_weights(len(seen), mode)
            zj = sum(wi * s for wi, s in zip(w, seen))
            if confidence(zj) >= th[j]:
                out = (j, int(np.argmax(zj)))
                break
        if out is None:
            seen.append(lg.final_test_logits[n].astype(np.float64))
            w = ensemble_weights(len(seen), mode)
            out = (len(exits), int(np.argmax(sum(wi * s for wi, s in zip(w, seen)))))
        assert (r.exit_index[n], r.prediction[n]) == out
        assert r.macs[n] == costs[out[0]]


def test_ensembles_beat_members_whose_errors_are_independent():
    """Three exits equally good but with independent noise: the ensemble at the last exit is better."""
    rng = np.random.default_rng(5)
    n, c = 3000, 5

    def noisy(y):
        z = rng.normal(size=(len(y), c)) * 1.5
        z[np.arange(len(y)), y] += 1.5
        return z

    ys = {s: rng.integers(0, c, n) for s in ("val", "test")}
    lg = ExitLogits(tensors=["a", "b", "c"], exit_macs=[10, 20, 30], final_macs=100,
                    val_logits=np.stack([noisy(ys["val"]) for _ in range(3)]),
                    test_logits=np.stack([noisy(ys["test"]) for _ in range(3)]),
                    final_val_logits=noisy(ys["val"]), final_test_logits=noisy(ys["test"]),
                    y_val=ys["val"], y_test=ys["test"], head_macs=[1, 1, 1])
    single = (lg.test_logits.argmax(-1) == ys["test"]).mean(axis=1)
    ens = stage_logits(lg, (0, 1, 2), "test", decision="ensemble", mode="unif")
    acc = (ens.argmax(-1) == ys["test"]).mean(axis=1)
    assert acc[2] > single.max() + 0.05 and acc[3] > acc[2]


def test_search_ensemble_option_is_evaluated_on_the_ensembles(lg):
    res = search(lg, options=SearchOptions(max_exits=2, decision="ensemble", ensemble_weights="mix"))
    best = res.best
    test = ensemble_split(lg, best.indices, "test", mode="mix")
    r = evaluate_policy(test, range(len(best.indices)), best.thresholds, position_costs(lg, best.indices))
    assert (best.test.accuracy, best.test.mean_macs) == (r.accuracy, r.mean_macs)
    # The default decision on the same thresholds routes differently: the option is not ignored.
    single = evaluate_policy(make_split(lg, "test"), best.indices, best.thresholds,
                             position_costs(lg, best.indices))
    assert not np.array_equal(single.exit_index, r.exit_index)
    assert res.to_json()["options"]["decision"] == "ensemble"


def test_aep_prune_ranks_every_sub_ensemble(lg):
    calib = make_split(lg, "val")
    obj = Objective(lg.final_macs, calib.final_accuracy, max_accuracy_drop=0.02)
    subs = aep_prune(lg, (0, 1, 2), obj, mode="desc")
    assert sorted(s.exits for s in subs) == sorted(c for k in (1, 2, 3) for c in combinations((0, 1, 2), k))
    keys = [(not s.feasible, s.val_cost) for s in subs]
    assert keys == sorted(keys)
    res = search(lg, options=SearchOptions(max_exits=2, decision="ensemble", prune=True))
    aep = res.to_json()["chosen"]["aep"]
    assert len(aep) == 2 ** len(res.best.exits) - 1 and set(aep[0]) >= {"exits", "accuracy", "mean_macs"}


def test_cli_search_and_compile_reject_or_take_the_option(tmp_path, capsys):
    # int8 thresholds are recalibrated on single exits: ensembles + int8 is one line, exit 2, before training.
    if MODEL.exists():
        np.savez(tmp_path / "d.npz", **datasets.load("digits"))
        code = main(["compile", str(MODEL), "--target", "psoc6", "--data", str(tmp_path / "d.npz"), "--quantize",
                     "int8", "--decision", "ensemble", "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "out")])
        assert code == 2 and "--decision single" in capsys.readouterr().err
        assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()
    with pytest.raises(SystemExit):
        main(["search", "m.onnx", "--target", "psoc6", "--data", "d.npz", "--ensemble-weights", "heavy"])
