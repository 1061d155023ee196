"""The fixture zoo: valid ONNX, trained (accuracy reproduced on real data), both exporters agree, MACs hold."""

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eecc.examples import datasets

MODELS = Path(__file__).parent / "fixtures" / "models"
INDEX = json.loads((MODELS / "index.json").read_text())["fixtures"]
NAMES = [e["name"] for e in INDEX]
BASES = sorted({e["model"] for e in INDEX})
# Floors well above chance, so an untrained or mis-exported model fails.
MIN_ACCURACY = {"cnn": 0.95, "resnet": 0.88, "dscnn": 0.85, "cnn1d": 0.9, "resnet_weak": 0.86}


@functools.lru_cache(maxsize=None)
def record(name: str) -> dict:
    return json.loads((MODELS / f"{name}.json").read_text())


@functools.lru_cache(maxsize=None)
def data(name: str) -> dict:
    return datasets.load(name)


def logits(name: str, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(MODELS / record(name)["file"]), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], {"input": x[i:i + 500]})[0] for i in range(0, len(x), 500)])


def test_index_lists_every_model_with_both_exporters():
    assert set(BASES) >= {"cnn", "resnet", "dscnn", "cnn1d"}
    for base in BASES:
        assert {base, f"{base}_dynamo"} <= set(NAMES)
    on_disk = {p.stem for p in MODELS.glob("*.onnx")}
    assert on_disk == set(NAMES)
    assert sum(p.stat().st_size for p in MODELS.iterdir()) < 8 * 2**20


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_valid_onnx_with_the_agreed_interface(name):
    rec = record(name)
    model = onnx.load(str(MODELS / rec["file"]))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == rec["input_shape"]
    opset = {o.domain: o.version for o in model.opset_import}.get("", None)
    assert opset == (18 if rec["exporter"] == "dynamo" else 17) == rec["opset"]
    # BatchNorm is folded into Conv by both exporters: the MAC convention relies on it.
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reproduces_its_recorded_accuracy(name):
    rec = record(name)
    split = data(rec["dataset"])
    n = rec["slice"]["n"]
    acc = float((logits(name, split["x_test"][:n]).argmax(1) == split["y_test"][:n]).mean())
    assert abs(acc - rec["slice"]["accuracy"]) <= 0.005
    assert rec["test_accuracy"] >= MIN_ACCURACY[rec["model"]]


@pytest.mark.parametrize("base", BASES)
def test_both_exports_agree_numerically(base):
    x = data(record(base)["dataset"])["x_test"][:256]
    a, b = logits(base, x), logits(f"{base}_dynamo", x)
    assert a.shape == b.shape == (len(x), record(base)["num_classes"])
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    # batch 1 runs too: the batch dim is really dynamic in both files
    np.testing.assert_allclose(logits(base, x[:1]), a[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("base", BASES)
def test_dynamo_export_emits_a_different_op_set(base):
    ts, dy = (set(record(n)["op_types"]) for n in (base, f"{base}_dynamo"))
    assert "Flatten" in ts and "Flatten" not in dy and "Reshape" in dy
    if "GlobalAveragePool" in ts:
        assert "GlobalAveragePool" not in dy and "ReduceMean" in dy
    for name in (base, f"{base}_dynamo"):
        ops = {n.op_type for n in onnx.load(str(MODELS / f"{name}.onnx")).graph.node}
        assert ops == set(record(name)["op_types"])


def onnx_macs(path: Path) -> int:
    """Conv and Gemm MACs per sample from the ONNX file alone: Cout·Hout·Wout·(Cin/groups)·Kh·Kw."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output]}
    shapes |= {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight, out = shapes[node.input[1]], shapes[node.output[0]]
            total += int(np.prod(out[1:])) * int(np.prod(weight[1:]))
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            k, n = shapes[node.input[1]][::-1] if trans_b else shapes[node.input[1]]
            total += k * n
    return total


@pytest.mark.parametrize("name", NAMES)
def test_fvcore_macs_match_the_onnx_graph(name):
    rec = record(name)
    assert rec["macs"] == onnx_macs(MODELS / rec["file"]) > 0
