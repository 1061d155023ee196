"""GPU code generation without a GPU: Mali OpenCL kernels with per-kernel schedule fallback, run on PoCL
against onnxruntime; CUDA source compiled to PTX by nvcc where it exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.runtime.gpu_run import run_plan
from eecc.targets import cuda, mali
from eecc.targets.gpu_schedule import SERIAL
from test_cortex_m import exit_stage, reference, small_cnn


def pad_dw_cnn() -> onnx.ModelProto:
    """Explicit Pad before every strided conv (8x8 -> 4x4 -> 2x2 -> 1x1), then a depthwise 3x3 conv on the
    1x1 map (the pattern of EfficientNet-Lite0's last blocks, on which dlight's GEMV rule asserts)."""
    rng = np.random.default_rng(7)
    n = helper.make_node
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w1": rng.normal(0, .4, (8, 3, 3, 3)),
             "w2": rng.normal(0, .2, (16, 8, 3, 3)), "w3": rng.normal(0, .2, (16, 16, 3, 3)),
             "wd": rng.normal(0, .4, (16, 1, 3, 3)), "bd": rng.normal(0, .1, 16), "fc": rng.normal(0, .3, (16, 10))}
    nodes = []
    x = "x"
    for i, w in enumerate(("w1", "w2", "w3")):
        nodes += [n("Pad", [x, "pads"], [f"p{i}"]), n("Conv", [f"p{i}", w], [f"c{i}"], strides=[2, 2]),
                  n("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes += [n("Conv", [x, "wd", "bd"], ["d"], group=16, pads=[1, 1, 1, 1]), n("Relu", ["d"], ["rd"]),
              n("GlobalAveragePool", ["rd"], ["g"]), n("Flatten", ["g"], ["f"]), n("MatMul", ["f", "fc"], ["y"])]
    graph = helper.make_graph(
        nodes, "pad_dw_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(tmp_path, model, x, name="stage"):
    got, device = run_plan(tmp_path / f"{name}.plan.json", {"x": x})
    return got, reference(model, x), device


def test_mali_opencl_kernels_compile_with_pocl(tmp_path):
    arts = mali.compile_stage(small_cnn(), out_dir=tmp_path)
    src = arts.files[0].read_text()
    assert "__kernel" in src and "get_group_id" in src  # really bound to GPU threads, not a serial loop
    assert arts.checked and arts.check_note == f"kernels={arts.kernel_count}"


def test_a_kernel_whose_rule_fails_falls_back_and_the_stage_matches_onnxruntime_on_pocl(tmp_path):
    model = pad_dw_cnn()
    arts = mali.compile_stage(model, out_dir=tmp_path)
    schedules = {s["kernel"]: s for s in arts.extra["schedules"]}
    dw = next(s for k, s in schedules.items() if k.startswith("fused_conv2d3"))  # the depthwise conv on 1x1
    assert dw["failed"] and "AssertionError" in dw["failed"]["GEMV"] and dw["rule"] == "Reduction" and dw["fallback"]
    assert arts.extra["schedule_fallbacks"] == sum(s["fallback"] for s in schedules.values()) >= 1
    assert any(k.startswith("pad") for k in schedules) and arts.checked
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    got, want, device = _run(tmp_path, model, x)
    assert "Portable Computing Language" in device
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-4, rtol=0)
    plan = json.loads((tmp_path / "stage.plan.json").read_text())
    assert [i["name"] for i in plan["inputs"]] == ["x"] and len(plan["launches"]) >= arts.kernel_count


def test_serial_kernels_when_no_rule_applies_still_compute_the_stage(tmp_path):
    model = small_cnn()
    arts = mali.compile_stage(model, out_dir=tmp_path, rules=())  # no dlight rule: every kernel runs serially
    assert {s["rule"] for s in arts.extra["schedules"]} == {SERIAL} and arts.checked
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got, want, _ = _run(tmp_path, model, x)
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-4, rtol=0)


def test_multi_output_stage_with_exit_flag_on_pocl(tmp_path):
    model = exit_stage()
    mali.compile_stage(model, out_dir=tmp_path)
    x = np.random.default_rng(3).standard_normal((4, 4, 40)).astype(np.float32)
    got, want, _ = _run(tmp_path, model, x)
    np.testing.assert_allclose(got["logits"].reshape(4, -1), want["logits"].reshape(4, -1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["handoff"].reshape(4, -1), want["handoff"].reshape(4, -1), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got["exit"].reshape(-1), want["exit"].reshape(-1))


def test_cuda_source_and_ptx(tmp_path):
    arts = cuda.compile_stage(small_cnn(), out_dir=tmp_path)
    src = arts.files[0].read_text()
    assert "__global__" in src and "blockIdx.x" in src and arts.kernel_count >= 4
    if shutil.which("nvcc") is None:
        assert not arts.checked and "nvcc not installed" in arts.check_note
    else:
        assert arts.checked and arts.check_note == f"ptx entries={arts.kernel_count}"


FIXTURES = Path(__file__).parent / "fixtures" / "models"


@pytest.mark.parametrize("name", ["cnn", "cnn1d", "dscnn", "resnet", "kws"])
def test_every_fixture_compiles_for_mali_and_matches_onnxruntime_on_pocl(name, tmp_path):
    from eecc.examples import HERE

    model = onnx.load(HERE / "kws.onnx" if name == "kws" else FIXTURES / f"{name}.onnx")
    arts = mali.compile_stage(model, out_dir=tmp_path)
    assert arts.checked and arts.extra["launches"] >= arts.kernel_count >= 5
    inp = model.graph.input[0]
    x = np.random.default_rng(4).standard_normal(
        [2] + [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]).astype(np.float32)
    got, _ = run_plan(tmp_path / "stage.plan.json", {inp.name: x})
    want = reference(model, x, name=inp.name)
    for out in model.graph.output:
        np.testing.assert_allclose(got[out.name].reshape(want[out.name].shape), want[out.name], atol=1e-4, rtol=0)
