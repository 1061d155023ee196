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
from eecc.cost.features import FEATURES, graph_features
from eecc.cost.measure import all_cut_stages, dummy_heads
from eecc.cost.model import fit, load_rows
from eecc.cost.segments import MEASURED, NOMINAL, DeviceCost, SegmentTable
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


def _features(text: str) -> dict[str, float]:
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for vi in list(model.graph.value_info):  # the declared weights become initializers
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        model.graph.initializer.append(onnx.numpy_helper.from_array(rng.normal(size=shape).astype(np.float32),
                                                                    vi.name))
        model.graph.value_info.remove(vi)
    return dict(zip(FEATURES, graph_features(model)))


def test_features_count_each_op_kind_per_sample():
    f = _features(GRAPH)
    assert f["conv_macs"] == 8 * 64 * 4 * 9          # 3x3, groups 1: Cout·H·W·Cin·Kh·Kw
    assert f["dw_macs"] == 8 * 64 * 9                # depthwise: Cin/groups = 1
    assert f["pw_macs"] == 16 * 64 * 8               # 1x1
    assert f["gemm_macs"] == 10 * 16
    assert f["mac_out"] == 8 * 64 + 8 * 64 + 16 * 64 + 10
    assert f["conv_cols"] == 64 * 4 * 9 + 64 * 8      # im2col: per output pixel, Cin·Kh·Kw (3x3 and 1x1)
    assert f["dw_plane"] == 8 * 10 * 10              # depthwise: each channel plane padded by 1
    assert f["pool"] == 16 * 16 * 4 + 16 * 16        # MaxPool: out x window; GAP: its input
    assert f["eltwise"] == 8 * 64                    # the Relu
    assert f["io_in"] == 4 * 64 and f["io_out"] == 10
    assert f["kernels"] == 7 and f["const"] == 1     # Flatten is free
    assert f["head_macs"] == f["gate"] == 0


def test_stage_features_compose_from_the_all_cuts_table():
    plan = plan_exits(MODELS / "cnn.onnx")
    table = SegmentTable.from_plan(plan)
    cuts, stages = all_cut_stages(plan)
    for k, stage in enumerate(stages):  # every piece of the all-cuts split
        start, end = (cuts[k - 1] if k else None), (cuts[k] if k < len(cuts) else None)
        np.testing.assert_allclose(table.features(start, end), graph_features(stage))
    # and a stage of several blocks, from a real two-exit split
    heads = dummy_heads(plan.design.heads)
    pick = [heads[1], heads[4]]
    graph = insert_exits(plan.graph, heads=pick)
    split = make_stages(graph, cuts=[h.spec.tensor for h in pick], processors=["a", "b", "c"], thresholds=[0.5, 0.5])
    bounds = [None, pick[0].spec.tensor, pick[1].spec.tensor, None]
    for k, stage in enumerate(split):
        np.testing.assert_allclose(table.features(bounds[k], bounds[k + 1]), graph_features(stage))


def test_fit_recovers_weights_of_exactly_linear_counts_and_holds_models_out():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.5, 20.0, len(FEATURES))
    rows = [{"model": f"m{i % 3}", "cpu": "cortex-m4", "format": "int8", "features": f.tolist(),
             "instructions": float(f @ true)} for i, f in enumerate(rng.uniform(0, 1e4, (60, len(FEATURES))))]
    np.testing.assert_allclose(fit(rows).weights[("cortex-m4", "int8")], true, rtol=1e-6)
    held = fit(rows, exclude=("m0",))
    assert held.rows == 40 and held.held_out == ("m0",)


def test_device_cost_uses_the_model_where_it_covers_the_processor_else_nominal_mac_rate():
    plan = plan_exits(MODELS / "cnn.onnx")
    platform = load_platform("rk3588")  # Cortex-A and Mali: no fit, nominal MAC/s
    device = DeviceCost(platform, SegmentTable.from_plan(plan), fmt="int8")
    assert set(device.sources.values()) == {NOMINAL}
    proc = platform.processors[0]
    assert device.seconds(proc.name, None, None, 1e6) == pytest.approx(1e6 / proc.macs_per_s)
    psoc6 = DeviceCost(load_platform("psoc6"), SegmentTable.from_plan(plan), fmt="int8")
    assert set(psoc6.sources.values()) == {MEASURED}
    n = psoc6.model.instructions(psoc6.table.features(None, None), "cortex-m4", "int8")
    assert psoc6.seconds("m4", None, None, 0) == pytest.approx(n / 150e6)


def test_stale_measurements_are_flagged(tmp_path):
    data = load_rows()
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({**data, "kernels": "0000"}))
    model = cost_model.load_default(path)
    assert model.stale and "python -m eecc.cost refit" in model.notes[0] and model.to_json()["stale"]
    assert not cost_model.load_default(cost_model.MEASURED).stale  # the shipped rows match these kernels


@needs_arm
def test_prediction_matches_a_qemu_count_with_the_model_held_out(tmp_path):
    """A stage of the cnn fixture (three blocks, an exit head and its gate), fp32 on the M0+: the count the
    cost model predicts, fitted without any cnn measurement, is within 15 % of what QEMU counts."""
    from eecc.model import ir
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    plan = plan_exits(MODELS / "cnn.onnx")
    heads = dummy_heads(plan.design.heads)
    graph = insert_exits(plan.graph, heads=[heads[2]])
    stage = make_stages(graph, cuts=[heads[2].spec.tensor], processors=["a", "b"], thresholds=[0.5])[0]
    held_out = fit(load_rows()["rows"], exclude=("cnn",))
    predicted = held_out.instructions(graph_features(stage), "cortex-m0plus", "fp32")
    arts = cortex_m.compile_stage(ir.to_model(stage), cpu="cortex-m0plus", out_dir=tmp_path)
    x = np.random.default_rng(0).normal(size=(2, *plan.input_shape)).astype(np.float32)
    counted = emulate_stage(arts, x).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)
