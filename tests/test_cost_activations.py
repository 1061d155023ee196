"""MobileNet-style activations in the cost model (eecc/cost/activations.py): Hardswish as HardSigmoid + Mul or one
HardSwish op, ReLU6 as Clip, priced by how each lowering runs them, and measured by the layer units of
eecc/cost/layers.py (nu9: MobileNetV2-style stages were priced 21-108 % over their QEMU counts)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from eecc.cost.features import graph_features, named
from eecc.cost.layers import ACTIVATION, INVERTED
from eecc.cost.model import fit, load_rows

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")
BLOCKS = [("cortex-m0plus", "fp32"), ("cortex-m4", "fp32"), ("cortex-m0plus", "int8"), ("cortex-m4", "int8"),
          ("cortex-a", "fp32"), ("cortex-a", "int8")]


def _model(act: str, group: int = 1) -> onnx.ModelProto:
    """x [N, 8, 6, 6] -> 3x3 conv (8 outputs; depthwise with group 8) -> act -> y."""
    acts = {"hsig": "h = HardSigmoid <alpha = 0.16666667, beta = 0.5> (c)\n y = Mul (c, h)",
            "hswish": "y = HardSwish (c)", "relu6": "y = Clip (c, lo, hi)"}
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 8, 6, 6] x) => (float[N, 8, 6, 6] y)
        <float lo = {{0.0}}, float hi = {{6.0}}>
        {{ c = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1], group = {group}> (x, w, b)
           {acts[act]} }}""")
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.ones((8, 8 // group, 3, 3), np.float32), "w"),
                                    onnx.numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    return model


def test_both_hardswish_exports_have_the_same_features_and_the_mul_no_pass_of_its_own():
    a, b = graph_features(_model("hsig"), model_input="x"), graph_features(_model("hswish"), model_input="x")
    assert np.array_equal(a, b)  # M4F, fp32: 150,268 vs 150,269 instructions on the units' 16x14x14 map
    m4 = named(a, "cortex-m4", "fp32")
    assert (m4["act"], m4["act_mul"], m4["eltwise"]) == (288, 288, 0)  # after eecc's tile conv: a pass of its own


@pytest.mark.parametrize("cpu, fmt, want", [
    ("cortex-m4", "fp32", {"act": 288, "act_fused": 0}),       # eecc's tile conv fuses bias and ReLU only
    ("cortex-m0plus", "fp32", {"act": 0, "act_fused": 288}),   # TVM's conv: the Clip in its output loop
    ("cortex-m4", "int8", {"act": 0, "act_fused": 0}),         # the quantiser folds it into the requantisation
    ("cortex-a", "fp32", {"act": 0, "act_fused": 288})])
def test_relu6_is_priced_by_how_the_lowering_runs_it(cpu, fmt, want):
    f = named(graph_features(_model("relu6"), model_input="x"), cpu, fmt)
    assert {k: f[k] for k in want} == want and f["act_mul"] == 0 and f["eltwise"] == 0
    dw = named(graph_features(_model("relu6", group=8), model_input="x"), "cortex-m4", "fp32")
    assert dw["act_fused"] == 288  # the depthwise conv is TVM's on the M4F too


def test_int8_hardswish_runs_in_float_between_a_dequantise_and_a_quantise():
    base = named(graph_features(_model("relu6"), model_input="x"), "cortex-m4", "int8")
    f = named(graph_features(_model("hsig"), model_input="x"), "cortex-m4", "int8")
    assert (f["act"], f["act_mul"]) == (288, 288)
    assert f["io_out"] - base["io_out"] == 288  # the conv's output dequantised into the float island


def test_the_shipped_rows_hold_the_activation_units_on_every_group():
    rows = load_rows()["rows"]
    names = {r["model"] for r in rows}
    want = {n for n in names if n.startswith(("layer:hsig", "layer:hswish", "layer:relu6", "layer:inverted"))}
    assert len(want) == len(ACTIVATION) + len(INVERTED)
    for cpu, fmt in BLOCKS[:4]:
        assert sum(r["model"] in want and (r["cpu"], r["format"]) == (cpu, fmt) for r in rows) == len(want)


def _mbv2_stage() -> onnx.ModelProto:
    """A MobileNetV2-style stage none of the units is: stride-2 stem with TorchScript's Hardswish, an inverted
    residual block (1x1 to 48, ReLU6, depthwise 3x3, ReLU6, 1x1 back to 12, Add), global pool and a classifier."""
    rng = np.random.default_rng(3)
    shapes = {"ws": (12, 1, 3, 3), "bs": (12,), "we": (48, 12, 1, 1), "be": (48,), "wd": (48, 1, 3, 3), "bd": (48,),
              "wp": (12, 48, 1, 1), "bp": (12,), "wf": (10, 12), "bf": (10,)}
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 1, 20, 20] x) => (float[N, 10] y)
        <float lo = {0.0}, float hi = {6.0}>
        { s = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]> (x, ws, bs)
          hs = HardSigmoid <alpha = 0.16666667, beta = 0.5> (s)
          a = Mul (s, hs)
          e = Conv <kernel_shape = [1, 1]> (a, we, be)
          e6 = Clip (e, lo, hi)
          d = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1], group = 48> (e6, wd, bd)
          d6 = Clip (d, lo, hi)
          p = Conv <kernel_shape = [1, 1]> (d6, wp, bp)
          r = Add (p, a)
          g = GlobalAveragePool (r)
          f = Flatten (g)
          y = Gemm <transB = 1> (f, wf, bf) }""")
    model.graph.initializer.extend(onnx.numpy_helper.from_array(
        (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 10)).astype(np.float32), n)
        for n, s in shapes.items())
    onnx.checker.check_model(model, full_check=True)
    return model


@needs_arm
@pytest.mark.parametrize("cpu, fmt", [("cortex-m4", "fp32"), ("cortex-m4", "int8")])
def test_a_mobilenet_style_stage_matches_its_qemu_count(tmp_path, cpu, fmt):
    """Priced by the shipped fit within 15 % of QEMU's count: M4F fp32 -8.0 %, M4 int8 -6.4 % (837,254 and 468,786
    instructions; before the activation features and units +36.0 % and +27.0 %: the HardSigmoid, its Mul and the
    Clips were `eltwise` work at ~39 instructions per element in fp32; M0+ int8 -0.8 %, was +4.3 %)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.quantize import quantize_stages

    model = _mbv2_stage()
    predicted = fit(load_rows()["rows"]).instructions(graph_features(model, model_input="x"), cpu, fmt)
    x = np.random.default_rng(0).normal(size=(64, 1, 20, 20)).astype(np.float32)
    model = quantize_stages([model], x)[0] if fmt == "int8" else model
    counted = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x[:2]).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


