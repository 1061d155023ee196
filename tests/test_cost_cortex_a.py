"""The Cortex-A (rk3588 CPU) group of the cost model: its own block of features, code hash and rows file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from eecc.cost import aarch64
from eecc.cost import model as cost_model
from eecc.cost.features import BASE, FEATURES, KERNEL_FEATURES, block, graph_features, named
from eecc.cost.measure import all_cut_stages, dummy_heads, kernels_id
from eecc.cost.model import fit, load_rows
from eecc.cost.segments import MEASURED, NOMINAL, DeviceCost, SegmentTable
from eecc.driver.pipeline import make_stages
from eecc.exits.run import plan_exits
from eecc.passes.insert_exits import insert_exits
from eecc.targets.codegen import CPI, reference_runs
from eecc.targets.platform import load_platform

from tests.test_cost_model import MODELS, _model

needs_aarch64 = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64")),
    reason="aarch64-linux-gnu-gcc / qemu-aarch64 not installed (Debian: gcc-aarch64-linux-gnu qemu-user)")
# Fixture units within ±15 % held out (`python -m eecc.cost held-out --group cortex-a`, README), of 209 per format
WITHIN = {"fp32": 137, "int8": 116}  # int8 117 before the activation units (eecc/cost/activations.py); fp32 131
# before the 2-D row rule of aarch64._neon_share and the depthwise units aarch64.DEPTHWISE_A
STAGE_TOLERANCE = {"fp32": 0.15, "int8": 0.20}

DSCONV = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 16, 9, 9] x) => (float[N, 64, 9, 9] y) <float[16, 1, 3, 3] wd, float[16, 1, 3, 3] ws, float[48, 16, 1, 1] wp,
                                                   float[64, 48, 1, 1] wq> {
  a = Conv <group = 16, pads = [1, 1, 1, 1]> (x, wd)
  b = Conv <group = 16, pads = [1, 1, 1, 1], strides = [2, 2]> (a, ws)
  c = Conv (a, wp)
  y = Conv (c, wq)
}
"""
POINTWISE64 = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 64, 9, 9] x) => (float[N, 8, 9, 9] y) <float[8, 64, 1, 1] w> {
  y = Conv (x, w)
}
"""


def test_the_cortex_a_code_hash_leaves_out_the_microcontroller_kernels():
    files = {p.name for p in aarch64.code_files("int8")}
    assert {"cortex_a.py", "tvm_import.py", "int8_lowering.py", "runtime_common.c", "host_main.c"} <= files
    # eecc's microcontroller kernels and their C loops never run on the A76: changing them leaves the fit alone
    assert not files & {"mcu_kernels.py", "mcu_depthwise.py", "mcu_float.py", "mcu_pool.py", "mcu_dense.py", "mcu_gate.py",
                        "mcu_requant.py", "ops_fpu.c", "dot_dsp.c"}
    assert "int8_lowering.py" not in {p.name for p in aarch64.code_files("fp32")}
    assert len({aarch64.kernels_id("fp32"), aarch64.kernels_id("int8"), kernels_id()}) == 3


def test_the_cortex_a_block_prices_every_node_by_tvm_operator_features():
    """No eecc kernel on the A76: the fixture stages' Cortex-A blocks have no kernel loop counts, and their MACs
    are all there (conv, pointwise, depthwise, Gemm, vectorised, in a kept reduction loop or on SDOT)."""
    plan = plan_exits(MODELS / "dscnn.onnx")
    _, stages = all_cut_stages(plan)
    for stage in stages:
        f = graph_features(stage, model_input=plan.graph.inputs[0].name)
        for fmt in ("fp32", "int8"):
            a, m4 = named(f, aarch64.KIND, fmt), named(f, "cortex-m0plus", "fp32")  # the M0+ in fp32: TVM too
            assert all(a[k] == 0 for k in KERNEL_FEATURES)
            macs = ("conv_macs", "pw_macs", "dw_macs", "gemm_macs", "neon_macs", "loop_macs", "sdot_macs")
            assert sum(a[k] for k in macs) == pytest.approx(sum(m4[k] for k in macs))


def test_vectorised_and_looped_macs_follow_the_aarch64_loop_rules():
    """A reduction of up to 24 MACs (3x3 depthwise, a 1x1 conv over 16 channels) unrolls and the output row is
    vectorised 4 at a time at stride 1 (8 of 9 columns), at stride 2 it stays scalar; a 1x1 conv over 48 channels
    unrolls (pw_macs), over 64 the reduction stays a loop (loop_macs); no pad copy without padding."""
    f = named(graph_features(_model(DSCONV)), aarch64.KIND, "fp32")
    dw, pw16, pw48 = 16 * 81 * 9, 48 * 81 * 16, 64 * 81 * 48
    assert f["neon_macs"] == pytest.approx((dw + pw16) * 8 / 9) and f["loop_macs"] == 0
    assert f["dw_macs"] == pytest.approx(dw / 9 + 16 * 25 * 9) and f["pw_macs"] == pytest.approx(pw16 / 9 + pw48)
    assert named(graph_features(_model(POINTWISE64)), aarch64.KIND, "fp32")["loop_macs"] == 8 * 81 * 64
    assert f["pad_in"] == 2 * 16 * 11 * 11  # the two padded depthwise convs only
    # int8: a 1x1 conv over 64 channels runs on SDOT up to 64 output positions (7x7 yes, 9x9 no)
    assert named(graph_features(_model(POINTWISE64)), aarch64.KIND, "int8")["sdot_macs"] == 0
    small = named(graph_features(_model(POINTWISE64.replace("9, 9]", "7, 7]"))), aarch64.KIND, "int8")
    assert small["sdot_macs"] == 8 * 49 * 64 and small["loop_macs"] == small["loop_iters"] == 0


DS_STAGE = """
< ir_version: 8, opset_import: ["" : 17] >
g (float[N, 16, 14, 14] x) => (float[N, 10] y) <float[16, 1, 3, 3] wd, float[32, 16, 1, 1] wp, float[32, 1, 3, 3] ws,
                                                float[10, 32] wf> {
  a = Conv <group = 16, pads = [1, 1, 1, 1]> (x, wd)
  ra = Relu (a)
  c = Conv (ra, wp)
  rc = Relu (c)
  d = Conv <group = 32, pads = [1, 1, 1, 1], strides = [2, 2]> (rc, ws)
  rd = Relu (d)
  g = GlobalAveragePool (rd)
  f = Flatten (g)
  y = Gemm <transB = 1> (f, wf)
}"""


def test_a_2d_row_of_more_than_9_outputs_not_a_multiple_of_4_stays_scalar_in_fp32():
    """nu11's depthwise-separable CNN on 14x14 maps: its 3x3 depthwise and 1x1 convs were priced as vectorised (12 of
    14 columns), the A76 ran them scalar (~2.2 instructions per MAC against ~0.85 at widths 8, 12, 16, 20, 28)."""
    f = named(graph_features(_model(DS_STAGE)), aarch64.KIND, "fp32")
    assert f["neon_macs"] == 8 * 32  # the classifier's only (8 of its 10 outputs)
    assert f["dw_macs"] == 16 * 196 * 9 + 32 * 49 * 9 and f["pw_macs"] == 32 * 196 * 16
    wide = named(graph_features(_model(DS_STAGE.replace("14, 14]", "16, 16]"))), aarch64.KIND, "fp32")
    assert wide["neon_macs"] == 16 * 256 * 9 + 32 * 256 * 16 + 8 * 32  # stride 1, width 16: all of it
    int8 = named(graph_features(_model(DS_STAGE)), aarch64.KIND, "int8")  # int8: the old rule (12 of 14)
    assert int8["neon_macs"] == pytest.approx((16 * 196 * 9 + 32 * 196 * 16) * 12 / 14 + 8 * 32)
    rows, _ = aarch64.load_rows()
    dw = {r["format"] for r in rows if r["model"].startswith("layer:a-dw-")}
    assert dw == {"fp32"} and sum(r["model"].startswith("layer:a-dw-") for r in rows) == len(aarch64.DEPTHWISE_A)


@needs_aarch64
def test_a_depthwise_separable_stage_on_14x14_maps_matches_its_qemu_aarch64_count(tmp_path):
    """The shipped fit within 15 % of qemu-aarch64's count, fp32: +9.2 % of 345,044 instructions (before the row rule
    and the units of aarch64.DEPTHWISE_A: -41.2 %)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_a

    model = _model(DS_STAGE)
    predicted = fit(load_rows()["rows"] + aarch64.load_rows()[0]).instructions(graph_features(model), aarch64.KIND,
                                                                               "fp32")
    x = np.random.default_rng(0).normal(size=(2, 16, 14, 14)).astype(np.float32)
    counted = emulate_stage(cortex_a.compile_stage(model, cpu=aarch64.CPU, out_dir=tmp_path), x).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


