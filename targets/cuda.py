"""CUDA backend: CUDA source from TVM's default CUDA pipeline; PTX through nvcc when it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import onnx

from eecc.errors import EeccError
from eecc.targets import tvm_import
from eecc.targets.mali import GpuArtifacts, device_source


def compile_stage(model: onnx.ModelProto, *, out_dir: Path, arch: str = "sm_86", name: str = "stage") -> GpuArtifacts:
    """sm_86 = RTX 3090 Ti, the remote server of the rk3588-cuda platform."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src, _ = device_source(tvm_import.with_identifier_inputs(model), {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}, "cuda")
    cu = out_dir / f"{name}.cu"
    cu.write_text(src)
    kernels = len(set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(", src)))
    files, checked, note = [cu], False, ""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        note = "nvcc not installed: PTX not generated"
    else:
        ptx = out_dir / f"{name}.ptx"
        proc = subprocess.run([nvcc, "-ptx", f"-arch={arch.replace('sm_', 'compute_')}", str(cu), "-o", str(ptx)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise EeccError(f"cuda: nvcc rejected TVM's kernels in {cu}: {proc.stderr.strip()[-1500:]}")
        files.append(ptx)
        checked, note = True, f"ptx entries={len(re.findall(r'^.visible .entry', ptx.read_text(), re.M))}"
    return GpuArtifacts(out_dir, files, kernels, round(time.perf_counter() - start, 3), checked, note)
