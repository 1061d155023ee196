"""The margin gate (insert_gates metric="margin": top-1 minus top-2 softmax probability) built for every CPU eecc
deploys to and run under QEMU: its TopK form lowered to a TVM packed extern that the Cortex-M driver refused
("kernel wrapper __tvm_ffi_topk uses field 9 ...") and whose Cortex-A library crashed (signal 11). Exit flags must
equal onnxruntime's and confidences agree within 1e-6; ties of the two largest probabilities give 0, as a sort."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.model import ir
from eecc.passes.insert_gates import insert_gates


def margin_stage(threshold: float = 0.3) -> onnx.ModelProto:
    """x [N, 16] -> Gemm (16 -> 12) = exit0.logits, gated by insert_gates' margin metric."""
    rng = np.random.default_rng(21)
    inits = [numpy_helper.from_array((rng.standard_normal((12, 16)) * 0.6).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(12).astype(np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["exit0.logits"], transB=1)], "stage0",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("exit0.logits", TensorProto.FLOAT, ["N", 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ir.to_model(insert_gates(gs.import_onnx(model), threshold=threshold, metric="margin"))


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = ["exit0.exit", "exit0.confidence"]
    return dict(zip(names, (np.concatenate(o) for o in zip(*[sess.run(names, {"x": x[i:i + 1]})
                                                           for i in range(len(x))]))))


def test_the_margin_gate_has_no_topk_and_ties_give_zero():
    model = margin_stage()
    assert "TopK" not in {n.op_type for n in model.graph.node}
    # two equal largest logits (a zero weight row pair with equal biases) -> equal top-2 probabilities -> margin 0
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w")).copy()
    b = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b")).copy()
    w[3] = w[7] = 0.0
    b[3] = b[7] = 50.0
    for init in model.graph.initializer:
        if init.name in ("w", "b"):
            init.CopyFrom(numpy_helper.from_array({"w": w, "b": b}[init.name], init.name))
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    got = onnxruntime_outputs(model, x)
    assert np.array_equal(got["exit0.confidence"], np.zeros(8, np.float32))
    assert not got["exit0.exit"].any()


CPUS = [("cortex-m4", "fp32"), ("cortex-m4", "int8"), ("cortex-m0plus", "fp32"), ("cortex-m0plus", "int8")]


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi qemu-system-arm)")
@pytest.mark.parametrize("cpu,fmt", CPUS)
def test_the_margin_gate_runs_on_cortex_m(tmp_path, cpu, fmt):
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m, quantize

    x = (np.random.default_rng(12).standard_normal((40, 16)) * 1.5).astype(np.float32)
    model = margin_stage() if fmt == "fp32" else quantize.quantize_stage(margin_stage(), {"x": x[:24]})
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path)
    got = emulate_stage(arts, {"x": x[24:]}).outputs
    want = onnxruntime_outputs(model, x[24:])
    assert np.array_equal(got["exit0.exit"].reshape(-1), want["exit0.exit"]) and 0 < want["exit0.exit"].mean() < 1
    assert np.abs(got["exit0.confidence"].reshape(-1) - want["exit0.confidence"]).max() <= 1e-6


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64")),
                    reason="aarch64-linux-gnu-gcc / qemu-aarch64 not installed")
@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_the_margin_gate_runs_on_cortex_a(tmp_path, fmt):
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_a, quantize

    x = (np.random.default_rng(13).standard_normal((40, 16)) * 1.5).astype(np.float32)
    model = margin_stage() if fmt == "fp32" else quantize.quantize_stage(margin_stage(), {"x": x[:24]})
    arts = cortex_a.compile_stage(model, out_dir=tmp_path)
    got = emulate_stage(arts, {"x": x[24:]}).outputs
    want = onnxruntime_outputs(model, x[24:])
    assert np.array_equal(got["exit0.exit"].reshape(-1), want["exit0.exit"]) and 0 < want["exit0.exit"].mean() < 1
    assert np.abs(got["exit0.confidence"].reshape(-1) - want["exit0.confidence"]).max() <= 1e-6
