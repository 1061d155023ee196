"""The Armv7E-M int8 stage's C loops (cdriver/dot_dsp.c column functions, ops_fpu.c eecc_mean_s8 / eecc_fc_s8 /
eecc_fill_s16) under QEMU, bit for bit against TVM's own integer lowering of the same stage on the host: odd
shapes everywhere (a padded single-channel front conv, an odd pointwise conv, a 15-value mean, a classifier
with K = 7, not a multiple of 4, and the DequantizeLinear after it computed in the same loop)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.targets import mcu_kernels, quantize

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")


def dense_stage() -> onnx.ModelProto:
    """x [N, 1, 9, 7] -> conv 4x4 stride 2, pads (2, 1, 1, 0) (1 -> 5) -> depthwise 3x3 -> pointwise (5 -> 7)
    -> global average pool (5 x 3 = 15 values) -> Gemm (7 -> 6) = y."""
    rng = np.random.default_rng(23)
    shapes = {"w1": (5, 1, 4, 4), "b1": (5,), "w2": (5, 1, 3, 3), "b2": (5,), "w3": (7, 5, 1, 1), "b3": (7,),
              "wf": (6, 7), "bf": (6,)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), k) for k, s in shapes.items()]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 1, 1, 0], strides=[2, 2]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=5), n("Relu", ["c2"], ["r2"]),
             n("Conv", ["r2", "w3", "b3"], ["c3"]), n("Relu", ["c3"], ["r3"]),
             n("GlobalAveragePool", ["r3"], ["g"]), n("Flatten", ["g"], ["f"]),
             n("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 9, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _host_integer_lowering(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """TVM's integer lowering of the int8 `model` run on the host, one sample at a time: the reference the
    Cortex-M stages must equal bit for bit."""
    import tvm
    from tvm import relax

    from eecc.targets import int8_lowering, tvm_import

    host = tvm.target.Target("llvm")
    vm = relax.VirtualMachine(tvm.compile(int8_lowering.lower_int8(tvm_import.relax_module(model)), target=host,
                                          relax_pipeline=relax.get_default_pipeline(host)), tvm.cpu())
    return np.concatenate([vm["main"](tvm.runtime.tensor(x[i:i + 1])).numpy() for i in range(len(x))])


def _one_conv_bit_exact(tmp_path, cpu: str, w: np.ndarray, b: np.ndarray, pads, strides, seed: int) -> str:
    """One int8 Conv (weights `w` [O, C, kh, kw], bias `b` [O]) over a [N, C, 9, 9] input, compiled for `cpu`
    and run under QEMU on 16 samples: asserts its outputs equal TVM's integer lowering bit for bit (and are not
    near constant); returns the stage ELF's disassembly, for the caller to check which kernels are linked."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=list(pads), strides=list(strides))
    c = w.shape[1]
    graph = helper.make_graph([conv], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    x = (np.random.default_rng(seed).standard_normal((40, c, 9, 9)) + 0.5).astype(np.float32)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = quantize.quantize_stage(model, {"x": x[:24]})
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path)
    got, want = emulate_stage(arts, x[24:]).outputs["y"], _host_integer_lowering(model, x[24:40])
    assert np.array_equal(got.reshape(want.shape), want) and len(np.unique(want)) > 50
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(arts.files[0])], capture_output=True, text=True,
                          check=True).stdout


@needs_arm
def test_m4_c_loops_are_bit_exact_with_tvm_integer_lowering(tmp_path):
    import tvm

    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, tvm_import

    x = np.random.default_rng(7).standard_normal((40, 1, 9, 7)).astype(np.float32)
    model = quantize.quantize_stage(dense_stage(), {"x": x[:24]})
    arts = cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path)
    got = emulate_stage(arts, x[24:]).outputs["y"]
    want = _host_integer_lowering(model, x[24:40])
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert len(np.unique(got)) > 20  # not a constant output: the check has something to compare
    calls = [k for k, _ in tvm_import.lower_stage(model, tvm.target.Target(cortex_m.CPUS["cortex-m4"]["target"])).calls]
    assert any(k.startswith("mean_int8") for k in calls) and calls[-1].startswith("dense_int8"), calls  # DQ inside
    elf = subprocess.run(["arm-none-eabi-objdump", "-d", str(arts.files[0])], capture_output=True, text=True,
                         check=True).stdout
    linked = set(re.findall(r"\n[0-9a-f]+ <(\w+)>:", elf))
    assert {mcu_kernels.COL_R4, mcu_kernels.COL_PW, "eecc_mean_s8", "eecc_fc_s8", "eecc_fill_s16"} <= linked


