"""eecc.model.ir: loading with clear errors, shape inference and its onnxruntime fallback, annotation round trip."""

import numpy as np
import onnx
import pytest

from eecc.model import ir
from eecc.errors import EeccError
from golden import parse, run

SMALL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] input) => (float[N, 4] logits) <float[4, 3, 3, 3] w, float[4, 4] fc>
{
    c = Conv<pads = [1, 1, 1, 1]>(input, w)
    r = Relu(c)
    p = GlobalAveragePool(r)
    f = Flatten(p)
    logits = MatMul(f, fc)
}
"""


def _with_weights(text: str) -> onnx.ModelProto:
    return parse(text)


def test_annotations_round_trip_through_metadata_props(tmp_path):
    graph = ir.from_model(_with_weights(SMALL))
    conv = next(n for n in graph.nodes if n.op == "Conv")
    ir.set_ann(conv, "macs", 6912)
    ir.set_ann(conv, "role", "backbone")
    path = ir.save(graph, tmp_path / "m.onnx")
    on_disk = onnx.load(str(path))
    onnx.checker.check_model(on_disk, full_check=True)
    props = {p.key: p.value for n in on_disk.graph.node for p in n.metadata_props}
    assert props == {"pkg.eecc.macs": "6912", "pkg.eecc.role": '"backbone"'}
    assert all(not a.name.startswith("eecc.") for n in on_disk.graph.node for a in n.attribute)
    again = ir.load(path)
    conv2 = next(n for n in again.nodes if n.op == "Conv")
    assert ir.annotations(conv2) == {"macs": 6912, "role": "backbone"}
    # to_model leaves the in-memory graph and its annotations alone
    assert ir.get_ann(conv, "macs") == 6912


def test_round_trip_keeps_numerics(tmp_path):
    model = _with_weights(SMALL)
    path = ir.save(ir.from_model(model), tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(onnx.load(str(path)), {"input": x})["logits"], run(model, {"input": x})["logits"])


def test_shapes_are_inferred_per_sample():
    graph = ir.from_model(_with_weights(SMALL))
    shapes = {t.name: ir.per_sample_shape(t) for t in graph.tensors().values() if isinstance(t, ir.gs.Variable)}
    assert shapes["r"] == (4, 8, 8) and shapes["f"] == (4,) and shapes["logits"] == (4,)


def test_dynamic_pad_shapes_come_from_onnxruntime():
    # The pad amounts are computed at run time, so static inference cannot know the Conv's output shape.
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 1, 6, 6] input) => (float[N, 2] logits) <float[2, 1, 3, 3] w, float[2, 2] fc>
    {
        s = Shape(input)
        z = Sub(s, s)
        pads = Concat<axis = 0>(z, z)
        padded = Pad(input, pads)
        c = Conv(padded, w)
        p = GlobalAveragePool(c)
        f = Flatten(p)
        logits = MatMul(f, fc)
    }
    """
    graph = ir.from_model(_with_weights(text))
    conv_out = next(n for n in graph.nodes if n.op == "Conv").outputs[0]
    assert ir.per_sample_shape(conv_out) == (2, 4, 4)


def test_input_shape_fixes_symbolic_dims():
    text = SMALL.replace("float[N, 3, 8, 8] input", "float[N, 3, H, W] input")
    with pytest.raises(EeccError, match="--input-shape"):
        ir.from_model(_with_weights(text))
    graph = ir.from_model(_with_weights(text), input_shape=[3, 8, 8])
    assert ir.per_sample_shape(graph.outputs[0]) == (4,)


@pytest.mark.parametrize("content, message", [
    (b"this is not a model\n", "not a readable ONNX model"),
    (None, "does not exist"),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EeccError, match=message):
        ir.load(path)


def test_truncated_model(tmp_path):
    data = _with_weights(SMALL).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EeccError, match="truncated"):
        ir.load(path)


def test_two_inputs_rejected():
    text = SMALL.replace("(float[N, 3, 8, 8] input)", "(float[N, 3, 8, 8] input, float[N, 4] extra)")
    with pytest.raises(EeccError, match="2 graph inputs"):
        ir.from_model(_with_weights(text))


def test_unsupported_opset_rejected():
    model = _with_weights(SMALL)
    model.opset_import[0].version = 7
    with pytest.raises(EeccError, match="opset 7"):
        ir.from_model(model)


def test_checker_failure_named():
    model = _with_weights(SMALL)
    model.graph.node[1].input[0] = "nowhere"
    with pytest.raises(EeccError, match="onnx.checker"):
        ir.from_model(model)


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(ir.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ir.save(_with_weights(SMALL), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_unnamed_nodes_get_deterministic_names():
    model = _with_weights(SMALL)
    for n in model.graph.node:
        n.name = ""
    names = [n.name for n in ir.from_model(model).nodes]
    assert names == ["Conv_0", "Relu_1", "GlobalAveragePool_2", "Flatten_3", "MatMul_4"]


def test_several_outputs_need_classifier_false():
    text = SMALL.replace("=> (float[N, 4] logits)", "=> (float[N, 4] logits, float[N, 4, 8, 8] r)")
    with pytest.raises(EeccError, match="2 graph outputs"):
        ir.from_model(_with_weights(text))
    assert len(ir.from_model(_with_weights(text), classifier=False).outputs) == 2
