"""Cortex-M4 3x3 depthwise convs at stride (sh, 1) through cdriver/dot_dsp.c's eecc_dw3_dsp, under QEMU bit for bit
against TVM's own integer lowering of the same stage on the host (the plain TIR kernel, another implementation)."""

from __future__ import annotations

import subprocess

import numpy as np

from eecc.targets import mcu_depthwise, quantize
from test_mcu_kernels import _host_reference, needs_arm


def dw3_stage() -> "onnx.ModelProto":
    """x [N, 6, 9, 4] -> dw 3x3 pads 1 (ow 4: pairs only) -> Relu -> dw 3x3 stride (2, 1), pads (0, 1, 2, 0)
    (bottom padding rows, a left padding column, ow 3: a pair and the odd last output) -> dw 3x3 pads (1, 1, 1, 0)
    (ow 2, the smallest the kernel takes). No Relu after the last two: their zero points are not -128."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.6).astype(np.float32), k) for k, s in
             {"w1": (6, 1, 3, 3), "b1": (6,), "w2": (6, 1, 3, 3), "b2": (6,), "w3": (6, 1, 3, 3), "b3": (6,)}.items()]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=6), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[0, 1, 2, 0], strides=[2, 1], group=6),
             n("Conv", ["c2", "w3", "b3"], ["y"], pads=[1, 1, 1, 0], group=6)]
    graph = helper.make_graph(nodes, "dw3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 9, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 5, 2]),
                               helper.make_tensor_value_info("c2", TensorProto.FLOAT, ["N", 6, 5, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@needs_arm
def test_m4_dw3_kernel_is_bit_exact_on_padding_strides_and_odd_widths(tmp_path):
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    x = np.random.default_rng(12).standard_normal((40, 6, 9, 4)).astype(np.float32)
    model = quantize.quantize_stage(dw3_stage(), {"x": x[:24]})
    got = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path), x[24:]).outputs
    want = _host_reference(model, x[24:])
    assert np.array_equal(got["y"], want[0]) and np.array_equal(got["c2"], want[1])
    assert 0.1 < np.mean(np.abs(want[0].astype(int)) < 127)  # not everything saturated
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / "kernels.o")], capture_output=True,
                               text=True, check=True).stdout
    assert mcu_depthwise.DW3 in undefined.split()  # the three convs call the asm kernel, not the TIR pair taps
    tir = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "kernels.o")], capture_output=True,
                         text=True, check=True).stdout
    assert "smlad" not in tir
