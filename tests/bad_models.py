"""Odd ONNX models for the bad-input catalogue (tests/test_bad_inputs.py): each one a mistake or an export a user
brings, built in memory from tests/fixtures/models/cnn.onnx or from scratch (deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


def tiny(inputs: int = 1, outputs: int = 1, head: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Conv (+ GlobalAveragePool + Flatten + Gemm when head) on [N,1,8,8]; extra inputs/outputs on demand."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], rng.standard_normal(36).tolist()),
             helper.make_tensor("fw", TensorProto.FLOAT, [10, 4], rng.standard_normal(40).tolist()),
             helper.make_tensor("fb", TensorProto.FLOAT, [10], [0.0] * 10)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])]
    if inputs == 2:
        ins.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4, 8, 8]))
        nodes.append(helper.make_node("Add", ["r", "x2"], ["r2"]))
    last = "r2" if inputs == 2 else "r"
    if head:
        nodes += [helper.make_node("GlobalAveragePool", [last], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
                  helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1)]
        outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    else:
        outs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["N", 4, 8, 8])]
    if outputs == 2:
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4, 8, 8]))
    graph = helper.make_graph(nodes, "tiny", ins, outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def signal_1d(length: str | int = "L") -> onnx.ModelProto:
    """A 1-D signal model whose per-sample input is rank 1, [N, L]: Unsqueeze to [N, 1, L], three Conv1d + Relu,
    GlobalAveragePool, Flatten, Gemm to 3 classes (random weights; shapes only)."""
    rng = np.random.default_rng(0)
    inits, nodes, last, cin = [], [helper.make_node("Unsqueeze", ["x", "ax"], ["u"])], "u", 1
    inits.append(helper.make_tensor("ax", TensorProto.INT64, [1], [1]))
    for i in range(3):
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, [8, cin, 3], rng.standard_normal(8 * cin * 3)))
        nodes += [helper.make_node("Conv", [last, f"w{i}"], [f"c{i}"], pads=[1, 1], strides=[2]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        last, cin = f"r{i}", 8
    inits += [helper.make_tensor("fw", TensorProto.FLOAT, [3, 8], rng.standard_normal(24)),
              helper.make_tensor("fb", TensorProto.FLOAT, [3], [0.0] * 3)]
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "signal_1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", length])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def leaky() -> onnx.ModelProto:
    """cnn.onnx with LeakyRelu for its first Relu: an op the fine-tuning interpreter lacks (nu10: refused only
    after the search)."""
    m = onnx.load(str(CNN))
    next(n for n in m.graph.node if n.op_type == "Relu").op_type = "LeakyRelu"
    return m


def tokens(embedded: bool = False) -> onnx.ModelProto:
    """int64 token ids [N, 8] -> Gather from a 17x4 embedding -> Transpose [N, 4, 8] -> Conv1d + Relu -> GAP -> Gemm
    (nu10: an Embedding model was accepted and its data refused with advice that could not work); `embedded`:
    the advised export, from the embedding's output on (float [N, 8, 4])."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("emb", TensorProto.FLOAT, [17, 4], rng.standard_normal(68).tolist()),
             helper.make_tensor("w", TensorProto.FLOAT, [6, 4, 3], rng.standard_normal(72).tolist()),
             helper.make_tensor("fw", TensorProto.FLOAT, [10, 6], rng.standard_normal(60).tolist())]
    nodes = [helper.make_node("Transpose", ["e"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw"], ["logits"], transB=1)]
    inits.append(helper.make_tensor("w2", TensorProto.FLOAT, [6, 6, 3], rng.standard_normal(108).tolist()))
    if embedded:
        ins = [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 8, 4])]
    else:
        nodes.insert(0, helper.make_node("Gather", ["emb", "ids"], ["e"]))
        ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 8])]
    graph = helper.make_graph(nodes, "tok", ins, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def without_data(d: Path) -> str:
    """cnn.onnx saved with its weights in 'cnn.onnx.data', copied without that file (nu8: a dynamo export moved
    without its .onnx.data was called truncated or foreign)."""
    onnx.save(onnx.load(str(CNN)), str(d / "cnn.onnx"), save_as_external_data=True, location="cnn.onnx.data",
              size_threshold=0)
    (d / "moved").mkdir()
    (d / "cnn.onnx").rename(d / "moved" / "cnn.onnx")
    return "moved/cnn.onnx"


def one_value(both_logits: bool = False, sigmoid: bool = False) -> onnx.ModelProto:
    """cnn.onnx with a one-unit last Gemm: [N, 1], a regressor (nu8: taken for a "1 classes" classifier);
    `both_logits`: the advised fix, its output z exported as both logits, Concat(-z, z) = [N, 2]; `sigmoid`: a
    binary detector's export, Sigmoid(z) = [N, 1] (nu14 F4)."""
    from onnx import numpy_helper

    m = onnx.load(str(CNN))
    gemm = [n for n in m.graph.node if n.op_type == "Gemm"][-1]
    for init in m.graph.initializer:
        if init.name in gemm.input[1:]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:1], init.name))
    out = m.graph.output[0]
    out.type.tensor_type.shape.dim[1].dim_value = 2 if both_logits else 1
    if both_logits:
        gemm.output[0] = "z"
        m.graph.node.extend([helper.make_node("Neg", ["z"], ["minus_z"]),
                             helper.make_node("Concat", ["minus_z", "z"], [out.name], axis=1)])
    elif sigmoid:
        gemm.output[0] = "z"
        m.graph.node.append(helper.make_node("Sigmoid", ["z"], [out.name]))
    return m


