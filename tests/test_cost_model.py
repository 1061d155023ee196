"""The measured cost model: per-op-kind features, stage composition, the NNLS fit, and its prediction
against a QEMU instruction count with the stage's own model held out of the fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from eecc.driver.pipeline import make_stages
from eecc.cost import model as cost_model
from eecc.cost import measure
from eecc.cost.features import FEATURES, block, graph_features, named
from eecc.cost.kernels import conv_kernel, table_dequantised
from eecc.cost.measure import all_cut_stages, dummy_heads, kernels_id
from eecc.cost.model import fit, load_rows
from eecc.cost.segments import MEASURED, NOMINAL, DeviceCost, SegmentTable
from eecc.exits.family import family
from eecc.exits.run import plan_exits
from eecc.passes.insert_exits import insert_exits
from eecc.targets.platform import load_platform

MODELS = Path(__file__).parent / "fixtures" / "models"
needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="needs gcc-arm-none-eabi and qemu-system-arm")

GRAPH = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 4, 8, 8] x) => (float[N, 10] y) <float[8, 4, 3, 3] w1, float[8, 1, 3, 3] w2, float[16, 8, 1, 1] w3,
                                             float[10, 16] wf, float[10] bf> {
  a = Conv <pads = [1, 1, 1, 1]> (x, w1)
  b = Relu (a)
  c = Conv <group = 8, pads = [1, 1, 1, 1]> (b, w2)
  d = Conv (c, w3)
  e = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (d)
  f = GlobalAveragePool (e)
  g2 = Flatten (f)
  y = Gemm <transB = 1> (g2, wf, bf)
}
"""
WIDE = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 16, 8, 8] x) => (float[N, 8, 8, 8] y) <float[8, 16, 3, 3] w1> {
  y = Conv <pads = [1, 1, 1, 1]> (x, w1)
}
"""


CONV1D = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 4, 20] x) => (float[N, 6, 10] y) <float[8, 4, 5] w1, float[8] b1, float[6, 8, 3] w2> {
  a = Conv <pads = [2, 2]> (x, w1, b1)
  b = Relu (a)
  y = Conv <pads = [1, 1], strides = [2]> (b, w2)
}
"""


