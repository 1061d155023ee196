"""cdriver/ops_fpu.c (the M4's rolled int8 element loops: input quantise, output dequantise, max pool) built for
this host (portable C in place of the DSP instructions) and checked against onnxruntime; the quantise / dequantise
checks are in test_mcu_kernels (beside the Armv6-M kernels they share a test with). The DSP paths run under QEMU
here (pool_stage) and in test_mcu_kernels' depthwise stage."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

_OPS_FPU = {}


def ops_fpu():
    """cdriver/ops_fpu.c compiled for this host (IEEE float32 arithmetic like the M4F's; skips without gcc)."""
    import ctypes
    import tempfile
    from pathlib import Path

    from eecc.targets import cortex_m

    if "lib" not in _OPS_FPU:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            pytest.skip("no host C compiler")
        folder = Path(tempfile.mkdtemp(prefix="eecc-ops-"))
        try:  # a failed build (or Ctrl-C) left /tmp/eecc-ops-* behind
            so = folder / "ops_fpu.so"
            subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(so), str(cortex_m.CDRIVER / "ops_fpu.c")],
                           check=True)
            lib = ctypes.CDLL(str(so))  # the loaded library stays mapped after its file is gone
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        for name in ("eecc_quantize_s8", "eecc_dequantize_s8", "eecc_maxpool_s8"):
            getattr(lib, name).restype = None
        lib.eecc_maxpool_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 11
        lib.eecc_quantize_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 3
        lib.eecc_dequantize_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 3
        _OPS_FPU["lib"] = lib
    return _OPS_FPU["lib"]


def ptr(a: np.ndarray) -> int:
    assert a.flags.c_contiguous
    return a.ctypes.data


POOLS = [  # (C, H, W, kernel, strides, pads (top, left, bottom, right), ceil_mode)
    (3, 25, 5, (13, 3), (13, 3), (0, 0, 0, 0), 1),  # kws's pool: clipped last windows
    (2, 7, 8, (3, 3), (2, 2), (1, 1, 1, 1), 0),
    (4, 6, 5, (2, 3), (1, 2), (0, 1, 1, 0), 1),
    (1, 1, 9, (1, 4), (1, 3), (0, 2, 0, 2), 0),  # a 1-D pool as H = 1
    (2, 5, 3, (2, 2), (1, 1), (0, 0, 0, 0), 0),  # W < 4: the column maxima byte by byte
    (1, 3, 4, (3, 4), (3, 4), (0, 0, 0, 0), 0),  # W = 4: one word per row, the whole map in one window
    (2, 6, 13, (3, 5), (2, 3), (1, 2, 1, 2), 1),  # W = 13: a word pair, then a pair whose words overlap
]


@pytest.mark.parametrize("case", POOLS)
def test_int8_max_pool_equals_onnxruntime(case):
    """The M4's int8 max pool (cdriver/ops_fpu.c, geometry as mcu_pool.pool_kernel passes it) against
    onnxruntime's int8 MaxPool: padding, clipped ceil-mode windows, -128 inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    c, h, w, k, st, pads, ceil = case
    x = np.random.default_rng(sum(case[:3])).integers(-128, 128, (1, c, h, w), dtype=np.int8)
    x[0, 0, 0, :2] = -128
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(k), strides=list(st),
                            pads=[pads[0], pads[1], pads[2], pads[3]], ceil_mode=ceil)
    graph = helper.make_graph([node], "p", [helper.make_tensor_value_info("x", TensorProto.INT8, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = np.zeros(want.shape, np.int8)
    ops_fpu().eecc_maxpool_s8(ptr(x), ptr(got), c, h, w, want.shape[2], want.shape[3], *k, *st, pads[0], pads[1])
    assert np.array_equal(got, want)


def pool_stage():
    """Conv 1x1 + Relu on a 9 x 13 map, the plane dequantised (351 values: eecc_dequantize_s8's 4-value words
    and a 3-value tail) and max-pooled 3 x 5 at strides 2, 3 with padding, ceil mode (W = 13: column_max4's
    word pair, then a pair whose words overlap)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 5], strides=[2, 3], pads=[1, 2, 1, 2],
                              ceil_mode=1)]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 9, 13])],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 3, 9, 13]),
                               helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi qemu-system-arm)")
def test_m4_simd_pool_and_dequantise_equal_onnxruntime(tmp_path):
    """ops_fpu.c's DSP paths (SSUB8/SEL max pool, SXTAB16 dequantisation) in an int8 M4 stage under QEMU,
    bit for bit with onnxruntime's int8 stage (its fused integer kernels, as eecc's runtime opens it)."""
    import onnxruntime as ort

    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, quantize

    x = np.random.default_rng(6).standard_normal((28, 2, 9, 13)).astype(np.float32)
    model = quantize.quantize_stage(pool_stage(), {"x": x[:16]})
    got = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path), {"x": x[16:]}).outputs
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = [np.concatenate([sess.run(None, {"x": x[i:i + 1]})[k] for i in range(16, 28)]) for k in range(2)]
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / "kernels.o")], capture_output=True,
                               text=True, check=True).stdout.split()
    assert {"eecc_dequantize_s8", "eecc_maxpool_s8"} <= set(undefined)
    assert np.array_equal(got["r"], want[0]) and np.array_equal(got["p"], want[1])


def test_a_failed_host_build_leaves_no_temporary_folder(monkeypatch):
    import glob
    import os
    import tempfile

    def fail(cmd, **kwargs):
        raise subprocess.CalledProcessError(1, cmd)

    pattern = os.path.join(tempfile.gettempdir(), "eecc-ops-*")
    before = set(glob.glob(pattern))
    monkeypatch.delitem(_OPS_FPU, "lib", raising=False)  # restored afterwards: the other tests keep the built one
    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(subprocess.CalledProcessError):
        ops_fpu()
    assert set(glob.glob(pattern)) == before
