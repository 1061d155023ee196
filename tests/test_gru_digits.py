"""A trained GRU over the rows of 8x8 digits (the new-user trial's model, TorchScript export at opset 14): its
seq-first tensors have activation bytes, its stage cost is labelled an estimate (no measured unit holds a GRU),
and with no candidate exit the summary says so instead of "no early-exit network beats the original model"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eecc.cli import main
from tiny_torch import train_and_export

SEQ, FEATURES, HIDDEN = 8, 8, 32


@pytest.fixture(scope="module")
def gru(tmp_path_factory):
    """(model path, data path): GRU(8 -> 32, batch_first) over the 8 rows, its last output -> Linear(32, 10)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from eecc.examples import datasets

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.fc = nn.GRU(FEATURES, HIDDEN, batch_first=True), nn.Linear(HIDDEN, 10)

        def forward(self, x):
            out, _ = self.gru(x)
            return self.fc(out[:, -1])

    out = tmp_path_factory.mktemp("gru")
    data = {k: v.reshape(-1, SEQ, FEATURES) if k.startswith("x_") else v for k, v in datasets.load("digits").items()}
    np.savez(out / "digits_seq.npz", **data)
    torch.manual_seed(0)
    train_and_export(Net(), data["x_train"], data["y_train"], epochs=8, path=out / "gru.onnx",
                     example_shape=(2, SEQ, FEATURES), opset=14)
    return out / "gru.onnx", out / "digits_seq.npz"


def test_seq_first_tensors_have_their_activation_bytes(gru, capsys):
    """The GRU reads X [seq, N, I] and writes Y [seq, directions, N, H]: the batch is not axis 0 (was 0 bytes)."""
    capsys.readouterr()
    assert main(["inspect", str(gru[0]), "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    gru_block = next(b for b in blocks if "GRU" in b["ops"])
    assert gru_block["activation_bytes"] == SEQ * 1 * HIDDEN * 4  # Y [seq, 1, N, H]; Y_h is unused ('')
    assert gru_block["macs"] == SEQ * 3 * HIDDEN * (FEATURES + HIDDEN)
    assert blocks[0]["ops"][-1] == "Transpose" and blocks[0]["activation_bytes"] == SEQ * FEATURES * 4  # X [seq, N, I]
    assert all(b["activation_bytes"] > 0 for b in blocks)

def test_gru_stage_is_estimated_and_no_candidate_exit_is_said(gru, capsys, tmp_path):
    model, data = map(str, gru)
    argv = ["compile", model, "--data", data, "--no-codegen", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # nu14 F2: every op kind no measured unit holds is named, with how it is priced (the GRU's input Transpose and
    # its last step's Gather too; the shape arithmetic of its zero initial state is not counted)
    assert ("(estimated: GRU never measured, priced as Gemm work; Gather never measured, priced as elementwise work; "
            "Transpose never measured, priced as no work by the cost model)") in out
    assert "predicted by the measured cost model" not in out
    assert "no candidate exit: the model has no tensor before its classifier's input that an exit head can read" in out
    assert "no early-exit network beats" not in out
    assert "warning: the cost model never measured GRU" in out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    (stage,) = manifest["stages"]
    assert stage["predicted"]["unmeasured_ops"] == ["GRU", "Gather", "Transpose"] and stage["predicted"]["source"].startswith("estimated")
    assert manifest["deployment"]["no_candidate"] and manifest["deployment"]["line"].startswith("no candidate exit")
    report = (tmp_path / "b" / "report.html").read_text()
    assert "stage 0&#x27;s GRU, Gather, Transpose never measured: those stages&#x27; figures are estimates" in report