def _model(text: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for vi in list(model.graph.value_info):  # the declared weights become initializers
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        model.graph.initializer.append(onnx.numpy_helper.from_array(rng.normal(size=shape).astype(np.float32),
                                                                    vi.name))
        model.graph.value_info.remove(vi)
    return model


def test_features_count_each_op_kind_per_sample():
    f = named(graph_features(_model(GRAPH)), "cortex-m0plus", "fp32")  # every op is TVM's there
    assert f["conv_macs"] == 8 * 64 * 4 * 9          # 3x3, groups 1: Cout·H·W·Cin·Kh·Kw
    assert f["dw_macs"] == 8 * 64 * 9                # depthwise: Cin/groups = 1
    assert f["pw_macs"] == 16 * 64 * 8               # 1x1
    assert f["gemm_macs"] == 10 * 16
    assert f["mac_out"] == 8 * 64 + 8 * 64 + 16 * 64 + 10
    assert f["pad_in"] == 4 * 10 * 10 + 8 * 10 * 10 + 8 * 64  # padded inputs (the 1x1 conv: no padding)
    assert f["in_work"] == 4 * 64                    # the stage input's elements (quantised on entry in int8)
    assert f["pool"] == 16 * 16 * 4 + 16 * 16        # MaxPool: out x window; GAP: its input
    assert f["eltwise"] == 0                         # the Relu is fused into the conv before it
    assert f["io_out"] == 10 and f["kernels"] == 6 and f["const"] == 1  # Flatten is free
    assert f["tile_body"] == f["dwk_step"] == 0


MLP = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 1, 8, 8] x) => (float[N, 10] y) <float[128, 64] w1, float[128] b1, float[128, 128] w2, float[128] b2,
                                             float[10, 128] w3, int64[2] s> {
  f = Reshape (x, s)
  g1 = Gemm <transB = 1> (f, w1, b1)
  h1 = Relu (g1)
  g2 = Gemm <transB = 1> (h1, w2, b2)
  h2 = Relu (g2)
  y = Gemm <transB = 1> (h2, w3)
}
"""


def test_gemm_features_tell_the_matmul_loops_apart():
    """A dynamo-style MLP (Reshape, Gemm(transB) layers): K = 64 and 128 keep a reduction loop, 128 - 1 = 127 has no
    divisor to unroll by (4 copies, exit tests), 63 = 3·21 (21 copies); of 128 outputs' weights (512 bytes apart) VLDR
    reaches 2 copies from one base, of 10 outputs' all; only the first layer reads the model input (counted as
    dense on the soft-float core alone)."""
    model = _mlp_model()
    features = graph_features(model, model_input="x")
    m0, m4 = named(features, "cortex-m0plus", "fp32"), named(features, "cortex-m4", "fp32")
    assert m4["gemm_macs"] == 64 * 128 + 128 * 128 + 128 * 10 == m4["gemm_loop"]
    assert m4["gemm_rem"] == 128 * 128 + 128 * 10
    assert m4["gemm_far"] == pytest.approx(64 * 128 * 19 / 21 + 128 * 128 * 2 / 4)
    assert m0["gemm_dense"] == 64 * 128 and m4["gemm_dense"] == 0
    assert named(features, "cortex-m0plus", "int8")["gemm_dense"] == 0
    assert m4["eltwise"] == 0 and m4["mac_out"] == 128 + 128 + 10  # ReLUs fused, Reshape free
    assert named(graph_features(model), "cortex-m0plus", "fp32")["gemm_dense"] == 0  # no model input named


POOL_FIRST = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 8, 8, 8] h) => (float[N, 8, 4, 4] y, float[N, 8, 4, 4] p) <float[8, 8, 1, 1] w> {
  p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (h)
  y = Conv (p, w)
}
"""


def test_int8_stage_inputs_are_quantised_after_the_max_pools_that_read_them():
    """The quantiser moves a stage's QuantizeLinear past max pooling (they commute), so the pool runs in float
    and only its output is quantised; a hand-off input counts as in_work, the model's own input as in_dense."""
    m0 = named(graph_features(_model(POOL_FIRST)), "cortex-m0plus", "int8")
    assert m0["float_max"] == 8 * 16 * 4 and m0["pool"] == 0      # out x window, in float, not as an int8 pool
    assert m0["in_dense"] == 8 * 16 and m0["in_work"] == 0        # the pooled elements: a max is seldom 0
    assert m0["io_out"] == 2 * 8 * 16                             # p is quantised for the conv, so dequantised out
    fp32 = named(graph_features(_model(POOL_FIRST)), "cortex-m0plus", "fp32")  # nothing converted in fp32
    assert fp32["pool"] == 8 * 16 * 4 and fp32["in_work"] == 8 * 64 and fp32["float_max"] == fp32["in_dense"] == 0
    dense = named(graph_features(_model(GRAPH), model_input="x"), "cortex-m4", "int8")
    assert dense["in_dense"] == 4 * 64 and dense["in_work"] == 0  # the model input: no ReLU zeros
    assert named(graph_features(_model(GRAPH), model_input="x"), "cortex-m4", "fp32")["in_work"] == 4 * 64


