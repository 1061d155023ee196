"""insert_gates: golden graphs for the three metrics and three opset regimes, numerics vs numpy and the search."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eecc.model import ir
from eecc.errors import EeccError
from eecc.passes.insert_gates import insert_gates
from eecc.search.confidence import confidence as search_confidence
from golden import assert_same_graph, canonical
from golden import run as golden_run
from test_assign_split import HEADS, STAGE0, WEIGHTS, model_with_exits, split

GATES = {
    "max_softmax": """
      p = Softmax <axis=1> ("exit0.logits")
      "exit0.confidence" = ReduceMax <axes=[1], keepdims=0> (p)
      "exit0.exit" = GreaterOrEqual ("exit0.confidence", t)
    """,
    "margin": """
      p = Softmax <axis=1> ("exit0.logits")
      first = ReduceMax <axes=[1], keepdims=0> (p)
      top = ArgMax <axis=1, keepdims=1> (p)
      hot = Equal (top, classes)
      rest = Where (hot, masked, p)
      second = ReduceMax <axes=[1], keepdims=0> (rest)
      "exit0.confidence" = Sub (first, second)
      "exit0.exit" = GreaterOrEqual ("exit0.confidence", t)
    """,
    "entropy": """
      logp = LogSoftmax <axis=1> ("exit0.logits")
      p = Softmax <axis=1> ("exit0.logits")
      plogp = Mul (p, logp)
      neg_h = ReduceSum <keepdims=0> (plogp, axes)
      norm = Div (neg_h, log_c)
      "exit0.confidence" = Add (norm, one)
      "exit0.exit" = GreaterOrEqual ("exit0.confidence", t)
    """,
    "opset18": """
      p = Softmax <axis=1> ("exit0.logits")
      "exit0.confidence" = ReduceMax <keepdims=0> (p, axes)
      "exit0.exit" = GreaterOrEqual ("exit0.confidence", t)
    """,
    "opset11": """
      p = Softmax <axis=1> ("exit0.logits")
      "exit0.confidence" = ReduceMax <axes=[1], keepdims=0> (p)
      below = Less ("exit0.confidence", t)
      "exit0.exit" = Not (below)
    """,
}
CONSTS = {"t": np.float32(0.7), "classes": np.arange(5, dtype=np.int64), "masked": np.float32(-1),
          "axes": np.array([1], np.int64), "log_c": np.float32(np.log(5)), "one": np.float32(1)}


def expected(gate: str, opset: int = 17) -> onnx.ModelProto:
    head, body = STAGE0.strip().rsplit("}", 1)[0].split("{", 1)
    head = head.replace('"exit0.logits")', '"exit0.logits", bool[N] "exit0.exit", float[N] "exit0.confidence")')
    text = f"{head}{{{body}{GATES[gate]}}}".replace('"" : 17', f'"" : {opset}')
    model = onnx.parser.parse_model(text)
    floats = {k: np.asarray(v, np.float32) for k, v in (WEIGHTS | HEADS).items()}
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in (floats | CONSTS).items())
    return model


def stage0(opset: int = 17):
    return split(model_with_exits(opset=opset))[0]


@pytest.mark.parametrize("metric", ["max_softmax", "margin", "entropy"])
def test_golden_gates(metric):
    stage = stage0()
    before = canonical(ir.to_model(stage))
    gated = ir.to_model(insert_gates(stage, threshold=0.7, metric=metric))
    assert_same_graph(gated, expected(metric))
    onnx.checker.check_model(gated, full_check=True)
    assert canonical(ir.to_model(stage)) == before, "insert_gates mutated its input"


@pytest.mark.parametrize("opset", [11, 18])
def test_golden_gates_follow_the_opset(opset):
    gated = ir.to_model(insert_gates(stage0(opset), threshold=0.7))
    assert_same_graph(gated, expected(f"opset{opset}", opset))
    onnx.checker.check_model(gated, full_check=True)


def test_gate_nodes_are_named_and_annotated():
    gated = insert_gates(stage0(), threshold=0.7, metric="margin")
    gates = [n for n in gated.nodes if ir.get_ann(n, "role") == "gate"]
    assert sorted(n.name for n in gates) == ["exit0.gate.confidence", "exit0.gate.exit", "exit0.gate.others",
                                             "exit0.gate.probs", "exit0.gate.top1_class", "exit0.gate.top1_mask",
                                             "exit0.gate.top1_prob", "exit0.gate.top2_prob"]
    assert {(ir.get_ann(n, "stage"), ir.get_ann(n, "target"), ir.get_ann(n, "exit")) for n in gates} == {(0, "cpu", 0)}
    threshold = next(t for t in gated.tensors().values() if t.name == "exit0.threshold")
    assert threshold.values.dtype == np.float32 and float(threshold.values) == pytest.approx(0.7)


def reference(logits: np.ndarray, metric: str) -> np.ndarray:
    """Written from the formulas, independently of the search's implementation."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    if metric == "max_softmax":
        return p.max(1)
    if metric == "margin":
        s = np.sort(p, 1)
        return s[:, -1] - s[:, -2]
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), 1)
    return 1 - h / np.log(p.shape[1])


@pytest.mark.parametrize("metric", ["max_softmax", "margin", "entropy"])
@pytest.mark.parametrize("opset", [11, 17, 18])
def test_confidence_and_exit_match_numpy_and_the_search(metric, opset):
    rng = np.random.default_rng(opset)
    x = rng.normal(size=(200, 1, 8, 8)).astype(np.float32) * 3
    stage = stage0(opset)
    logits = golden_run(ir.to_model(stage), {"x": x})["exit0.logits"]
    want = reference(logits, metric)
    threshold = float(np.median(want))
    out = golden_run(ir.to_model(insert_gates(stage, threshold=threshold, metric=metric)), {"x": x})
    np.testing.assert_array_equal(out["exit0.logits"], logits)  # the old outputs are untouched
    np.testing.assert_allclose(out["exit0.confidence"], want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["exit0.confidence"], search_confidence(logits, metric), atol=1e-5, rtol=0)
    clear = np.abs(want - threshold) > 1e-5
    assert out["exit0.exit"].dtype == np.bool_ and out["exit0.exit"].shape == (200,)
    np.testing.assert_array_equal(out["exit0.exit"][clear], (want >= threshold)[clear])
    assert 0 < out["exit0.exit"].sum() < 200


def test_entropy_of_one_hot_logits_is_finite():
    stage = stage0()
    gated = ir.to_model(insert_gates(stage, threshold=0.5, metric="entropy"))
    # saturating inputs drive the softmax to exact 0/1 probabilities, where a naive p·log p gives NaN
    x = np.full((4, 1, 8, 8), 1e4, np.float32)
    out = golden_run(gated, {"x": x})
    assert np.isfinite(out["exit0.confidence"]).all()


def test_threshold_above_one_never_exits():
    gated = ir.to_model(insert_gates(stage0(), threshold=1.01))
    x = np.random.default_rng(3).normal(size=(50, 1, 8, 8)).astype(np.float32) * 10
    assert not golden_run(gated, {"x": x})["exit0.exit"].any()


def test_rejects_bad_metric_threshold_and_the_last_stage():
    stages = split(model_with_exits())
    with pytest.raises(EeccError, match="unknown confidence metric 'softmax'"):
        insert_gates(stages[0], threshold=0.5, metric="softmax")
    with pytest.raises(EeccError, match="must be a finite number"):
        insert_gates(stages[0], threshold=float("nan"))
    with pytest.raises(EeccError, match="gate only the stages before the last"):
        insert_gates(stages[-1], threshold=0.5)
