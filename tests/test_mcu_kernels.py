"""Hand-scheduled int8 kernels for Cortex-M: numerics against a numpy reference on the host, and the
Cortex-M4 (SMLAD) build under QEMU bit-exact with TVM's own integer lowering of the same stage."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from eecc.targets import int8_lowering, mcu_depthwise, mcu_kernels, mcu_requant, quantize, tvm_import
from eecc.targets.fixed_point import mlas_scale
from test_mcu_ops_fpu import ops_fpu, ptr

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")


def reference(x, w, bias, scale, zx, zo, strides, pads, groups=1) -> np.ndarray:
    """int8 conv, zero point zx outside the image, then onnxruntime's requantisation rne(fl32(fl32(acc)·S))
    (MlasRequantizeOutput), or TFLite's clamp(zo + round(acc·M0·2^-(32+s))) where some S ≥ 1/2."""
    _, c, _, _ = x.shape
    o, ci, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=zx)
    oh, ow = (xp.shape[2] - kh) // strides[0] + 1, (xp.shape[3] - kw) // strides[1] + 1
    acc = np.zeros((o, oh, ow), np.int64) + np.asarray(bias, np.int64)[:, None, None]
    for oc in range(o):
        chans = range(ci) if groups == 1 else [oc]
        for j, ic in enumerate(chans):
            for ky in range(kh):
                for kx in range(kw):
                    win = xp[0, ic, ky:ky + strides[0] * oh:strides[0], kx:kx + strides[1] * ow:strides[1]]
                    acc[oc] += int(w[oc, j if groups == 1 else 0, ky, kx]) * win
    scale = np.asarray(scale, np.float32)
    if scale.max() < 0.5:
        return np.clip(mlas_requantize(acc, scale[:, None, None]) + zo, -128, 127).astype(np.int8)[None]
    m0, shift = int8_lowering.fixed_point32(scale.astype(np.float64))
    n = np.asarray(shift, np.int64)[:, None, None] + 32
    y = (acc * np.asarray(m0, np.int64)[:, None, None] + (np.int64(1) << (n - 1))) >> n
    return np.clip(y + zo, -128, 127).astype(np.int8)[None]


def mlas_requantize(acc, scale) -> np.ndarray:
    """onnxruntime's rne(fl32(fl32(acc)·S)) before the zero point (MlasRequantizeOutput; np.rint: half to even)."""
    return np.rint((np.asarray(acc).astype(np.float32) * np.asarray(scale, np.float32)).astype(np.float32)).astype(np.int64)


def _run_host(func, args, outs) -> np.ndarray:
    import tvm

    lib = tvm.tirx.build(func.with_attr("global_symbol", "k"), target="llvm")
    buffers = [tvm.runtime.tensor(np.zeros(shape, dtype)) for shape, dtype in outs]
    lib["k"](*[tvm.runtime.tensor(a) for a in args], *buffers)
    return buffers[0].numpy()