def test_convolutions_are_counted_in_the_kernels_the_lowering_chooses():
    m4f = named(graph_features(_model(GRAPH)), "cortex-m4", "fp32")  # groups=1 convs: conv2d_f32's 2x2 tile
    assert m4f["conv_macs"] == m4f["pw_macs"] == 0 and m4f["dw_macs"] == 8 * 64 * 9
    assert m4f["tile_body"] == 32 * 4 * 36 + 32 * 8 * 8  # pixel pairs x channel pairs x K (3x3, then 1x1)
    assert m4f["tile_col"] == 2 * 32 * 36 + 2 * 32 * 8 and m4f["tile_acc"] == 32 * 4 + 32 * 8
    m4 = named(graph_features(_model(GRAPH)), "cortex-m4", "int8")  # SMLAD tile + depthwise pairs
    assert m4["tile_body"] == 32 * 4 * 9 + 32 * 8 * 2  # four K per SMLAD body
    assert m4["dwk_step"] == 8 * 8 * 4 * 3 and m4["dwk_out"] == 8 * 64 and m4["dw_macs"] == 0
    m0 = named(graph_features(_model(GRAPH)), "cortex-m0plus", "int8")  # the plain tile and depthwise kernel
    assert m0["tile_body"] == 32 * 8 * 9 + 32 * 16 * 2 and m0["conv_macs"] == m0["pw_macs"] == 0  # a word of K
    assert m0["dwk_step"] == 8 * 8 * 4 and m0["dwk_tap"] == 8 * 8 * 4 * 9 and m0["dw_macs"] == 0
    wide = named(graph_features(_model(WIDE)), "cortex-m0plus", "int8")  # K = 144: the plain tile
    assert wide["tile_body"] == 32 * 8 * 36 and wide["conv_macs"] == 0


def test_kernel_choice_agrees_with_the_lowering():
    """conv_kernel calls mcu_kernels' own rule; the lowered stage calls exactly those eecc kernels, and
    dequantises by the table exactly the outputs kernels.table_dequantised says (WIDE's 512, not GRAPH's 10)."""
    pytest.importorskip("tvm")
    import tvm

    from eecc.model import ir
    from eecc.targets import cortex_m, tvm_import
    from eecc.targets.quantize import quantize_stages

    for text in (GRAPH, WIDE, CONV1D):  # CONV1D: 1-D convs as H = 1 tiles
        model = _model(text)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
        int8 = quantize_stages([model], np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32))[0]
        convs = [n for n in ir.from_model(model, classifier=False).nodes if n.op == "Conv"]
        for cpu in ("cortex-m0plus", "cortex-m4"):
            stage = tvm_import.lower_stage(int8, tvm.target.Target(cortex_m.CPUS[cpu]["target"]))
            called = sorted("tile" if k.startswith("conv2d_int8") else "dw" for k, _ in stage.calls
                            if k.startswith(("conv2d_int8", "depthwise2d_int8")))
            expected = sorted(k[:2] if k.startswith("dw") else k
                              for k in (conv_kernel(n, cpu, "int8") for n in convs) if k != "tvm")
            assert called == expected, (cpu, called, expected)
            tables = sum(k.startswith("dequantize_int8") for k, _ in stage.calls)
            outputs = [int(np.prod([d.dim_value for d in o.type.tensor_type.shape.dim][1:])) for o in model.graph.output]
            assert tables == sum(table_dequantised(n, cpu) for n in outputs), (cpu, tables, outputs)


def test_kernels_id_ignores_docstrings_comments_and_other_backends(tmp_path, monkeypatch):
    copy = tmp_path / "targets"
    shutil.copytree(measure.TARGETS, copy, ignore=shutil.ignore_patterns("__pycache__", "platforms"))
    monkeypatch.setattr(measure, "TARGETS", copy)
    before = kernels_id()
    kernels = copy / "mcu_kernels.py"
    text = kernels.read_text()
    kernels.write_text(text.replace('"""Hand-scheduled', '"""Reworded: hand-scheduled', 1) + "\n# a comment\n")
    (copy / "gpu_plan.py").write_text((copy / "gpu_plan.py").read_text() + "\nX = 1\n")  # another backend
    assert kernels_id() == before
    assert '"cortex-m85")' in text
    kernels.write_text(text.replace('"cortex-m85")', '"cortex-m85", "cortex-m3")'))  # a change the counts see
    assert kernels_id() != before


