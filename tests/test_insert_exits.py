"""insert_exits / expose_features: golden graphs, annotations, and numerics on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eecc.model import ir
from eecc.errors import EeccError
from eecc.exits.heads import ExitHead, HeadSpec, HeadWeights
from eecc.passes.annotate_cost import annotate_cost
from eecc.passes.insert_exits import expose_features, insert_exits
from golden import assert_same_graph, canonical
from golden import run as golden_run

BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,7,7] x) => (float[N,3] y) {
  c = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (c)
  g = GlobalAveragePool (r)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
}
"""

AFTER = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,7,7] x) => (float[N,3] y, float[N,3] "r.exit0.logits") {
  c = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (c)
  g = GlobalAveragePool (r)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
  p = MaxPool <kernel_shape=[2,2], strides=[2,2], ceil_mode=1> (r)
  hc = Conv <kernel_shape=[1,1]> (p, cw, cb)
  hr = Relu (hc)
  hg = GlobalAveragePool (hr)
  hf = Flatten <axis=1> (hg)
  "r.exit0.logits" = Gemm <transB=1> (hf, hw, hb)
}
"""

AFTER_FEATURES = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,7,7] x) => (float[N,3] y, float[N,4,4,4] "r.exit0.feature") {
  c = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (c)
  g = GlobalAveragePool (r)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
  "r.exit0.feature" = MaxPool <kernel_shape=[2,2], strides=[2,2], ceil_mode=1> (r)
}
"""

RNG = np.random.default_rng(0)
WEIGHTS = {"w": RNG.normal(size=(4, 1, 3, 3)), "fw": RNG.normal(size=(3, 4)), "fb": RNG.normal(size=3)}
SPEC = HeadSpec("r", (4, 7, 7), (2, 2), 4, 3, backbone_macs=4 * 49 * 9)
HEAD_W = HeadWeights(fc_w=RNG.normal(size=(3, 4)), fc_b=RNG.normal(size=3),
                     conv_w=RNG.normal(size=(4, 4, 1, 1)), conv_b=RNG.normal(size=4))
HEAD_INITS = {"cw": HEAD_W.conv_w, "cb": HEAD_W.conv_b, "hw": HEAD_W.fc_w, "hb": HEAD_W.fc_b}


def _parse(text: str, inits: dict) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items())
    return model


def _before():
    return ir.from_model(_parse(BEFORE, WEIGHTS))


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return golden_run(model, {"x": x})


def _maxpool_ceil(a: np.ndarray, k: int) -> np.ndarray:
    n, c, h, w = a.shape
    hp, wp = -(-h // k), -(-w // k)
    padded = np.full((n, c, hp * k, wp * k), -np.inf, a.dtype)
    padded[:, :, :h, :w] = a
    return padded.reshape(n, c, hp, k, wp, k).max(axis=(3, 5))


def test_golden_insert_exits():
    graph = _before()
    before_text = canonical(ir.to_model(graph))
    after = ir.to_model(insert_exits(graph, heads=[ExitHead(SPEC, HEAD_W)]))
    assert_same_graph(after, _parse(AFTER, WEIGHTS | HEAD_INITS))
    assert canonical(ir.to_model(graph)) == before_text, "insert_exits mutated its input"
    onnx.checker.check_model(after, full_check=True)


def test_golden_expose_features():
    after = ir.to_model(expose_features(_before(), heads=[SPEC]))
    assert_same_graph(after, _parse(AFTER_FEATURES, WEIGHTS))
    onnx.checker.check_model(after, full_check=True)


UNPOOLED = HeadSpec("r", (4, 7, 7), (1, 1), None, 3, backbone_macs=0)
AFTER_FEATURES_UNPOOLED = AFTER_FEATURES.replace(
    '"r.exit0.feature" = MaxPool <kernel_shape=[2,2], strides=[2,2], ceil_mode=1> (r)',
    '"r.exit0.feature" = Identity (r)').replace("float[N,4,4,4]", "float[N,4,7,7]")


def test_golden_expose_features_unpooled_map():
    after = ir.to_model(expose_features(_before(), heads=[UNPOOLED]))
    assert_same_graph(after, _parse(AFTER_FEATURES_UNPOOLED, WEIGHTS))
    onnx.checker.check_model(after, full_check=True)
    x = RNG.normal(size=(3, 1, 7, 7)).astype(np.float32)
    probe = ir.to_model(_before())
    probe.graph.output.append(onnx.ValueInfoProto(name="r"))
    np.testing.assert_array_equal(_run(after, x)["r.exit0.feature"], _run(probe, x)["r"])


def test_annotations_and_macs_match_annotate_cost():
    graph = insert_exits(_before(), heads=[ExitHead(SPEC, HEAD_W)])
    head_nodes = [n for n in graph.nodes if ir.get_ann(n, "role") == "exit"]
    assert [n.op for n in head_nodes] == ["MaxPool", "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    assert all(ir.get_ann(n, "exit") == 0 for n in head_nodes)
    assert sum(ir.get_ann(n, "macs") for n in head_nodes) == SPEC.head_macs == 4 * 4 * 16 + 3 * 4
    costed = annotate_cost(graph)
    assert {n.name: ir.get_ann(n, "macs") for n in costed.nodes if ir.get_ann(n, "role") == "exit"} == \
           {n.name: ir.get_ann(n, "macs") for n in head_nodes}
    # annotations go to metadata_props on disk
    metas = [{p.key: p.value for p in n.metadata_props} for n in ir.to_model(graph).graph.node]
    assert [m.get("pkg.eecc.role") for m in metas].count('"exit"') == 6


def test_numerics_original_output_bit_identical_and_head_matches_numpy():
    x = RNG.normal(size=(5, 1, 7, 7)).astype(np.float32)
    base = _run(ir.to_model(_before()), x)
    probe = ir.to_model(_before())
    probe.graph.output.append(onnx.ValueInfoProto(name="r"))
    r = _run(probe, x)["r"]
    outs = _run(ir.to_model(insert_exits(_before(), heads=[ExitHead(SPEC, HEAD_W)])), x)
    assert np.array_equal(outs["y"], base["y"])
    p = _maxpool_ceil(r, 2)
    h = np.maximum(np.einsum("oc,nchw->nohw", HEAD_W.conv_w[:, :, 0, 0], p) + HEAD_W.conv_b[None, :, None, None], 0)
    want = h.mean(axis=(2, 3)) @ HEAD_W.fc_w.T + HEAD_W.fc_b
    np.testing.assert_allclose(outs["r.exit0.logits"], want, rtol=1e-5, atol=1e-5)
    feats = _run(ir.to_model(expose_features(_before(), heads=[SPEC])), x)
    assert feats["r.exit0.feature"].dtype == np.float32
    np.testing.assert_array_equal(feats["r.exit0.feature"], p)


def test_head_without_conv_or_pool_is_blueprint_only():
    spec = HeadSpec("r", (4, 7, 7), (1, 1), None, 3, backbone_macs=0)
    w = HeadWeights(fc_w=HEAD_W.fc_w, fc_b=HEAD_W.fc_b)
    graph = insert_exits(_before(), heads=[ExitHead(spec, w)])
    ops = [n.op for n in graph.nodes if ir.get_ann(n, "role") == "exit"]
    assert ops == ["GlobalAveragePool", "Flatten", "Gemm"]
    x = RNG.normal(size=(2, 1, 7, 7)).astype(np.float32)
    probe = ir.to_model(_before())
    probe.graph.output.append(onnx.ValueInfoProto(name="r"))
    r = _run(probe, x)["r"]
    out = _run(ir.to_model(graph), x)["r.exit0.logits"]
    np.testing.assert_allclose(out, r.mean(axis=(2, 3)) @ w.fc_w.T + w.fc_b, rtol=1e-5, atol=1e-5)


def test_rejects_unknown_tensor_shape_mismatch_and_bad_weights():
    with pytest.raises(EeccError, match="'nope' is not an activation"):
        insert_exits(_before(), heads=[ExitHead(HeadSpec("nope", (4, 7, 7), (2, 2), 4, 3, 0), HEAD_W)])
    with pytest.raises(EeccError, match="designed for"):
        insert_exits(_before(), heads=[ExitHead(HeadSpec("r", (4, 8, 8), (2, 2), 4, 3, 0), HEAD_W)])
    bad = HeadWeights(fc_w=HEAD_W.fc_w, fc_b=HEAD_W.fc_b, conv_w=np.zeros((2, 4, 1, 1)), conv_b=np.zeros(2))
    with pytest.raises(EeccError, match="conv_w has shape"):
        insert_exits(_before(), heads=[ExitHead(SPEC, bad)])


# Two heads on one tensor (shared_tensors=True, the int8 search's evaluation graph): SPEC's head as exit 0 and a
# blueprint head (GAP → Flatten → Gemm) as exit 1, each wired to r and to its own output.
AFTER_SHARED = AFTER.replace('(float[N,3] y, float[N,3] "r.exit0.logits")',
                             '(float[N,3] y, float[N,3] "r.exit0.logits", float[N,3] "r.exit1.logits")').replace(
    '  "r.exit0.logits" = Gemm <transB=1> (hf, hw, hb)\n',
    '  "r.exit0.logits" = Gemm <transB=1> (hf, hw, hb)\n  bg = GlobalAveragePool (r)\n'
    '  bf = Flatten <axis=1> (bg)\n  "r.exit1.logits" = Gemm <transB=1> (bf, bw, bb)\n')
BLUEPRINT_W = HeadWeights(fc_w=RNG.normal(size=(3, 4)), fc_b=RNG.normal(size=3))
SHARED_HEADS = [ExitHead(SPEC, HEAD_W), ExitHead(UNPOOLED, BLUEPRINT_W)]


def test_golden_two_heads_on_one_tensor_only_when_asked():
    graph = _before()
    before_text = canonical(ir.to_model(graph))
    with pytest.raises(EeccError, match="more than one head on the same tensor"):
        insert_exits(graph, heads=SHARED_HEADS)  # a deployed model keeps one exit per tensor
    after = ir.to_model(insert_exits(graph, heads=SHARED_HEADS, shared_tensors=True))
    assert_same_graph(after, _parse(AFTER_SHARED, WEIGHTS | HEAD_INITS | {"bw": BLUEPRINT_W.fc_w,
                                                                          "bb": BLUEPRINT_W.fc_b}))
    assert canonical(ir.to_model(graph)) == before_text, "insert_exits mutated its input"
    onnx.checker.check_model(after, full_check=True)
    exits = {ir.get_ann(n, "exit") for n in insert_exits(graph, heads=SHARED_HEADS, shared_tensors=True).nodes
             if ir.get_ann(n, "role") == "exit"}
    assert exits == {0, 1}


def test_numerics_two_heads_on_one_tensor_equal_each_head_alone():
    x = RNG.normal(size=(4, 1, 7, 7)).astype(np.float32)
    both = _run(ir.to_model(insert_exits(_before(), heads=SHARED_HEADS, shared_tensors=True)), x)
    alone0 = _run(ir.to_model(insert_exits(_before(), heads=SHARED_HEADS[:1])), x)
    np.testing.assert_array_equal(both["y"], alone0["y"])
    np.testing.assert_array_equal(both["r.exit0.logits"], alone0["r.exit0.logits"])
    probe = ir.to_model(_before())
    probe.graph.output.append(onnx.ValueInfoProto(name="r"))
    r = _run(probe, x)["r"]
    want = r.mean(axis=(2, 3)) @ BLUEPRINT_W.fc_w.T + BLUEPRINT_W.fc_b
    np.testing.assert_allclose(both["r.exit1.logits"], want, rtol=1e-5, atol=1e-5)