CASES = [  # (C, H, W, O, KH, KW, strides, pads (top, left, bottom, right), groups)
    (3, 7, 6, 5, 3, 3, (2, 1), (1, 1, 1, 1), 1),    # odd O and odd output width: the tile's spare lanes
    (4, 5, 5, 6, 1, 1, (1, 1), (0, 0, 0, 0), 1),    # pointwise
    (2, 3, 5, 24, 3, 3, (1, 1), (0, 0, 0, 0), 1),   # three output pixels: the Armv6-M pair tile, not the quad
    (1, 9, 10, 4, 10, 4, (2, 2), (5, 1, 5, 1), 1),  # the kws front end: K = 40, asymmetric padding
    (5, 7, 6, 5, 3, 3, (1, 1), (1, 1, 1, 1), 5),    # depthwise
    (4, 9, 8, 4, 3, 3, (2, 2), (1, 1, 1, 1), 4),    # depthwise, stride 2
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scale", [2e-3, 2.0])
def test_plain_kernels_match_the_integer_reference(case, scale):
    c, h, wd, o, kh, kw, strides, pads, groups = case
    rng = np.random.default_rng(hash(case) % 2 ** 32)
    x = rng.integers(-128, 128, (1, c, h, wd)).astype(np.int8)
    w = rng.integers(-128, 128, (o, c // groups, kh, kw)).astype(np.int8)
    bias = rng.integers(-5000, 5000, o).astype(np.int32)
    s = (rng.uniform(0.2, 1.0, o) * scale / (kh * kw * c // groups) ** 0.5).astype(np.float32)
    s[0] = 0.75 if scale > 1 else s[0]  # one S ≥ 1/2: the layer's int64 form
    build = mcu_depthwise.depthwise2d if groups > 1 else mcu_kernels.conv2d
    func, consts, outs = build(x.shape, w, bias=bias, scale=s, zx=-3, zo=5, strides=strides, pads=pads, dsp=False)
    got = _run_host(func, [x, *consts], outs)
    want = reference(x, w, bias, s, -3, 5, strides, pads, groups)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert 0 < np.mean(np.abs(want.astype(int)) < 127)  # not everything saturated


def test_high_word_requantisation_equals_single_rounding():
    """(hi32(acc·M0) + 2^(s-1)) >> s == (acc·M0 + 2^(31+s)) >> (32+s) for every s ≥ 1."""
    rng = np.random.default_rng(0)
    acc = rng.integers(-2 ** 31, 2 ** 31, 20000, dtype=np.int64)
    m0, s = int8_lowering.fixed_point32(rng.uniform(1e-7, 0.249, 20000))
    m0, s = m0.astype(np.int64), s.astype(np.int64)
    assert s.min() >= 1
    hi = (((acc * m0) >> 32) + (np.int64(1) << (s - 1))) >> s
    n = s + 32
    assert np.array_equal(hi, (acc * m0 + (np.int64(1) << (n - 1))) >> n)


def test_dsp_weights_widen_to_pairs_in_order():
    """SXTB16(word) and SXTB16(word ROR 8) must give (a0, a1) and (a2, a3) of each group of four, and the
    words of channels 2j and 2j+1 alternate (one LDRD loads both)."""
    w = np.arange(-32, 32, dtype=np.int8).reshape(4, 16, 1, 1)[:3, :10]  # odd O, K not a multiple of 4
    packed, kp, o2 = mcu_kernels.pack_weights(w, dsp=True)
    lo = lambda v: ((v & 0xFF) ^ 0x80) - 0x80  # noqa: E731 - sign-extended byte
    pairs = [[lo(v), lo(v >> 16), lo(v >> 8), lo(v >> 24)] for v in packed.view(np.uint32).reshape(-1).astype(np.int64)]
    assert (kp, o2, packed.shape) == (12, 4, (2, 6))
    got = np.array(pairs).reshape(2, 3, 2, 4).transpose(0, 2, 1, 3).reshape(4, 12)  # [j, i, t, 4] -> [2j+t, k]
    want = np.zeros((4, 12), np.int64)
    want[:3, :10] = w.reshape(3, 10)
    assert np.array_equal(got, want)


@pytest.fixture(scope="module")
def residual_int8():
    from test_int8 import residual_stage

    x = np.random.default_rng(1).standard_normal((96, 3, 16, 16)).astype(np.float32)
    return quantize.quantize_stage(residual_stage(), {"x": x[:64]}), x[64:]


def _host_reference(model, x) -> np.ndarray:
    import tvm
    from tvm import relax

    target = tvm.target.Target("llvm")
    mod = int8_lowering.lower_int8(tvm_import.relax_module(model))
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target)),
                              tvm.cpu())
    runs = [vm["main"](tvm.runtime.tensor(x[i:i + 1])) for i in range(len(x))]
    if isinstance(runs[0], tvm.runtime.Tensor):
        return np.concatenate([r.numpy() for r in runs])
    return [np.concatenate([r[k].numpy() for r in runs]) for k in range(len(runs[0]))]  # one per output


@needs_arm
def test_m4_stage_with_smlad_kernels_is_bit_exact_and_has_no_argument_checks(residual_int8, tmp_path):
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.codegen import reference_runs

    model, x = residual_int8
    arts = cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path)
    got = emulate_stage(arts, x).outputs["y"]
    assert np.array_equal(got, _host_reference(model, x))  # TVM's own integer lowering, bit for bit
    want = reference_runs([model], x)[0][1]["y"]
    scale = [t for t in model.graph.initializer if t.name == "y_scale"][0].float_data[0]
    assert np.abs(got - want).max() <= scale * (1 + 1e-4)  # onnxruntime's float QDQ: at most one step
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "kernels.o")], capture_output=True,
                         text=True, check=True).stdout
    kernels = dict(re.findall(r"\n[0-9a-f]+ <(\w+)>:\n(.*?)(?=\n\n|\Z)", dis, flags=re.S))
    conv = [body for name, body in kernels.items() if name.startswith("conv2d_int8") and "compute" in name]
    assert conv
    elf = subprocess.run(["arm-none-eabi-objdump", "-d", str(arts.files[0])], capture_output=True, text=True,
                         check=True).stdout
    linked = dict(re.findall(r"\n[0-9a-f]+ <(\w+)>:\n(.*?)(?=\n\n|\Z)", elf, flags=re.S))
    calls = [body for name, body in linked.items() if name.startswith("conv2d_int8") and "compute" in name]
    # the tile's inner loop (cdriver/dot_dsp.c): two MACs per SMLAD, weights widened by SXTB16
    assert calls and all(f"<{mcu_kernels.DSP_DOT}>" in body for body in calls)
    assert "smlad" in linked[mcu_kernels.DSP_DOT] and "sxtb16" in linked[mcu_kernels.DSP_DOT]
    wrappers = [body for name, body in kernels.items() if name.startswith("__tvm_ffi_")]
    # with the checks a wrapper has hundreds of instructions (≈2 KB); without, it only unpacks pointers
    assert wrappers and max(body.count("\n") for body in wrappers) < 80


