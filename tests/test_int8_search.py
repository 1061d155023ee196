"""--quantize int8: the search chooses on the int8 model's logits (eecc/exits/int8.py), so the cascade it predicts
is the one built, and a limit it certified (--guarantee) is the bundle's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eecc.driver.compile import CompileOptions, compile_model
from eecc.driver.deployment import _limit_check
from eecc.examples import datasets
from eecc.exits import int8
from eecc.exits.run import plan_exits, run_exits
from eecc.runtime.cascade import Cascade
from eecc.runtime.sessions import session_options
from eecc.search.search import SearchOptions
from eecc.targets import quantize
from eecc.targets.quantize import CALIBRATION_SAMPLES, quantize_stages

MODELS = Path(__file__).parent / "fixtures" / "models"


def _accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), session_options(model=model), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0].argmax(-1) == y).mean())


def test_int8_bundle_is_the_cascade_the_search_chose_and_certified(tmp_path):
    """cnn on the PSoC 6, int8, --guarantee 0.9 on a 2 pt drop: the bundle keeps the thresholds the search
    certified (they used to be searched again on the int8 stages without the guarantee: another exit rate),
    its test routing is the search's sample by sample, and on validation it keeps the limit against the int8
    original model (quantised here independently of the compile)."""
    path = MODELS / "cnn.onnx"
    if not path.exists():
        pytest.skip("fixture cnn not generated (python tests/fixtures/make_fixtures.py)")
    data = datasets.load(json.loads((MODELS / "cnn.json").read_text())["dataset"])
    options = CompileOptions(target="psoc6", out=tmp_path / "b", cache_dir=str(tmp_path / "c"), codegen=False,
                             progress=False, quantize="int8",
                             search_options=SearchOptions(objective="macs", max_accuracy_drop=0.02, guarantee=0.9))
    manifest = compile_model(path, data, options)
    search, measured = manifest["placement"]["metrics"]["search"], manifest["placement"]["metrics"]["measured"]
    assert search["guarantee"]["drop_bound"] <= 0.02 and search["exits"]
    assert manifest["placement"]["thresholds"] == pytest.approx(search["thresholds"])  # the certified ones
    assert manifest["quantization"]["thresholds"] == "the search's, chosen on the int8 model"
    # the search's test figures are the built cascade's: same exit for every sample, same accuracy
    test = Cascade(options.out).run(data["x_test"])
    rates = np.bincount(test.exit_stage, minlength=len(manifest["stages"])) / len(data["y_test"])
    assert rates == pytest.approx(search["exit_rates"], abs=1e-9) and measured["agreement_with_search"] == 1.0
    assert float((test.predictions == data["y_test"]).mean()) == pytest.approx(search["accuracy"], abs=1e-9)
    # on validation the int8 bundle is within the limit of the int8 original
    original = quantize_stages([onnx.load(str(path))], data["x_train"][:CALIBRATION_SAMPLES])[0]
    val = Cascade(options.out).run(data["x_val"])
    drop = _accuracy(original, data["x_val"], data["y_val"]) - float((val.predictions == data["y_val"]).mean())
    assert drop <= 0.02
    assert manifest["quantization"]["calibration_split"]["drop"] == pytest.approx(drop, abs=1e-9)


def test_a_test_drop_above_the_validated_limit_is_said_with_its_interval():
    manifest = {"placement": {"metrics": {"measured": {
        "accuracy": 0.9533, "original_accuracy": 0.9747,
        "intervals": {"accuracy_drop": [0.0058, 0.0370]}}}},
        "search": {"options": {"max_accuracy_drop": 0.01, "guarantee": None}}}
    rec = _limit_check(manifest)
    assert rec["accuracy_drop_interval_pt"] == pytest.approx([0.58, 3.70])
    assert "2.14 pt is above the 1 pt limit, which held on the validation split" in rec["limit_note"]
    assert "--guarantee" in rec["limit_note"]
    manifest["placement"]["metrics"]["measured"]["accuracy"] = 0.97
    assert "limit_note" not in _limit_check(manifest)  # 0.47 pt: within the limit, nothing to say
    manifest["placement"]["metrics"]["measured"].update(accuracy=0.961, original_accuracy=0.971)
    assert 0.971 - 0.961 > 0.01 and "limit_note" not in _limit_check(manifest)  # nu12 F9: 10 of 1000 is the limit


def test_one_quantised_pass_serves_every_candidate_head(tmp_path, monkeypatch):
    """cnn1d, every trained head of every location: the int8 model is quantised once with all heads attached
    (several on one tensor), and each head's int8 logits, and the final classifier's, are bit for bit those of
    graphs holding at most one head per tensor (the rounds this replaced: one quantised backbone per round)."""
    path = MODELS / "cnn1d.onnx"
    if not path.exists():
        pytest.skip("fixture cnn1d not generated (python tests/fixtures/make_fixtures.py)")
    plan = plan_exits(path)
    splits = plan.splits(datasets.load(json.loads((MODELS / "cnn1d.json").read_text())["dataset"]))
    exits = run_exits(plan, splits, cache_dir=tmp_path)
    pairs = exits.pairs(pareto_only=False)
    heads = int8.pair_heads(exits, pairs)
    tensors = [h.spec.tensor for h in heads]
    assert max(tensors.count(t) for t in tensors) >= 3  # several designs per location: the case at stake
    real, calls = quantize.quantize_stage, []
    monkeypatch.setattr(quantize, "quantize_stage", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = int8.int8_logits(plan, heads, pairs, splits)
    assert len(calls) == 1
    calib = splits.train.rows(0, min(len(splits.train), CALIBRATION_SAMPLES))
    rounds: list[list[int]] = []  # round r holds the r-th head of every location
    for i, t in enumerate(tensors):
        r = tensors[:i].count(t)
        rounds += [[]] * (r + 1 - len(rounds))
        rounds[r] = rounds[r] + [i]
    for group in rounds:
        alone = int8._run_quantized(plan.graph, [heads[i] for i in group], calib,
                                    {"val": splits.val, "test": splits.test})
        for split, (final, rows) in alone.items():
            np.testing.assert_array_equal(getattr(got, f"final_{split}_logits"), final)
            for i, z in zip(group, rows):
                np.testing.assert_array_equal(getattr(got, f"{split}_logits")[i], z)
