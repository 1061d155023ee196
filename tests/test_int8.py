"""int8 stages (issue 11): onnxruntime QDQ quantisation, thresholds recalibrated on the int8 stages,
and the Relax lowering of QDQ islands to integer kernels checked against onnxruntime's int8 numerics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.examples import datasets
from eecc.driver.compile import CompileOptions, compile_model
from eecc.driver.int8 import per_axis_opset
from eecc.search.search import SearchOptions
from eecc.runtime.cascade import Cascade
from eecc.runtime.sessions import session_options
from eecc.targets import int8_lowering, int8_parity, quantize, tvm_import
from eecc.targets.codegen import reference_runs

MODELS = Path(__file__).parent / "fixtures" / "models"
needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")


def residual_stage(opset: int = 17) -> onnx.ModelProto:
    """Every lowered pattern once: conv (stride 2, 3x3), depthwise, 1x1, residual Add, max pool, GAP,
    Flatten, Gemm; weights from a fixed seed (numerics only, no accuracy is asserted on it)."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = {"w1": (8, 3, 3, 3), "b1": (8,), "wd": (8, 1, 3, 3), "bd": (8,), "wp": (8, 8, 1, 1), "bp": (8,),
             "wf": (10, 8), "bf": (10,)}
    tensors = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), k) for k, s in inits.items()]
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "wd", "bd"], ["d1"], pads=[1, 1, 1, 1], group=8), n("Relu", ["d1"], ["r2"]),
             n("Conv", ["r2", "wp", "bp"], ["p1"]), n("Add", ["p1", "r1"], ["a1"]), n("Relu", ["a1"], ["r3"]),
             n("MaxPool", ["r3"], ["m1"], kernel_shape=[2, 2], strides=[2, 2]),
             n("GlobalAveragePool", ["m1"], ["g"]), n("Flatten", ["g"], ["f"]),
             n("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def residual_int8():
    x = np.random.default_rng(1).standard_normal((256, 3, 16, 16)).astype(np.float32)
    return quantize.quantize_stage(residual_stage(), {"x": x[:192]}), x[192:]


def test_fixed_point_multiplier_matches_the_real_one():
    real = np.array([0.7, 1.3e-3, 2.5e-6, 0.5, 0.999999])
    m0, shift = int8_lowering.fixed_point(real)
    assert np.all((m0 >= 2 ** 30) & (m0 < 2 ** 31))
    assert np.allclose(m0 * 2.0 ** -shift.astype(np.float64), real, rtol=2 ** -30, atol=0)
    with pytest.raises(ValueError):
        int8_lowering.fixed_point(np.array([1e-30]))


def test_quantize_stage_makes_int8_qdq_with_per_channel_weights(residual_int8):
    model, _ = residual_int8
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 8 and "DequantizeLinear" in ops
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [weights[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"
             and weights.get(n.input[0]) is not None and weights[n.input[0]].ndim == 4]
    assert len(convs) == 3 and all(w.dtype == np.int8 for w in convs)
    scales = [weights[n.input[1]] for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in weights and weights[n.input[0]].ndim == 4]
    assert all(s.shape == (8,) for s in scales)  # one scale per output channel


def test_opset_11_stage_is_quantised_per_channel_and_runs(residual_int8):
    """torch.onnx.export(..., opset_version=11) models: per-axis DequantizeLinear needs opset 13, so the
    stage is upgraded first; onnxruntime must open the result and agree with the opset-17 stage's."""
    model17, x = residual_int8
    x_cal = np.random.default_rng(1).standard_normal((256, 3, 16, 16)).astype(np.float32)[:192]
    with pytest.raises(onnx.checker.ValidationError, match="axis"):  # what onnxruntime's quantiser alone gives
        onnx.checker.check_model(quantize.quantize_stage(residual_stage(opset=11), {"x": x_cal}))
    model11 = quantize.quantize_stage(per_axis_opset([residual_stage(opset=11)])[0], {"x": x_cal})
    onnx.checker.check_model(model11)
    assert max(o.version for o in model11.opset_import if o.domain in ("", "ai.onnx")) >= 13
    (_, out11), = reference_runs([model11], x)
    (_, out17), = reference_runs([model17], x)
    np.testing.assert_allclose(out11["y"], out17["y"], atol=1e-5)


def test_lowering_leaves_no_float_compute_between_quantize_and_dequantize(residual_int8):
    model, _ = residual_int8
    text = int8_lowering.lower_int8(tvm_import.relax_module(model)).script(show_meta=False)
    compute = re.findall(r'dtype="(\w+)"\) = R\.(nn\.conv2d|matmul|sum|mean|add|nn\.max_pool2d)\(', text)
    ops = sorted({op for _, op in compute})
    assert ops == ["add", "matmul", "nn.conv2d", "nn.max_pool2d", "sum"], ops  # GAP became an int32 sum
    assert all(dtype != "float32" for dtype, _ in compute), compute
    assert len([1 for _, op in compute if op == "nn.conv2d"]) == 3
    assert text.count("R.dequantize(") == 1 and text.count("R.quantize(") == 1  # only at the stage's edges


def _host_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    target = tvm.target.Target("llvm")
    mod = int8_lowering.lower_int8(tvm_import.relax_module(model))
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target)),
                              tvm.cpu())
    return np.concatenate([vm["main"](tvm.runtime.tensor(x[i:i + 1])).numpy() for i in range(len(x))])