@pytest.mark.parametrize("case", [c for c in CASES if c[-1] == 1])
@pytest.mark.parametrize("relu", [False, True])
def test_float_kernel_matches_a_float64_convolution(case, relu):
    from eecc.targets import mcu_float

    c, h, wd, o, kh, kw, strides, pads, _ = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    func, consts, outs = mcu_float.conv2d_f32(x.shape, w, strides=strides, pads=pads, bias=bias, relu=relu)
    got = _run_host(func, [x, *consts], outs)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = got.shape[2:]
    want = np.zeros((o, oh, ow)) + bias[:, None, None]
    for ky in range(kh):
        for kx in range(kw):
            win = xp[0, :, ky:ky + strides[0] * oh:strides[0], kx:kx + strides[1] * ow:strides[1]]
            want += np.einsum("oc,chw->ohw", w[:, :, ky, kx].astype(np.float64), win)
    want = np.maximum(want, 0) if relu else want
    assert np.abs(got[0] - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def depthwise_stage() -> "onnx.ModelProto":
    """Depthwise 3x3 at stride 2 and at stride 1 on an odd width, then a pointwise conv: the M4's
    pair-tap depthwise kernel in both stride branches and its unstored spare column; the pointwise K = 10
    is three weight words (dot_v6m.c's odd entry); the 270-value output takes mcu_quantize's table dequantisation.
    A second output max-pools the int8 plane (padded, a clipped ceil-mode window: mcu_pool on the M4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    shapes = {"w1": (10, 1, 3, 3), "b1": (10,), "w2": (10, 1, 3, 3), "b2": (10,), "w3": (9, 10, 1, 1), "b3": (9,)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), k) for k, s in shapes.items()]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], group=10), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=10), n("Relu", ["c2"], ["r2"]),
             n("Conv", ["r2", "w3", "b3"], ["y"]),
             n("MaxPool", ["r2"], ["p"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 0], ceil_mode=1)]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 11, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 9, 6, 5]),
                               helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 10, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _depthwise_stage_bit_exact(tmp_path, cpu: str, seed: int) -> str:
    """Compile the depthwise + pointwise int8 stage for `cpu`, assert its QEMU outputs on 16 samples equal TVM's
    integer lowering on the host bit for bit, and return the kernels' disassembly."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    x = np.random.default_rng(seed).standard_normal((40, 10, 11, 10)).astype(np.float32)
    model = quantize.quantize_stage(depthwise_stage(), {"x": x[:24]})
    got = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x[24:]).outputs
    want = _host_reference(model, x[24:])
    assert np.array_equal(got["y"], want[0]) and np.array_equal(got["p"], want[1])
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "kernels.o")], capture_output=True,
                          text=True, check=True).stdout


@needs_arm
def test_m4_depthwise_pair_taps_are_bit_exact(tmp_path):
    dis = _depthwise_stage_bit_exact(tmp_path, "cortex-m4", seed=4)
    assert "smlatb" in dis  # the stride-2 pair taps in TIR; stride 1 calls cdriver/dot_dsp.c (test_mcu_depthwise)
    assert f"{mcu_depthwise.DW3}>" in dis
    # input quantise, output dequantise and the int8 max pool are cdriver/ops_fpu.c's rolled loops, called straight
    # from stage.c (targets/mcu_direct.py), with no TVM wrapper in kernels.o
    stage_c = (tmp_path / "stage.c").read_text()
    assert all(f"{f}(" in stage_c for f in ("eecc_quantize_s8", "eecc_dequantize_s8", "eecc_maxpool_s8"))
    defined = subprocess.run(["arm-none-eabi-nm", "--defined-only", str(tmp_path / "kernels.o")], capture_output=True,
                             text=True, check=True).stdout
    assert "quantize" not in defined and "pool" not in defined


@needs_arm
def test_m0plus_kernels_are_bit_exact_without_64_bit_multiplies(tmp_path):
    """Armv6-M: the byte-column quad tile with dot_v6m.c's inner loop, the two-outputs depthwise kernel, hi32 from
    16-bit halves, the input quantisation of rq_tie.c and the table dequantisation, bit for bit against TVM's
    own integer lowering."""
    dis = _depthwise_stage_bit_exact(tmp_path, "cortex-m0plus", seed=5)
    kernels = dict(re.findall(r"\n[0-9a-f]+ <(\w+)>:\n(.*?)(?=\n\n|\Z)", dis, flags=re.S))
    ours = {name: body for name, body in kernels.items() if name.startswith(("conv2d_int8", "depthwise2d_int8"))}
    assert any(n.startswith("conv2d") for n in ours) and any(n.startswith("depthwise2d") for n in ours)
    assert all("muldi3" not in body and "lmul" not in body for body in ours.values())
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / "kernels.o")], capture_output=True,
                               text=True, check=True).stdout
    assert mcu_kernels.V6M_DOT4 in undefined  # the quad tile's inner loop is cdriver/dot_v6m.c
    # output dequantised by table (no soft-float multiply); the input quantised by cdriver/rq_tie.c (integer
    # estimate + threshold table, no soft-float division), called straight from stage.c (mcu_direct)
    tables = {n: b for n, b in kernels.items() if n.startswith(("quantize_int8", "dequantize_int8"))}
    assert len(tables) == 1 and not any(re.search(r"aeabi_f|__divsf|__mulsf", b) for b in tables.values())
    assert "eecc_quantize_v6m(" in (tmp_path / "stage.c").read_text()


def rq_tie_c():
    """cdriver/rq_tie.c compiled for this host (integer arithmetic only: the same results as on the M0+)."""
    import ctypes
    import tempfile
    from pathlib import Path

    from eecc.targets import cortex_m

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no host C compiler")
    folder = Path(tempfile.mkdtemp(prefix="eecc-quant-"))
    try:
        so = folder / "rq_tie.so"
        subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(so), str(cortex_m.CDRIVER / "rq_tie.c")], check=True)
        lib = ctypes.CDLL(str(so))  # stays mapped after its file is gone
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lib.eecc_quantize_v6m.restype = None
    lib.eecc_quantize_v6m.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int32] * 4
    return lib


