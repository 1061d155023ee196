"""cdriver/ops_fpu.c (the M4's rolled int8 element loops: input quantise, output dequantise, max pool) built for
this host and checked against onnxruntime; the quantise / dequantise checks are in test_mcu_kernels (beside
the Armv6-M kernels they share a test with), the QEMU stage check in test_mcu_kernels' depthwise stage."""

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
        so = Path(tempfile.mkdtemp(prefix="eecc-ops-")) / "ops_fpu.so"
        subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(so), str(cortex_m.CDRIVER / "ops_fpu.c")],
                       check=True)
        lib = ctypes.CDLL(str(so))
        for name in ("eecc_quantize_s8", "eecc_dequantize_s8", "eecc_maxpool_s8"):
            getattr(lib, name).restype = None
        lib.eecc_maxpool_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 11
        lib.eecc_quantize_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 3
        lib.eecc_dequantize_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 3
        _OPS_FPU["lib"] = lib
        so.unlink()
        so.parent.rmdir()
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