@needs_arm
@pytest.mark.parametrize("kh, strides, pads", [(5, (1, 2), (2, 2, 1, 3)), (4, (2, 1), (0, 5, 4, 4))])
def test_m4_four_wide_window_columns_are_bit_exact(tmp_path, kh, strides, pads):
    """cdriver/dot_dsp.c eecc_col2_r4_s16 (one input channel, 4-wide window: a shifted word per window row, the
    weights in (kx 0, 2, 1, 3) order) under QEMU against TVM's integer lowering: windows over the left edge (2 and
    4 lanes of zx: a word wholly outside too), the right edge (1-3 lanes), padding rows above and below, an odd
    pixel count (the last pair repeats its pixel)."""
    rng = np.random.default_rng(5)
    w, b = (rng.standard_normal((6, 1, kh, 4)) * 0.5).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    elf = _one_conv_bit_exact(tmp_path, "cortex-m4", w, b, pads, strides, seed=8)
    assert f"<{mcu_kernels.COL_R4}>:" in elf


def test_general_c_column_only_for_single_channel_convs():
    """column_in_c: the pointwise copy for 1x1 stride-1 convs, the general window for one input channel and
    ≥ 16 taps, and the TIR copy for a 16-channel 3x3 conv (where the C window loop cost 0.7 instructions per MAC)."""
    def geometry(c, kh, kw, stride, pad, h=14, wd=14):
        oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
        k = c * kh * kw
        return mcu_kernels._Conv(c, h, wd, 16, kh, kw, stride, stride, pad, pad, oh, ow, k, -(-k // 4) * 4, 16,
                                 oh * ow, -(-oh * ow // 2))

    assert mcu_kernels.column_in_c(geometry(48, 1, 1, 1, 0)) == mcu_kernels.COL_PW
    assert mcu_kernels.column_in_c(geometry(1, 10, 4, 2, 1)) == mcu_kernels.COL_R4
    assert mcu_kernels.column_in_c(geometry(1, 4, 5, 2, 1)) == mcu_kernels.COL
    assert mcu_kernels.column_in_c(geometry(16, 3, 3, 1, 1)) is None
    assert mcu_kernels.column_in_c(geometry(1, 3, 3, 2, 1)) is None
    assert mcu_kernels.column_in_c(geometry(16, 1, 1, 2, 0)) is None  # strided 1x1: its pixel is no input offset



@needs_arm
@pytest.mark.parametrize("c, kh, kw, strides, pads", [(1, 5, 4, (1, 2), (2, 2, 2, 3)), (1, 4, 4, (2, 1), (0, 5, 4, 4)),
                                                      (4, 3, 3, (2, 2), (1, 1, 1, 1))])
def test_m0plus_quad_window_columns_are_bit_exact(tmp_path, c, kh, kw, strides, pads):
    """cdriver/dot_v6m.c eecc_col4_win_v6m (the four-pixel byte column of a windowed conv, for eecc_dot4_v6m) under
    QEMU against TVM's integer lowering: windows over the left edge (2 and 5 columns of zx: one wholly outside),
    the right edge, padding rows above and below (4 rows of a 4-row window), 4 input channels, pixel counts 54, 75
    and 25 (the last quad repeats its last pixel 2, 1 and 3 times)."""
    rng = np.random.default_rng(6)
    w, b = (rng.standard_normal((32, c, kh, kw)) * 0.5).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    elf = _one_conv_bit_exact(tmp_path, "cortex-m0plus", w, b, pads, strides, seed=9)
    assert f"<{mcu_kernels.V6M_COLW}>:" in elf and f"<{mcu_kernels.V6M_DOT4}>:" in elf
    assert f"<{mcu_kernels.V6M_DOT}>:" not in elf  # the only conv runs the quad


def test_m0plus_quad_tile_where_it_pays():
    """plain_column: the quad with the C window for kws's 40-tap front conv (48 channels), a 16-channel 3x3 conv
    and a 64 -> 64 one on a 2x2 image, the strided copy for a pointwise conv, the pair tile with the TIR copy for
    ResNet's 9-tap stem (16 channels: the C window's per-pixel cost outweighs the quad's saving), a 48 -> 12 conv
    on a 3x3 image (per input channel padding runs), 1-D and strided 1x1 convs (one window row per channel),
    < 4 output pixels, and host tests."""
    def geometry(c, kh, kw, stride, pad, o=16, h=14, wd=14):
        oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
        k = c * kh * kw
        return mcu_kernels._Conv(c, h, wd, o, kh, kw, stride, stride, pad, pad, oh, ow, k, -(-k // 4) * 4, o,
                                 oh * ow, -(-oh * ow // 2))

    mac = mcu_kernels.V6M_DOT
    assert mcu_kernels.plain_column(geometry(1, 10, 4, 2, 5, o=48, h=49, wd=10), mac) == (4, mcu_kernels.V6M_COLW)
    assert mcu_kernels.plain_column(geometry(16, 3, 3, 1, 1), mac) == (4, mcu_kernels.V6M_COLW)
    assert mcu_kernels.plain_column(geometry(48, 1, 1, 1, 0), mac) == (4, mcu_kernels.V6M_COL4)
    assert mcu_kernels.plain_column(geometry(1, 3, 3, 1, 1, h=28, wd=28), mac) == (2, None)
    assert mcu_kernels.plain_column(geometry(48, 3, 3, 1, 1, o=12, h=3, wd=3), mac) == (2, None)  # measured +26.5 %
    assert mcu_kernels.plain_column(geometry(64, 3, 3, 1, 1, o=64, h=2, wd=2), mac) == (4, mcu_kernels.V6M_COLW)
    assert mcu_kernels.plain_column(geometry(16, 3, 3, 1, 0, h=3, wd=3), mac) == (2, None)
    assert mcu_kernels.plain_column(geometry(16, 1, 3, 1, 1, o=32, h=1, wd=24), mac) == (2, None)  # 1-D
    assert mcu_kernels.plain_column(geometry(16, 1, 1, 2, 0, o=32), mac) == (2, None)  # strided 1x1
    assert mcu_kernels.plain_column(geometry(16, 3, 3, 1, 1), None) == (2, None)
    assert mcu_kernels.plain_column(geometry(48, 1, 1, 1, 0), None) == (4, None)

@needs_arm
@pytest.mark.parametrize("k, n", [(20, 6), (3, 2)])
def test_m4_matmul_with_a_separate_bias_builds_and_is_bit_exact(tmp_path, k, n):
    """MatMul + Add (a bias the quantiser dequantises as a constant): that DequantizeLinear stays TVM's, which
    folds it at build time (as an extern C call it was JIT-run on the host, where eecc_dequantize_s8 does not
    exist: a segfault). K = 3, N = 2: eecc_fc_s8's SMLAD tile with no whole word of x (the tail step alone) and
    fewer than 4 rows."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((k, n)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((32, k)).astype(np.float32)
    model = quantize.quantize_stage(model, {"x": x[:24]})
    got = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path), x[24:]).outputs["y"]
    want = _host_integer_lowering(model, x[24:32])
    assert np.array_equal(got, want) and len(np.unique(got)) > 10


@needs_arm
def test_m4_chained_gemms_both_run_the_int8_fc(tmp_path):
    """Gemm -> Relu -> Gemm (an MLP's hidden layer): the first FC's Q -> DQ is what the second Gemm's integer rule
    reads, so it stays (int8_lowering._read_by_islands) and both run eecc_fc_s8 (fused into the first, the second
    ran as TVM's float matmul: mlp unit 1010 spent 349,447 of 407,932 instructions there), bit-exact with TVM's
    integer lowering on the host."""
    import tvm

    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, tvm_import

    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 20)) * 0.4).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((6, 16)) * 0.4).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    x = rng.standard_normal((32, 20)).astype(np.float32)
    model = quantize.quantize_stage(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": x[:24]})
    calls = [k for k, _ in tvm_import.lower_stage(model, tvm.target.Target(cortex_m.CPUS["cortex-m4"]["target"])).calls]
    assert sum(k.startswith("dense_int8") for k in calls) == 2 and not any("matmul" in k for k in calls), calls
    got = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path), x[24:]).outputs["y"]
    want = _host_integer_lowering(model, x[24:32])
    assert np.array_equal(got, want) and len(np.unique(got)) > 10
