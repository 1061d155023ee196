"""--quantize int8 on a model with LayerNorm, GELU and Transpose (nu14 F10): onnxruntime's quantiser leaves their
outputs float unless a consumer quantises them, so quantising stage by stage gave a hand-off another Q/DQ than
the search's all-heads graph (targets/int8_cascade.py). The built stages now compute the search's numbers, and a
ReLU model's int8 stages stay byte for byte what quantize_stages makes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from eecc.cost.measure import all_cut_stages, dummy_heads
from eecc.cli import main
from eecc.driver.int8 import per_axis_opset
from eecc.examples import datasets
from eecc.exits import int8
from eecc.exits.run import plan_exits
from eecc.model import ir
from eecc.targets.codegen import reference_runs
from eecc.targets.int8_cascade import quantize_cascade
from eecc.targets.quantize import CALIBRATION_SAMPLES, quantize_stages
from tiny_torch import train_and_export

MODELS = Path(__file__).parent / "fixtures" / "models"


@pytest.fixture(scope="module")
def ln_model(tmp_path_factory):
    """(model path, digits data): a ConvNeXt-like net trained 8 epochs on 8x8 digits, TorchScript opset 17: conv
    stem, LayerNorm over channels between two Transposes, a depthwise conv + LayerNorm + GELU MLP residual, a
    strided conv + GELU, mean, LayerNorm, Linear."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.ln1 = nn.Conv2d(1, 16, 3, padding=1), nn.LayerNorm(16)
            self.dw, self.ln2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.LayerNorm(16)
            self.p1, self.p2 = nn.Linear(16, 32), nn.Linear(32, 16)
            self.down, self.ln3, self.fc = nn.Conv2d(16, 32, 2, stride=2), nn.LayerNorm(32), nn.Linear(32, 10)

        def forward(self, x):
            x = self.ln1(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            y = self.ln2(self.dw(x).permute(0, 2, 3, 1))
            x = x + self.p2(F.gelu(self.p1(y))).permute(0, 3, 1, 2)
            x = F.gelu(self.down(x))
            return self.fc(self.ln3(x.mean((2, 3))))

    out = tmp_path_factory.mktemp("ln")
    data = datasets.load("digits")
    np.savez(out / "digits.npz", **data)
    torch.manual_seed(0)
    train_and_export(Net(), data["x_train"], data["y_train"], epochs=8, path=out / "ln.onnx",
                     example_shape=(2, 1, 8, 8), opset=17)
    return out / "ln.onnx", data


def _producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if tensor in n.output)


def test_search_int8_prediction_is_the_built_cascade(ln_model, tmp_path):
    """rk3588, int8: the search cuts at the Transpose after the first LayerNorm; its predicted test exit rates and
    accuracy are the built int8 stages' measured ones, sample by sample (were 97.78 % / 95.28 % predicted vs 98.61 %
    / 94.72 % built, agreement 99.17 %: stage 0 ran its head on the float Transpose output, stage 1 and the search
    on its Q/DQ)."""
    path, _ = ln_model
    assert main(["compile", str(path), "--data", str(path.parent / "digits.npz"), "--target", "rk3588", "--search",
                 "--quantize", "int8", "--no-codegen", "--no-report", "--quiet", "--cache-dir", str(tmp_path / "c"),
                 "-o", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    handoff = manifest["stages"][0]["outputs"]["handoff"]
    model = onnx.load(str(path))
    cut = _producer(model, handoff)
    assert cut.op_type == "Transpose" and _producer(model, cut.input[0]).op_type == "LayerNormalization"
    search, measured = manifest["placement"]["metrics"]["search"], manifest["placement"]["metrics"]["measured"]
    assert manifest["quantization"]["thresholds"] == "the search's, chosen on the int8 model"
    assert measured["exit_rates"] == pytest.approx(search["exit_rates"], abs=1e-12)
    assert measured["accuracy"] == pytest.approx(search["accuracy"], abs=1e-12)
    assert measured["agreement_with_search"] == 1.0


def _search_and_cuts(path: Path, data: dict, quantise) -> tuple[list, list]:
    """([exit logits per cut], final logits) on the test split from the search's int8 graph (every designed head
    plus a second design per tensor: global average pooling first, which quantises its input, where the designed
    heads max-pool first) and from the all-cuts stages quantised by `quantise` (heads as designed)."""
    plan = plan_exits(path)
    splits = plan.splits(data)
    calib = splits.train.rows(0, min(len(splits.train), CALIBRATION_SAMPLES))
    heads = dummy_heads(plan.design.heads)
    others = dummy_heads([replace(s, pool=(1,) * len(s.pool), width=None) for s in plan.design.heads], seed=1)
    assert all(h.spec.pool != (1,) * len(h.spec.pool) for h in heads)
    (final, rows), = int8._run_quantized(plan.graph, heads + others, calib, {"test": splits.test}).values()
    _, stages = all_cut_stages(plan)
    built = quantise(per_axis_opset([ir.to_model(s) for s in stages]), calib)
    runs = reference_runs(built, splits.test.rows(0, len(splits.test)))
    exits = [outputs[f"exit{k}.logits"] for k, (_, outputs) in enumerate(runs[:-1])]
    assert len(exits) == len(heads)
    return [(s, b) for s, b in zip(rows, exits)], (final, runs[-1][1][built[-1].graph.output[0].name])


def test_every_cut_stage_computes_the_search_graphs_logits(ln_model):
    """Cut at every candidate (one head each), the int8 stages give each head's and the final classifier's test
    logits bit for bit as the search's graph does with every head and a second design per tensor attached (the
    candidates after the first Transpose and the LayerNorm are float in the backbone: a head that quantised them
    in the search's graph changed the backbone there); stage by stage (quantize_stages) they did not."""
    path, data = ln_model
    pairs, (final, built_final) = _search_and_cuts(path, data, quantize_cascade)
    for search, built in pairs:
        np.testing.assert_array_equal(search, built)
    np.testing.assert_array_equal(final, built_final)
    old, _ = _search_and_cuts(path, data, quantize_stages)
    assert any(not np.array_equal(search, built) for search, built in old)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_relu_models_int8_stages_are_unchanged(name):
    """Every stage of a ReLU fixture cut at every candidate is byte for byte the stage quantize_stages makes."""
    path = MODELS / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"fixture {name} not generated (python tests/fixtures/make_fixtures.py)")
    data = datasets.load(json.loads((MODELS / f"{name}.json").read_text())["dataset"])
    _, stages = all_cut_stages(plan_exits(path))
    floats = per_axis_opset([ir.to_model(s) for s in stages])
    x = data["x_train"][:CALIBRATION_SAMPLES]
    new, old = quantize_cascade(floats, x), quantize_stages(floats, x)
    assert [m.SerializeToString() for m in new] == [m.SerializeToString() for m in old]
