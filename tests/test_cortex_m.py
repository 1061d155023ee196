"""Cortex-M stages: TVM kernels + eecc driver, linked bare-metal, run under QEMU, checked against onnxruntime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.errors import EeccError
from eecc.runtime.emulate import emulate_stage
from eecc.targets import cortex_m, tvm_import

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed "
                                      "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")
FIXTURES = Path(__file__).parent / "fixtures" / "models"


def _model(nodes, inputs, outputs, inits, consts=None, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    tensors = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in inits]
    tensors += [numpy_helper.from_array(v, n) for n, v in (consts or {}).items()]
    graph = helper.make_graph(nodes, "stage", inputs, outputs, tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def small_cnn() -> onnx.ModelProto:
    """conv+relu, maxpool, depthwise conv+relu with a residual add, global pool, gemm."""
    n = helper.make_node
    return _model(
        [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
         n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
         n("Conv", ["p1", "wd", "bd"], ["d1"], pads=[1, 1, 1, 1], group=8), n("Relu", ["d1"], ["r2"]),
         n("Add", ["r2", "p1"], ["a1"]), n("GlobalAveragePool", ["a1"], ["g"]), n("Flatten", ["g"], ["f"]),
         n("Gemm", ["f", "wf", "bf"], ["y"], transB=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [("w1", [8, 3, 3, 3]), ("b1", [8]), ("wd", [8, 1, 3, 3]), ("bd", [8]), ("wf", [10, 8]), ("bf", [10])])


def exit_stage() -> onnx.ModelProto:
    """The shape of an eecc stage: hand-off tensor, exit logits and a boolean exit flag per sample."""
    n = helper.make_node
    model = _model(
        [n("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1], strides=[2]), n("Relu", ["h"], ["handoff"]),
         n("GlobalAveragePool", ["handoff"], ["g"]), n("Flatten", ["g"], ["f"]),
         n("Gemm", ["f", "wf", "bf"], ["logits"], transB=1), n("Softmax", ["logits"], ["p"], axis=1),
         n("ReduceMax", ["p"], ["conf"], keepdims=0, axes=[1]), n("Greater", ["conf", "thr"], ["exit"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 40])],
        [helper.make_tensor_value_info("handoff", TensorProto.FLOAT, [1, 6, 20]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]),
         helper.make_tensor_value_info("exit", TensorProto.BOOL, [1])],
        [("w1", [6, 4, 3]), ("b1", [6]), ("wf", [5, 6]), ("bf", [5])], {"thr": np.array(0.3, np.float32)})
    return model


def dscnn_like(width: int = 64, classes: int = 12) -> onnx.ModelProto:
    """Hello-Edge DS-CNN-S topology on 49x10 MFCCs: conv 10x4/2, four depthwise-separable blocks."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2], pads=[4, 1, 5, 2]), n("Relu", ["c0"], ["a0"])]
    inits = [("w0", [width, 1, 10, 4]), ("b0", [width])]
    for i in range(1, 5):
        nodes += [n("Conv", [f"a{i - 1}", f"dw{i}", f"db{i}"], [f"d{i}"], pads=[1, 1, 1, 1], group=width),
                  n("Relu", [f"d{i}"], [f"e{i}"]),
                  n("Conv", [f"e{i}", f"pw{i}", f"pb{i}"], [f"p{i}"]), n("Relu", [f"p{i}"], [f"a{i}"])]
        inits += [(f"dw{i}", [width, 1, 3, 3]), (f"db{i}", [width]), (f"pw{i}", [width, width, 1, 1]),
                  (f"pb{i}", [width])]
    nodes += [n("GlobalAveragePool", ["a4"], ["g"]), n("Flatten", ["g"], ["f"]),
              n("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits += [("wf", [classes, width]), ("bf", [classes])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 49, 10])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])], inits)


def reference(model: onnx.ModelProto, x: np.ndarray, name: str = "x") -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    runs = [sess.run(None, {name: xi[None]}) for xi in x]
    names = [o.name for o in sess.get_outputs()]
    return {name: np.concatenate([r[i] for r in runs]) for i, name in enumerate(names)}


def test_memory_plan_never_overlaps_live_buffers():
    import tvm

    stage = tvm_import.lower_stage(dscnn_like(width=16), tvm.target.Target(cortex_m.CPUS["cortex-m4"]["target"]))
    plan, sizes = tvm_import.plan_memory(stage), stage.buffers()
    live = {}
    for i, (_, args) in enumerate(stage.calls):
        for view in args:
            buf = stage.storage[view]
            if buf in sizes:
                live[buf] = (min(live.get(buf, (i, i))[0], i), i)
    for a in sizes:
        for b in sizes:
            if a < b and not (live[a][1] < live[b][0] or live[b][1] < live[a][0]):
                lo, hi = sorted([(plan.offsets[a], a), (plan.offsets[b], b)])
                assert lo[0] + sizes[lo[1]] <= hi[0], f"{a} and {b} are alive together but overlap"
    # a chain of convolutions needs about two activations at a time, not all of them
    assert plan.arena_bytes < plan.unplanned_bytes / 2


@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m0plus"])
def test_small_cnn_runs_in_qemu_and_matches_onnxruntime(tmp_path, cpu):
    model = small_cnn()
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path, flash_bytes=2 << 20, ram_bytes=1 << 20)
    assert arts.kernel_count >= 4 and arts.files[0].exists()
    assert 0 < arts.ram_bytes < arts.ram_unplanned_bytes and arts.arena_bytes < arts.arena_unplanned_bytes
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    result = emulate_stage(arts, x)
    np.testing.assert_allclose(result.outputs["y"], reference(model, x)["y"], atol=1e-4, rtol=0)
    # ~37k MACs per inference: at least one instruction each, far fewer than 1000 each
    assert 37_000 < result.instructions < 40_000_000 and result.samples == 3


@needs_arm
def test_soft_float_m0plus_needs_more_instructions_than_m4(tmp_path):
    model, x = small_cnn(), np.zeros((1, 3, 16, 16), np.float32) + 0.5
    counts = {cpu: emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path / cpu), x).instructions
              for cpu in ("cortex-m4", "cortex-m0plus")}
    assert counts["cortex-m0plus"] > 3 * counts["cortex-m4"]