def _ort_single(op: str, x: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """onnxruntime's QuantizeLinear / DequantizeLinear of x with a per-tensor int8 scale and zero point."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    kinds = {"QuantizeLinear": (TensorProto.FLOAT, TensorProto.INT8), "DequantizeLinear": (TensorProto.INT8, TensorProto.FLOAT)}
    src, dst = kinds[op]
    graph = helper.make_graph([helper.make_node(op, ["x", "s", "z"], ["y"])], "q",
                              [helper.make_tensor_value_info("x", src, x.shape)], [helper.make_tensor_value_info("y", dst, x.shape)],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
                               helper.make_tensor("z", TensorProto.INT8, [], [zero])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("kernel", ["magic", "search", "v6m"])
@pytest.mark.parametrize("scale,zero", [(0.25, 0), (0.0371, -7), (3.0e-5, 100), (7.5e3, -128)])
def test_input_quantize_kernels_equal_onnxruntime(kernel, scale, zero):
    """Both stage-input QuantizeLinear kernels (mcu_quantize: the magic-add rounding with an FPU, the threshold
    bisection without) against onnxruntime: exact .5 ties, values around ±2^22 steps, far out of range, ±inf,
    ±0, and every threshold of the bisection table with the float just below it."""
    from eecc.targets import mcu_quantize as mq

    rng = np.random.default_rng(7)
    steps = np.concatenate([np.arange(-300, 300) / 2, rng.standard_normal(3000) * 60, [2.0 ** 22 - 0.5, 2.0 ** 22,
                            2 ** 22 + 1, -2.0 ** 22 + 0.5, -2.0 ** 22, -1.5 * 2 ** 23, -3 * 2 ** 23, 1e30, -1e30]])
    table = mq.thresholds(scale, zero)
    edges = mq._unkey(np.concatenate([table[1:], table[1:] - 1]).astype(np.int64))
    x = np.concatenate([(steps * scale).astype(np.float32), edges, np.float32([np.inf, -np.inf, 0.0, -0.0])])
    x = np.concatenate([x, np.zeros(-len(x) % 8, np.float32)]).reshape(1, -1, 8)
    want = _ort_single("QuantizeLinear", x, scale, zero)
    if kernel == "magic":  # the M4's cdriver/ops_fpu.c, built for this host
        got = np.zeros(x.shape, np.int8)
        ops_fpu().eecc_quantize_s8(ptr(x), ptr(got), x.size, mq.f32_bits(scale), mq.MAGIC_BITS - zero)
    elif kernel == "v6m":  # the M0+'s cdriver/rq_tie.c (integer C), built for this host
        got, t = np.zeros(x.shape, np.int8), mq.v6m_table(scale, zero)
        rq_tie_c().eecc_quantize_v6m(ptr(x), ptr(t), ptr(got), x.size, *mq.quantize_v6m_constants(scale, zero))
    else:
        got = _run_host(mq.quantize_search_kernel(x.shape), [x, table], [(x.shape, "int8")])
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 100  # the grid covers the whole int8 range, not only saturation
    assert np.all(np.diff(table.astype(np.int64)) > 0)  # one step per level: the bisection's precondition


@pytest.mark.parametrize("kernel", ["table", "fpu"])
@pytest.mark.parametrize("scale,zero", [(0.25, 0), (0.0371, -7), (3.0e-5, 100), (1e30, -128)])
def test_dequantize_equals_onnxruntime(scale, zero, kernel):
    """mcu_quantize's DequantizeLinear, by table (cores without an FPU) and computed (FPU), every int8 value,
    bit for bit with onnxruntime (inf included)."""
    from eecc.targets import mcu_quantize as mq

    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 64)
    if kernel == "table":
        got = _run_host(mq.dequantize_kernel(x.shape), [x, mq.dequantize_table(scale, zero)], [(x.shape, "float32")])
    else:  # the M4's cdriver/ops_fpu.c, built for this host
        got = np.zeros(x.shape, np.float32)
        ops_fpu().eecc_dequantize_s8(ptr(x), ptr(got), x.size, zero, mq.f32_bits(scale))
    assert np.array_equal(got.view(np.int32), _ort_single("DequantizeLinear", x, scale, zero).view(np.int32))


def test_mul_halves_equals_the_64_bit_product():
    """Armv6-M's requantisation product (mcu_requant._mul_halves) against int64: the rounded high word
    floor(a·m / 2^32 + 1/2) and the low word's high half + 2^15 (mod 2^16: 0 at the tie), extremes included."""
    import tvm
    from tvm.script import tirx as T

    rng = np.random.default_rng(3)
    a = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 5000), [-2 ** 31, 2 ** 31 - 1, -1, 0, 1, -65536, 65535, 2]])
    m = np.concatenate([rng.integers(0, 2 ** 31, 5000), [2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1, 1, 0x40000000, 65535,
                                                          65536, 2 ** 31 - 1]])
    n = len(a)

    @T.prim_func(private=True, check_well_formed=False)
    def halves(av: T.Buffer((n,), "int32"), mv: T.Buffer((n,), "int32"), out: T.Buffer((2, n), "int32")):
        for i in range(n):
            q, d = mcu_requant._mul_halves(T, av[i], mv[i])
            out[0, i] = q
            out[1, i] = d

    lib = tvm.tirx.build(halves.with_attr("global_symbol", "k"), target="llvm")
    got = tvm.runtime.tensor(np.zeros((2, n), np.int32))
    lib["k"](tvm.runtime.tensor(a.astype(np.int32)), tvm.runtime.tensor(m.astype(np.int32)), got)
    p = a.astype(np.int64) * m.astype(np.int64)
    assert np.array_equal(got.numpy()[0], (p + (1 << 31)) >> 32)
    assert np.array_equal(got.numpy()[1] & 0xFFFF, (((p & 0xFFFFFFFF) >> 16) + (1 << 15)) & 0xFFFF)


