"""The head family: golden graphs of the new kinds, ONNX = torch per head, MACs, admission and Pareto choice."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from eecc.model import ir
from eecc.exits.family import admitted, choose, family, pareto, promising
from eecc.exits.heads import Design, ExitHead, HeadSpec, design_heads
from eecc.passes.annotate_cost import annotate_cost
from eecc.passes.insert_exits import insert_exits
from eecc.train.modules import HeadModule, export, predict
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

AFTER_FLAT = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,7,7] x) => (float[N,3] y, float[N,3] "r.exit0.logits") {
  c = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (c)
  g = GlobalAveragePool (r)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
  p = AveragePool <kernel_shape=[2,2], strides=[2,2], ceil_mode=1> (r)
  hf = Flatten <axis=1> (p)
  "r.exit0.logits" = Gemm <transB=1> (hf, hw, hb)
}
"""

AFTER_MLP = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,7,7] x) => (float[N,3] y, float[N,3] "r.exit0.logits") {
  c = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (c)
  g = GlobalAveragePool (r)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
  p = AveragePool <kernel_shape=[4,4], strides=[4,4], ceil_mode=1> (r)
  hf = Flatten <axis=1> (p)
  hh = Gemm <transB=1> (hf, uw, ub)
  hr = Relu (hh)
  "r.exit0.logits" = Gemm <transB=1> (hr, hw, hb)
}
"""

RNG = np.random.default_rng(0)
WEIGHTS = {"w": RNG.normal(size=(4, 1, 3, 3)), "fw": RNG.normal(size=(3, 4)), "fb": RNG.normal(size=3)}
BLUEPRINT = HeadSpec("r", (4, 7, 7), (2, 2), 4, 3, backbone_macs=4 * 49 * 9)


def _model(text: str, inits: dict) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items())
    return model


def _trained_like(spec: HeadSpec, seed: int = 0) -> HeadModule:
    """A head with random weights and a non-trivial standardisation (export must fold it in)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = HeadModule(spec, rng.normal(size=spec.channels).astype(np.float32),
                        rng.uniform(0.5, 2.0, spec.channels).astype(np.float32))
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return module


def test_family_covers_the_kinds_and_keys_each_pooled_map_once():
    fam = family(BLUEPRINT)
    assert [s.design for s in fam] == ["gap max4x4 conv4", "flat avg2x2", "flat max2x2", "flat avg2x2 conv4",
                                       "flat avg4x4", "flat max4x4", "flat avg4x4 conv4", "mlp avg2x2 h32"]
    assert len({s.feature_key for s in fam}) == 4  # avg/max × 2x2/4x4; the blueprint shares max 4x4
    flat = fam[4]
    assert flat.head_macs == 3 * 4 * 16 and flat.params == 3 * (4 * 16 + 1)
    mlp = fam[-1]
    assert mlp.head_macs == 32 * 4 * 4 + 3 * 32
    series = family(HeadSpec("s", (8, 30), (4,), 8, 2, backbone_macs=0))
    assert {s.pooled_shape for s in series[1:]} == {(8, 2), (8, 4)}  # per spatial dim for 1D


@pytest.mark.parametrize("which,text", [(4, AFTER_FLAT), (7, AFTER_MLP)])
def test_golden_new_kinds(which, text):
    spec = family(BLUEPRINT)[which]
    w = export(_trained_like(spec))
    graph = ir.from_model(_model(BEFORE, WEIGHTS))
    before = canonical(ir.to_model(graph))
    after = ir.to_model(insert_exits(graph, heads=[ExitHead(spec, w)]))
    inits = {"hw": w.fc_w, "hb": w.fc_b} | ({"uw": w.hid_w, "ub": w.hid_b} if spec.kind == "mlp" else {})
    assert_same_graph(after, _model(text, WEIGHTS | inits))
    assert canonical(ir.to_model(graph)) == before
    onnx.checker.check_model(after, full_check=True)


@pytest.mark.parametrize("which", range(8))
def test_every_head_onnx_equals_its_torch_logits(which):
    """ORT at ORT_DISABLE_ALL on the pooled map it computes itself vs the torch module: ≤ 1e-5."""
    spec = family(BLUEPRINT)[which]
    module = _trained_like(spec, seed=which)
    graph = insert_exits(ir.from_model(_model(BEFORE, WEIGHTS)), heads=[ExitHead(spec, export(module))])
    model = ir.to_model(graph)
    pooled = "r.exit0.pool" if spec.has_pool else "r"
    model.graph.output.append(onnx.ValueInfoProto(name=pooled))
    x = RNG.normal(size=(6, 1, 7, 7)).astype(np.float32)
    out = golden_run(model, {"x": x})
    with torch.no_grad():
        ref = module(torch.from_numpy(out[pooled])).numpy()
    np.testing.assert_allclose(out["r.exit0.logits"], ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["r.exit0.logits"], predict(module, out[pooled]), atol=1e-5, rtol=0)  # the trainer's path
    macs = {n.name: ir.get_ann(n, "macs") for n in annotate_cost(graph).nodes if ir.get_ann(n, "role") == "exit"}
    assert sum(macs.values()) == spec.head_macs  # the MAC counter agrees with the design's formula


def test_admission_keeps_budget_and_monotonic_exit_cost():
    cands = [("a", (16, 14, 14), 10_000), ("b", (32, 7, 7), 12_000), ("c", (64, 4, 4), 400_000)]
    design = design_heads(cands, num_classes=10, final_macs=1_000_000, budget=0.02)
    kept, skipped = admitted(design)
    assert all(s.head_macs <= design.budget_macs for fam in kept for s in fam[1:])
    for i in range(len(kept) - 1):  # any head at i exits no later in cost than the cheapest at i+1
        assert max(s.exit_macs for s in kept[i][1:]) <= min(s.exit_macs for s in kept[i + 1])
    assert any("next exit" in why for why in skipped.values())  # 'a' is 2k MACs before 'b'
    tiny = Design(design.heads, {}, budget_macs=300, final_macs=1_000_000)
    kept, skipped = admitted(tiny)
    assert any("budget" in why for why in skipped.values())


def test_pareto_and_choice():
    rows = [(0.80, 100), (0.85, 400), (0.84, 500), (0.85, 300), (0.70, 50)]
    front = pareto(rows)
    assert front == [True, False, False, True, True]
    assert choose(rows, front) == 3


def test_halving_keeps_each_locations_first_epoch_front():
    fam = family(BLUEPRINT)
    other = [replace(s, tensor="q") for s in fam[:3]]
    specs = fam[:4] + other
    # at r: flat avg2x2 (cheapest) and flat avg2x2 conv4 (more accurate) go on, the blueprint is dearer and
    # worse; flat max2x2 has avg2x2's MACs: it stops 5 pt behind, goes on 1 pt behind with 100 validation
    # samples (one standard error of 0.80 is 4 pt) but not with 10 000 (0.4 pt); at q the dropped head stops
    first = [0.70, 0.80, 0.75, 0.90, 0.65, None, 0.6]
    assert promising(specs, first, 10_000) == [False, True, False, True, True, False, True]
    near = first[:2] + [0.79] + first[3:]
    assert promising(specs, near, 100) == [False, True, True, True, True, False, True]
    assert promising(specs, near, 10_000) == [False, True, False, True, True, False, True]
    # a dearer head gets no slack against a cheaper one: the conv head 0.1 pt behind avg2x2 stops
    assert promising(specs, first[:3] + [0.799] + first[4:], 100)[3] is False


# An MLP's hidden vector r [N, 5]: nothing to pool, so its family is the linear head and the two-layer MLP.
BEFORE_VECTOR = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,6] x) => (float[N,3] y) {
  h = Gemm <transB=1> (x, a)
  r = Relu (h)
  h2 = Gemm <transB=1> (r, b)
  r2 = Relu (h2)
  y = Gemm <transB=1> (r2, d)
}
"""
AFTER_VECTOR = {
    "flat": BEFORE_VECTOR.replace("float[N,3] y)", 'float[N,3] y, float[N,3] "r.exit0.logits")').replace(
        "  y = Gemm", '  hf = Flatten <axis=1> (r)\n  "r.exit0.logits" = Gemm <transB=1> (hf, hw, hb)\n  y = Gemm'),
    "mlp": BEFORE_VECTOR.replace("float[N,3] y)", 'float[N,3] y, float[N,3] "r.exit0.logits")').replace(
        "  y = Gemm", '  hf = Flatten <axis=1> (r)\n  hh = Gemm <transB=1> (hf, uw, ub)\n  hr = Relu (hh)\n'
                      '  "r.exit0.logits" = Gemm <transB=1> (hr, hw, hb)\n  y = Gemm'),
}
VECTOR_WEIGHTS = {"a": RNG.normal(size=(5, 6)), "b": RNG.normal(size=(5, 5)), "d": RNG.normal(size=(3, 5))}
VECTOR = design_heads([("r", (5,), 30)], num_classes=3, final_macs=30 + 25 + 15, budget=1.0).heads[0]


def test_an_mlp_hidden_vector_gets_the_linear_head_and_the_two_layer_mlp():
    fam = family(VECTOR)
    assert [s.design for s in fam] == ["flat vector", "mlp vector h32"]
    assert [s.head_macs for s in fam] == [3 * 5, 32 * 5 + 3 * 32] and fam[0].params == 3 * 6
    assert fam[0].feature_key == fam[1].feature_key  # one cached feature: the vector itself
    small = design_heads([("r", (64,), 1920)], num_classes=2, final_macs=6144)  # 2 % of 6,144 MACs: 122
    assert small.heads == [] and "bare Gemm head (128 MACs) exceeds the budget of 122 MACs" in small.rejected["r"]


@pytest.mark.parametrize("kind", ["flat", "mlp"])
def test_golden_and_numerics_of_heads_on_a_vector(kind):
    spec = next(s for s in family(VECTOR) if s.kind == kind)
    module = _trained_like(spec)
    w = export(module)
    graph = ir.from_model(_model(BEFORE_VECTOR, VECTOR_WEIGHTS))
    before = canonical(ir.to_model(graph))
    exits = insert_exits(graph, heads=[ExitHead(spec, w)])
    macs = [ir.get_ann(n, "macs") for n in annotate_cost(exits).nodes if ir.get_ann(n, "role") == "exit"]
    assert sum(macs) == spec.head_macs  # the MAC counter agrees with the design's formula
    after = ir.to_model(exits)
    inits = {"hw": w.fc_w, "hb": w.fc_b} | ({"uw": w.hid_w, "ub": w.hid_b} if kind == "mlp" else {})
    assert_same_graph(after, _model(AFTER_VECTOR[kind], VECTOR_WEIGHTS | inits))
    assert canonical(ir.to_model(graph)) == before
    after.graph.output.append(onnx.ValueInfoProto(name="r"))
    out = golden_run(after, {"x": RNG.normal(size=(6, 6)).astype(np.float32)})
    with torch.no_grad():
        np.testing.assert_allclose(out["r.exit0.logits"], module(torch.from_numpy(out["r"])).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["r.exit0.logits"], predict(module, out["r"]), atol=1e-5, rtol=0)  # the trainer's path