def test_an_int8_island_is_quantised_after_the_pools_and_reshapes_that_follow_it():
    """nu9's mbv2 stage 0 (Hardswish, then the exit head's max pool and Flatten): onnxruntime's quantiser leaves the
    pool and the Flatten in float after the Mul, so the stage quantises the pooled values, not the activation's (M4
    int8: +21.1 % over QEMU's 211,609 instructions before, +2.0 % with this)."""
    from eecc.cost import activations, features

    assert activations.CARRY == features.BEFORE_QUANTIZE
    model = _model("hsig")
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["N", 10]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((10, 32), np.float32), "wz"))
    model.graph.node.extend([onnx.helper.make_node("MaxPool", ["y"], ["p"], kernel_shape=[3, 3], strides=[3, 3]),
                             onnx.helper.make_node("Flatten", ["p"], ["f"]),
                             onnx.helper.make_node("Gemm", ["f", "wz"], ["z"], transB=1)])
    pooled = named(graph_features(model, model_input="x"), "cortex-m4", "int8")
    alone = named(graph_features(_model("hsig"), model_input="x"), "cortex-m4", "int8")
    assert pooled["in_dense"] - alone["in_dense"] == 32  # the 32 pooled values, not the 288 of the activation
    assert (pooled["float_max"], pooled["pool"]) == (32 * 9, 0)  # the max pool runs in float