def test_rows_written_before_a_feature_was_added_are_read_by_name(tmp_path):
    """measured.json keeps its own feature list: read into this checkout's FEATURES by name, it fits the same."""
    data = load_rows()
    old = [f for f in FEATURES if not f.startswith(aarch64.KIND) and not f.endswith(("neon_macs", "loop_macs",
                                                                                       "gemm_relu"))]
    at = [FEATURES.index(n) for n in old]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**data, "features": old, "rows": [{**r, "features": [r["features"][i] for i in at]}
                                                                  for r in data["rows"]]}))
    again = load_rows(path)
    kept = {FEATURES.index(n) for n in old}  # a refit writes the (unused) Cortex-A block of the Cortex-M rows too
    assert again["features"] == list(FEATURES) and [r["features"] for r in again["rows"]] == \
        [[v if i in kept else 0.0 for i, v in enumerate(r["features"])] for r in data["rows"]]
    path.write_text(json.dumps({**data, "features": old + ["cortex-m4/fp32/unknown"]}))
    assert load_rows(path)["rows"] == []


def test_cortex_a_rows_live_in_their_own_file_with_a_code_hash_per_format(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.uniform(0.5, 3, len(BASE))
    rows = [{"model": f"m{i % 3}", "index": i, "cpu": aarch64.KIND, "format": fmt,
             "features": (v := rng.uniform(0, 1e4, len(BASE))).tolist(), "instructions": float(v @ true)}
            for i in range(60) for fmt in ("fp32", "int8")]  # more rows than features
    path = tmp_path / "measured_cortex_a.json"
    aarch64.write_rows(rows, path)
    read, notes = aarch64.load_rows(path)
    assert not notes and len(read) == 120 and {len(r["features"]) for r in read} == {len(FEATURES)}
    model = fit(read)
    for fmt in ("fp32", "int8"):
        np.testing.assert_allclose(model.weights[(aarch64.KIND, fmt)][block(aarch64.KIND, fmt)], true, rtol=1e-6)
    # measured with other code in int8: a note naming the refit, the M rows untouched
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "kernels": {**doc["kernels"], "int8": "0000"}}))
    both = cost_model.load_default(cost_model.MEASURED, path)
    assert both.stale and both.covers(aarch64.KIND, "fp32") and both.covers("cortex-m4", "int8")
    assert [n for n in both.notes if "Cortex-A int8" in n and "refit --group cortex-a" in n]
    assert not cost_model.load_default(cost_model.MEASURED, tmp_path / "none.json").covers(aarch64.KIND, "fp32")


