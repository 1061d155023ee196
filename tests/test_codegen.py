"""Per-stage TVM artifacts of a real 2-stage bundle: psoc6 under QEMU with calibrated latency, rk3588 CPU + Mali."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eecc.model import ir
from eecc.bundle.manifest import Manifest
from eecc.driver.pipeline import make_stages
from eecc.errors import EeccError
from eecc.targets.codegen import CPI, TOLERANCE, apply_updates, check_shared_memory, compare_outputs, \
    compile_stages, reference_runs
from eecc.targets.calibration import with_exit_estimates
from eecc.targets.platform import estimate_exits, load_platform, parse_platform
from golden import run as golden_run
from test_assign_split import model_with_exits

needs_arm = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi "
           "qemu-system-arm)")
needs_aarch64 = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64")),
    reason="aarch64-linux-gnu-gcc / qemu-aarch64 not installed (Debian: gcc-aarch64-linux-gnu qemu-user)")
X = np.random.default_rng(11).normal(size=(16, 1, 8, 8)).astype(np.float32)
TWO = """
name = "two"
shared_memory = SHARED
[[processors]]
name = "a"
kind = "KIND_A"
macs_per_s = 1e6
ram_bytes = RAM
storage_bytes = 2000000
active_power_w = 0.01
idle_power_w = 0.001
clock_hz = 50e6
[[processors]]
name = "b"
kind = "KIND_B"
macs_per_s = 4e6
ram_bytes = 1000000
storage_bytes = 2000000
active_power_w = 0.04
idle_power_w = 0.002
[[links]]
src = "a"
dst = "b"
bandwidth_bps = 8e6
latency_s = 0.001
"""


def two(kind_a="cortex-m0plus", kind_b="cortex-m4", ram=1000000, shared=False):
    text = TWO.replace("KIND_A", kind_a).replace("KIND_B", kind_b).replace("RAM", str(ram))
    return parse_platform(text.replace("SHARED", "true" if shared else "false"))


def stages_for(platform, threshold=0.6):
    """The test net cut after its residual block: stage 0 = conv + residual block + exit head + gate."""
    procs = [p.name for p in platform.processors][:2]
    stages = make_stages(model_with_exits(cuts=("a2",)), cuts=["a2"], processors=procs, thresholds=[threshold],
                         platform=platform)
    return [ir.to_model(s) for s in stages], Manifest.build(stages, platform=platform, thresholds=[threshold]).to_json()


@pytest.fixture(scope="module")
def psoc6(tmp_path_factory):
    platform = load_platform("psoc6")
    models, manifest = stages_for(platform)
    out = tmp_path_factory.mktemp("psoc6")
    result = compile_stages(models, manifest, platform, out, emulate_inputs=X, emulate_samples=4)
    return platform, manifest, result, out


@needs_arm
def test_psoc6_stages_get_elf_artifacts_that_fit(psoc6):
    platform, manifest, result, out = psoc6
    s0, s1 = result["stages"]
    for update, proc, elf in ((s0, "m0plus", "stage0.elf"), (s1, "m4", "stage1.elf")):
        paths = [a["path"] for a in update["artifacts"]]
        assert paths[0] == f"{proc}/{elf}" and f"{proc}/stage.c" in paths
        for art in update["artifacts"]:
            assert (out / art["path"]).stat().st_size == art["bytes"] > 0
        cg = update["codegen"]
        assert 0 < cg["flash_bytes"] <= platform.processor(proc).storage_bytes
        assert 0 < cg["ram_bytes"] <= cg["ram_unplanned_bytes"] and cg["kernel_count"] >= 1
    assert s0["codegen"]["cpu"] == "cortex-m0plus" and s1["codegen"]["cpu"] == "cortex-m4"


@needs_arm
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_each_stage_folder_builds_alone_into_the_elf_eecc_built(psoc6, tmp_path):
    """A firmware engineer gets the folder, not the checkout: its Makefile rebuilds the ELF byte for byte with
    PATH alone in the environment (one-stage folders: stage.c; programs: tests/test_firmware_bundle.py)."""
    import subprocess

    _, _, result, out = psoc6
    for update in result["stages"]:
        elf = Path(update["artifacts"][0]["path"])
        copy = tmp_path / elf.parent.name
        shutil.copytree(out / elf.parent, copy)
        built = (copy / elf.name).read_bytes()
        (copy / elf.name).unlink()
        proc = subprocess.run(["make"], cwd=copy, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert (copy / elf.name).read_bytes() == built
        assert {"Makefile", "README.md", "eecc_driver.h", "mcu.ld"} <= {a["path"].split("/")[-1]
                                                                       for a in update["artifacts"]}


@needs_arm
def test_psoc6_emulation_matches_onnxruntime_on_the_real_handoff(psoc6):
    _, manifest, result, _ = psoc6
    s0, s1 = result["stages"]
    assert set(s0["emulation"]["max_abs_error_by_output"]) == {"a2", "exit0.logits", "exit0.confidence"}
    assert set(s1["emulation"]["max_abs_error_by_output"]) == {"y"}
    for update, entry in zip(result["stages"], manifest["stages"]):
        emu = update["emulation"]
        assert emu["samples"] == 4 and 0 <= emu["max_abs_error"] <= TOLERANCE
        assert emu["instructions"] > entry["macs"]  # at least one instruction per multiply-accumulate
    # soft-float v6-M code costs far more instructions per MAC than the M4F's FPU
    per_mac = [u["emulation"]["instructions"] / e["macs"] for u, e in zip(result["stages"], manifest["stages"])]
    assert per_mac[0] > 3 * per_mac[1]
    assert result["codegen"]["emulate_samples"] == 4


def test_stage1_is_fed_the_handoff_of_stage0():
    platform = load_platform("psoc6")
    models, _ = stages_for(platform)
    (in0, out0), (in1, out1) = reference_runs(models, X[:3])
    whole = golden_run(ir.to_model(model_with_exits(cuts=("a2",))), {"x": X[:3]})
    np.testing.assert_array_equal(in0["x"], X[:3])
    np.testing.assert_array_equal(in1["a2"], out0["a2"])
    # stage 1 reproduces the unsplit model's logits only when it is fed the true hand-off
    np.testing.assert_allclose(out1["y"], whole["y"], atol=1e-5, rtol=0)
    assert not np.allclose(golden_run(models[1], {"a2": np.zeros_like(in1["a2"])})["y"], whole["y"], atol=1e-3)


@needs_arm
def test_cortex_m_latency_is_recalibrated_from_instruction_counts(psoc6):
    platform, manifest, result, _ = psoc6
    for update, entry in zip(result["stages"], manifest["stages"]):
        proc = platform.processor(entry["target"])
        cal, seconds = update["calibration"], update["latency_calibrated_s"]
        assert update["latency_estimate_s"] == pytest.approx(entry["macs"] / proc.macs_per_s)
        assert seconds == pytest.approx(update["emulation"]["instructions"] * CPI[proc.kind] / proc.clock_hz)
        assert cal["macs_per_s_calibrated"] == pytest.approx(entry["macs"] / seconds)
        assert cal["calibrated_over_estimate"] == pytest.approx(seconds / update["latency_estimate_s"])
    # exit latency and energy again with the calibrated MAC/s: the stated model on the measured rates
    rates = {e["target"]: u["calibration"]["macs_per_s_calibrated"] for e, u in zip(manifest["stages"],
                                                                                   result["stages"])}
    calibrated = replace(platform, processors=tuple(replace(p, macs_per_s=rates[p.name]) for p in platform.processors))
    want = estimate_exits(calibrated, ["m0plus", "m4"], [e["macs"] for e in manifest["stages"]],
                          [e["handoff_bytes"] for e in manifest["stages"]],
                          result_bytes=manifest["stages"][-1]["result_bytes"])  # the M4's logits back to the M0+
    assert manifest["stages"][-1]["result_bytes"] == 4 * manifest["num_classes"]
    for update, w in zip(result["stages"], want):
        assert update["exit_latency_calibrated_s"] == pytest.approx(w["latency_s"])
        assert update["exit_energy_calibrated_j"] == pytest.approx(w["energy_j"])
    worst = result["stages"][-1]["exit_latency_calibrated_s"]
    assert result["codegen"]["worst_case_latency_calibrated_s"] == worst
    assert worst > sum(u["latency_calibrated_s"] for u in result["stages"])  # plus the hand-off


@pytest.mark.parametrize("calibrated", [(1e-3, None), (None, 2e-3)])
def test_an_exit_behind_an_unemulated_stage_has_no_calibrated_figure(calibrated):
    """nu14 F8: a stage not emulated (rk3588's Mali: PoCL for correctness only) got exit figures 'calibrated' from
    its nominal seconds plus the stages before it, which inspect printed where the report says 'not emulated'.
    An exit is calibrated only when it and every stage before it were; those figures are estimate_exits on the
    instruction-derived seconds."""
    platform = load_platform("psoc6")
    _, manifest = stages_for(platform)
    entries = manifest["stages"]
    updates = [{} if c is None else {"latency_calibrated_s": c} for c in calibrated]
    got = with_exit_estimates(platform, entries, updates)
    first = calibrated[0] is not None
    assert got[1]["exit_latency_calibrated_s"] is None and got[1]["exit_energy_calibrated_j"] is None
    assert (got[0]["exit_latency_calibrated_s"] is not None) == first
    if first:
        want = estimate_exits(platform, [e["target"] for e in entries], [e["macs"] for e in entries],
                              [e["handoff_bytes"] for e in entries], compute_s=[1e-3, entries[1]["compute_s"]],
                              result_bytes=entries[-1]["result_bytes"])[0]
        assert got[0]["exit_latency_calibrated_s"] == pytest.approx(want["latency_s"])
        assert got[0]["exit_energy_calibrated_j"] == pytest.approx(want["energy_j"])
        assert want["latency_s"] >= 1e-3


@needs_arm
def test_apply_updates_merges_into_a_new_manifest(psoc6):
    _, manifest, result, _ = psoc6
    merged = apply_updates(manifest, result)
    assert merged is not manifest and "codegen" not in manifest["stages"][0]
    assert merged["stages"][1]["file"] == "stage1.m4.onnx" and merged["stages"][1]["codegen"]["cpu"] == "cortex-m4"
    assert merged["codegen"]["cpi"] == CPI


@needs_arm
def test_shared_memory_images_must_fit_together(psoc6):
    platform, manifest, result, _ = psoc6
    check_shared_memory(platform, manifest["stages"], result["stages"])  # 1 MB SRAM holds both
    ram = sum(u["codegen"]["ram_bytes"] for u in result["stages"]) - 1
    procs = tuple(replace(p, ram_bytes=ram) for p in platform.processors)
    with pytest.raises(EeccError, match=r"share \d+ B of RAM on 'psoc6' but need stage 0 on 'm0plus' \d+ B \+ "
                                        r"stage 1 on 'm4' \d+ B"):
        check_shared_memory(replace(platform, processors=procs), manifest["stages"], result["stages"])


@needs_arm
def test_stage_that_does_not_fit_names_the_stage(tmp_path):
    """The build's own check after linking (the split's, which sizes the stack too, refuses such a platform first:
    tests/test_stage_ram.py): stages split for a large RAM, built for 8,192 B, a 3 KB arena beside the stack."""
    models, manifest = stages_for(two())
    with pytest.raises(EeccError, match=r"stage 'stage0' needs \d+ B of RAM .* has 8192 B"):
        compile_stages(models, manifest, two(ram=8192), tmp_path)
    with pytest.raises(EeccError, match=r"stage 0 on 'a': activations and stack need \d+ bytes but its RAM "
                                        r"holds 8192"):
        stages_for(two(ram=8192))


def test_kinds_without_a_backend_are_skipped_with_the_reason(tmp_path):
    platform = two("cortex-m7", "x86")
    models, manifest = stages_for(platform)
    result = compile_stages(models, manifest, platform, tmp_path, emulate_inputs=X)
    for update, kind in zip(result["stages"], ("cortex-m7", "x86")):
        assert f"no eecc backend for processor kind '{kind}'" in update["codegen"]["skipped"]
        assert update["artifacts"] == [] and update["emulation"] == {"skipped": "stage not compiled"}
        assert update["latency_calibrated_s"] is None and "skipped" in update["calibration"]
    assert list(Path(tmp_path).iterdir()) == []


def test_compare_outputs_tolerates_flags_flipped_only_at_the_threshold():
    entry = {"threshold": 0.5, "outputs": {"exit": "e", "confidence": "c"}}
    conf = np.array([0.50000003, 0.9, 0.1], np.float32)
    want = {"c": conf, "e": conf >= 0.5, "z": np.zeros((3, 2), np.float32)}
    got = {"c": conf + 5e-5, "e": np.array([False, True, False]), "z": np.full((3, 2), -2e-5, np.float32)}
    errors, flips = compare_outputs(got, want, entry, where="stage 0")
    assert flips == 1 and errors["z"] == pytest.approx(2e-5) and errors["c"] == pytest.approx(5e-5, rel=1e-3)
    with pytest.raises(EeccError, match=r"stage 0 gives a different 'e' than onnxruntime for 1 of 3 samples"):
        compare_outputs({**got, "e": np.array([True, False, False])}, want, entry, where="stage 0")
    with pytest.raises(EeccError, match=r"stage 0 differs from onnxruntime by 0.0003 \(> 0.0001\) in output 'z'"):
        compare_outputs({**got, "z": got["z"] + 3e-4 + 2e-5}, want, entry, where="stage 0")


@needs_aarch64
def test_rk3588_gets_cortex_a_and_mali_artifacts(tmp_path):
    platform = load_platform("rk3588")
    models, manifest = stages_for(platform)
    cpu, gpu = compile_stages(models, manifest, platform, tmp_path, emulate_inputs=X, emulate_samples=2)["stages"]
    assert [a["path"] for a in cpu["artifacts"]][:2] == ["cpu/libstage0.so", "cpu/harness"]
    assert cpu["codegen"]["backend"] == "cortex_a" and cpu["codegen"]["cpu"] == "cortex-a76"
    assert cpu["emulation"]["samples"] == 2 and cpu["emulation"]["max_abs_error"] <= TOLERANCE
    # counted by the TCG plugin inside eecc_run only, then calibrated like a Cortex-M stage
    instructions, cal, macs = cpu["emulation"]["instructions"], cpu["calibration"], manifest["stages"][0]["macs"]
    assert macs / 4 <= instructions <= 50 * macs  # a NEON FMLA does at most 4 fp32 MACs
    assert cal["cpi"] == CPI["cortex-a"] and cal["clock_hz"] == 2.4e9
    assert cal["instructions_per_mac"] == pytest.approx(instructions / macs)
    assert cpu["latency_calibrated_s"] == pytest.approx(instructions * CPI["cortex-a"] / 2.4e9)
    assert cpu["exit_latency_calibrated_s"] is not None
    assert gpu["codegen"]["backend"] == "mali" and gpu["codegen"]["kernel_count"] >= 1
    assert {"gpu/stage1.cl", "gpu/stage1.plan.json", "gpu/stage1.weights.npz"} <= {a["path"] for a in gpu["artifacts"]}
    assert "__kernel" in (tmp_path / "gpu" / "stage1.cl").read_text()
    assert [s["rule"] for s in gpu["codegen"]["schedules"]] and gpu["codegen"]["schedule_fallbacks"] == 0
    emu = gpu["emulation"]  # the OpenCL kernels ran on PoCL and match onnxruntime
    assert emu["emulator"] == "opencl" and emu["samples"] == 2 and emu["max_abs_error"] <= TOLERANCE
    assert "correctness only" in emu["purpose"] and "Portable Computing Language" in emu["device"]
    assert "latency is calibrated from emulated instruction counts of CPU stages only" in gpu["calibration"]["skipped"]
    assert not (tmp_path / "gpu" / "clbuild").exists()
