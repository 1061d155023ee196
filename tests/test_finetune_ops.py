"""The fine-tuning interpreter's ops added for nu14 F6 (Neg, Transpose, LayerNormalization, Gelu, Erf, Tanh, Sqrt,
Pow): each one-node graph run by eecc.train.finetune.OnnxModule matches onnxruntime (ORT_DISABLE_ALL), and the
weights of LayerNormalization get gradients while Pow's exponent stays fixed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from eecc.cli import main
from eecc.examples import datasets
from eecc.train.finetune import OnnxModule

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"

RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 3, 4, 6)).astype(np.float32)
SCALE, BIAS = RNG.standard_normal(6).astype(np.float32), RNG.standard_normal(6).astype(np.float32)
SCALE2 = RNG.standard_normal((4, 6)).astype(np.float32)

# op, inputs after x, initializers, attrs, output shape, opset
CASES = {
    "neg": ("Neg", [], {}, {}, [5, 3, 4, 6], 17),
    "transpose-nhwc": ("Transpose", [], {}, {"perm": [0, 2, 3, 1]}, [5, 4, 6, 3], 17),
    "transpose-default": ("Transpose", [], {}, {}, [6, 4, 3, 5], 17),
    "layernorm-last": ("LayerNormalization", ["s", "b"], {"s": SCALE, "b": BIAS}, {"epsilon": 1e-5}, [5, 3, 4, 6], 17),
    "layernorm-axis2-no-bias": ("LayerNormalization", ["s2"], {"s2": SCALE2}, {"axis": 2, "epsilon": 1e-3},
                                [5, 3, 4, 6], 17),
    "gelu-erf": ("Gelu", [], {}, {}, [5, 3, 4, 6], 20),
    "gelu-tanh": ("Gelu", [], {}, {"approximate": "tanh"}, [5, 3, 4, 6], 20),
    "erf": ("Erf", [], {}, {}, [5, 3, 4, 6], 17),
    "tanh": ("Tanh", [], {}, {}, [5, 3, 4, 6], 17),
    "sqrt-of-square": ("Pow", ["two"], {"two": np.array(2.0, np.float32)}, {}, [5, 3, 4, 6], 17),
    "pow-int-exponent": ("Pow", ["three"], {"three": np.array(3, np.int64)}, {}, [5, 3, 4, 6], 17),
}


def _model(op, inputs, inits, attrs, shape, opset) -> onnx.ModelProto:
    nodes = [helper.make_node(op, ["x", *inputs], ["y"], name=f"the_{op}", **attrs)]
    if op == "Pow" and inputs == ["two"]:  # Sqrt(Pow(x, 2)) = |x|: both ops in one graph
        nodes = [helper.make_node("Pow", ["x", "two"], ["sq"], name="the_pow"),
                 helper.make_node("Sqrt", ["sq"], ["y"], name="the_sqrt")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N" if shape[0] == 5 else 6,
                                                                                  *shape[1:]])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case):
    model = _model(*CASES[case])
    with torch.no_grad():
        (got,) = OnnxModule(gs.import_onnx(model))(torch.from_numpy(X))
    want = _ort(model, X)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=1e-5)


def test_layernorm_scale_and_bias_are_trained_and_pows_exponent_is_not():
    module = OnnxModule(gs.import_onnx(_model(*CASES["layernorm-last"])))
    assert set(module.keys) == {"s", "b"}
    module(torch.from_numpy(X))[0].square().sum().backward()
    assert all(module.params[k].grad.abs().sum() > 0 for k in module.keys.values())
    assert OnnxModule(gs.import_onnx(_model(*CASES["sqrt-of-square"]))).keys == {}


def binary_detector(cnn: onnx.ModelProto, positive: int = 0) -> onnx.ModelProto:
    """The digits CNN as a one-logit "digit `positive` vs the rest" detector, exported as eecc's advice for a
    single-logit model says: torch.cat([-z, z], 1), i.e. Neg + Concat (nu14's bag2.onnx). z = the class logit minus
    the mean of the others, so class 1 of the output is "is `positive`"."""
    m = onnx.ModelProto()
    m.CopyFrom(cnn)
    gemm = m.graph.node[-1]
    inits = {t.name: t for t in m.graph.initializer}
    w, b = (numpy_helper.to_array(inits[n]) for n in gemm.input[1:3])
    others = [k for k in range(len(b)) if k != positive]
    inits[gemm.input[1]].CopyFrom(numpy_helper.from_array((w[positive] - w[others].mean(0))[None], gemm.input[1]))
    inits[gemm.input[2]].CopyFrom(numpy_helper.from_array(np.array([b[positive] - b[others].mean()], np.float32),
                                                          gemm.input[2]))
    out = m.graph.output[0]
    gemm.output[0] = "z"
    m.graph.node.extend([helper.make_node("Neg", ["z"], ["minus_z"], name="Neg_8"),
                         helper.make_node("Concat", ["minus_z", "z"], [out.name], name="Concat_9", axis=1)])
    out.type.tensor_type.shape.dim[1].dim_value = 2
    onnx.checker.check_model(m, full_check=True)
    return m


def test_finetune_compiles_a_detector_exported_as_eecc_advises(tmp_path, capsys):
    """nu14 F6: --finetune-epochs refused the Neg that eecc's own advice for a single-logit model,
    torch.cat([-z, z], 1), exports. Now the detector compiles, fine-tuned, and its last stage keeps the Neg."""
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    onnx.save(binary_detector(onnx.load(str(CNN))), str(tmp_path / "zero.onnx"))
    data = {k: ((v == 0).astype(np.int64) if k.startswith("y_") else v) for k, v in datasets.load("digits").items()}
    np.savez(tmp_path / "zero.npz", **data)
    code = main(["compile", str(tmp_path / "zero.onnx"), "--data", str(tmp_path / "zero.npz"), "--search",
                 "--objective", "macs", "--finetune-epochs", "1", "--no-codegen", "--no-report", "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["finetune"]["epochs"] == 1 and len(manifest["stages"]) >= 2
    last = onnx.load(str(tmp_path / "b" / manifest["stages"][-1]["file"]))
    assert "Neg" in {n.op_type for n in last.graph.node}
