"""insert_ensemble: golden stage graphs, numerics against eecc.search.ensemble, gating on the ensemble, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eecc.model import ir
from eecc.errors import EeccError
from eecc.passes.insert_ensemble import insert_ensemble
from eecc.passes.insert_gates import insert_gates
from eecc.search.confidence import confidence
from eecc.exits.ensemble import ensemble_weights
from eecc.search.ensemble import cumulative_ensembles
from golden import assert_same_graph, canonical
from golden import run as golden_run
from test_assign_split import HEADS, STAGE0, STAGE1, STAGE2, WEIGHTS, model_with_exits, split

# What each split stage gains: the raw logits are stacked onto the members handed in, and the decision
# output (same name as before) becomes their weighted sum.
ENSEMBLE = {
    0: ('(float[N,4,8,8] r1, float[N,5] "exit0.logits")',
        '(float[N,4,8,8] r1, float[N,5] "exit0.logits", float[N,1,5] "ensemble0.members")',
        '"exit0.logits" = Gemm', '''
      "ensemble0.members" = Unsqueeze ("exit0.logits", axis)
    '''),
    1: ('(float[N,4,8,8] r1) => (float[N,4,8,8] a2, float[N,5] "exit1.logits")',
        '(float[N,4,8,8] r1, float[N,1,5] "ensemble0.members") => '
        '(float[N,4,8,8] a2, float[N,5] "exit1.logits", float[N,2,5] "ensemble1.members")',
        '"exit1.logits" = Gemm', '''
      one = Unsqueeze (raw, axis)
      "ensemble1.members" = Concat <axis=1> ("ensemble0.members", one)
      wz = Mul ("ensemble1.members", w)
      "exit1.logits" = ReduceSum <keepdims=0> (wz, axis)
    '''),
    2: ('(float[N,4,8,8] a2) => (float[N,5] y)',
        '(float[N,4,8,8] a2, float[N,2,5] "ensemble1.members") => (float[N,5] y, float[N,3,5] "ensemble2.members")',
        'y = Gemm', '''
      one = Unsqueeze (raw, axis)
      "ensemble2.members" = Concat <axis=1> ("ensemble1.members", one)
      wz = Mul ("ensemble2.members", w)
      y = ReduceSum <keepdims=0> (wz, axis)
    '''),
}


def expected(k: int, mode: str) -> onnx.ModelProto:
    old_sig, new_sig, producer, added = ENSEMBLE[k]
    text = (STAGE0, STAGE1, STAGE2)[k].replace(old_sig, new_sig)
    if k > 0:
        text = text.replace(producer, "raw = Gemm")
    head, body = text.strip().rsplit("}", 1)[0].split("{", 1)
    model = onnx.parser.parse_model(f"{head}{{{body}{added}}}")
    consts = {k_: np.asarray(v, np.float32) for k_, v in (WEIGHTS | HEADS).items()}
    consts["axis"] = np.array([1], np.int64)
    if k > 0:
        consts["w"] = ensemble_weights(k + 1, mode).astype(np.float32).reshape(1, k + 1, 1)
    model.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in consts.items())
    return model


@pytest.mark.parametrize("mode", ["desc", "mix"])
def test_golden_stages_and_input_untouched(mode):
    stages = split(model_with_exits())
    before = [canonical(ir.to_model(s)) for s in stages]
    for k, stage in enumerate(stages):
        model = ir.to_model(insert_ensemble(stage, index=k, mode=mode))
        assert_same_graph(model, expected(k, mode))
        onnx.checker.check_model(model, full_check=True)
    assert [canonical(ir.to_model(s)) for s in stages] == before, "insert_ensemble mutated its input"


def test_opset11_takes_axes_as_attributes():
    stage = split(model_with_exits(opset=11))[1]
    model = ir.to_model(insert_ensemble(stage, index=1))
    ops = {n.op_type: n for n in model.graph.node}
    assert [a.name for a in ops["Unsqueeze"].attribute] == ["axes"] and len(ops["Unsqueeze"].input) == 1
    assert {a.name for a in ops["ReduceSum"].attribute} == {"axes", "keepdims"}
    onnx.checker.check_model(model, full_check=True)


def _chain(stages, x):
    """Run the stages on every sample (no routing), feeding each stage's inputs by name."""
    outs, feed = [], {"x": x}
    for stage in stages:
        model = ir.to_model(stage)
        out = golden_run(model, {i.name: feed[i.name] for i in model.graph.input})
        outs.append(out)
        feed = out
    return outs


@pytest.mark.parametrize("mode", ["desc", "asc", "mix", "unif"])
@pytest.mark.parametrize("opset", [11, 17])
def test_ensembles_and_gates_match_the_search(mode, opset):
    x = np.random.default_rng(opset).normal(size=(120, 1, 8, 8)).astype(np.float32) * 3
    plain = split(model_with_exits(opset=opset))
    raw = _chain(plain, x)
    members = np.stack([raw[0]["exit0.logits"], raw[1]["exit1.logits"], raw[2]["y"]])
    want = cumulative_ensembles(members, mode)
    ens = [insert_ensemble(s, index=k, mode=mode) for k, s in enumerate(plain)]
    thresholds = [float(np.median(confidence(want[k], "max_softmax"))) for k in range(2)]
    gated = [insert_gates(s, threshold=t) for s, t in zip(ens, thresholds)] + [ens[2]]
    got = _chain(gated, x)
    for k, name in enumerate(["exit0.logits", "exit1.logits", "y"]):
        np.testing.assert_allclose(got[k][name], want[k], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got[k][f"ensemble{k}.members"], members[:k + 1].transpose(1, 0, 2), atol=1e-5,
                                   rtol=0)
    for k in range(2):
        conf = confidence(want[k], "max_softmax")
        np.testing.assert_allclose(got[k][f"exit{k}.confidence"], conf, atol=1e-5)
        clear = np.abs(conf - thresholds[k]) > 1e-5
        np.testing.assert_array_equal(got[k][f"exit{k}.exit"][clear], (conf >= thresholds[k])[clear])
    if mode != "unif":  # the weights matter: another mode gives other ensembles
        assert not np.allclose(want[2], cumulative_ensembles(members, "unif")[2], atol=1e-3)


def test_ensemble_nodes_are_annotated_for_the_stage_and_its_target():
    stages = split(model_with_exits())
    ens = insert_ensemble(stages[1], index=1)
    added = [n for n in ens.nodes if n.name.startswith("ensemble1.")]
    assert sorted(n.op for n in added) == ["Concat", "Mul", "ReduceSum", "Unsqueeze"]
    assert {(ir.get_ann(n, "stage"), ir.get_ann(n, "target")) for n in added} == {(1, "gpu")}


def test_rejects_a_wrong_index_and_non_logits():
    stages = split(model_with_exits())
    with pytest.raises(EeccError, match="no 'exit0.logits' output"):
        insert_ensemble(stages[1], index=0)
    with pytest.raises(EeccError, match="no 'exit1.logits' output"):
        insert_ensemble(stages[0], index=1)


def test_a_lone_stage_is_its_own_ensemble():
    """No exit chosen (the original model alone won): the one stage is left as it is, not refused."""
    (lone,) = split(model_with_exits(cuts=(), heads={}), processors=("cpu",), cuts=())
    before = canonical(ir.to_model(lone))
    assert canonical(ir.to_model(insert_ensemble(lone, index=0))) == before
