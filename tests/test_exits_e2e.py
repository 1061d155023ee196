"""End to end on a real trained fixture (the digits CNN): heads learn, logits reach the search, caches work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.model import ir
from eecc.cli import main
from eecc.exits.run import plan_exits, run_exits
from eecc.passes.insert_exits import insert_exits, logits_name
from eecc.search.search import SearchOptions, search
from eecc.search.types import ExitLogits
from golden import run

MODEL = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="fixture models not generated (tests/fixtures/make_fixtures.py)")


@pytest.fixture(scope="module")
def data():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def first(tmp_path_factory, data):
    cache = tmp_path_factory.mktemp("cache")
    return cache, run_exits(MODEL, data, cache_dir=cache)


def test_heads_learn_and_the_last_is_close_to_the_model(first, data):
    _, res = first
    kept = [r for r in res.results if not r.dropped]
    assert len(kept) >= 3
    assert all(r.val_accuracy > 0.5 for r in kept)  # chance is 0.1
    final_acc = float((res.logits.final_test_logits.argmax(1) == data["y_test"]).mean())
    assert res.results[-1].test_accuracy >= final_acc - 0.02
    costs = [r.spec.exit_macs for r in res.results] + [res.plan.blocks.total_macs]
    assert costs == sorted(costs)


def test_exit_logits_are_what_the_search_needs(first, data):
    cache, res = first
    lg = ExitLogits.load(res.artifacts / "logits.npz")
    kept = [r for r in res.results if not r.dropped]
    assert lg.tensors == [r.spec.tensor for r in kept]
    assert lg.val_logits.shape == (len(kept), len(data["y_val"]), 10)
    assert np.array_equal(lg.y_test, data["y_test"]) and np.array_equal(lg.y_val, data["y_val"])
    assert list(lg.backbone_macs) == [r.spec.backbone_macs for r in kept]
    for k, r in enumerate(kept):
        assert np.isclose((lg.val_logits[k].argmax(1) == lg.y_val).mean(), r.val_accuracy)
    plain = run(ir.to_model(res.plan.graph), {"input": data["x_test"]})["logits"]
    np.testing.assert_allclose(lg.final_test_logits, plain, rtol=1e-4, atol=1e-4)


def test_train_logits_are_computed_only_when_asked_and_then_kept(first, data):
    """--calibrate-on train (no validation split) searches on the heads' logits on the training split: a heads
    pass over every training row, so run_exits computes them only when asked, from the heads as trained."""
    cache, res = first
    assert res.logits.train_logits is None and res.tried_logits().train_logits is None  # not asked: not computed
    assert res.logits.final_train_logits is None and res.logits.y_train is None
    stored = sorted((res.artifacts.parent / "heads").glob("*.pkl"))
    written = [p.stat().st_mtime_ns for p in stored]
    asked = run_exits(MODEL, data, cache_dir=cache, train_logits=True)
    assert not asked.warm  # the cached run had none: they are computed now...
    assert [p.stat().st_mtime_ns for p in sorted((res.artifacts.parent / "heads").glob("*.pkl"))] == written
    np.testing.assert_array_equal(asked.logits.val_logits, res.logits.val_logits)  # ...from the same heads
    lg = ExitLogits.load(asked.artifacts / "logits.npz")
    assert lg.train_logits.shape == (len(lg.tensors), len(data["y_train"]), 10)
    assert np.array_equal(lg.y_train, data["y_train"])
    plain = run(ir.to_model(res.plan.graph), {"input": data["x_train"]})["logits"]
    np.testing.assert_allclose(lg.final_train_logits, plain, rtol=1e-4, atol=1e-4)
    outs = run(ir.to_model(insert_exits(res.plan.graph, heads=asked.heads())), {"input": data["x_train"]})
    for k, head in enumerate(asked.heads()):
        got = outs[logits_name(head.spec.tensor, k)]  # from cached fp32 features: float rounding apart
        np.testing.assert_allclose(got, lg.train_logits[k], rtol=1e-3, atol=1e-3)
        assert (got.argmax(1) == lg.train_logits[k].argmax(1)).mean() > 0.999
    every = asked.tried_logits()
    assert every.train_logits.shape == (len(every.tensors), len(data["y_train"]), 10)
    again = run_exits(MODEL, data, cache_dir=cache, train_logits=True)  # kept with the run
    assert again.warm and again.timings["train_s"] == 0
    np.testing.assert_array_equal(again.logits.train_logits, lg.train_logits)
    result = search(lg, options=SearchOptions(calibrate_on="train"))
    assert [w for w in result.warnings if "optimistic" in w]
    assert result.original["val_accuracy"] == pytest.approx(float((plain.argmax(1) == data["y_train"]).mean()))


def test_search_cli_calibrates_on_train(data, tmp_path, capsys):
    """`eecc search --calibrate-on train` asks run_exits for the train logits (refused without them)."""
    path = datasets.save_npz(data, tmp_path / "digits.npz")
    argv = ["search", str(MODEL), "--target", "psoc6", "--data", str(path), "--cache-dir", str(tmp_path), "--quiet"]
    assert main([*argv, "--calibrate-on", "train", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] is not None and [w for w in out["warnings"] if "optimistic" in w]


def test_trained_heads_in_the_onnx_graph_reproduce_the_cached_logits(first, data):
    _, res = first
    model = ir.to_model(insert_exits(res.plan.graph, heads=res.heads()))
    outs = run(model, {"input": data["x_test"]})
    for k, head in enumerate(res.heads()):
        got = outs[logits_name(head.spec.tensor, k)]
        want = res.logits.test_logits[k]  # from cached fp32 features (blocked convolutions): float rounding apart
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        assert (got.argmax(1) == want.argmax(1)).mean() > 0.999


def test_second_run_is_served_from_the_cache_and_subsets_work(first, data):
    cache, res = first
    again = run_exits(MODEL, data, cache_dir=cache)
    assert again.warm and again.timings["train_s"] == 0
    np.testing.assert_array_equal(again.logits.val_logits, res.logits.val_logits)
    pick = [res.results[-1].spec.tensor]
    sub = run_exits(plan_exits(MODEL), data, cache_dir=cache, candidates=pick)
    assert [r.spec.tensor for r in sub.results] == pick and not sub.warm
    assert sub.timings["train_s"] > 0


def test_cli_json(first, data, tmp_path, capsys):
    cache, _ = first
    path = datasets.save_npz(data, tmp_path / "digits.npz")
    assert main(["exits", str(MODEL), "--data", str(path), "--cache-dir", str(cache), "--json",
                 "--reference-pass"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"backbone_macs", "candidates", "timings", "peak_rss_mb", "final_ece", "final_test_accuracy",
                        "output_kind", "tried"}
    assert set(out["candidates"][0]) == {"tensor", "head_macs", "exit_cost_macs", "val_accuracy",
                                         "test_accuracy", "dropped", "ece", "design"}
    # every head tried is listed; each location offers one chosen head, on its Pareto front
    chosen = [t for t in out["tried"] if t["chosen"]]
    assert [t["tensor"] for t in chosen] == [c["tensor"] for c in out["candidates"] if not c["dropped"]]
    assert all(t["pareto"] for t in chosen) and len(out["tried"]) > 3 * len(out["candidates"])
    assert {t["kind"] for t in out["tried"]} == {"gap", "flat", "mlp"}
    assert all(0 <= c["ece"] <= 1 for c in out["candidates"] if not c["dropped"])
    assert out["timings"]["reference_pass_s"] > 0 and out["peak_rss_mb"] > 0
    assert main(["exits", str(MODEL), "--data", str(path), "--candidates", "nope", "--cache-dir", str(cache)]) == 2
    assert "not candidate exits of this model" in capsys.readouterr().err


def test_heads_trained_on_another_feature_format_are_retrained_not_reused(first, data, monkeypatch):
    import eecc.data.cache as fcache

    cache, res = first
    location = res.results[0].spec.tensor
    stored = res.artifacts.parent / "heads"
    before = set(stored.glob("*.pkl"))
    monkeypatch.setattr(fcache, "FORMAT", "fp16")  # as an earlier eecc cached the maps
    again = run_exits(MODEL, data, cache_dir=cache, candidates=[location])
    assert not again.warm
    assert len(set(stored.glob("*.pkl")) - before) == len([r for r in again.tried if r.spec.tensor == location])
