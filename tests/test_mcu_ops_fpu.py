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
        for name in ("eecc_quantize_s8", "eecc_dequantize_s8", "eecc_maxpool_s8", "eecc_fc_s8", "eecc_softmax_max"):
            getattr(lib, name).restype = None
        lib.eecc_maxpool_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 11
        lib.eecc_quantize_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 3
        lib.eecc_dequantize_s8.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32] * 3
        lib.eecc_fc_s8.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int32] * 3 + [ctypes.c_uint32, ctypes.c_int32]
        lib.eecc_softmax_max.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int32]
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


@pytest.mark.parametrize("k, nout", [(1, 1), (3, 2), (4, 4), (7, 6), (9, 5), (16, 3), (48, 12), (130, 9)])
@pytest.mark.parametrize("dequantize", [False, True])
def test_int8_fully_connected_tile_equals_the_integer_reference(k, nout, dequantize):
    """eecc_fc_s8's 4-row tile (portable dot4 on the host; the SMLAD one runs under QEMU in test_mcu_dense) against
    Python integers: q_j = clamp(zo + ((acc_j·M0_j + 2^(n_j-1)) >> n_j), -128, 127), acc_j = bias_j + Σ x·w; every
    k % 4 tail (the spare weight bytes mcu_dense.fc_call appends), fewer than 4 rows, a last partial block."""
    from eecc.targets import mcu_dense
    from eecc.targets.mcu_quantize import f32_bits

    rng = np.random.default_rng(k * 100 + nout)
    x = rng.integers(-128, 128, k, dtype=np.int8)
    w = np.concatenate([rng.integers(-128, 128, nout * k, dtype=np.int8), np.zeros(-k % 4, np.int8)])
    n = rng.integers(33, 46, nout)
    m0 = rng.integers(1 << 30, 1 << 31, nout)
    bias = rng.integers(-5000, 5000, nout)
    t = mcu_dense.fc_table(bias, m0, n)
    assert t.dtype == np.int32 and t.size == 2 * nout + (nout + 3) // 4
    zo, scale, zero = -7, 0.0625, 3
    acc = bias.astype(object) + [sum(int(a) * int(b) for a, b in zip(x, w[j * k:(j + 1) * k])) for j in range(nout)]
    q = np.array([min(127, max(-128, zo + ((a * int(m) + (1 << (int(s) - 1))) >> int(s)))) for a, m, s in zip(acc, m0, n)])
    assert len(set(q.tolist())) > 1 or nout < 3  # something to compare
    got = np.zeros(nout, np.float32 if dequantize else np.int8)
    ops_fpu().eecc_fc_s8(ptr(x), ptr(w), ptr(t), ptr(got), k, nout, zo, f32_bits(scale) if dequantize else 0, zero)
    want = ((q - zero).astype(np.float32) * np.float32(scale)) if dequantize else q.astype(np.int8)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("n, spread", [(1, 1.0), (2, 0.01), (12, 3.0), (10, 40.0), (35, 200.0)])
def test_gate_confidence_is_the_largest_softmax_probability(n, spread):
    """eecc_softmax_max (targets/mcu_gate.py: the M4's max-softmax gate) against the same sum in float32 of numpy's
    exp (TVM's softmax: float32 exp and sum): within 4 ulp, from near-uniform logits (confidence ~1/n) to one logit
    far above the rest (the others' exp underflow to 0, confidence 1); and within 1e-6 of the float64 value."""
    rng = np.random.default_rng(n)
    for _ in range(200):
        z = (rng.standard_normal(n) * spread).astype(np.float32)
        got = np.zeros(1, np.float32)
        ops_fpu().eecc_softmax_max(ptr(z), ptr(got), n)
        total = np.float32(0)
        for v in np.exp(z - z.max()):  # float32, in order
            total = np.float32(total + v)
        want = np.float32(1) / total
        assert abs(float(got[0]) - float(want)) <= 4 * np.spacing(want), (z, got, want)
        assert abs(float(got[0]) - 1 / np.exp(z.astype(np.float64) - z.max()).sum()) <= 1e-6


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
    stage_c = (tmp_path / "stage.c").read_text()  # called straight from the driver (targets/mcu_direct.py)
    assert "eecc_dequantize_s8(arena" in stage_c and "eecc_maxpool_s8(arena" in stage_c
    defined = subprocess.run(["arm-none-eabi-nm", "--defined-only", str(tmp_path / "kernels.o")], capture_output=True,
                             text=True, check=True).stdout
    assert "pool" not in defined and "dequantize" not in defined  # no TVM wrapper left for them
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


