"""`eecc inspect OUT` on real bundles: stages, per-target artifacts, calibrated latency, JSON, errors."""

from __future__ import annotations

import json
import shutil

import pytest

from eecc.model import ir
from eecc.bundle.manifest import Manifest
from eecc.bundle.writer import open_bundle, write_bundle
from eecc.driver.pipeline import make_stages
from eecc.cli import main
from eecc.targets.codegen import apply_updates, compile_stages
from eecc.targets.platform import load_platform
from test_assign_split import model_with_exits
from test_codegen import X, stages_for, two

needs_arm = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi qemu-system-arm)")


def compiled_bundle(out, platform, *, emulate=True):
    """What `eecc compile` writes: the stage ONNX files, then target code, then the manifest."""
    models, manifest = stages_for(platform)
    manifest["placement"]["metrics"] = {"measured": {"accuracy": 0.875, "exit_rates": [0.625, 0.375]}}
    with open_bundle(out) as tmp:
        for entry, model in zip(manifest["stages"], models):
            ir.save(model, tmp / entry["file"])
        result = compile_stages(models, manifest, platform, tmp, emulate_inputs=X if emulate else None)
        manifest = apply_updates(manifest, result)
        (tmp / "manifest.json").write_text(json.dumps(manifest))
    return out, manifest


@pytest.fixture(scope="module")
def psoc6(tmp_path_factory):
    return compiled_bundle(tmp_path_factory.mktemp("b") / "out", load_platform("psoc6"))


@needs_arm
def test_table_shows_stages_artifacts_calibration_and_metrics(psoc6, capsys):
    out, manifest = psoc6
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("stage0.m0plus.onnx", "stage1.m4.onnx", "cortex-m0plus", "0.600", "m0plus/stage0.elf",
                   "m4/stage1.elf", "cal. latency", "instr./inference", "placement: m0plus → m4, cuts at a2",
                   "87.50 %", "62.5 %, 37.5 %"):
        assert needle in text, needle
    s0 = manifest["stages"][0]
    assert f"{s0['emulation']['instructions']:,}" in text and f"{s0['codegen']['flash_bytes']:,}" in text
    calibrated_ms = s0["latency_calibrated_s"] * 1e3
    assert f"{calibrated_ms:.3g} ms" in text
    assert f"calibrated {manifest['codegen']['worst_case_latency_calibrated_s'] * 1e3:.3g} ms" in text


