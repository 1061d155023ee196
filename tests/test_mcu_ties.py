"""int8 requantisation next to .5 ties: eecc's Cortex-M kernels against onnxruntime's fused int8 kernels
(QLinearConv, MLAS: rne(fl32(fl32(acc)·S))), bit for bit, on layers built so that accumulators land on exact
ties, on floats that round onto a tie, and past 2^24 (fl32(acc) rounds)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.targets import mcu_kernels, mcu_requant

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")
SX, SO, ZX, ZO = 2.0 ** -4, 2.0 ** -2, 3, -5  # S = fl32(SX·sw/SO) = sw/4 exactly: each channel's S is chosen


def mlas(acc, scale) -> np.ndarray:
    """onnxruntime's requantisation before the zero point (np.rint: half to even)."""
    return np.rint((np.asarray(acc).astype(np.float32) * np.float32(scale)).astype(np.float32)).astype(np.int64)


def _near_tie(scale: np.float32, start: int, count: int) -> int | None:
    """An accumulator in [start, start + count) where fl32 lands on a tie that the exact product misses and
    round-half-up of the exact product differs from onnxruntime."""
    acc = np.arange(start, start + count, dtype=np.int64)
    exact = acc * np.float64(scale)
    hit = (mlas(acc, scale) != np.floor(exact + 0.5)) & (exact - np.floor(exact) != 0.5)
    return int(acc[hit][0]) if hit.any() else None