def symbolic_hw() -> onnx.ModelProto:
    m = onnx.load(str(CNN))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return m


def sklearn_like(model: onnx.ModelProto, *, zipmap: bool = True, classes=range(10), pre: str | None = None,
                 label_dtype: int = TensorProto.INT64) -> onnx.ModelProto:
    """`model` (one float output of class scores) with the outputs skl2onnx gives a classifier (nu11's
    MLPClassifier export): `output_label` = Cast(Reshape(ArrayFeatureExtractor(classes, ArgMax(p)))) and
    `output_probability` = ZipMap(p) (a sequence of maps), or `probabilities` = p itself without `zipmap`;
    p = Softmax(scores). `pre`: an ai.onnx.ml op (Scaler, Normalizer) in front, as a Pipeline exports."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    scores, x = g.output[0].name, g.input[0].name
    p = "probabilities" if not zipmap else "p"
    ml = {"domain": "ai.onnx.ml"}
    nodes = [helper.make_node("Softmax", [scores], [p], axis=1), helper.make_node("ArgMax", [p], ["am"], axis=1),
             helper.make_node("ArrayFeatureExtractor", ["classes", "am"], ["afe"], **ml),
             helper.make_node("Reshape", ["afe", "flat"], ["lab"]),
             helper.make_node("Cast", ["lab"], ["output_label"], to=label_dtype)]
    g.initializer.extend([helper.make_tensor("classes", TensorProto.INT64, [len(classes)], list(classes)),
                          helper.make_tensor("flat", TensorProto.INT64, [1], [-1])])
    outs = [helper.make_tensor_value_info("output_label", label_dtype, ["N"])]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", [p], ["output_probability"], classlabels_int64s=list(classes), **ml))
        outs.append(helper.make_value_info("output_probability", helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))))
    else:
        outs.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, ["N", len(classes)]))
    g.node.extend(nodes)
    if pre is not None:  # x -> pre -> the network
        for node in g.node:
            node.input[:] = ["x.pre" if i == x else i for i in node.input]
        attrs = {"Scaler": {"offset": [0.5], "scale": [2.0]}, "Normalizer": {"norm": "L2"}}.get(pre, {})
        g.node.insert(0, helper.make_node(pre, [x], ["x.pre"], **attrs, **ml))
    del g.output[:]
    g.output.extend(outs)
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3 if pre else 1))
    return m


def sklearn_estimator(op: str) -> onnx.ModelProto:
    """A classic scikit-learn classifier as skl2onnx exports it: `op` (LinearClassifier, TreeEnsembleClassifier)
    on [N, 64] giving label and probabilities, the probabilities through ZipMap."""
    ml = {"domain": "ai.onnx.ml"}
    attrs = {"LinearClassifier": dict(coefficients=[0.01] * 640, intercepts=[0.0] * 10,
                                      classlabels_ints=list(range(10)), post_transform="SOFTMAX"),
             "TreeEnsembleClassifier": dict(nodes_treeids=[0], nodes_nodeids=[0], nodes_featureids=[0],
                                            nodes_modes=["LEAF"], nodes_values=[0.0], nodes_truenodeids=[0],
                                            nodes_falsenodeids=[0], class_treeids=[0], class_nodeids=[0],
                                            class_ids=[0], class_weights=[1.0], classlabels_int64s=list(range(10)))}[op]
    nodes = [helper.make_node(op, ["x"], ["label", "p"], **attrs, **ml),
             helper.make_node("ZipMap", ["p"], ["output_probability"], classlabels_int64s=list(range(10)), **ml)]
    outs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_value_info("output_probability", helper.make_sequence_type_proto(
                helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))]
    graph = helper.make_graph(nodes, "sk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)])