def test_the_shipped_cortex_a_rows_fit_their_held_out_units():
    """Leave one fixture out (`python -m eecc.cost held-out --group cortex-a`): the share of each fixture's units within
    ±15 % that the README reports, per format (the shipped rows; whether this checkout's Cortex-A code made them is
    the stale flag's business, as for the Cortex-M rows: test_cortex_a_rows_live_in_their_own_file...)."""
    rows, _ = aarch64.load_rows()
    for fmt, least in WITHIN.items():
        out = [r for r in cost_model.held_out(rows) if r["format"] == fmt]
        within = sum(abs(r["error"]) <= 0.15 for r in out)
        assert len(out) == 209 and within >= least, (fmt, within)


@needs_aarch64
@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_the_search_prices_cortex_a_stages_as_qemu_aarch64_counts_them(tmp_path, fmt):
    """Both stages of a cnn cascade (exit at the third candidate) on the rk3588 CPU: the seconds the search gives
    them (DeviceCost, fitted WITHOUT any cnn measurement) within STAGE_TOLERANCE of the instructions qemu-aarch64
    counts × CPI / clock_hz, as `compile --emulate` calibrates them (here: fp32 -0.8 % / +1.3 %, int8 stage 1
    -16.1 %: the int8 fit is the weaker one, README)."""
    from eecc.model import ir
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_a
    from eecc.targets.quantize import quantize_stages

    plan = plan_exits(MODELS / "cnn.onnx")
    held = fit(load_rows()["rows"] + aarch64.load_rows()[0], exclude=("cnn",))
    device = DeviceCost(load_platform("rk3588"), SegmentTable.from_plan(plan), fmt=fmt, model=held)
    assert device.sources == {"cpu": MEASURED, "gpu": NOMINAL}
    head = dummy_heads(plan.design.heads)[2]
    cut = head.spec.tensor
    stages = [ir.to_model(s) for s in make_stages(insert_exits(plan.graph, heads=[head]), cuts=[cut],
                                                  processors=["cpu", "cpu"], thresholds=[0.5])]
    x = np.random.default_rng(0).normal(size=(64, *plan.input_shape)).astype(np.float32)
    stages = quantize_stages(stages, x) if fmt == "int8" else stages
    feeds = reference_runs(stages, x[:2])
    for k, (stage, (start, end)) in enumerate(zip(stages, [(None, cut), (cut, None)])):
        arts = cortex_a.compile_stage(stage, cpu=aarch64.CPU, out_dir=tmp_path / str(k))
        emulated_s = emulate_stage(arts, feeds[k][0]).instructions * CPI["cortex-a"] / 2.4e9
        assert device.seconds("cpu", start, end, 0) == pytest.approx(emulated_s, rel=STAGE_TOLERANCE[fmt]), (k, fmt)
