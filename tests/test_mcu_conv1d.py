"""1-D convolutions (NCW) on Cortex-M run eecc's 2-D kernels as H = 1 planes: fp32 conv2d_f32 on the M4F, the
int8 tile and depthwise kernels on both cores (TVM's own conv1d spilled registers: 6.6-8.2 instructions per MAC
in fp32 on cnn1d)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.targets import quantize

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")


def _run_host(func, args, outs) -> np.ndarray:
    import tvm

    lib = tvm.tirx.build(func.with_attr("global_symbol", "k"), target="llvm")
    buffers = [tvm.runtime.tensor(np.zeros(shape, dtype)) for shape, dtype in outs]
    lib["k"](*[tvm.runtime.tensor(a) for a in args], *buffers)
    return buffers[0].numpy()


@pytest.mark.parametrize("c, o, k, n, stride, pads", [(1, 16, 5, 24, 1, (2, 2)), (6, 5, 3, 11, 2, (1, 0))])
def test_float_kernel_runs_on_3d_buffers(c, o, k, n, stride, pads):
    """A 1-D conv (NCW, odd O and odd lengths included) runs the 2-D kernel as an H = 1 plane; its buffers stay
    [1, C, L] and [1, O, L_out]."""
    from eecc.targets import mcu_float

    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, c, n)).astype(np.float32)
    w = rng.standard_normal((o, c, k)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    func, consts, outs = mcu_float.conv2d_f32(x.shape, w, strides=(1, stride), pads=(0, pads[0], 0, pads[1]),
                                              bias=bias, relu=True)
    got = _run_host(func, [x, *consts], outs)
    xp = np.pad(x[0].astype(np.float64), ((0, 0), pads))
    lout = (xp.shape[1] - k) // stride + 1
    want = bias[:, None] + sum(w[:, :, t].astype(np.float64) @ xp[:, t:t + stride * lout:stride] for t in range(k))
    assert got.shape == (1, o, lout)
    assert np.abs(got[0] - np.maximum(want, 0)).max() <= 1e-4 * max(1.0, np.abs(want).max())


def conv1d_stage() -> onnx.ModelProto:
    """conv k5 (8 -> 11 channels: odd Cout), depthwise k3 at stride 2 (odd length), pointwise: every 1-D variant."""
    rng = np.random.default_rng(5)
    shapes = {"w1": (11, 8, 5), "b1": (11,), "w2": (11, 1, 3), "b2": (11,), "w3": (6, 11, 1), "b3": (6,)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), k) for k, s in shapes.items()]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1], strides=[2], group=11), n("Relu", ["c2"], ["r2"]),
             n("Conv", ["r2", "w3", "b3"], ["y"])]
    graph = helper.make_graph(nodes, "c1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 21])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 11])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m0plus"])
def test_int8_1d_stage_runs_eccs_kernels_bit_exact(tmp_path, cpu):
    """Under QEMU the int8 1-D stage equals TVM's own integer lowering (conv1d) on the host bit for bit, and
    calls eecc's tile and depthwise kernels with no copy between them (the H = 1 reshapes are views)."""
    import tvm
    from tvm import relax

    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, int8_lowering, tvm_import

    x = np.random.default_rng(6).standard_normal((36, 8, 21)).astype(np.float32)
    model = quantize.quantize_stage(conv1d_stage(), {"x": x[:24]})
    got = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x[24:]).outputs["y"]
    host = tvm.target.Target("llvm")
    vm = relax.VirtualMachine(tvm.compile(int8_lowering.lower_int8(tvm_import.relax_module(model)), target=host,
                                          relax_pipeline=relax.get_default_pipeline(host)), tvm.cpu())
    want = np.concatenate([vm["main"](tvm.runtime.tensor(x[i:i + 1])).numpy() for i in range(24, 36)])
    assert np.array_equal(got, want)
    calls = [k for k, _ in tvm_import.lower_stage(model, tvm.target.Target(cortex_m.CPUS[cpu]["target"])).calls]
    last = "dequantize_fpu" if cpu == "cortex-m4" else "fused_reshape"  # with an FPU: ops_fpu.c's loop, any size
    kinds = ("quantize_int8", "conv2d_int8", "depthwise2d_int8", "conv2d_int8", last)  # no copy between
    assert len(calls) == len(kinds) and all(k.startswith(want) for k, want in zip(calls, kinds)), calls
