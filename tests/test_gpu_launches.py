"""The kernel launches the cost model charges a host-driven GPU (eecc/cost/segments.py overhead_s) are the kernels
TVM's operator fusion leaves, as many as the Mali launch plan holds (nu15 F6: a MobileNet-style stage was charged
17 launches, Clip and HardSigmoid + Mul counted as kernels of their own, where the plan has 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.cost.features import graph_features, named
from eecc.cost.segments import overhead_s
from eecc.targets import mali
from eecc.targets.platform import load_platform

FIXTURES = Path(__file__).parent / "fixtures" / "models"


def mobilenet_style() -> onnx.ModelProto:
    """Conv + Clip (ReLU6), depthwise conv + HardSigmoid · x (decomposed HardSwish), pointwise conv + a residual Add
    of the ReLU6 output, global pool, Gemm: the ops of nu15's mbn11."""
    rng = np.random.default_rng(3)
    n = helper.make_node
    inits = {"w1": rng.normal(0, .4, (8, 1, 3, 3)), "b1": rng.normal(0, .1, 8), "lo": np.array(0.0),
             "hi": np.array(6.0), "wd": rng.normal(0, .4, (8, 1, 3, 3)), "bd": rng.normal(0, .1, 8),
             "wp": rng.normal(0, .3, (8, 8, 1, 1)), "bp": rng.normal(0, .1, 8), "fc": rng.normal(0, .3, (10, 8)),
             "fcb": rng.normal(0, .1, 10)}
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Clip", ["c1", "lo", "hi"], ["r1"]),
             n("Conv", ["r1", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=8),
             n("HardSigmoid", ["cd"], ["hs"], alpha=1 / 6), n("Mul", ["cd", "hs"], ["sw"]),
             n("Conv", ["sw", "wp", "bp"], ["cp"]), n("Add", ["cp", "r1"], ["res"]),
             n("GlobalAveragePool", ["res"], ["g"]), n("Flatten", ["g"], ["f"]),
             n("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "mobilenet_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("name", ["mobilenet_style", "dscnn", "resnet"])
def test_charged_launches_are_the_kernels_of_the_mali_plan(name, tmp_path):
    model = mobilenet_style() if name == "mobilenet_style" else onnx.load(FIXTURES / f"{name}.onnx")
    launches = mali.compile_stage(model, out_dir=tmp_path).extra["launches"]
    features = graph_features(model)
    gpu = named(features, "gpu", "fp32")
    assert gpu["kernels"] == launches
    proc = load_platform("rk3588").processor("gpu")
    x = int(np.prod([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]))
    classes = 10
    assert gpu["in_work"] == x and gpu["io_out"] == classes
    assert overhead_s(proc, features) == pytest.approx(proc.launch_s * launches
                                                       + proc.transfer_s_per_byte * 4 * (x + classes))
    if name == "mobilenet_style":  # Conv+Clip, dw Conv+HardSigmoid+Mul, pw Conv+Add, the pool, the Gemm
        assert launches == 5
