"""Deployments in the device's units: a one-processor platform with two exits back to back on its core, and
the original model on one processor winning (one plain line, a one-stage bundle)."""

from __future__ import annotations

import html
import json
import shutil
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from bundle_policy import assert_routes_as_policy
from eecc.cli.compile import print_summary
from eecc.cli.run import summarize
from eecc.driver.compile import CompileOptions, compile_model
from eecc.report.page import render_html
from eecc.examples import datasets
from eecc.runtime.cascade import Cascade
from eecc.runtime.emulate_program import emulate_cascade
from eecc.targets.codegen import core_runs
from eecc.targets.platform import load_platform

MODELS = Path(__file__).parent / "fixtures" / "models"
needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="needs gcc-arm-none-eabi and qemu-system-arm")


@pytest.fixture(scope="module")
def cnn():
    meta = json.loads((MODELS / "cnn.json").read_text())
    return MODELS / "cnn.onnx", datasets.load(meta["dataset"])


@needs_arm
def test_one_processor_platform_gets_two_exits_back_to_back_that_route_as_the_search(cnn, tmp_path, one_m4_toml):
    path, data = cnn
    toml = one_m4_toml
    # Without --search the default placement is the one with the most exits: two on the one core.
    options = CompileOptions(target=str(toml), out=tmp_path / "b", cache_dir=str(tmp_path / "c"), progress=False,
                             emulate=True, exits_per_processor=2)
    manifest = compile_model(path, data, options)
    assert [s["target"] for s in manifest["stages"]] == ["m4", "m4", "m4"]
    # back to back: no hand-off transfer between the stages, so the exit latencies add up exactly
    np.testing.assert_allclose(np.cumsum([s["compute_s"] for s in manifest["stages"]]),
                               [s["exit_latency_s"] for s in manifest["stages"]])
    # the three stages of the one core are one program (one ELF), each stage counted under QEMU
    assert [s["codegen"]["program"] for s in manifest["stages"]] == ["m4"] * 3
    assert Path(manifest["stages"][0]["artifacts"][0]["path"]).suffix == ".elf"
    (program,) = manifest["codegen"]["programs"]
    assert program["stages"] == [0, 1, 2] and program["cascade"]["prediction_agreement"] == 1.0
    check = manifest["prediction_check"]
    assert all(r["emulated_instructions"] and r["predicted_instructions"] for r in check["stages"])
    assert check["cascade"]["energy"]["emulated"] > 0
    x, y = data["x_test"][:600], data["y_test"][:600]
    res = assert_routes_as_policy(tmp_path / "b", manifest, x, y)
    assert np.bincount(res.exit_stage, minlength=3)[:2].sum() > 0  # the exits are used
    assert manifest["deployment"]["best_single"]["processors"] == ["m4"]
    single = manifest["deployment"]["measured"]["best_single"]  # fp32 original alone, counted as the stages were
    assert (single["numeric"], single["basis"]) == ("fp32", "emulated")
    assert single["accuracy"] == manifest["placement"]["metrics"]["measured"]["original_accuracy"]


