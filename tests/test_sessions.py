"""runtime/sessions.py: an int8 (QDQ) model runs without onnxruntime's int8 kernel fusions, so its outputs are
the QDQ graph's own arithmetic (ORT_DISABLE_ALL's) on every CPU; a float model keeps every optimisation."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eecc.runtime.sessions import is_quantized, session_options


def _qdq_conv(cin: int = 8, cout: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Q → DQ → Conv (per-channel int8 weights over the full range) → Q → DQ: the pattern onnxruntime fuses into
    QLinearConv at ORT_ENABLE_EXTENDED, whose AVX2 (no VNNI) kernel saturated 54 % of these outputs on the
    machine this was found on (2026-12-01, AMD EPYC)."""
    w = np.random.default_rng(seed).integers(-127, 128, (cout, cin, 3, 3)).astype(np.int8)
    init = [numpy_helper.from_array(np.array(0.01, np.float32), "xs"), numpy_helper.from_array(np.array(-128, np.int8), "xz"),
            numpy_helper.from_array(w, "wq"), numpy_helper.from_array(np.full(cout, 0.01, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(cout, np.int8), "wz"),
            numpy_helper.from_array(np.array(0.5, np.float32), "ys"), numpy_helper.from_array(np.array(0, np.int8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cout, 12, 12])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The QDQ graph evaluated node by node in numpy: DQ(Q(x)), the int8 weights' float values, a float conv, Q."""
    xs, ys = 0.01, 0.5
    xq = np.clip(np.rint(x / xs) - 128, -128, 127)
    xd = (xq + 128) * xs
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "wq")).astype(np.float64) * 0.01
    pad = np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([pad[:, :, i:i + 12, j:j + 12] for i in range(3) for j in range(3)], axis=2)  # [N, C, 9, H, W]
    conv = np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], w.shape[1], 9))
    return (np.clip(np.rint(conv / ys), -128, 127) * ys).astype(np.float32)


def test_an_int8_model_runs_as_its_qdq_graph_says():
    model = _qdq_conv()
    x = np.random.default_rng(1).uniform(0, 2.55, (4, 8, 12, 12)).astype(np.float32)
    opts = session_options(model=model)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    y = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    off = ort.InferenceSession(model.SerializeToString(), session_options(optimize=False),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, off)
    # the numpy reference may land one step away where float32 and float64 round a tie differently
    assert np.mean(np.abs(y - _reference(model, x)) > 1e-6) < 1e-3


def test_a_float_model_keeps_every_optimisation_and_is_told_apart(tmp_path):
    model = _qdq_conv()
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    assert session_options(model=plain).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    onnx.save(model, tmp_path / "q.onnx")
    assert is_quantized(tmp_path / "q.onnx") and not is_quantized(plain)
