"""Cost features of 1-D layers: convs counted as the H = 1 tiles the lowering runs them as, and the per-output divide
of TVM's 1-D average pool in int8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eecc.cost.features import graph_features, named
from tests.test_cost_model import CONV1D, _model

AVG = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 4, 20] x) => (float[N, 4, 5] y, float[N, 4, 2, 2] z) <float[4, 4, 1] w> {
  c = Conv (x, w)
  y = AveragePool <kernel_shape = [4], strides = [4]> (c)
  r = Reshape (c, shape)
  z = AveragePool <kernel_shape = [2, 5], strides = [2, 5]> (r)
}
"""


def test_1d_convolutions_are_counted_as_the_h1_tiles_they_run():
    """An M4F-class core runs NCW convs with conv2d_f32 as H = 1 planes (TVM's conv1d spilled at 6.6-8.2
    instructions per MAC); the int8 lowering gives them mcu_kernels' tiles (test_kernel_choice_agrees_with_the_lowering)."""
    pytest.importorskip("tvm")
    import tvm

    from eecc.targets import cortex_m, tvm_import

    model = _model(CONV1D)
    for cpu, tiles in (("cortex-m4", 2), ("cortex-m0plus", 0)):
        stage = tvm_import.lower_stage(model, tvm.target.Target(cortex_m.CPUS[cpu]["target"]))
        assert sum(k.startswith("conv2d_f32") for k, _ in stage.calls) == tiles, (cpu, stage.calls)
    m4f = named(graph_features(model), "cortex-m4", "fp32")
    assert m4f["conv_macs"] == 0 and m4f["tile_body"] == 10 * 4 * 20 + 5 * 3 * 24  # pairs x channel pairs x K
    assert m4f["tile_col"] == 2 * 10 * 20 + 2 * 5 * 24 and m4f["tile_acc"] == 10 * 4 + 5 * 3
    m0 = named(graph_features(model), "cortex-m0plus", "fp32")
    assert m0["conv_macs"] == 8 * 20 * 4 * 5 + 6 * 10 * 8 * 3 and m0["tile_body"] == 0
    m4 = named(graph_features(model), "cortex-m4", "int8")  # SMLAD bodies: ⌈K/4⌉ per pixel pair, channel pair
    assert m4["tile_body"] == 10 * 4 * 5 + 5 * 3 * 6 and m4["conv_macs"] == 0
    m0 = named(graph_features(model), "cortex-m0plus", "int8")  # the plain tile: one channel at a time
    assert m0["tile_body"] == 10 * 8 * 5 + 5 * 6 * 6 and m0["tile_acc"] == 10 * 8 + 5 * 6


def test_int8_1d_average_pools_count_a_divide_per_output():
    """TVM's avg_pool1d divides each output by its window count (a soft-float divide on the M0+: cnn1d's flat-avg head
    pieces were 38 % under without it), its 2-D pool does not; fp32 leaves it to the pool weight."""
    model = _model(AVG)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, 4, 4, 5], np.int64), "shape"))
    for cpu in ("cortex-m0plus", "cortex-m4"):
        assert named(graph_features(model), cpu, "int8")["pool_div"] == 4 * 5  # y only
        assert named(graph_features(model), cpu, "fp32")["pool_div"] == 0
