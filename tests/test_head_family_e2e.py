"""The head family on the weakly trained ResNet fixture: spatial heads beat the global-pool blueprint,
the best of each location reaches the search and the bundle graph reproduces its cached logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.exits.run import plan_exits, run_exits
from eecc.model import ir
from eecc.passes.insert_exits import insert_exits, logits_name
from golden import run

MODEL = Path(__file__).parent / "fixtures" / "models" / "resnet_weak.onnx"
# One early (16x14x14) and one middle (32x7x7) location: the rest of the family costs test time only.
LOCATIONS = ["/3/Relu_output_0", "/5/Relu_output_0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    full = datasets.load("fashion-mnist", limit_train=6000)
    data = {k: (v[:1500] if k.endswith(("_val", "_test")) else v) for k, v in full.items()}
    res = run_exits(plan_exits(MODEL), data, candidates=LOCATIONS, cache_dir=tmp_path_factory.mktemp("cache"))
    return data, res


def test_every_design_is_tried_and_a_spatial_head_beats_the_blueprint(trained):
    _, res = trained
    assert {r.spec.tensor for r in res.tried} == set(LOCATIONS)
    assert {r.spec.kind for r in res.tried} == {"gap", "flat", "mlp"}
    for tensor in LOCATIONS:
        mine = [r for r in res.tried if r.spec.tensor == tensor and not r.dropped]
        blueprint = next(r for r in mine if r.spec.kind == "gap")
        best = max(mine, key=lambda r: r.val_accuracy)
        assert best.chosen and best.pareto
        assert all(r.spec.head_macs <= res.plan.design.budget_macs for r in mine)
        # the measurement: global pooling throws away what early maps carry
        assert best.spec.kind != "gap" and best.val_accuracy >= blueprint.val_accuracy + 0.02
        assert best.test_accuracy >= blueprint.test_accuracy
    assert [r.spec.tensor for r in res.results] == LOCATIONS and all(r.chosen for r in res.results)


def test_offered_heads_reach_the_search_and_the_graph(trained):
    data, res = trained
    lg, every = res.logits, res.tried_logits()
    assert lg.tensors == LOCATIONS
    assert list(lg.head_macs) == [r.spec.head_macs for r in res.results]
    assert len(every.tensors) == sum(not r.dropped for r in res.tried)
    for k, r in enumerate(res.results):
        j = every.tensors.index(f"{r.spec.tensor}|{r.spec.design}")
        np.testing.assert_array_equal(every.val_logits[j], lg.val_logits[k])
    model = ir.to_model(insert_exits(res.plan.graph, heads=res.heads()))
    outs = run(model, {"input": data["x_test"]})
    for k, head in enumerate(res.heads()):
        got = outs[logits_name(head.spec.tensor, k)]
        want = lg.test_logits[k]  # from cached fp32 features (blocked convolutions): float rounding apart
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        assert (got.argmax(1) == want.argmax(1)).mean() > 0.999


def test_the_search_choice_of_design_reaches_heads_logits_and_graph(trained):
    data, res = trained
    pairs = res.pairs()
    assert pairs.tensors == [f"{r.spec.tensor}|{r.spec.design}" for r in res.tried if r.pareto and not r.dropped]
    assert len(res.pairs(pareto_only=False).tensors) == sum(not r.dropped for r in res.tried)
    other = next(r for r in res.tried if r.spec.tensor == LOCATIONS[0] and not r.chosen and not r.dropped)
    off = res.offering({LOCATIONS[0]: other.spec.design})  # what search_model does with the chosen placement
    assert [h.spec.design for h in off.heads()] == [other.spec.design, res.results[1].spec.design]
    assert res.results[0].spec.design != other.spec.design  # the original run is left as it was
    every = res.tried_logits()
    assert off.logits.tensors == LOCATIONS and off.logits.head_macs[0] == other.spec.head_macs
    np.testing.assert_array_equal(off.logits.test_logits[0],
                                  every.test_logits[every.tensors.index(f"{LOCATIONS[0]}|{other.spec.design}")])
    model = ir.to_model(insert_exits(res.plan.graph, heads=off.heads()))
    got = run(model, {"input": data["x_test"]})[logits_name(LOCATIONS[0], 0)]
    assert (got.argmax(1) == off.logits.test_logits[0].argmax(1)).mean() > 0.98


def test_a_lone_blueprint_is_not_stopped_by_the_familys_halving(trained):
    data, res = trained
    cache = res.artifacts.parent.parent  # <cache>/<model>/trained-<run>: the family's own cache
    alone = run_exits(plan_exits(MODEL), data, candidates=LOCATIONS, cache_dir=cache, head_set="blueprint")
    in_family = {r.spec.tensor: r for r in res.tried if r.spec.kind == "gap"}
    assert any(r.epochs == 1 for r in in_family.values())  # halving stopped it beside better designs
    for r in alone.results:  # trained alone, it has no rival to stop it: more epochs, and more accurate
        assert r.epochs > 1 and r.val_accuracy >= in_family[r.spec.tensor].val_accuracy
