"""flatten_output: golden graphs and onnxruntime checks; a conv classifier without Flatten reads as C classes (nu11 F13)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eecc.model import ir
from eecc.model.normalize import load
from eecc.passes.flatten_output import flatten_output
from golden import assert_same_graph, canonical, parse, run

POOL_BEFORE = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6, 6] x) => (float[N, 10, 1, 1] y) <float[10, 4, 1, 1] w> {
  z = Conv(x, w)
  y = GlobalAveragePool(z)
}
"""
POOL_AFTER = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6, 6] x) => (float[N, 10] y) <float[10, 4, 1, 1] w> {
  z = Conv(x, w)
  p = GlobalAveragePool(z)
  y = Flatten<axis = 1>(p)
}
"""
UNSQUEEZE_BEFORE = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8] x) => (float[N, 1, 10] y) <float[10, 8] w, float[10] b, int64[1] axes = {1}> {
  z = Gemm<transB = 1>(x, w, b)
  y = Unsqueeze(z, axes)
}
"""
UNSQUEEZE_AFTER = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8] x) => (float[N, 10] y) <float[10, 8] w, float[10] b> {
  y = Gemm<transB = 1>(x, w, b)
}
"""
TWO_DIMS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6, 6] x) => (float[N, 10, 6, 6] y) <float[10, 4, 1, 1] w> {
  y = Conv(x, w)
}
"""


@pytest.mark.parametrize("before, after, shape", [(POOL_BEFORE, POOL_AFTER, (3, 4, 6, 6)),
                                                  (UNSQUEEZE_BEFORE, UNSQUEEZE_AFTER, (3, 8))])
def test_flatten_output(before, after, shape):
    model = parse(before)
    snapshot = model.SerializeToString()
    got = flatten_output(model)
    assert model.SerializeToString() == snapshot, "the pass mutated its input"
    expected = parse(after)
    if "axes" in before:  # the unused axes initializer is left for fold_constants' cleanup
        got.graph.initializer.remove(next(i for i in got.graph.initializer if i.name == "axes"))
    assert_same_graph(got, expected)
    onnx.checker.check_model(got, full_check=True)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want, have = run(model, {"x": x})["y"], run(got, {"x": x})["y"]
    assert have.shape == (3, 10)
    np.testing.assert_array_equal(have, want.reshape(3, 10))


def test_an_output_with_two_per_sample_dims_over_1_is_left_alone():
    model = parse(TWO_DIMS)
    assert canonical(flatten_output(model)) == canonical(model)


def test_a_conv_classifier_without_flatten_reads_as_10_classes(tmp_path):
    """nu11 F13: [N, 10, 1, 1] was read as 1 class and `exits` blamed the labels."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 10, 1),
                              torch.nn.AdaptiveAvgPool2d(1))
    path = tmp_path / "out4d.onnx"
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    graph = load(path)
    assert [d for d in graph.outputs[0].shape[1:]] == [10]
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    want = net(torch.from_numpy(x)).detach().numpy().reshape(2, 10)
    np.testing.assert_allclose(run(ir.to_model(graph), {"x": x})["logits"], want, rtol=1e-5, atol=1e-6)