@needs_arm
def test_stage_with_handoff_logits_and_bool_exit_flag(tmp_path):
    model = exit_stage()
    arts = cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path)
    x = np.random.default_rng(2).standard_normal((4, 4, 40)).astype(np.float32)
    got, want = emulate_stage(arts, x).outputs, reference(model, x)
    assert set(got) == {"handoff", "logits", "exit"} and got["exit"].dtype == np.bool_
    np.testing.assert_allclose(got["handoff"], want["handoff"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got["exit"].reshape(-1), want["exit"].reshape(-1))


@needs_arm
def test_stage_that_does_not_fit_fails_clearly(tmp_path):
    with pytest.raises(EeccError, match=r"stage 'stage1' needs \d+ B of RAM .* has 4096 B"):
        cortex_m.compile_stage(small_cnn(), cpu="cortex-m0+", out_dir=tmp_path, ram_bytes=4096, name="stage1")
    with pytest.raises(EeccError, match="unknown cpu 'cortex-m7'"):
        cortex_m.compile_stage(small_cnn(), cpu="cortex-m7", out_dir=tmp_path)


@needs_arm
def test_dscnn_m0plus_stage_fits_psoc6(tmp_path):
    fixture = FIXTURES / "dscnn.onnx"
    model = onnx.load(fixture) if fixture.exists() else dscnn_like()
    # PSoC 6: 2 MB flash, 1 MB SRAM; compile_stage raises when the stage does not fit
    arts = cortex_m.compile_stage(model, cpu="cortex-m0plus", out_dir=tmp_path, flash_bytes=2 << 20,
                                  ram_bytes=1 << 20)
    assert arts.ram_bytes <= 256 * 1024  # the goal that buffer reuse buys
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(3).standard_normal([1, *shape[1:]]).astype(np.float32)
    got = emulate_stage(arts, {name: x}).outputs
    want = reference(model, x, name)
    for out, value in want.items():
        np.testing.assert_allclose(got[out], value, atol=1e-4, rtol=0)
