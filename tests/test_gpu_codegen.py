"""GPU code generation without a GPU: Mali OpenCL kernels built by pocl, CUDA source compiled to PTX by nvcc."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eecc.targets import cuda, mali
from test_cortex_m import small_cnn


@pytest.mark.skipif(not Path("/usr/include/CL/cl.h").exists() or shutil.which("clinfo") is None,
                    reason="OpenCL headers / pocl not installed (Debian: ocl-icd-opencl-dev pocl-opencl-icd clinfo)")
def test_mali_opencl_kernels_compile_with_pocl(tmp_path):
    arts = mali.compile_stage(small_cnn(), out_dir=tmp_path)
    src = arts.files[0].read_text()
    assert "__kernel" in src and "get_group_id" in src  # really bound to GPU threads, not a serial loop
    assert arts.checked and arts.check_note == f"kernels={arts.kernel_count}"


def test_cuda_source_and_ptx(tmp_path):
    arts = cuda.compile_stage(small_cnn(), out_dir=tmp_path)
    src = arts.files[0].read_text()
    assert "__global__" in src and "blockIdx.x" in src and arts.kernel_count >= 4
    if shutil.which("nvcc") is None:
        assert not arts.checked and "nvcc not installed" in arts.check_note
    else:
        assert arts.checked and arts.check_note == f"ptx entries={arts.kernel_count}"
