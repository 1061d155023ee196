"""Recurrent ops (GRU, LSTM): their MACs are counted, an omitted optional output is skipped, and TVM's refusal
of a stage it cannot import names --no-codegen, which then works."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.cli import main

L, I, H1, H2 = 16, 4, 6, 5  # sequence length, conv channels (the GRU's input), GRU and LSTM hidden sizes


def test_exported_gru_and_lstm_macs_match_the_hand_count(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from eecc.cost.features import named, node_features
    from eecc.model.normalize import load
    from eecc.model.ir import get_ann
    from eecc.passes.annotate_cost import annotate_cost

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, I, 3, padding=1)
            self.gru = nn.GRU(I, H1, batch_first=True)
            self.lstm = nn.LSTM(H1, H2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(2 * H2, 3)

        def forward(self, x):
            h, _ = self.gru(torch.relu(self.conv(x)).transpose(1, 2))
            o, _ = self.lstm(h)
            return self.fc(o[:, -1])

    torch.manual_seed(0)
    path = tmp_path / "rnn.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), torch.zeros(1, 1, L), path, dynamo=False, opset_version=14,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    graph = annotate_cost(load(path))
    nodes = {n.op: n for n in graph.nodes if n.op in ("GRU", "LSTM")}
    # per time step and direction: gates x (H*I + H*H) multiply-adds (ONNX GRU / LSTM spec)
    assert get_ann(nodes["GRU"], "macs") == L * 1 * 3 * H1 * (I + H1) == 2880
    assert get_ann(nodes["LSTM"], "macs") == L * 2 * 4 * H2 * (H1 + H2) == 7040
    total = sum(get_ann(n, "macs") for n in graph.nodes)
    assert total == L * I * 3 + 2880 + 7040 + 2 * H2 * 3  # conv, GRU, LSTM, fc
    # the cost model prices them as matrix work too, not as a handful of elementwise ops
    assert named(node_features(nodes["LSTM"]), "cortex-m4", "fp32")["gemm_macs"] == 7040


def _gru_model() -> onnx.ModelProto:
    """Conv x2 -> Reshape -> Transpose -> GRU (sequence output Y unused: removed as '' on load) -> Squeeze -> Gemm,
    on 8x8 digits (a hand-built model whose GRU TVM's ONNX frontend cannot import)."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (0.3 * rng.standard_normal(shape)).astype(np.float32)

    hid = 8
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", w(4, 1, 3, 3)), ("w2", w(4, 4, 3, 3)), ("shp", np.array([0, 32, 8], np.int64)),
        ("ax", np.array([0], np.int64)), ("gw", w(1, 3 * hid, 8)), ("gr", w(1, 3 * hid, hid)),
        ("fw", w(10, hid)), ("fb", np.zeros(10, np.float32))]]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Reshape", ["r2", "shp"], ["seq"]),
             helper.make_node("Transpose", ["seq"], ["tseq"], perm=[1, 0, 2]),
             helper.make_node("GRU", ["tseq", "gw", "gr"], ["y", "yh"], hidden_size=hid),
             helper.make_node("Squeeze", ["yh", "ax"], ["h"]),
             helper.make_node("Gemm", ["h", "fw", "fb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "gru", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("search", [[], ["--search"]], ids=["default", "search"])
def test_gru_stage_refused_by_tvm_names_no_codegen_and_that_works(tmp_path, capsys, search):
    """The default placement compiles its stages one by one, the searched m4 -> m4 one as one program."""
    pytest.importorskip("tvm")
    from eecc.examples import datasets

    onnx.save(_gru_model(), tmp_path / "gru.onnx")
    np.savez(tmp_path / "digits.npz", **datasets.load("digits"))
    argv = ["compile", str(tmp_path / "gru.onnx"), "--data", str(tmp_path / "digits.npz"), "--heads", "blueprint",
            *search, "--no-report", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GRU" in err and "--no-codegen" in err, err
    assert not (tmp_path / "a").exists()
    assert main([*argv, "-o", str(tmp_path / "b"), "--no-codegen"]) == 0  # the advice, followed
    stages = sorted((tmp_path / "b").glob("stage*.onnx"))
    assert stages and any(n.op_type == "GRU" for s in stages for n in onnx.load(s).graph.node)