@needs_arm
def test_int8_exits_on_one_core_run_as_one_program_that_routes_as_onnxruntime(cnn, tmp_path, one_m4_toml):
    """int8, two exits on the one core, built into one program: under QEMU each sample leaves at the stage the
    onnxruntime cascade (and the search's policy) sends it to, with the same prediction; the per-stage counts
    add up to what the program spends per sample."""
    path, data = cnn
    toml = one_m4_toml
    options = CompileOptions(target=str(toml), out=tmp_path / "b", cache_dir=str(tmp_path / "c"), progress=False,
                             emulate=True, exits_per_processor=2, quantize="int8")
    manifest = compile_model(path, data, options)
    (program,) = manifest["codegen"]["programs"]
    assert program["stages"] == [0, 1, 2] and len(list((tmp_path / "b" / program["folder"]).glob("*.elf"))) == 1
    idx = np.linspace(0, len(data["x_test"]) - 1, 48).astype(int)
    x, y = data["x_test"][idx], data["y_test"][idx]
    res = assert_routes_as_policy(tmp_path / "b", manifest, x, y)  # onnxruntime cascade == search policy
    emu = emulate_cascade(tmp_path / "b" / program["folder"], x)
    np.testing.assert_array_equal(emu.exit_stage, res.exit_stage)
    np.testing.assert_array_equal(emu.logits.argmax(-1), res.predictions)
    assert len(set(res.exit_stage.tolist())) >= 2  # the gate really routes
    # a stage that did not run costs nothing; the stages that ran cost what each costs alone
    alone = np.array([s["emulation"]["instructions"] for s in manifest["stages"]], dtype=np.float64)
    ran = np.arange(3)[None, :] <= emu.exit_stage[:, None]
    assert (emu.instructions[~ran] == 0).all()
    np.testing.assert_allclose(emu.instructions.sum(1), (ran * alone).sum(1), rtol=0.02)
    check = program["cascade"]
    assert check["exit_agreement"] == 1.0 and check["prediction_agreement"] == 1.0
    assert_like_for_like(manifest, data, tmp_path / "b")


def assert_like_for_like(manifest: dict, data: dict, bundle: Path) -> None:
    """The deployment line compares the int8 bundle as emulated with the int8 original model alone on the core,
    counted the same way; the compile summary, `eecc run` and the report say the same."""
    dep, measured = manifest["deployment"], manifest["placement"]["metrics"]["measured"]
    rec, alone = dep["measured"], [s["emulation"]["instructions"] for s in manifest["stages"]]
    chosen, single = rec["chosen"], rec["best_single"]
    assert (chosen["numeric"], chosen["basis"], single["numeric"], single["basis"]) == ("int8", "emulated") * 2
    assert chosen["accuracy"] == measured["accuracy"] and chosen["mean_energy_j"] == measured["mean_energy_calibrated_j"]
    # the original alone is counted as the stages are: instructions at CPI 1.0 on the 150 MHz core drawing 32 mW
    assert single["processors"] == ["m4"] and single["instructions"] > alone[-1]
    assert single["mean_energy_j"] == pytest.approx(single["instructions"] / 150e6 * 0.032)
    assert abs(single["accuracy"] - measured["original_accuracy"]) < 0.03  # int8 vs float original
    assert rec["ratio"]["mean_energy_j"] == pytest.approx(chosen["mean_energy_j"] / single["mean_energy_j"])
    assert dep["line"] == rec["line"] and "(int8, emulated)" in dep["line"] and "int8 original" in dep["line"]
    assert dep["predicted_line"].startswith("search's prediction (cost model; int8 network)")
    # the search chose on the int8 model: what it predicted is what the int8 stages do on the test split
    search = manifest["placement"]["metrics"]["search"]
    assert search["exit_rates"] == pytest.approx(measured["exit_rates"], abs=1e-9)
    assert search["accuracy"] == pytest.approx(measured["accuracy"], abs=1e-9)
    out = StringIO()
    print_summary(manifest, bundle, Console(file=out, width=1000))
    assert dep["line"] in out.getvalue() and dep["predicted_line"] in out.getvalue()
    # int8 stages are compared with onnxruntime by their decisions, not by a raw logit error
    assert "exit decision" in out.getvalue() and "max error vs onnxruntime" not in out.getvalue()
    res = Cascade(bundle).run(data["x_test"])
    run = summarize(manifest, res.logits, res.exit_stage, res.macs, data["y_test"])
    assert run["best_single"] == single and run["accuracy"] == pytest.approx(chosen["accuracy"])
    assert run["mean_energy_emulated_j"] == pytest.approx(chosen["mean_energy_j"])
    assert html.escape(dep["line"], quote=True) in render_html(manifest, [], [])


def test_single_processor_deployment_wins_with_one_plain_line_and_one_stage(cnn, tmp_path):
    """fp32 on the PSoC 6: the M0+ has no FPU (soft-float, ~200 instructions per MAC measured), so every
    early-exit network starting on it costs more energy than the original model alone on the M4F."""
    path, data = cnn
    options = CompileOptions(target="psoc6", out=tmp_path / "b", cache_dir=str(tmp_path / "c"), progress=False,
                             codegen=False)
    manifest = compile_model(path, data, options)
    dep = manifest["deployment"]
    assert dep["single_processor_wins"] and dep["chosen"]["processors"] == ["m4"] and dep["chosen"]["exits"] == []
    assert len(manifest["stages"]) == 1 and manifest["stages"][0]["target"] == "m4"
    assert manifest["objective"] == "energy"
    out = StringIO()
    print_summary(manifest, tmp_path / "b", Console(file=out, width=300))
    # without --search one placement was tried: the line says so and names the way to try the rest (nu11 F10)
    lines = [ln for ln in out.getvalue().splitlines() if "does not beat the original model on m4" in ln]
    assert len(lines) == 1 and "the default placement" in lines[0] and "compile with --search" in lines[0]
    # the one-stage bundle is the original model: accuracy as the search predicted for it
    x, y = data["x_test"], data["y_test"]
    res = Cascade(tmp_path / "b").run(x)
    assert (res.exit_stage == 0).all()
    assert float((res.predictions == y).mean()) == pytest.approx(dep["chosen"]["accuracy"])
    run = summarize(manifest, res.logits, res.exit_stage, res.macs, y)
    assert run["best_single"]["processors"] == ["m4"]
    assert run["mean_energy_j"] == pytest.approx(run["best_single"]["mean_energy_j"], rel=1e-6)


def test_consecutive_stages_of_one_cortex_m_core_form_one_program_each():
    """Programs are per core run: the M0+'s two stages are one program, the M4's three another; stages of
    other processor kinds (Cortex-A, Mali) stay one build each."""
    entries = [{"target": t} for t in ("m0plus", "m0plus", "m4", "m4", "m4")]
    assert core_runs(load_platform("psoc6"), entries) == [[0, 1], [2, 3, 4]]
    entries = [{"target": t} for t in ("cpu", "cpu", "gpu")]
    assert core_runs(load_platform("rk3588"), entries) == [[0], [1], [2]]


def test_rk3588_prices_its_cpu_from_the_measured_fit_and_its_gpu_with_kernel_launches(cnn, tmp_path):
    """The digits CNN (452k MACs, batch 1) on rk3588: the A76 stages are priced by the Cortex-A fit (eecc/cost/aarch64.py,
    ~2.5 instructions per MAC: 0.24 ms alone, where the nominal 20 G MAC/s said 23 µs), the Mali at nominal MAC/s plus
    20 µs per kernel launch (targets/platforms/rk3588.toml; without launches a 6-kernel stage was 0.3 µs). At these
    figures the original alone is cheaper on the Mali, and the chosen cascade starts on the CPU."""
    from eecc.cost.segments import MEASURED, NOMINAL

    path, data = cnn
    options = CompileOptions(target="rk3588", out=tmp_path / "b", cache_dir=str(tmp_path / "c"), progress=False,
                             codegen=False, search=True)
    manifest = compile_model(path, data, options)
    assert manifest["cost_model"]["processors"] == {"cpu": MEASURED, "gpu": NOMINAL}
    assert {s["target"]: s["predicted"]["source"] for s in manifest["stages"]}.get("cpu") == MEASURED
    gpu = next(p for p in manifest["search"]["placements"] if not p["exits"] and p["processors"] == ["gpu"])
    cpu = next(p for p in manifest["search"]["placements"] if not p["exits"] and p["processors"] == ["cpu"])
    assert gpu["mean_latency_s"] > 20e-6 * 4 and cpu["mean_latency_s"] > 5 * 452224 / 20e9
    assert manifest["deployment"]["best_single"]["processors"] == ["gpu"] and gpu["mean_energy_j"] < cpu["mean_energy_j"]
    assert manifest["stages"][0]["target"] == "cpu"


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
                    reason="needs gcc-aarch64-linux-gnu and qemu-user")
def test_the_original_alone_on_a_cortex_a_is_counted_under_qemu_like_the_bundle_stages(cnn):
    """rk3588 --emulate counts the cascade's Cortex-A stages under qemu-aarch64; the original alone must be counted
    the same way (it was left at nominal MAC/s, so an emulated cascade at 0.26x read as 1.96x the original)."""
    from eecc.driver.baseline import original_alone
    from eecc.model import ir

    path, data = cnn
    test = (data["x_test"][:50], data["y_test"][:50])
    single = original_alone(ir.load(path), "cpu", load_platform("rk3588"), test, int8_calibration=None,
                            emulate=True, fp32_accuracy=0.9, samples=2)
    assert "skipped" not in single and single["instructions"] > 0 and single["samples"] == 2
    assert single["mean_energy_j"] == single["worst_case_energy_j"] > 0


def test_an_emulated_cascade_gets_no_ratio_against_an_original_that_was_not_emulated():
    """When the original alone could not be counted (here: its processor has no emulator), the emulated cascade
    is not divided by the cost model's figure for the original: the line says the original was not emulated."""
    from eecc.driver.deployment import like_for_like

    stage = {"target": "cpu", "exit_latency_calibrated_s": 4e-4, "exit_energy_calibrated_j": 2e-3}
    manifest = {"stages": [stage, stage], "quantization": None, "original_macs": 693344,
                "placement": {"cuts": [3], "metrics": {"measured": {
                    "accuracy": 0.869, "original_accuracy": 0.861, "mean_macs": 177918,
                    "mean_latency_calibrated_s": 6.8e-5, "mean_energy_calibrated_j": 3.4e-4}}},
                "deployment": {"objective": "energy", "best_single": {
                    "processors": ["cpu"], "mean_latency_s": 3.47e-5, "worst_case_latency_s": 3.47e-5,
                    "mean_energy_j": 1.73e-4, "worst_case_energy_j": 1.73e-4}}}
    single = {"processors": ["cpu"], "exits": [], "numeric": "fp32", "accuracy": 0.861,
              "skipped": "no emulator counts mali here"}
    rec = like_for_like(manifest, single)
    assert (rec["chosen"]["basis"], rec["best_single"]["basis"]) == ("emulated", "predicted") and rec["mixed_basis"]
    assert rec["ratio"]["mean_energy_j"] is None and rec["ratio"]["mean_latency_s"] is None
    assert not rec["single_processor_wins"] and "x the energy" not in rec["line"]
    assert "the original was not emulated (no emulator counts mali here)" in rec["line"]


def test_a_chosen_cascade_costlier_than_the_original_says_so_plainly():
    """nu11 F8: "2.21x the energy" was the only hint that the chosen cascade did not beat the original on the
    objective asked for; the line now says it plainly, and only when it is so."""
    from eecc.driver.deployment import summary_line

    def rec(energy):
        p = {"exits": ["a"], "processors": ["m0plus", "m4"], "accuracy": 0.857, "mean_macs": 5e5,
             "mean_latency_s": 1e-3, "worst_case_latency_s": 2e-3, "mean_energy_j": energy, "worst_case_energy_j": 1e-4}
        single = {**p, "exits": [], "processors": ["m4"], "accuracy": 0.7365, "mean_energy_j": 1e-5}
        return {"objective": "energy", "chosen": p, "best_single": single, "single_processor_wins": False,
                "ratio": {"mean_energy_j": energy / 1e-5}, "accuracy_delta_pt": 12.05}
    assert "it uses MORE energy than the original model alone (2.21x), not less" in summary_line(rec(2.21e-5))
    assert "MORE" not in summary_line(rec(0.9e-5))