@needs_arm
def test_json_is_one_object_with_the_manifest_summary(psoc6, capsys):
    out, manifest = psoc6
    assert main(["inspect", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["platform"] == "psoc6" and data["input"]["name"] == "x" and data["num_classes"] == 5
    assert [s["file"] for s in data["stages"]] == ["stage0.m0plus.onnx", "stage1.m4.onnx"]
    for got, entry in zip(data["stages"], manifest["stages"]):
        assert got["artifacts"] == entry["artifacts"] and got["codegen"] == entry["codegen"]
        assert got["latency_calibrated_s"] == entry["latency_calibrated_s"] > got["latency_estimate_s"] > 0
        assert got["emulation"]["max_abs_error"] <= 1e-4
    assert data["placement"]["processors"] == ["m0plus", "m4"] and data["codegen"]["cpi"]


def test_placement_figures_are_a_table_in_summary_units_not_raw_keys(tmp_path, capsys):
    """The search's prediction beside the measured run, rounded as the summaries print them."""
    platform = two("cortex-m7", "x86")
    stages = make_stages(model_with_exits(cuts=("a2",)), cuts=["a2"], processors=["a", "b"], thresholds=[0.6],
                         platform=platform)
    metrics = {
        "search": {"accuracy": 0.9094, "ece": [0.048718759794381, 0.0398783116872438], "mean_macs": 737404.2,
                   "exit_rates": [0.5302083333333333, 0.4697916666666667], "mean_energy_j": 0.0003319,
                   "thresholds": [0.7616531692259754], "intervals": {"mean_macs": [703953.5775, 771179.065],
                                                                     "accuracy_drop": [-0.0031, 0.0152]}},
        "measured": {"split": "test", "samples": 960, "accuracy": 0.9072916666666667, "mean_latency_s": 0.0100756,
                     "original_accuracy": 0.9115, "intervals": {"accuracy_drop": [-0.0021, 0.0115]},
                     "mean_energy_calibrated_j": 0.0003267542362344444, "agreement_with_search": 0.9479166666666666}}
    write_bundle(tmp_path / "b", stages,
                 Manifest.build(stages, platform=platform, thresholds=[0.6], placement_metrics=metrics))
    written = json.loads((tmp_path / "b" / "manifest.json").read_text())  # compile adds the search's reference
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({**written, "original": {"accuracy": 0.9156}}))
    assert main(["inspect", str(tmp_path / "b")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("measured on the test split, 960 samples", "90.94 %", "90.73 %", "737,404 [703,954, 771,179]",
                   "53.0 %, 47.0 %", "0.332 mJ", "10.08 ms", "0.327 mJ", "0.762", "94.79 %", "--json",
                   "accuracy drop (pt) │ 0.62 [-0.31, 1.52] │ 0.42 [-0.21, 1.15]"):  # point [low, high], each column
        assert needle in text, needle
    assert "search." not in text and "measured." not in text and "0.0398783" not in text


def test_bundle_without_target_code_and_skipped_stages_say_so(tmp_path, capsys):
    platform = two("cortex-m7", "x86")
    stages = make_stages(model_with_exits(cuts=("a2",)), cuts=["a2"], processors=["a", "b"], thresholds=[0.6],
                         platform=platform)
    write_bundle(tmp_path / "plain", stages, Manifest.build(stages, platform=platform, thresholds=[0.6]))
    assert main(["inspect", str(tmp_path / "plain")]) == 0
    assert "codegen: none" in capsys.readouterr().out
    out, _ = compiled_bundle(tmp_path / "skipped", platform)
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stage 0 on 'a': codegen skipped: no eecc backend for processor kind 'cortex-m7'" in " ".join(text.split())
    assert main(["inspect", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all("skipped" in s["codegen"] and s["artifacts"] == [] for s in data["stages"])


def test_a_folder_that_is_not_a_bundle_is_a_one_line_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path}' is not an eecc bundle (no manifest.json); run eecc compile first" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "version": 1}))
    assert main(["inspect", str(tmp_path), "--json"]) == 2
    assert "format 'other' version 1" in capsys.readouterr().err



@pytest.mark.skipif(any(shutil.which(t) is None for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64")),
                    reason="aarch64-linux-gnu-gcc / qemu-aarch64 not installed (Debian: gcc-aarch64-linux-gnu qemu-user)")
def test_rk3588_bundle_shows_compiled_executed_counted_per_stage(tmp_path, capsys):
    out, manifest = compiled_bundle(tmp_path / "rk", load_platform("rk3588"))
    assert main(["inspect", str(out), "--json"]) == 0
    cpu, gpu = (s["status"] for s in json.loads(capsys.readouterr().out)["stages"])
    assert cpu == {"compiled": True, "executed": True, "counted": True, "executed_on": "qemu-aarch64"}
    assert gpu["compiled"] and gpu["executed"] and not gpu["counted"] and "Portable Computing Language" in gpu["executed_on"]
    assert main(["inspect", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "stage 0 on 'cpu': compiled, executed, counted (on qemu-aarch64)" in text
    assert "stage 1 on 'gpu': compiled, executed (on Portable Computing Language" in text
    assert "stage 1 on 'gpu': correctness only" in text
    # nu14 F8, at the root: the manifest records no calibrated exit figure for the un-emulated Mali stage
    assert manifest["stages"][1]["exit_latency_calibrated_s"] is None
    assert manifest["stages"][1]["exit_energy_calibrated_j"] is None
    assert manifest["stages"][0]["exit_latency_calibrated_s"] is not None
    assert manifest["codegen"]["worst_case_latency_calibrated_s"] is None


def test_cal_cells_are_empty_for_a_stage_not_emulated():
    """nu14 F8: rk3588's Mali stage 1 (run on PoCL for correctness, latency_calibrated_s None) showed 'cal. latency
    707 µs, cal. energy 1.91 mJ': stage 0's calibration carried into its cumulative figure. Now "—", as the report."""
    from eecc.cli.bundle_view import calibrated_cells

    cpu = {"latency_calibrated_s": 3.2e-5, "exit_latency_calibrated_s": 3.2e-5, "exit_energy_calibrated_j": 1.6e-4}
    gpu = {"latency_calibrated_s": None, "exit_latency_calibrated_s": 7.07e-4, "exit_energy_calibrated_j": 1.91e-3}
    assert calibrated_cells([cpu, gpu]) == [("32 µs", "160 µJ"), ("—", "—")]
    assert calibrated_cells([gpu, cpu]) == [("—", "—"), ("—", "—")]  # after a stage not emulated: none is whole
    assert calibrated_cells([cpu, cpu])[1] == ("32 µs", "160 µJ")


@pytest.mark.parametrize("given", [["--input-shape", "1,8,8"], ["--head-budget", "5%"],
                                   ["--head-budget", "0.02", "--input-shape", "1,8,8"]])
def test_model_options_on_a_bundle_are_refused_and_dropping_them_inspects_it(tmp_path, capsys, given):
    """fx16's help walk: `inspect OUT --input-shape ... --head-budget ...` printed the bundle and ignored both (its
    stages and heads were fixed by compile), even --head-budget at its default value."""
    platform = two("cortex-m7", "x86")
    stages = make_stages(model_with_exits(cuts=("a2",)), cuts=["a2"], processors=["a", "b"], thresholds=[0.6],
                         platform=platform)
    write_bundle(tmp_path / "b", stages, Manifest.build(stages, platform=platform, thresholds=[0.6]))
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "b"), *given]) == 2
    out, err = capsys.readouterr()
    flags = " and ".join(f for f in ("--input-shape", "--head-budget") if f in given)
    assert out == "" and err.count("\n") == 1, err
    assert f"is a bundle whose stages eecc compile already fixed; drop {flags} to inspect the bundle" in err, err
    assert main(["inspect", str(tmp_path / "b")]) == 0  # the advice: the same command without them
    assert "stage0" in capsys.readouterr().out
