"""Mali backend: OpenCL kernels from TVM (dlight schedules with per-kernel fallback, aarch64 host), each
checked by an OpenCL compiler, plus a launch plan that runs them on any OpenCL device (runtime/gpu_run.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from eecc.errors import EeccError
from eecc.targets import gpu_plan, gpu_schedule, tvm_import
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
    extra: dict = field(default_factory=dict)  # merged into the manifest's codegen entry


def device_source(model: onnx.ModelProto, target: dict, kind: str) -> tuple[str, object]:
    """(device source, VM executable): TVM's default GPU Relax pipeline with per-kernel schedule fallback."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    tgt = tvm.target.Target(target)
    mod, _ = gpu_schedule.legalize(tvm_import.relax_module(model), tgt)
    rest = tvm.transform.Sequential(gpu.dataflow_lower_passes(tgt) + gpu.finalize_passes(tgt))
    with tgt:
        ex = tvm.compile(mod, target=tgt, relax_pipeline=rest)
    return _find_source(ex.mod, kind), ex


def _find_source(module, kind: str) -> str:
    stack = [module]
    while stack:
        mod = stack.pop()
        if mod.kind == kind:
            return mod.inspect_source()
        stack.extend(mod.imports)
    raise EeccError(f"{kind}: TVM produced no {kind} module for this stage")


def lower_gpu_stage(model: onnx.ModelProto, target: dict, kind: str, *, rules=gpu_schedule.RULES):
    """(device source, launch plan, per-kernel schedule report, runtime module) of one stage.

    The plan (gpu_plan.launch_plan) is read from the same scheduled kernels the source is built from.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    tgt = tvm.target.Target(target)
    named = tvm_import.with_identifier_inputs(model)
    mod, report = gpu_schedule.legalize(tvm_import.relax_module(named), tgt, rules=rules)
    with tgt:
        mod = tvm.transform.Sequential(gpu.dataflow_lower_passes(tgt))(mod)
    mod = relax.transform.AttachGlobalSymbol()(mod)
    stage = tvm_import._read_main(mod, named)
    used = {name for name, _ in stage.calls}
    kernels = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint in used})
    plan = gpu_plan.launch_plan(gpu_plan.lower_split(kernels, tgt), stage)
    runtime = tvm.tirx.build(kernels, target=tgt)
    src = _find_source(runtime, kind)
    defined = set(re.findall(r"(?:__kernel|__global__)\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(", src))
    missing = sorted({launch["kernel"] for launch in plan["launches"]} - defined)
    if missing:
        raise EeccError(f"{kind}: the launch plan calls kernels {missing} that the {kind} source lacks; report it")
    originals = {new: old for old, new in zip(_inputs(model), _inputs(named))}
    plan.update(
        inputs=[{"name": originals[b], "buffer": b, **_spec(stage.views[b])} for b in stage.inputs],
        outputs=[{"name": o, "buffer": stage.storage[v], **_spec(stage.views[v])} for o, v in stage.output_views.items()],
        constants={c: _spec(stage.views[c]) for c in stage.constants})
    return src, plan, [r.to_json() for r in report], runtime, stage.constants


def compile_stage(model: onnx.ModelProto, *, out_dir: Path, name: str = "stage",
                  rules=gpu_schedule.RULES) -> GpuArtifacts:
    """<name>.cl, <name>.plan.json + <name>.weights.npz (what gpu_run needs), <name>_host.so (aarch64)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src, plan, report, runtime, constants = lower_gpu_stage(model, TARGET, "opencl", rules=rules)
    cl = out_dir / f"{name}.cl"
    cl.write_text(src)
    write_plan(out_dir, name, plan, constants, source=cl.name, api="opencl")
    files = [cl, out_dir / f"{name}.plan.json", out_dir / f"{name}.weights.npz"]
    if shutil.which("aarch64-linux-gnu-gcc"):
        host = out_dir / f"{name}_host.so"
        runtime.export_library(str(host), cc="aarch64-linux-gnu-gcc")
        files.append(host)
    kernels = len(set(re.findall(r"__kernel\s+void\s+(\w+)\s*\(", src)))
    checked, note = check_opencl(cl, out_dir)
    fallbacks = [r["kernel"] for r in report if r["fallback"]]
    return GpuArtifacts(out_dir, files, kernels, round(time.perf_counter() - start, 3), checked, note,
                        extra={"schedules": report, "schedule_fallbacks": len(fallbacks),
                               "launches": len(plan["launches"])})


def write_plan(out_dir: Path, name: str, plan: dict, constants: dict, *, source: str, api: str) -> Path:
    path = out_dir / f"{name}.plan.json"
    path.write_text(json.dumps({"api": api, "source": source, "weights": f"{name}.weights.npz", **plan}, indent=1))
    np.savez(out_dir / f"{name}.weights.npz", **{k: np.ascontiguousarray(v) for k, v in constants.items()})
    return path


def _inputs(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _spec(spec) -> dict:
    return {"shape": list(spec.shape), "dtype": spec.dtype}


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


CORRECTNESS_ONLY = ("correctness only: the OpenCL kernels ran on this machine's OpenCL device (PoCL on the host "
                    "CPU), which says nothing about Mali speed; latency stays the platform's MAC/s estimate")


def run_on_opencl(stage_dir: Path, name: str, inputs: dict, want: dict, entry: dict, *, where: str) -> dict:
    """Run <name>.plan.json with runtime.gpu_run and compare with onnxruntime's outputs `want`
    (codegen.compare_outputs: <= TOLERANCE, else EeccError). Skipped, with the reason, without OpenCL."""
    from eecc.runtime.gpu_run import GpuRunError, opencl_device, run_plan
    from eecc.targets.codegen import compare_outputs

    try:
        opencl_device()
    except GpuRunError as exc:
        return {"skipped": f"OpenCL kernels not run: {exc}"}
    start = time.perf_counter()
    try:
        got, device = run_plan(Path(stage_dir) / f"{name}.plan.json", inputs)
    except GpuRunError as exc:
        raise EeccError(f"codegen: {where} did not run on OpenCL ({exc}); report it with the stage ONNX file") from None
    errors, flips = compare_outputs(got, want, entry, where=where)
    return {"emulator": "opencl", "device": device, "samples": len(next(iter(got.values()))),
            "instructions": None, "max_abs_error": max(errors.values(), default=0.0),
            "max_abs_error_by_output": errors, "exit_flags_at_threshold": flips, "purpose": CORRECTNESS_ONLY,
            "emulate_s": round(time.perf_counter() - start, 3)}
