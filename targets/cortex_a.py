"""Cortex-A backend: TVM kernels + the eecc driver as an aarch64 Linux shared library and a test harness."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import onnx

from eecc.errors import EeccError
from eecc.targets import tvm_import
from eecc.targets.cortex_m import CDRIVER, StageArtifacts, emit_driver, io_specs, require_tool, write_manifest

# A workspace allocation in the LLVM IR of TVM's host code: __TVMBackendAllocWorkspace(device_type, device_id,
# nbytes, dtype_code_hint, dtype_bits_hint) through the function pointer the driver sets
ALLOC = re.compile(r"call ptr %[\w.]+\(i32 \d+, i32 %[\w.]+, i64 (\d+), i32 \d+, i32 \d+\)")
CPUS = {
    "cortex-a76": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"},
    "cortex-a55": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55"},
}


def compile_stage(model: onnx.ModelProto, *, cpu: str = "cortex-a76", out_dir: Path,
                  flash_bytes: int | None = None, ram_bytes: int | None = None,
                  name: str = "stage") -> StageArtifacts:
    """lib<name>.so exports eecc_run() and the I/O table; `harness` runs it on input.bin -> output.bin."""
    import tvm

    if cpu not in CPUS:
        raise EeccError(f"cortex_a: unknown cpu '{cpu}'; use one of {sorted(CPUS)}")
    gcc = require_tool("aarch64-linux-gnu-gcc")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    target = tvm.target.Target(CPUS[cpu])
    # A Cortex-A has RAM to spare: keep TVM's fused kernels as scheduled by the default pipeline.
    stage = tvm_import.lower_stage(model, target, reduce_workspace=False)
    plan, flat = tvm_import.plan_memory(stage), tvm_import.unplanned(stage)
    lib = tvm_import.build_kernels(stage.kernels, target)
    workspace = max(tvm_import.workspace_bytes(stage.kernels, target), allocated_bytes(lib))
    lib.write_to_file(str(out_dir / "kernels.o"))
    (out_dir / "stage.c").write_text(emit_driver(stage, plan, workspace))
    lib, harness = out_dir / f"lib{name}.so", out_dir / "harness"
    _run([gcc, "-O2", "-shared", "-fPIC", f"-I{CDRIVER}", str(out_dir / "stage.c"),
          str(CDRIVER / "runtime_common.c"), str(out_dir / "kernels.o"), "-Wl,-z,now", "-o", str(lib), "-lm"], "link")
    _run([gcc, "-O2", f"-I{CDRIVER}", str(CDRIVER / "host_main.c"), f"-L{out_dir}", f"-l{name}",
          "-Wl,-rpath,$ORIGIN", "-Wl,-z,now", "-o", str(harness)], "harness link")
    text, data, bss = _berkeley_size(lib)
    arts = StageArtifacts(
        out_dir=out_dir, cpu=cpu, files=[lib, harness, out_dir / "stage.c", out_dir / "kernels.o",
                                         out_dir / "stage.json"],
        flash_bytes=text + data, ram_bytes=data + bss, ram_unplanned_bytes=data + bss - plan.arena_bytes
        + flat.arena_bytes, arena_bytes=plan.arena_bytes, arena_unplanned_bytes=flat.arena_bytes,
        workspace_bytes=workspace, kernel_count=len(stage.calls), compile_s=round(time.perf_counter() - start, 3),
        inputs=io_specs(stage, stage.inputs),
        outputs=io_specs(stage, [stage.output_views[o] for o in stage.outputs], names=stage.outputs))
    # QEMU 7.2 models no Cortex-A55; the A76 runs the same ARMv8.2-A code
    write_manifest(arts, kind="linux-aarch64", run={"harness": harness.name, "cpu": "cortex-a76"})
    if ram_bytes is not None and arts.ram_bytes > ram_bytes:
        raise EeccError(f"cortex_a: stage '{name}' needs {arts.ram_bytes} B of memory but the {cpu} has {ram_bytes} B")
    if flash_bytes is not None and arts.flash_bytes > flash_bytes:
        raise EeccError(f"cortex_a: stage '{name}' needs {arts.flash_bytes} B of storage but the {cpu} has "
                        f"{flash_bytes} B")
    return arts


def allocated_bytes(lib) -> int:
    """The most workspace one kernel of the built module takes from the driver's allocator: its
    TVMBackendAllocWorkspace calls' constant sizes, each rounded up to the allocator's 64 bytes (cdriver/
    runtime_common.c). tvm_import.workspace_bytes rounds a kernel's total once, which falls short when the aarch64
    build allocates twice (a 3x3 depthwise on 8x9x9: pad_temp 3,872 B + intermediate 2,592 B = 6,464 B counted,
    3,904 + 2,624 = 6,528 B taken: "kernel workspace exhausted" under QEMU)."""
    sizes = (ALLOC.findall(func) for func in lib.inspect_source("ll").split("\ndefine "))
    return max((sum((int(n) + 63) // 64 * 64 for n in f) for f in sizes), default=0)


def _berkeley_size(path: Path) -> tuple[int, int, int]:
    out = _run([require_tool("aarch64-linux-gnu-size"), "-B", str(path)], "size")
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return text, data, bss


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EeccError(f"cortex_a: {what} failed ({Path(cmd[0]).name}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout
