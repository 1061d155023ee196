"""`--trainer nachos`: NACHOS heads with a confidence output, the learned gate, and a compiled cascade.

  1. insert_exits(confidences=): golden graph; the ONNX head equals `NachosExits` in torch (≤ 1e-5);
  2. insert_gates(metric="learned"): golden stage; exit = (head confidence ≥ ε) on onnxruntime;
  3. `compile_model(..., trainer="nachos")` on the cnn fixture: the cascade routes exactly as the
     policy evaluated on the bundle's own stage outputs, and ε > 1 reproduces the original model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from eecc.examples import datasets
from eecc.model import ir
from eecc.driver.compile import CompileOptions, compile_model
from eecc.search.search import SearchOptions
from eecc.errors import EeccError
from eecc.passes.assign_targets import assign_targets
from eecc.passes.insert_exits import insert_exits
from eecc.passes.insert_gates import attach_confidence, insert_gates
from eecc.passes.split_by_target import split_by_target
from eecc.runtime.cascade import Cascade
from eecc.targets.platform import load_platform
from eecc.train.nachos import NachosExits, export_nachos
from bundle_policy import assert_routes_as_policy
from golden import assert_same_graph
from golden import run as golden_run
from test_insert_exits import AFTER, SPEC, WEIGHTS, _before, _maxpool_ceil

MODELS = Path(__file__).parent / "fixtures" / "models"

CONF_NODES = """
  cg = GlobalAveragePool (p)
  cf = Flatten <axis=1> (cg)
  cp = Softmax <axis=1> (LOGITS)
  ct = ReduceMax <axes=[1], keepdims=1> (cp)
  ci = Concat <axis=1> (cf, ct)
  cz = Gemm <transB=1> (ci, qw, qb)
  cs = Sigmoid (cz)
  CONF = Reshape (cs, qshape)
"""
AFTER_CONF = AFTER.replace('float[N,3] "r.exit0.logits")', 'float[N,3] "r.exit0.logits", float[N] "r.exit0.confidence")') \
    .replace("\n}\n", CONF_NODES.replace("LOGITS", '"r.exit0.logits"').replace("CONF", '"r.exit0.confidence"') + "}\n")

STAGE0 = """
<ir_version: 8, opset_import: ["" : 17]>
stage0 (float[N,1,7,7] x) => (float[N,4,7,7] r, float[N,3] "exit0.logits", bool[N] "exit0.exit",
                              float[N] "exit0.confidence") {
  c = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (c)
  p = MaxPool <kernel_shape=[2,2], strides=[2,2], ceil_mode=1> (r)
  hc = Conv <kernel_shape=[1,1]> (p, cw, cb)
  hr = Relu (hc)
  hg = GlobalAveragePool (hr)
  hf = Flatten <axis=1> (hg)
  "exit0.logits" = Gemm <transB=1> (hf, hw, hb)
""" + CONF_NODES.replace("LOGITS", '"exit0.logits"').replace("CONF", '"exit0.confidence"') + """
  "exit0.exit" = GreaterOrEqual ("exit0.confidence", t)
}
"""


def _module(seed: int = 0) -> NachosExits:
    """NachosExits on SPEC with non-trivial standardisation and confidence weights."""
    rng = np.random.default_rng(seed)
    stats = [(rng.normal(size=SPEC.channels), rng.uniform(0.5, 2.0, size=SPEC.channels))]
    module = NachosExits([SPEC], stats)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module.eval()


def _parse(text: str, module: NachosExits, extra: dict | None = None) -> onnx.ModelProto:
    heads, ((qw, qb),) = export_nachos(module)
    w = heads[0].weights
    inits = {**WEIGHTS, "cw": w.conv_w, "cb": w.conv_b, "hw": w.fc_w, "hb": w.fc_b, "qw": qw.reshape(1, -1),
             "qb": np.array([qb]), **(extra or {})}
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items())
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "qshape"))
    return model


def _graph(module: NachosExits):
    heads, branches = export_nachos(module)
    return insert_exits(_before(), heads=heads, confidences=branches)


def _torch(module: NachosExits, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probe = ir.to_model(_before())
    probe.graph.output.append(onnx.ValueInfoProto(name="r"))
    pooled = _maxpool_ceil(golden_run(probe, {"x": x})["r"], 2)
    with torch.no_grad():
        z, c = module([torch.from_numpy(pooled.reshape(len(x), SPEC.channels, -1).transpose(0, 2, 1).copy())])
    return z[0].numpy(), c[0].numpy()


def _stage0(module: NachosExits, threshold: float):
    graph = _graph(module)
    stages = split_by_target(assign_targets(graph, cuts=["r"], processors=["m0plus", "m4"],
                                            platform=load_platform("psoc6")))
    return insert_gates(attach_confidence(stages[0], graph), threshold=threshold, metric="learned")


def test_golden_head_with_confidence():
    module = _module()
    after = ir.to_model(_graph(module))
    assert_same_graph(after, _parse(AFTER_CONF, module))
    onnx.checker.check_model(after, full_check=True)


def test_onnx_head_matches_the_torch_module():
    module = _module()
    x = np.random.default_rng(1).normal(size=(64, 1, 7, 7)).astype(np.float32)
    outs = golden_run(ir.to_model(_graph(module)), {"x": x})
    z, c = _torch(module, x)
    np.testing.assert_allclose(outs["r.exit0.logits"], z, atol=1e-5, rtol=0)
    np.testing.assert_allclose(outs["r.exit0.confidence"], c, atol=1e-5, rtol=0)
    assert 0 < c.std()  # the branch really depends on the sample


def test_golden_learned_gate():
    module = _module()
    stage = ir.to_model(_stage0(module, 0.4))
    assert_same_graph(stage, _parse(STAGE0, module, {"t": np.float32(0.4)}))
    onnx.checker.check_model(stage, full_check=True)


def test_learned_gate_exits_on_the_head_confidence():
    module = _module()
    x = np.random.default_rng(2).normal(size=(200, 1, 7, 7)).astype(np.float32)
    _, c = _torch(module, x)
    t = float(np.median(c))
    outs = golden_run(ir.to_model(_stage0(module, t)), {"x": x})
    np.testing.assert_allclose(outs["exit0.confidence"], c, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(outs["exit0.exit"], outs["exit0.confidence"] >= np.float32(t))
    assert 0 < outs["exit0.exit"].mean() < 1


def test_learned_gate_needs_the_head_confidence():
    graph = _graph(_module())
    stage = split_by_target(assign_targets(graph, cuts=["r"], processors=["m0plus", "m4"],
                                           platform=load_platform("psoc6")))[0]
    with pytest.raises(EeccError, match="attach_confidence"):
        insert_gates(stage, threshold=0.5, metric="learned")


# ---- the compiled bundle ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = MODELS / "cnn.onnx"
    assert path.exists(), "fixture cnn missing: run python tests/fixtures/make_fixtures.py"
    data = datasets.load(json.loads((MODELS / "cnn.json").read_text())["dataset"])
    root = tmp_path_factory.mktemp("nachos")
    options = CompileOptions(target="psoc6", out=root / "bundle", cache_dir=str(root / "cache"), codegen=False,
                             search_options=SearchOptions(objective="macs"),
                             progress=False, trainer="nachos")
    return path, data, options, compile_model(path, data, options)


def test_manifest_records_the_trainer(compiled):
    path, data, options, manifest = compiled
    assert manifest["trainer"] == "nachos" and manifest["confidence_metric"] == "learned"
    assert manifest["nachos"]["config"]["epochs"] >= 1 and len(manifest["nachos"]["history"]) >= 1
    measured = manifest["placement"]["metrics"]["measured"]
    assert measured["mean_macs"] < measured["original_macs"]
    assert measured["agreement_with_search"] >= 0.98                   # cached features vs the real graph


def test_cascade_routes_exactly_as_the_policy_evaluation(compiled):
    path, data, options, manifest = compiled
    res = assert_routes_as_policy(options.out, manifest, data["x_test"], data["y_test"],
                                  confidence="exit0.confidence")
    assert 0 < (res.exit_stage == 0).mean() < 1


def test_thresholds_above_one_reproduce_the_original_model(compiled, tmp_path):
    path, data, options, manifest = compiled
    never = tmp_path / "never"
    shutil.copytree(options.out, never)
    stage0 = onnx.load(str(never / manifest["stages"][0]["file"]))
    (threshold,) = [t for t in stage0.graph.initializer if t.name.endswith("threshold")]
    threshold.CopyFrom(numpy_helper.from_array(np.array(1.5, np.float32), threshold.name))
    onnx.save(stage0, str(never / manifest["stages"][0]["file"]))
    res = Cascade(never, optimize=False).run(data["x_test"])
    original = golden_run(onnx.load(str(path)), {"input": data["x_test"]})["logits"]
    assert (res.exit_stage == 1).all()
    np.testing.assert_allclose(res.logits, original, atol=1e-5, rtol=0)


@pytest.mark.parametrize("clash, kw", [("--decision ensemble", {}), ("--quantize", {"quantize": "int8"}),
                                       ("--finetune-epochs", {"finetune_epochs": 1})])
def test_trainer_nachos_refuses_clashing_options(tmp_path, clash, kw):
    from eecc.search.search import SearchOptions

    so = SearchOptions(decision="ensemble") if clash == "--decision ensemble" else SearchOptions()
    options = CompileOptions(target="psoc6", out=tmp_path / "b", codegen=False, progress=False, trainer="nachos",
                             search_options=so, **kw)
    with pytest.raises(EeccError, match=clash):
        compile_model(MODELS / "cnn.onnx", {}, options)


def test_confidence_branch_on_an_mlp_hidden_vector_reads_the_vector_itself():
    """One position: no GlobalAveragePool (it would reject [N, F]); golden graph, and ONNX = torch ≤ 1e-5."""
    from test_head_family import AFTER_VECTOR, BEFORE_VECTOR, VECTOR, VECTOR_WEIGHTS, _model

    rng = np.random.default_rng(0)
    module = NachosExits([VECTOR], [(rng.normal(size=VECTOR.channels), rng.uniform(0.5, 2.0, size=VECTOR.channels))])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    module.eval()
    heads, ((qw, qb),) = export_nachos(module)
    graph = insert_exits(ir.from_model(_model(BEFORE_VECTOR, VECTOR_WEIGHTS)), heads=heads, confidences=[(qw, qb)])
    conf = CONF_NODES.replace("  cg = GlobalAveragePool (p)\n  cf = Flatten <axis=1> (cg)\n", "").replace(
        "(cf, ct)", "(r, ct)").replace("LOGITS", '"r.exit0.logits"').replace("CONF", '"r.exit0.confidence"')
    text = AFTER_VECTOR["flat"].replace('float[N,3] "r.exit0.logits")',
                                        'float[N,3] "r.exit0.logits", float[N] "r.exit0.confidence")')
    want = _model(text.replace("\n}\n", conf + "}\n"), {**VECTOR_WEIGHTS, "hw": heads[0].weights.fc_w,
                                                        "hb": heads[0].weights.fc_b, "qw": qw.reshape(1, -1),
                                                        "qb": np.array([qb])})
    want.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "qshape"))
    after = ir.to_model(graph)
    assert_same_graph(after, want)
    after.graph.output.append(onnx.ValueInfoProto(name="r"))
    outs = golden_run(after, {"x": rng.normal(size=(32, 6)).astype(np.float32)})
    with torch.no_grad():
        z, c = module([torch.from_numpy(outs["r"][:, None, :].copy())])  # [N, positions = 1, F]
    np.testing.assert_allclose(outs["r.exit0.logits"], z[0].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(outs["r.exit0.confidence"], c[0].numpy(), atol=1e-5, rtol=0)
