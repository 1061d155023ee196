"""Cortex-A stages: an aarch64 shared library from TVM kernels + eecc driver, run under qemu-aarch64."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from eecc.runtime.emulate import emulate_stage
from eecc.targets import cortex_a
from test_cortex_m import exit_stage, reference, small_cnn

pytestmark = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
    reason="aarch64-linux-gnu-gcc / qemu-aarch64 not installed (Debian: gcc-aarch64-linux-gnu qemu-user)")


def test_shared_library_runs_under_qemu_aarch64_and_matches_onnxruntime(tmp_path):
    model = small_cnn()
    arts = cortex_a.compile_stage(model, cpu="cortex-a76", out_dir=tmp_path)
    assert arts.files[0].name == "libstage.so" and arts.kernel_count >= 4
    x = np.random.default_rng(4).standard_normal((2, 3, 16, 16)).astype(np.float32)
    result = emulate_stage(arts, x)
    np.testing.assert_allclose(result.outputs["y"], reference(model, x)["y"], atol=1e-4, rtol=0)
    # counted by the TCG plugin between the harness's markers: eecc_run only, the same for every sample
    macs = 8 * 16 * 16 * 27 + 8 * 8 * 8 * 9 + 10 * 8  # conv 3x3, depthwise 3x3, gemm
    assert macs / 4 <= result.instructions <= 50 * macs  # a NEON FMLA does at most 4 fp32 MACs
    one = emulate_stage(arts, x[:1])
    assert abs(one.instructions - result.instructions) <= 0.001 * result.instructions


def test_multi_output_stage_on_cortex_a55(tmp_path):
    model = exit_stage()
    arts = cortex_a.compile_stage(model, cpu="cortex-a55", out_dir=tmp_path)
    x = np.random.default_rng(5).standard_normal((3, 4, 40)).astype(np.float32)
    got, want = emulate_stage(arts, x).outputs, reference(model, x)
    np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got["exit"].reshape(-1), want["exit"].reshape(-1))


def test_a_kernel_that_allocates_twice_gets_the_workspace_the_allocator_takes(tmp_path):
    """A 3x3 depthwise conv on 8x9x9 allocates a padded input (3,872 B) and an intermediate (2,592 B): TVM's TIR
    total (6,464 B) left no room for the driver's 64-byte rounding of each (6,528 B), and the stage failed under
    QEMU with "kernel workspace exhausted"."""
    from eecc.cost.layers import layer_models

    model = layer_models()["layer:dw-8x9x9-k3s1"]
    arts = cortex_a.compile_stage(model, cpu="cortex-a76", out_dir=tmp_path)
    x = np.random.default_rng(6).standard_normal((2, 8, 9, 9)).astype(np.float32)
    result = emulate_stage(arts, x)
    np.testing.assert_allclose(result.outputs["y"], reference(model, x)["y"], atol=1e-4, rtol=0)
    assert arts.workspace_bytes == result.workspace_peak == 3904 + 2624


def test_the_stage_folder_builds_alone_into_the_library_eecc_built(tmp_path):
    """nu13 F11: the folder held stage.c, which includes eecc_driver.h, without the header, a Makefile or a README.
    Now `make` in a copy, with PATH alone, rebuilds lib<stage>.so and harness byte for byte."""
    import subprocess

    from eecc.targets import linux_bundle

    arts = cortex_a.compile_stage(small_cnn(), cpu="cortex-a76", out_dir=tmp_path / "a", name="stage0")
    added = linux_bundle.make_buildable(arts, "stage0")
    assert {p.name for p in added} == {*linux_bundle.COPIED, "Makefile", "README.md"}
    copy = tmp_path / "copy"
    shutil.copytree(arts.out_dir, copy)
    built = {f: (copy / f).read_bytes() for f in ("libstage0.so", "harness")}
    for f in built:
        (copy / f).unlink()
    proc = subprocess.run(["make"], cwd=copy, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {f: (copy / f).read_bytes() for f in built} == built
    readme = (copy / "README.md").read_text()
    assert "eecc_run()" in readme and "`x`: float32 [1, 3, 16, 16]" in readme and "libstage0.so" in readme
