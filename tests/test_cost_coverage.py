"""Which op kinds the shipped cost model measured: a stage holding another (a LayerNormalization, a Transpose, a GRU)
is priced by analogy, and compile, search and the manifest call its figures estimates (nu14 F2: an NHWC
ConvNeXt-style model's M4 int8 energy was 29-42 % under QEMU's while every stage read "predicted by the measured cost
model", with no warning unless --emulate ran)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from eecc.cli import main
from eecc.cost.coverage import MEASURED_OPS, SAME_AS_MEASURED, unmeasured_note, unmeasured_ops
from eecc.report.units import duration, energy
from tiny_torch import train_and_export

QDQ = {"QuantizeLinear", "DequantizeLinear"}


def test_the_measured_op_kinds_are_those_of_the_units_the_fit_was_measured_on():
    """MEASURED_OPS is neither short (an op the units hold called unmeasured) nor padded (an op no unit holds called
    measured); the int8 units are these graphs quantised (QDQ)."""
    from eecc.cost.__main__ import all_units

    held = {n.op_type for u in all_units() for n in u.float_model.graph.node}
    assert held <= MEASURED_OPS | SAME_AS_MEASURED, sorted(held - MEASURED_OPS - SAME_AS_MEASURED)
    assert MEASURED_OPS - QDQ == held - SAME_AS_MEASURED, sorted((MEASURED_OPS - QDQ) ^ (held - SAME_AS_MEASURED))


def test_unmeasured_ops_skip_the_exit_gates_and_say_how_each_kind_is_priced():
    graph = onnx.parser.parse_graph("""
        g (float[N, 4, 4, 8] x) => (float[N, 8, 4, 4] y, float[N] c) {
            t = Transpose<perm = [0, 3, 1, 2]>(x)
            y = Sub(t, t)
            c = ReduceMax<axes = [1, 2, 3], keepdims = 0>(y)
        }""")
    graph.node[2].name = "exit0.gate.confidence"  # insert_gates' name: a gate's ops are not the model's
    graph.node[2].op_type = "ReduceL2"
    assert unmeasured_ops(graph) == ["Sub", "Transpose"]
    assert unmeasured_note(["GRU"]) == "GRU never measured, priced as Gemm work"
    assert unmeasured_note(["LayerNormalization", "Sub", "Transpose"]) == (
        "LayerNormalization, Sub never measured, priced as elementwise work; Transpose never measured, priced as no "
        "work")


@pytest.fixture(scope="module")
def nhwc(tmp_path_factory):
    """(model path, data path): a trained NHWC 8x8 digits CNN with LayerNorm over channels between Transposes."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from eecc.examples import datasets

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, stride=2)
            self.norm, self.fc = nn.LayerNorm(16), nn.Linear(16, 10)

        def forward(self, x):  # x [N, 8, 8, 1]
            h = torch.relu(self.c1(x.permute(0, 3, 1, 2)))
            h = self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.fc(torch.relu(self.c2(h)).mean(dim=(2, 3)))

    out = tmp_path_factory.mktemp("nhwc")
    data = {k: v.reshape(-1, 8, 8, 1) if k.startswith("x_") else v for k, v in datasets.load("digits").items()}
    np.savez(out / "digits_nhwc.npz", **data)
    torch.manual_seed(0)
    train_and_export(Net(), data["x_train"], data["y_train"], epochs=6, path=out / "nhwc.onnx",
                     example_shape=(2, 8, 8, 1), opset=17)
    return out / "nhwc.onnx", out / "digits_nhwc.npz"


def test_a_layernorm_transpose_model_is_labelled_estimated_and_warned(nhwc, capsys, tmp_path):
    model, data = map(str, nhwc)
    assert {"LayerNormalization", "Transpose"} <= {n.op_type for n in onnx.load(model).graph.node}
    capsys.readouterr()
    argv = ["compile", model, "--data", data, "--no-codegen", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    note = ("LayerNormalization never measured, priced as elementwise work; Transpose never measured, priced as no "
            "work")
    assert f"(estimated: {note} by the cost model)" in out, out
    assert f"warning: the cost model never measured LayerNormalization, Transpose: the latency and energy of stages " \
           f"holding them are estimates ({note}); compile --emulate counts a Cortex-M stage's instructions under " \
           "QEMU" in out, out
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    labelled = [s["predicted"] for s in manifest["stages"] if "unmeasured_ops" in (s.get("predicted") or {})]
    assert labelled and all(p["source"].startswith("estimated") for p in labelled)
    assert {op for p in labelled for op in p["unmeasured_ops"]} == {"LayerNormalization", "Transpose"}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed")
def test_the_emulate_advice_followed_gives_the_emulated_figures_and_is_not_repeated(nhwc, capsys, tmp_path):
    """nu15 F2: with --emulate (the warning's advice) the stage was counted under QEMU, yet its line still read
    '(estimated: ...)' with the cost model's figures and the warning repeated 'compile --emulate counts ...'."""
    model, data = map(str, nhwc)
    capsys.readouterr()
    argv = ["compile", model, "--data", data, "--emulate", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    held = [s for s in manifest["stages"] if (s.get("predicted") or {}).get("unmeasured_ops")]
    assert held and all(s["emulation"]["instructions"] > 0 for s in held)
    note = ("LayerNormalization never measured, priced as elementwise work; Transpose never measured, priced as no "
            "work")
    for s in held:  # QEMU's figures on the stage line, the estimate beside them
        emulated, estimate = s["exit_latency_calibrated_s"], s["exit_latency_s"]
        assert emulated != pytest.approx(estimate, rel=0.01)
        assert (f"exit latency {duration(emulated)}, energy {energy(s['exit_energy_calibrated_j'])} (emulated: "
                f"QEMU's instruction counts replace the cost model's estimate of {duration(estimate)}, "
                f"{energy(s['exit_energy_j'])}, in which {note})") in out, out
    assert "(estimated:" not in out and "compile --emulate counts" not in out, out
    assert ("warning: the cost model never measured LayerNormalization, Transpose: the search chose on estimates of "
            f"the stages holding them ({note}); --emulate counted those stages under QEMU, and the stage lines give "
            "the emulated figures in place of the estimates") in out, out
    report = (tmp_path / "b" / "report.html").read_text()
    assert "estimated bars are estimates" in report and "their calibrated bars are QEMU&#x27;s counts" in report


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
                    reason="aarch64-linux-gnu-gcc / qemu-aarch64 not installed")
def test_a_cortex_a_stage_is_advised_as_cortex_a_and_the_advice_counts_it(nhwc, capsys, tmp_path):
    """nu15 F2: on rk3588 the advice read 'compile --emulate counts a Cortex-M stage's instructions' for a Cortex-A
    stage; it names the Cortex-A, and following it counts that stage under QEMU."""
    model, data = map(str, nhwc)
    capsys.readouterr()
    common = ["--data", data, "--target", "rk3588", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main(["search", model, *common]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "compile --emulate counts a Cortex-A stage's instructions under QEMU" in out and "Cortex-M" not in out, out
    assert main(["compile", model, *common, "--emulate", "--no-report", "-o", str(tmp_path / "b")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    held = [s for s in json.loads((tmp_path / "b" / "manifest.json").read_text())["stages"]
            if (s.get("predicted") or {}).get("unmeasured_ops")]
    assert held and all(s["kind"] == "cortex-a" and s["emulation"]["instructions"] > 0 for s in held)
    assert "--emulate counted those stages under QEMU" in out and "compile --emulate counts" not in out, out
