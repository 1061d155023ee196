"""Breadth suite: torchvision-family classifiers from both torch exporters and hand-built classic-zoo / Keras
graphs load, cost within 1 % of an independent count, and offer only dominator tensors as candidate exits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import pytest

from eecc.cli import main
from eecc.model import ir
from eecc.driver.pipeline import analyse
from golden import run

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_zoo  # noqa: E402
import zoo_onnx  # noqa: E402
import zoo_torch  # noqa: E402

NAMES = ([*zoo_torch.BUILDERS] + [f"{n}_dynamo" for n in make_zoo.DYNAMO] + [*zoo_onnx.BUILDERS])


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return make_zoo.make(tmp_path_factory.mktemp("zoo"))


def test_suite_is_broad():
    assert len(zoo_torch.BUILDERS) + len(zoo_onnx.BUILDERS) >= 25


@pytest.mark.parametrize("name", NAMES)
def test_inspect_costs_and_candidates(zoo, name, capsys):
    row = zoo[name]
    capsys.readouterr()
    assert main(["inspect", row["path"], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert abs(summary["total_macs"] - row["macs"]) <= 0.01 * row["macs"], (summary["total_macs"], row["macs"])
    graph, blocks = analyse(row["path"])
    candidates = [b.output for b in blocks.candidates()]
    assert candidates and blocks.head.input not in candidates
    # an exit before any MAC (a Keras export's input Transpose) would classify the raw input
    assert all(b.cumulative_macs > 0 for b in blocks.candidates()), name
    flow = _float_tensor_flow(ir.to_model(graph))
    for tensor in candidates:
        cut = flow.copy()
        cut.remove_node(tensor)
        assert not nx.has_path(cut, "<in>", "<out>"), f"candidate {tensor} is not on every input-output path"
    _same_outputs(onnx.load(row["path"]), ir.to_model(graph), blocks.head.output_kind)


def _float_tensor_flow(model: onnx.ModelProto) -> nx.DiGraph:
    """Tensor-level data flow over float tensors (integer tensors are shape arithmetic, not data)."""
    floats = {vi.name for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]
              if vi.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    inits = {t.name for t in model.graph.initializer}
    flow = nx.DiGraph()
    flow.add_edge("<in>", model.graph.input[0].name)
    flow.add_edge(model.graph.output[0].name, "<out>")
    for node in model.graph.node:
        for i in node.input:
            for o in node.output:
                if i in floats and i not in inits and o:
                    flow.add_edge(i, o)
    return flow


def _same_outputs(original: onnx.ModelProto, analysed: onnx.ModelProto, kind: str) -> None:
    """The normalised graph computes the original's output (as log-probabilities where it gave probabilities)."""
    inp = original.graph.input[0]
    dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    x = np.random.default_rng(0).standard_normal(dims).astype(dtype)
    want = run(original, {inp.name: x})[original.graph.output[0].name].astype(np.float64)
    got = run(analysed, {analysed.graph.input[0].name: x.astype(np.float32)})[analysed.graph.output[0].name]
    if kind in ("softmax", "sigmoid"):
        got = np.exp(got)
    tol = 2e-2 if dtype == np.float16 or "float16" in str(original.graph.initializer[:1]) else 1e-4
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
