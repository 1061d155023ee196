"""The Cortex-M driver passes each tensor as its data pointer alone (targets/mcu_abi.py): the build must refuse a
kernel whose wrapper would read any other DLTensor field, and the stage tables must hold nothing but pointers."""

from __future__ import annotations

import re
import subprocess

import pytest

from eecc.errors import EeccError
from eecc.targets import cortex_m, mcu_abi, tvm_import

tvm = pytest.importorskip("tvm")
from test_cortex_m import needs_arm, small_cnn  # noqa: E402
from tvm.script import tirx as T  # noqa: E402


def _module(fixed: bool):
    """A copy kernel: y[i] = x[i] + 1 over 16 values, or over a length the caller's shape gives (not fixed)."""
    if fixed:
        @T.prim_func
        def add_one(x: T.Buffer((16,), "int8"), y: T.Buffer((16,), "int8")):
            for i in range(16):
                y[i] = x[i] + T.int8(1)
    else:
        @T.prim_func
        def add_one(a: T.handle, b: T.handle):
            n = T.int32()
            x = T.match_buffer(a, (n,), "int8")
            y = T.match_buffer(b, (n,), "int8")
            for i in range(n):
                y[i] = x[i] + T.int8(1)
    return tvm.IRModule({"add_one": add_one.with_attr("global_symbol", "add_one")})


def test_a_fixed_shape_kernel_builds_as_tvm_builds_it(tmp_path):
    """The checked build is tvm.tirx.build's steps: the object is the one TVM writes, byte for byte."""
    target = tvm.target.Target(cortex_m.CPUS["cortex-m0plus"]["target"])
    mcu_abi.build_kernels(_module(fixed=True), target).write_to_file(str(tmp_path / "a.o"))
    tvm_import.build_kernels(_module(fixed=True), target, checks=False).write_to_file(str(tmp_path / "b.o"))
    assert (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes()


def test_a_kernel_that_reads_a_shape_fails_the_build():
    """A dynamic length is read from DLTensor.shape, which a Cortex-M view (a data pointer) does not have."""
    target = tvm.target.Target(cortex_m.CPUS["cortex-m4"]["target"])
    with pytest.raises(EeccError, match=r"__tvm_ffi_add_one uses field 2 of"):
        mcu_abi.build_kernels(_module(fixed=False), target)


@needs_arm
def test_the_cortex_m_stage_passes_data_pointers_from_flash_and_the_host_build_dltensors(tmp_path):
    """The Cortex-M tables hold one const pointer per view (in flash, none of the 40-B DLTensors or shape arrays
    in RAM) and 4-B aligned weights; the A76's host build keeps DLTensor views (its wrappers are not checked)."""
    arts = cortex_m.compile_stage(small_cnn(), cpu="cortex-m4", out_dir=tmp_path)
    text = (tmp_path / "stage.c").read_text()
    assert "static void* const views[" in text and "DLTensor" not in text and "int64_t shape_" not in text
    assert "aligned(4)" in text and "aligned(64))) = {" not in text
    syms = subprocess.run(["arm-none-eabi-nm", str(arts.files[0])], capture_output=True, text=True).stdout
    assert re.search(r"^[0-9a-f]{8} [rRtT] views$", syms, re.M), "the view table is not in flash"
    stage = tvm_import.lower_stage(small_cnn(), tvm.target.Target("llvm"))
    host = cortex_m.emit_driver(stage, tvm_import.plan_memory(stage), 64)
    assert "static DLTensor views[" in host and "aligned(64))) = {" in host
