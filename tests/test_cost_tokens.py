"""Tensors that hold a sample as several rows or with the batch off axis 0 (a ViT's [N·tokens, dim] projections and
[tokens, N, dim] attention inputs): the cost model's element counts and the stage memory figure take one sample's
share of them (ir.sample_shape), not one row. nu11's ViT: cost 37-68 % off; fx7 left the RAM figure at one row."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from eecc.cost.features import graph_features, named
from eecc.cost.model import default_model
from eecc.model import ir
from eecc.model.stage_cost import stage_cost

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")
TOKENS, DIM, HIDDEN = 16, 32, 128


def _token_mlp() -> onnx.ModelProto:
    """x [N, 16, 32] -> rows [N·16, 32] -> Gemm 128, Relu, Gemm 32 -> [N, 16, 32] -> [16, N, 32] -> MatMul 32x32 ->
    [N, 16, 32] + x -> mean over tokens -> classifier (a ViT block's MLP and a seq-first projection, as torch exports
    them: the Reshapes' row counts are symbolic until a run at two batch sizes, ir._folded_batch_candidates)."""
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, {TOKENS}, {DIM}] x) => (float[N, 10] y)
        {{ rows = Constant <value = int64[2] {{-1, {DIM}}}> ()
          tokens = Constant <value = int64[3] {{-1, {TOKENS}, {DIM}}}> ()
          r = Reshape (x, rows)
          g = Gemm <transB = 1> (r, w1, b1)
          a = Relu (g)
          h = Gemm <transB = 1> (a, w2)
          b = Reshape (h, tokens)
          t = Transpose <perm = [1, 0, 2]> (b)
          mm = MatMul (t, w3)
          u = Transpose <perm = [1, 0, 2]> (mm)
          s = Add (u, x)
          p = ReduceMean <axes = [1], keepdims = 0> (s)
          y = Gemm <transB = 1> (p, wf, bf) }}""")
    shapes = {"w1": (HIDDEN, DIM), "b1": (HIDDEN,), "w2": (DIM, HIDDEN), "w3": (DIM, DIM), "wf": (10, DIM), "bf": (10,)}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(
        (rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32), n) for n, s in shapes.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def test_folded_and_seq_first_tensors_count_every_token():
    f = named(graph_features(_token_mlp(), model_input="x"), "cortex-m4", "fp32")
    assert f["gemm_macs"] == TOKENS * (2 * DIM * HIDDEN + DIM * DIM) + 10 * DIM  # was 1/16 of the first three
    assert f["mac_out"] == TOKENS * (HIDDEN + 2 * DIM) + 10
    graph = ir.from_model(_token_mlp(), classifier=False)
    shapes = {n.outputs[0].name: ir.sample_shape(n.outputs[0]) for n in graph.nodes}
    assert shapes["r"] == shapes["h"] == (TOKENS, DIM) and shapes["a"] == (TOKENS, HIDDEN)  # the Reshape: was (32,)
    assert shapes["t"] == shapes["mm"] == (TOKENS, DIM)


MULTI_ROW_INT8 = ("kernels bb4197addec48447: the M4's int8 Gemm with one row per sample runs eecc_fc_s8's 4-row SMLAD "
                  "tile (~1.6 instructions per MAC), one on [N·tokens, K] rows TVM's matmul as before; the fit has no "
                  "feature telling them apart and prices both at the tile's rate: -31.6 % (481,577 vs 703,679); "
                  "needs a multi-row Gemm feature and the rows' features recomputed (done/cm11.md)")


@pytest.mark.parametrize("cpu, fmt, tolerance", [("cortex-m4", "fp32", 0.15), ("cortex-m0plus", "fp32", 0.15),
                                                 pytest.param("cortex-m4", "int8", 0.20, marks=pytest.mark.xfail(
                                                     strict=True, reason=MULTI_ROW_INT8))])
def test_a_token_mlp_stage_matches_its_qemu_count_and_its_arena(tmp_path, cpu, fmt, tolerance):
    """Shipped fit vs QEMU (kernels 8c5668f7a5fbeaf1): M4F fp32 -91.5 % -> -2.6 % (731,780 instructions), M0+ fp32
    -93.7 % -> +6.6 % (28,034,691), M4 int8 -92.4 % -> -12.1 % (703,857; int8's Gemms on rows are not in the fit's
    units: 20 %). The stage's activation figure is not below the arena TVM's memory plan gives it (M4F fp32: 6,144 B
    -> 18,432 B vs 10,240 B: the Relu fused into its Gemm is counted as a tensor of its own, on the safe side)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.quantize import quantize_stages

    model = _token_mlp()
    predicted = default_model().instructions(graph_features(model, model_input="x"), cpu, fmt)
    x = np.random.default_rng(0).normal(size=(64, TOKENS, DIM)).astype(np.float32)
    built = quantize_stages([model], x)[0] if fmt == "int8" else model
    arts = cortex_m.compile_stage(built, cpu=cpu, out_dir=tmp_path)
    counted = emulate_stage(arts, x[:2]).instructions
    assert abs(predicted / counted - 1) <= tolerance, (predicted, counted)
    assert stage_cost(ir.from_model(model, classifier=False), fmt).peak_activation_bytes >= arts.arena_bytes


