"""Mali backend: OpenCL kernels from TVM's default GPU pipeline (aarch64 host), each checked by an OpenCL compiler."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from eecc.errors import EeccError
from eecc.targets import tvm_import
from eecc.targets.cortex_m import CDRIVER

TARGET = {"kind": "opencl", "device": "mali", "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}}


@dataclass
class GpuArtifacts:
    out_dir: Path
    files: list[Path]
    kernel_count: int
    compile_s: float
    checked: bool  # every kernel went through a real compiler (pocl / nvcc)
    check_note: str = ""  # why the check was skipped, or what it reported
    extra: dict = field(default_factory=dict)


def device_source(model: onnx.ModelProto, target: dict, kind: str) -> tuple[str, object]:
    """(device source, VM executable) from tvm.compile with the target's default Relax pipeline."""
    import tvm
    from tvm import relax

    tgt = tvm.target.Target(target)
    ex = tvm.compile(tvm_import.relax_module(model), target=tgt, relax_pipeline=relax.get_default_pipeline(tgt))
    stack = [ex.mod]
    while stack:
        mod = stack.pop()
        if mod.kind == kind:
            return mod.inspect_source(), ex
        stack.extend(mod.imports)
    raise EeccError(f"{kind}: TVM produced no {kind} module for this stage")


def compile_stage(model: onnx.ModelProto, *, out_dir: Path, name: str = "stage") -> GpuArtifacts:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src, ex = device_source(tvm_import.with_identifier_inputs(model), TARGET, "opencl")
    cl = out_dir / f"{name}.cl"
    cl.write_text(src)
    host = out_dir / f"{name}_host.so"
    files = [cl]
    if shutil.which("aarch64-linux-gnu-gcc"):
        ex.export_library(str(host), cc="aarch64-linux-gnu-gcc")
        files.append(host)
    kernels = len(set(re.findall(r"__kernel\s+void\s+(\w+)\s*\(", src)))
    checked, note = check_opencl(cl, out_dir)
    return GpuArtifacts(out_dir, files, kernels, round(time.perf_counter() - start, 3), checked, note)


def check_opencl(cl: Path, work: Path) -> tuple[bool, str]:
    """Build the kernels with the local OpenCL implementation (pocl on Debian)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None or not Path("/usr/include/CL/cl.h").exists():
        return False, "no host C compiler or OpenCL headers (Debian: ocl-icd-opencl-dev)"
    tool = work / "clbuild"
    if not tool.exists():
        proc = subprocess.run([gcc, "-O1", str(CDRIVER / "clbuild.c"), "-o", str(tool), "-lOpenCL"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return False, f"clbuild did not compile: {proc.stderr.strip()[-500:]}"
    proc = subprocess.run([str(tool), str(cl)], capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        return False, "no OpenCL device (Debian: pocl-opencl-icd)"
    if proc.returncode != 0:
        raise EeccError(f"mali: the OpenCL compiler rejected TVM's kernels in {cl}: {proc.stderr.strip()[-1500:]}")
    return True, proc.stdout.strip()