def test_stage_features_compose_from_the_all_cuts_table():
    plan = plan_exits(MODELS / "cnn.onnx")
    table = SegmentTable.from_plan(plan)
    cuts, stages = all_cut_stages(plan)
    first = plan.graph.inputs[0].name
    for k, stage in enumerate(stages):  # every piece of the all-cuts split
        start, end = (cuts[k - 1] if k else None), (cuts[k] if k < len(cuts) else None)
        np.testing.assert_allclose(table.features(start, end), graph_features(stage, model_input=first))
    # and a stage of several blocks, from a real two-exit split
    heads = dummy_heads(plan.design.heads)
    pick = [heads[1], heads[4]]
    graph = insert_exits(plan.graph, heads=pick)
    split = make_stages(graph, cuts=[h.spec.tensor for h in pick], processors=["a", "b", "c"], thresholds=[0.5, 0.5])
    bounds = [None, pick[0].spec.tensor, pick[1].spec.tensor, None]
    for k, stage in enumerate(split):
        np.testing.assert_allclose(table.features(bounds[k], bounds[k + 1]), graph_features(stage, model_input=first))
    # and with another head design of the family than the blueprint (what the search may build)
    spec = next(s for s in family(plan.design.heads[2]) if s.kind == "flat" and s.pool_op == "avg")
    graph = insert_exits(plan.graph, heads=dummy_heads([spec]))
    stage = make_stages(graph, cuts=[spec.tensor], processors=["a", "b"], thresholds=[0.5])[0]
    assert spec.design != plan.design.heads[2].design
    np.testing.assert_allclose(table.features(None, spec.tensor, spec.design), graph_features(stage, model_input=first))


def test_fit_recovers_weights_of_exactly_linear_counts_and_holds_models_out():
    rng = np.random.default_rng(0)
    cols = block("cortex-m4", "int8")
    true = np.zeros(len(FEATURES))
    true[cols] = rng.uniform(0.5, 20.0, cols.stop - cols.start)
    feats = rng.uniform(0, 1e4, (60, len(FEATURES)))
    rows = [{"model": f"m{i % 3}", "cpu": "cortex-m4", "format": "int8", "features": f.tolist(),
             "instructions": float(f @ true)} for i, f in enumerate(feats)]
    np.testing.assert_allclose(fit(rows).weights[("cortex-m4", "int8")], true, rtol=1e-6)  # other blocks: 0
    held = fit(rows, exclude=("m0",))
    assert held.rows == 40 and held.held_out == ("m0",)


def test_device_cost_uses_the_model_where_it_covers_the_processor_else_nominal_mac_rate():
    plan = plan_exits(MODELS / "cnn.onnx")
    platform = load_platform("rk3588")  # the Cortex-A has a fit (eecc/cost/aarch64.py), the Mali none: nominal MAC/s
    device = DeviceCost(platform, SegmentTable.from_plan(plan), fmt="int8")
    assert device.sources == {"cpu": MEASURED, "gpu": NOMINAL}
    gpu = platform.processor("gpu")
    extra = device.predict("gpu", device.table.features(None, None), 1e6)["overhead_s"]
    assert device.seconds("gpu", None, None, 1e6) == pytest.approx(1e6 / gpu.macs_per_s + extra)
    n = device.model.instructions(device.table.features(None, None), "cortex-a", "int8")
    assert device.seconds("cpu", None, None, 0) == pytest.approx(n * 0.5 / 2.4e9)  # CPI 0.5 (targets/calibration.py)
    psoc6 = DeviceCost(load_platform("psoc6"), SegmentTable.from_plan(plan), fmt="int8")
    assert set(psoc6.sources.values()) == {MEASURED}
    n = psoc6.model.instructions(psoc6.table.features(None, None), "cortex-m4", "int8")
    assert psoc6.seconds("m4", None, None, 0) == pytest.approx(n / 150e6)


def test_stale_measurements_are_flagged(tmp_path):
    data = load_rows()
    path, none = tmp_path / "measured.json", tmp_path / "no_cortex_a.json"
    path.write_text(json.dumps({**data, "kernels": "0000"}))
    model = cost_model.load_default(path, none)
    assert model.stale and "python -m eecc.cost refit" in model.notes[0] and model.to_json()["stale"]
    # rows from these very kernels are not stale
    path.write_text(json.dumps({**data, "kernels": kernels_id()}))
    assert not cost_model.load_default(path, none).stale