def tie_channels(split: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(S float32, accumulator at x = zero point) per channel: the 256 inputs of a channel give 256
    consecutive accumulators around it. Exact ties (k even and odd), near ties at several magnitudes of S,
    and one past 2^24. `split`: only channels that the Armv6-M kernels requantise with two multiplies
    (fixed_point.split_constants: S < 2^-5, |acc| < 2^19), the exact ties at S = 2^-6."""
    scales, centres = [np.float32(2.0 ** -5), np.float32(2.0 ** -12)], [0, 50 * 4096 + 2048]
    rng = np.random.default_rng(0)
    for lo, hi, start in [(2.0 ** -9, 2.0 ** -7, 2 ** 12), (2.0 ** -14, 2.0 ** -12, 2 ** 18), (2.0 ** -8, 2.0 ** -6, 2 ** 11),
                          (2.0 ** -21, 2.0 ** -20, 2 ** 25)]:
        while True:
            s = np.float32(rng.uniform(lo, hi))
            a = _near_tie(s, start, 2 ** 21)
            if a is not None:
                scales.append(s)
                centres.append(a)
                break
    if split:
        scales, centres = [np.float32(2.0 ** -6), *scales[1:5]], [0, *centres[1:5]]
    return np.array(scales, np.float32), np.array(centres, np.int64)


def tie_stage(depthwise: bool, split: bool = False) -> tuple[onnx.ModelProto, np.ndarray]:
    """(QDQ stage, its float input [2, C, 16, 16]): a 1x1 conv of one input channel (weight 1), or a 3x3
    depthwise conv with only the centre tap 1, with the bias that centres each channel on tie_channels();
    every int8 input value occurs once per channel. Output Q(S0, Z0) then DequantizeLinear."""
    scales, centres = tie_channels(split)
    c = len(scales)
    w = np.zeros((c, 1, 3, 3), np.int8) if depthwise else np.ones((c, 1, 1, 1), np.int8)
    if depthwise:
        w[:, 0, 1, 1] = 1
    sw = (scales * 4).astype(np.float32)
    inits = {"sx": np.float32(SX), "zx": np.int8(ZX), "w": w, "sw": sw, "zw": np.zeros(c, np.int8),
             "b": centres.astype(np.int32), "sb": (np.float32(SX) * sw).astype(np.float32), "zb": np.zeros(c, np.int32),
             "so": np.float32(SO), "zo": np.int8(ZO)}
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), n("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             n("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0), n("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0),
             n("Conv", ["xf", "wf", "bf"], ["yf"], **({"group": c, "pads": [1, 1, 1, 1]} if depthwise else {})),
             n("QuantizeLinear", ["yf", "so", "zo"], ["yq"]), n("DequantizeLinear", ["yq", "so", "zo"], ["y"])]
    cin = c if depthwise else 1
    graph = helper.make_graph(nodes, "ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, 16, 16])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    q = np.arange(-128, 128).reshape(16, 16)
    x = np.stack([np.broadcast_to(q, (cin, 16, 16)), np.broadcast_to(q.T, (cin, 16, 16))])
    return model, ((x - ZX) * SX).astype(np.float32)


def _ort_fused(model, x) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # QDQ -> QLinearConv (MLAS)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _want(depthwise: bool, split: bool = False):
    """(stage, input, onnxruntime's fused output, the TFLite fixed-point output): the fused output is first
    checked against the MLAS formula on the known accumulators, so the reference is the fused kernel."""
    model, x = tie_stage(depthwise, split)
    scales, centres = tie_channels(split)
    acc = np.rint(x / SX).astype(np.int64) + centres[None, :, None, None]  # (x - zx)·1 + bias, one tap
    want = _ort_fused(model, x)
    formula = (np.clip(mlas(acc, scales[None, :, None, None]) + ZO, -128, 127) - ZO) * SO
    assert np.array_equal(want, formula.astype(np.float32))
    fixed = np.clip(np.floor(acc * scales.astype(np.float64)[None, :, None, None] + 0.5) + ZO, -128, 127)
    assert np.sum(fixed != np.rint(want / SO) + ZO) >= 8  # the cases exist: TFLite's rounding misses them
    return model, x, want


def test_tie_channels_cover_exact_near_and_large_accumulators():
    scales, centres = tie_channels()
    exact = centres * scales.astype(np.float64)
    assert np.sum(exact - np.floor(exact) == 0.5) >= 1 and np.abs(centres).max() > 2 ** 24
    assert np.all(mlas(centres[2:], scales[2:]) != np.floor(exact[2:] + 0.5))


# float (the M4 has VCVTR; nearbyint here), Armv6-M 16-bit halves, Armv6-M two multiplies (split)
@pytest.mark.parametrize("halves,split", [(False, False), (True, False), (True, True)])
def test_requantisation_equals_onnxruntime_at_ties(halves, split):
    """mcu_requant._rq on the host (LLVM x86) against onnxruntime's QLinearConv for every accumulator of
    the tie stage."""
    import tvm
    from tvm.script import tirx as T

    model, x, want = _want(depthwise=False, split=split)
    scales, centres = tie_channels(split)
    c = len(scales)
    acc = (np.rint(x / SX).astype(np.int64) + centres[None, :, None, None]).transpose(1, 0, 2, 3).reshape(c, -1)
    if split:  # the Armv6-M kernels' bias: acc = bias + w·(x + 128)
        table, window, used = mcu_requant.split_table(centres - 128, scales, np.ones((c, 1), np.int8), c)
        assert used
    else:  # what an FPU kernel gets (halves False: bias, S) or the Armv6-M one (halves: all four columns)
        tables = mcu_requant.requant_table if halves else mcu_requant.fpu_table
        table, window = tables(centres, scales, np.ones((c, 1), np.int8), c)
    n = acc.shape[1]

    @T.prim_func(private=True, check_well_formed=False)
    def rq(a: T.Buffer((c, n), "int32"), cq: T.Buffer(table.shape, "int32"), y: T.Buffer((c, n), "int8")):
        for ch, i in T.grid(c, n):
            y[ch, i] = mcu_requant._rq(T, a[ch, i], cq, ch, ZO, window, halves=halves, arm=False, split=split)

    lib = tvm.tirx.build(rq.with_attr("global_symbol", "k"), target="llvm")
    got = tvm.runtime.tensor(np.zeros((c, n), np.int8))
    lib["k"](tvm.runtime.tensor(acc.astype(np.int32)), tvm.runtime.tensor(table), got)
    ort_q = (np.rint(want / SO) + ZO).astype(np.int8).transpose(1, 0, 2, 3).reshape(c, -1)
    assert np.array_equal(got.numpy(), ort_q)


@needs_arm
@pytest.mark.parametrize("cpu,depthwise,split", [("cortex-m4", False, False), ("cortex-m4", True, False),
                                                 ("cortex-m0plus", False, False), ("cortex-m0plus", False, True)])
def test_mcu_stage_equals_onnxruntime_at_ties(cpu, depthwise, split, tmp_path):
    """The compiled stage under QEMU (M4: SMLAD conv / pair-tap depthwise, float requantisation; M0+: byte
    tile, 16-bit halves (`split`: two multiplies, fixed_point.mul_split) + the near-tie call), bit for bit
    with onnxruntime's fused int8 kernels. (The M0+ depthwise kernel rounds half up without the check: it
    cost 19 instructions per output there.)"""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    model, x, want = _want(depthwise, split)
    scales, centres = tie_channels(split)
    c = len(scales)  # the path the kernel takes (bias + w·(x + 128), bias = centre - zx - 128 here)
    assert mcu_requant.split_table(centres - ZX - 128, scales, np.ones((c, 1), np.int8), c)[2] == split
    got = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x).outputs["y"]
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