def _gelu_block() -> onnx.ModelProto:
    """A ViT block's MLP as torch exports it: x [N, 16, 32] -> MatMul 64 + bias -> GELU (Div by sqrt 2, Erf, Add 1,
    Mul x, Mul 0.5) -> MatMul 32 + bias -> + x (residual) -> mean over tokens -> classifier."""
    rng = np.random.default_rng(1)
    model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, {TOKENS}, {DIM}] x) => (float[N, 10] y)
        {{ root2 = Constant <value = float {{1.4142135}}> ()
          one = Constant <value = float {{1.0}}> ()
          half = Constant <value = float {{0.5}}> ()
          h = MatMul (x, w1)
          hb = Add (h, b1)
          d = Div (hb, root2)
          e = Erf (d)
          e1 = Add (e, one)
          g = Mul (hb, e1)
          g2 = Mul (g, half)
          o = MatMul (g2, w2)
          ob = Add (o, b2)
          s = Add (ob, x)
          p = ReduceMean <axes = [1], keepdims = 0> (s)
          y = Gemm <transB = 1> (p, wf, bf) }}""")
    shapes = {"w1": (DIM, 2 * DIM), "b1": (2 * DIM,), "w2": (2 * DIM, DIM), "b2": (DIM,), "wf": (10, DIM), "bf": (10,)}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(
        (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), n) for n, s in shapes.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def test_elementwise_ops_tvm_fuses_after_a_matmul_are_epilogue_work():
    f = named(graph_features(_gelu_block(), model_input="x"), "cortex-m4", "fp32")
    gelu, residual = 5 * TOKENS * 2 * DIM, TOKENS * DIM  # Div, Erf, Add, Mul, Mul; the residual Add
    assert (f["eltwise"], f["act_fused"], f["act_exp"]) == (0, gelu + residual, TOKENS * 2 * DIM)
    assert f["kernels"] == 4  # the two MatMuls, the mean, the classifier: the bias Adds and the epilogue fused in
    int8 = named(graph_features(_gelu_block(), model_input="x"), "cortex-m4", "int8")
    assert int8["act_fused"] == 0 and int8["eltwise"] == gelu + residual + TOKENS * 3 * DIM  # int8: no rule; bias Adds


@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m0plus"])
def test_a_gelu_mlp_stage_matches_its_qemu_count(tmp_path, cpu):
    """Shipped fit vs QEMU (kernels 8c5668f7a5fbeaf1), fp32: the GELU and the residual Add were `eltwise` passes of
    their own (M4F 38.8 instructions per element); TVM runs them in the MatMuls' loops: M4F +33.2 % -> +0.5 % (385,931
    instructions), M0+ -27.9 % -> -4.1 % (17,352,877)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    model = _gelu_block()
    predicted = default_model().instructions(graph_features(model, model_input="x"), cpu, "fp32")
    x = np.random.default_rng(0).normal(size=(2, TOKENS, DIM)).astype(np.float32)
    counted = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


@needs_arm
def test_an_int8_gelu_mlp_builds_for_the_m4_and_agrees_with_onnxruntime(tmp_path):
    """The GELU's constant 1.0 is quantised (QuantizeLinear of a Constant): mcu_quantize.quantize_rule leaves that
    to TVM's FoldConstant, which runs it at build time on the host; as eecc_quantize_s8 (an extern C call) it was
    JIT-run there and not found, and the build died (segmentation fault, kernels 91af58485bbbec9c). Outputs within
    a few steps of the logits' scale of onnxruntime's QDQ stage (float GELU between Q/DQ there)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.codegen import reference_runs
    from eecc.targets.quantize import quantize_stages

    x = np.random.default_rng(0).normal(size=(64, TOKENS, DIM)).astype(np.float32)
    model = quantize_stages([_gelu_block()], x)[0]
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "one" for n in model.graph.node)
    got = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path), x[:4]).outputs["y"]
    want = reference_runs([model], x[:4])[0][1]["y"]
    assert got.shape == want.shape and np.abs(got - want).max() <= 0.05 * np.abs(want).max(), (got, want)