def test_mul_split_equals_the_exact_product():
    """Armv6-M's two-multiply requantisation product (fixed_point.mul_split) against int64 on the exact
    v = a·S: floor(v + 1/2) and (floor(v·2^16) + 2^15) mod 2^16, over |a| < 2^19 and S in [2^-36, 2^-5);
    split_constants refuses S ≥ 2^-5 and accumulators that may reach 2^19."""
    import tvm
    from tvm.script import tirx as T

    from eecc.targets import fixed_point

    rng = np.random.default_rng(4)
    n = 6000
    s = (rng.uniform(1, 2, n) * 2.0 ** rng.integers(-36, -5, n)).astype(np.float32)
    s[:3] = [2.0 ** -36, np.nextafter(np.float32(2.0 ** -5), np.float32(0)), 2.0 ** -6]
    a = rng.integers(-2 ** 19 + 1, 2 ** 19, n)
    a[3:9] = [2 ** 19 - 1, -2 ** 19 + 1, 0, 1, -1, 2 ** 18]
    mh, c3 = fixed_point.split_constants(np.zeros(n), s, np.zeros((n, 1), np.int8))

    @T.prim_func(private=True, check_well_formed=False)
    def split(av: T.Buffer((n,), "int32"), mv: T.Buffer((n,), "int32"), cv: T.Buffer((n,), "int32"),
              out: T.Buffer((2, n), "int32")):
        for i in range(n):
            q, t = fixed_point.mul_split(T, av[i], mv[i], cv[i])
            out[0, i] = q
            out[1, i] = t

    lib = tvm.tirx.build(split.with_attr("global_symbol", "k"), target="llvm")
    got = tvm.runtime.tensor(np.zeros((2, n), np.int32))
    lib["k"](*(tvm.runtime.tensor(v.astype(np.int32)) for v in (a, mh, c3)), got)
    bits = s.view(np.int32).astype(np.int64)
    m24, e = (bits & 0x7FFFFF) | 0x800000, 150 - ((bits >> 23) & 0xFF)  # S = m24·2^-e
    p = a.astype(np.int64) * m24  # v = p·2^-e, |p| < 2^43
    assert np.array_equal(got.numpy()[0], (p + (np.int64(1) << (e - 1))) >> e)
    assert np.array_equal(got.numpy()[1] & 0xFFFF, ((p >> (e - 16)) + (1 << 15)) & 0xFFFF)
    w = np.ones((1, 1), np.int8)
    assert fixed_point.split_constants(np.zeros(1), np.float32([2.0 ** -5]), w) is None
    assert fixed_point.split_constants(np.array([2 ** 19 - 255]), np.float32([2.0 ** -8]), w) is None
    assert fixed_point.split_constants(np.array([2 ** 19 - 256]), np.float32([2.0 ** -8]), w) is not None