def gate_stage():
    """x [N, 16] -> Gemm (16 -> 12) = logits -> Softmax -> ReduceMax = confidence -> >= 0.4 = exit (insert_gates'
    max_softmax gate)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal((12, 16)) * 0.6).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(0.4, np.float32), "t")]
    n = helper.make_node
    nodes = [n("Gemm", ["x", "w", "b"], ["logits"], transB=1), n("Softmax", ["logits"], ["p"], axis=1),
             n("ReduceMax", ["p"], ["confidence"], axes=[1], keepdims=0), n("GreaterOrEqual", ["confidence", "t"], ["exit"])]
    graph = helper.make_graph(nodes, "gate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 12]),
                               helper.make_tensor_value_info("exit", TensorProto.BOOL, ["N"]),
                               helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["N"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi qemu-system-arm)")
@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_m4_gate_runs_eecc_softmax_max(tmp_path, fmt):
    """The M4's exit gate (targets/mcu_gate.py) in an fp32 and an int8 stage under QEMU: no TVM softmax and no
    newlib expf linked, the exit flags equal onnxruntime's, the confidences within 1e-6, spread over (0.15, 1)."""
    import onnxruntime as ort

    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, quantize

    x = (np.random.default_rng(12).standard_normal((40, 16)) * 1.5).astype(np.float32)
    model = gate_stage() if fmt == "fp32" else quantize.quantize_stage(gate_stage(), {"x": x[:24]})
    arts = cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path)
    got = emulate_stage(arts, {"x": x[24:]}).outputs
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip(["logits", "exit", "confidence"], (np.concatenate(o) for o in zip(
        *[sess.run(["logits", "exit", "confidence"], {"x": x[i:i + 1]}) for i in range(24, 40)]))))
    linked = set(subprocess.run(["arm-none-eabi-nm", str(arts.files[0])], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "eecc_softmax_max" in linked and "expf" not in linked and "__ieee754_expf" not in linked
    assert np.array_equal(got["exit"].reshape(-1), want["exit"]) and 0 < want["exit"].mean() < 1
    assert np.abs(got["confidence"].reshape(-1) - want["confidence"]).max() <= 1e-6
    assert want["confidence"].min() < 0.5 and want["confidence"].max() > 0.9


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi qemu-system-arm)")
def test_m4_input_quantise_saturates_and_ties_like_onnxruntime(tmp_path):
    """ops_fpu.c's eecc_quantize_s8 on the M4 (QSUB + SSAT for the max and the clamp) under QEMU, bit for bit with
    onnxruntime: exact .5 ties of the stage's scale, values around ±2^22 steps (the magic add's range), far out
    of range, ±inf (a negative t's bits are negative: QSUB saturates), ±0. The stage is a 1 x 1 conv of weight 1
    (a lone max pool stays float), whose requantisation keeps the saturations and most levels apart."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, quantize

    one = [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "q",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])], one)
    calib = np.random.default_rng(4).standard_normal((16, 1, 8, 8)).astype(np.float32) + 0.7  # zero point not 0
    model = quantize.quantize_stage(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                    {"x": calib})
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale = np.float32(consts[q.input[1]])
    steps = np.concatenate([np.arange(-300, 300) / 2, [2.0 ** 22 - 0.5, 2.0 ** 22, 2 ** 22 + 1, -2.0 ** 22 + 0.5,
                            -2.0 ** 22, -1.5 * 2 ** 23, -3 * 2 ** 23, 2.0 ** 40, -2.0 ** 40]])
    x = np.concatenate([(steps * scale).astype(np.float32), np.float32([np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30])])
    x = np.concatenate([x, np.zeros(-len(x) % 64, np.float32)]).reshape(-1, 1, 8, 8)
    got = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path), {"x": x}).outputs["y"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert "eecc_quantize_s8(" in (tmp_path / "stage.c").read_text()
    assert np.array_equal(got.view(np.int32), want.view(np.int32)) and len(np.unique(want)) > 200
    assert onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == q.input[2])) != 0