@needs_arm
@pytest.mark.parametrize("cpu, fmt", [("cortex-m0plus", "fp32"), ("cortex-m4", "int8")])
def test_prediction_matches_a_qemu_count_with_the_model_held_out(tmp_path, cpu, fmt):
    """A stage of the cnn fixture (three blocks, an exit head and its gate) on the M0+ in fp32 (TVM's
    operators, soft-float) and on the M4 in int8 (eecc's SMLAD tile kernels): the count the cost model
    predicts, fitted without any cnn measurement, is within 15 % of what QEMU counts."""
    from eecc.model import ir
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.quantize import quantize_stages

    plan = plan_exits(MODELS / "cnn.onnx")
    heads = dummy_heads(plan.design.heads)
    graph = insert_exits(plan.graph, heads=[heads[2]])
    stage = make_stages(graph, cuts=[heads[2].spec.tensor], processors=["a", "b"], thresholds=[0.5])[0]
    held_out = fit(load_rows()["rows"], exclude=("cnn",))
    predicted = held_out.instructions(graph_features(stage, model_input=plan.graph.inputs[0].name), cpu, fmt)
    x = np.random.default_rng(0).normal(size=(64, *plan.input_shape)).astype(np.float32)
    model = ir.to_model(stage)
    model = quantize_stages([model], x)[0] if fmt == "int8" else model
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path)
    counted = emulate_stage(arts, x[:2]).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


def _mlp_model() -> onnx.ModelProto:
    model = _model(MLP)
    model.graph.initializer[-1].CopyFrom(onnx.numpy_helper.from_array(np.array([-1, 64], np.int64), "s"))
    return model


@needs_arm
@pytest.mark.parametrize("cpu, fmt", [("cortex-m4", "fp32"), ("cortex-m4", "int8")])
def test_an_mlp_stage_matches_a_qemu_count(tmp_path, cpu, fmt):
    """nu7's MLP shape (64-128-128-128-10, dynamo's Reshape + Gemm(transB), one stage: no head fits its budget) priced
    by the shipped fit with the MLP fixture held out is within 15 % of its QEMU count (M4F: -29 % before the dense
    layer units and the Gemm loop features, 181,237 predicted vs 255,834 counted)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.quantize import quantize_stages

    model = _mlp_model()
    held_out = fit(load_rows()["rows"], exclude=("mlp",))
    predicted = held_out.instructions(graph_features(model, model_input="x"), cpu, fmt)
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    model = quantize_stages([model], x)[0] if fmt == "int8" else model
    counted = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x[:2]).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


@needs_arm
def test_a_stage_starting_with_a_float_max_pool_matches_qemu_with_the_model_held_out(tmp_path):
    """The cnn fixture's piece after its second candidate starts with a max pool on the hand-off (float before the
    quantisation, soft-float compares and divides on the M0+): predicted without any cnn measurement, within 15 %
    of the QEMU count (this stage was 52 % under before the entry features)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.codegen import reference_runs
    from eecc.targets.quantize import quantize_stages
    from eecc.model import ir

    plan = plan_exits(MODELS / "cnn.onnx")
    _, stages = all_cut_stages(plan)
    features = graph_features(stages[2], model_input=plan.graph.inputs[0].name)
    assert named(features, "cortex-m0plus", "int8")["float_max"] > 0
    x = np.random.default_rng(0).normal(size=(64, *plan.input_shape)).astype(np.float32)
    models = quantize_stages([ir.to_model(s) for s in stages[:3]], x)
    inputs = reference_runs(models, x[:2])[2][0]
    arts = cortex_m.compile_stage(models[2], cpu="cortex-m0plus", out_dir=tmp_path)
    counted = emulate_stage(arts, inputs).instructions
    predicted = fit(load_rows()["rows"], exclude=("cnn",)).instructions(features, "cortex-m0plus", "int8")
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


def test_placements_price_the_head_design_they_carry():
    """The search's stage seconds follow the exit's own head design (the bundle builds that head), not the
    blueprint: the same placement with another design of the family is priced from that design's features."""
    from eecc.search.placement import ModelCost, enumerate_placements, with_heads

    plan = plan_exits(MODELS / "cnn.onnx")
    platform = load_platform("psoc6")
    device = DeviceCost(platform, SegmentTable.from_plan(plan), fmt="int8")
    blueprint = plan.design.heads[2]
    spec = next(s for s in family(blueprint) if s.kind == "flat" and s.pool_op == "avg")
    assert device.measured(platform.processor("m0plus"))
    placements = [p for p in enumerate_placements(platform, plan.costs, ModelCost.from_blocks(plan.blocks),
                                                  device=device)
                  if p.exits == (spec.tensor,) and p.processors == ("m0plus", "m4")]
    assert placements
    heads = {spec.tensor: [(spec.design, spec.head_macs, 4 * spec.params),
                           (blueprint.design, blueprint.head_macs, 4 * blueprint.params)]}
    paired = {p.heads[0]: p for p in with_heads(platform, placements, plan.costs, heads,
                                                ModelCost.from_blocks(plan.blocks), device=device)}
    for design in (spec.design, blueprint.design):
        own = device.seconds("m0plus", None, spec.tensor, paired[design].stage_macs[0], head=design)
        # a sample leaving at the first exit pays stage 0 on the M0+ alone
        assert paired[design].exit_latency_s[0] == pytest.approx(own, rel=1e-9)
    # the two designs' stages differ (by 0.06 % on the M0+ in int8: far more than the 1e-9 above tells apart)
    assert paired[spec.design].exit_latency_s[0] != pytest.approx(paired[blueprint.design].exit_latency_s[0],
                                                                  rel=1e-5)


def _held_out() -> dict:
    """{(cpu, format): [(model, within ±15 %)]} of model.held_out on the shipped rows."""
    within = {}
    for r in cost_model.held_out(load_rows()["rows"]):
        within.setdefault((r["cpu"], r["format"]), []).append((r["model"], abs(r["error"]) <= 0.15))
    return within


def test_held_out_int8_units_stay_predicted_by_the_entry_features():
    """Each fixture held out of the fit (model.held_out on the shipped rows): the int8 units are predicted within
    ±15 % for at least 175 of 195 conv-fixture units on the M0+ (110 before in_dense / entry_features told the
    soft-float conversions apart) and 185 of 195 on the M4."""
    within = {k: [ok for m, ok in v if m != "mlp"] for k, v in _held_out().items()}
    assert all(len(v) == 195 for v in within.values()), {k: len(v) for k, v in within.items()}
    assert sum(within[("cortex-m0plus", "int8")]) >= 175 and sum(within[("cortex-m4", "int8")]) >= 185


def test_held_out_mlp_stages_are_priced_by_the_gemm_features():
    """The digits MLP (layers.mlp_fixture) held out of the fit: every one of its 14 units (dense layers of 256, their
    exit heads and gates) within ±15 % on both cores in both formats, as are 185 of the 195 conv-fixture units in
    fp32 on the M4F (186 on kernels 91af58485bbbec9c; on 0d6cd4096e0ea830 the gated units are up to 8 % cheaper, the
    gate's C loop called straight from the driver, and dscnn unit 300 went from within to +15.1 %). Before the dense layer units and gemm_loop / gemm_rem / gemm_far, the M4F's Gemms were priced
    at 4.3 instructions per MAC from 10-12-class heads while a 128x128 layer runs at 6.2 (nu7's MLP: -29 %)."""
    within = _held_out()
    for key, v in within.items():
        assert key == ("cortex-m4", "int8") or [ok for m, ok in v if m == "mlp"] == [True] * 14, key
    assert sum(ok for m, ok in within[("cortex-m4", "fp32")] if m != "mlp") >= 185


def test_held_out_mlp_stages_are_priced_on_the_m4_in_int8():
    assert [ok for m, ok in _held_out()[("cortex-m4", "int8")] if m == "mlp"] == [True] * 14