def test_float_max_pool_of_a_dequantised_tensor_runs_on_the_int8_tensor():
    """An exit head's max pool of the dequantised hand-off (no Q after it): pooled in int8, then dequantised,
    bit for bit with onnxruntime (windows padded or wholly at -128 included)."""
    import onnxruntime as ort

    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["q"]), n("DequantizeLinear", ["q", "s", "z"], ["d"]),
             n("MaxPool", ["d"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 4])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.031]),
                               helper.make_tensor("z", TensorProto.INT8, [], [-100])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    text = int8_lowering.lower_int8(tvm_import.relax_module(model)).script(show_meta=False)
    assert re.search(r'dtype="int8"\) = R\.nn\.max_pool2d\(', text), text
    x = np.random.default_rng(2).standard_normal((6, 3, 9, 8)).astype(np.float32)
    x[0] = -50.0  # every value saturates to -128
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(_host_run(model, x), want)


def test_integer_kernels_reproduce_onnxruntime_int8(residual_int8):
    model, x = residual_int8
    want = reference_runs([model], x)[0][1]["y"]
    got = _host_run(model, x)
    scale = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "y_scale"][0]
    assert (got.argmax(1) == want.argmax(1)).mean() >= int8_parity.PARITY
    steps = np.abs(got - want) / scale
    assert steps.max() <= 1.0 + 1e-4 and (steps < 1e-4).mean() >= 0.99  # at most one step, rarely


@pytest.fixture(scope="module")
def cnn_int8(tmp_path_factory):
    path = MODELS / "cnn.onnx"
    if not path.exists():
        pytest.skip("fixture cnn not generated (python tests/fixtures/make_fixtures.py)")
    data = datasets.load(json.loads((MODELS / "cnn.json").read_text())["dataset"])
    root = tmp_path_factory.mktemp("cnn_int8")
    options = CompileOptions(target="psoc6", out=root / "bundle", cache_dir=str(root / "cache"), codegen=False,
                             search_options=SearchOptions(objective="macs"),
                             progress=False, quantize="int8")
    return data, options, compile_model(path, data, options)


def test_compile_quantize_int8_writes_int8_stages_with_recalibrated_thresholds(cnn_int8):
    data, options, manifest = cnn_int8
    q = manifest["quantization"]
    for entry in manifest["stages"]:
        stage = onnx.load(str(options.out / entry["file"]))
        assert int8_lowering.has_qdq(stage)
        assert (options.out / entry["float_file"]).is_file()
        if entry["threshold"] is not None:
            (t,) = [numpy_helper.to_array(i) for i in stage.graph.initializer if i.name.endswith(".threshold")]
            assert float(t) == pytest.approx(entry["threshold"], abs=1e-6)
    assert manifest["placement"]["thresholds"] == pytest.approx(q["int8_thresholds"])
    res = Cascade(options.out).run(data["x_test"])
    measured = manifest["placement"]["metrics"]["measured"]
    assert measured["accuracy"] == pytest.approx(float((res.predictions == data["y_test"]).mean()))
    assert q["int8"]["accuracy"] == measured["accuracy"]
    assert q["int8"]["accuracy"] >= q["float"]["accuracy"] - 0.01     # issue target 0.5 pt; 360 test samples
    assert sum(q["int8"]["exit_rates"]) == pytest.approx(1.0) and q["int8"]["exit_rates"][0] > 0.5
    # how a host application must open the stages to get these figures: what eecc's own runtime does
    level = session_options(model=options.out / manifest["stages"][0]["file"]).graph_optimization_level
    assert q["onnxruntime_session"]["graph_optimization_level"] == str(level).rsplit(".", 1)[-1] == "ORT_ENABLE_BASIC"


@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m4"])
def test_int8_stage_under_qemu_matches_onnxruntime_and_has_integer_kernels(cnn_int8, cpu, tmp_path):
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m

    data, options, manifest = cnn_int8
    entry = manifest["stages"][0]
    model = onnx.load(str(options.out / entry["file"]))
    inputs, want = reference_runs([model], data["x_test"][:48])[0]
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path)
    got = emulate_stage(arts, inputs)
    result = int8_parity.compare_int8(got.outputs, want, entry, where="stage 0")
    assert result["class_parity"] >= int8_parity.PARITY and result["exit_flag_agreement"] >= 0.99
    if cpu == "cortex-m0plus":  # the integer kernels call no soft-float helper
        dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "kernels.o")], capture_output=True,
                             text=True, check=True).stdout
        kernels = re.split(r"\n(?=[0-9a-f]+ <)", dis)
        # wrappers and bodies of the integer kernels (a fused final dequantize is float by design)
        convs = [k for k in kernels if re.match(r"[0-9a-f]+ <(?!\w*quantize)\w*(conv2d|matmul)\w*>", k)]
        assert convs and not any(re.search(r"__aeabi_f|__(add|mul|sub|div)sf3", k) for k in convs)
