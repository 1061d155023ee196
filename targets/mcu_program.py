"""The consecutive stages of one Cortex-M core as one firmware program: each stage lowered and planned as
`cortex_m.compile_stage` does, its kernels' symbols prefixed `s<k>_`, one generated program.c
(mcu_driver.emit_program) running them back to back with the exit gate between them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import onnx

from eecc.errors import EeccError
from eecc.targets import mcu_direct, tvm_import
from eecc.targets.cortex_m import (CDRIVER, CPUS, STACK_BYTES, StageArtifacts, _run, canonical_cpu, check_fit,
                                   io_specs, require_tool, section_sizes, write_manifest)
from eecc.targets.mcu_driver import emit_program


@dataclass
class ProgramStage:
    index: int  # the stage's index in the bundle
    arena_bytes: int
    arena_unplanned_bytes: int
    workspace_bytes: int
    kernel_count: int
    inputs: list[dict]
    outputs: list[dict]
    logits: str
    exit: str | None  # the exit flag output; None for the last stage


def rename_kernels(obj: Path, prefix: str) -> None:
    """`__tvm_ffi_<kernel>` -> `__tvm_ffi_<prefix><kernel>` for the kernels an object defines: every stage is
    built on its own and two stages may hold kernels of the same name."""
    out = _run([require_tool("arm-none-eabi-nm"), "--defined-only", "-g", str(obj)], "nm")
    names = [ln.split()[-1] for ln in out.splitlines() if ln.split()[-1:] and ln.split()[-1].startswith("__tvm_ffi_")]
    pairs = obj.with_suffix(".syms")
    pairs.write_text("".join(f"{n} __tvm_ffi_{prefix}{n[len('__tvm_ffi_'):]}\n" for n in names))
    _run([require_tool("arm-none-eabi-objcopy"), f"--redefine-syms={pairs}", str(obj)], "objcopy")
    pairs.unlink()


def compile_program(models: Sequence[onnx.ModelProto], entries: Sequence[dict], *, cpu: str, out_dir: Path,
                    flash_bytes: int | None = None, ram_bytes: int | None = None,
                    name: str = "program") -> tuple[StageArtifacts, list[ProgramStage]]:
    """One ELF for stages `entries` (manifest stage dicts, in order) of one core. The artifacts' flash and
    RAM are the whole program's; raises EeccError when it does not fit flash_bytes / ram_bytes."""
    import tvm

    cpu, start = canonical_cpu(cpu), time.perf_counter()
    spec, gcc, out_dir = CPUS[cpu], require_tool("arm-none-eabi-gcc"), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = tvm.target.Target(spec["target"])
    lowered, plans, stages, objects, direct, workspace = [], [], [], [], [], 0
    for model, entry in zip(models, entries):
        k = entry["index"]
        stage = tvm_import.lower_stage(model, target)
        plan, flat = tvm_import.plan_memory(stage), tvm_import.unplanned(stage)
        ws = tvm_import.workspace_bytes(stage.kernels, target)
        obj = out_dir / f"kernels{k}.o"
        direct.append(mcu_direct.direct_calls(stage.kernels))
        mcu_direct.write_kernels(mcu_direct.without(stage.kernels, direct[-1]), target, obj, gcc, spec["cflags"])
        rename_kernels(obj, f"s{len(lowered)}_")
        outs = entry.get("outputs") or {}
        last = len(lowered) == len(entries) - 1
        if not last and not outs.get("exit"):
            raise EeccError(f"cortex_m: stage {k} has no exit flag output; only exit stages can run back to back")
        stages.append(ProgramStage(k, plan.arena_bytes, flat.arena_bytes, ws, len(stage.calls),
                                   io_specs(stage, stage.inputs),
                                   io_specs(stage, [stage.output_views[o] for o in stage.outputs], names=stage.outputs),
                                   outs.get("logits") or stage.outputs[0], None if last else outs["exit"]))
        lowered.append(stage)
        plans.append(plan)
        objects.append(obj)
        workspace = max(workspace, ws)
    (out_dir / "program.c").write_text(emit_program(lowered, plans, [s.exit for s in stages],
                                                    [s.logits for s in stages], workspace, direct))
    elf = out_dir / f"{name}.elf"
    cmd = [gcc, *spec["cflags"], "-O2", "-ffunction-sections", "-fdata-sections", "-nostartfiles", "-DEECC_PROGRAM",
           f"-I{CDRIVER}", "-T", str(CDRIVER / "mcu.ld"), f"-Wl,--defsym=STACK_SIZE={STACK_BYTES}",
           "-Wl,--gc-sections", "--specs=nano.specs", "--specs=nosys.specs", str(out_dir / "program.c"),
           *(str(CDRIVER / f) for f in ("program_run.c", "runtime_common.c", "mcu_main.c", *spec["support"])),
           *map(str, objects)]
    _run([*cmd, "-o", str(elf), "-lm", "-lgcc"], "link")
    flash, ram = section_sizes(elf)
    arenas = [max([s.arena_bytes for s in stages[p::2]], default=0) for p in (0, 1)]
    flat = [max([s.arena_unplanned_bytes for s in stages[p::2]], default=0) for p in (0, 1)]
    arts = StageArtifacts(
        out_dir=out_dir, cpu=cpu, files=[elf, out_dir / "program.c", *objects, out_dir / "stage.json"],
        flash_bytes=flash, ram_bytes=ram, ram_unplanned_bytes=ram - sum(arenas) + sum(flat),
        arena_bytes=sum(arenas), arena_unplanned_bytes=sum(flat), workspace_bytes=workspace,
        kernel_count=sum(s.kernel_count for s in stages), compile_s=round(time.perf_counter() - start, 3),
        inputs=stages[0].inputs, outputs=stages[-1].outputs)
    write_manifest(arts, kind="mcu-program", run={"board": spec["board"], "elf": elf.name,
                                                  "stages": [vars(s) for s in stages]})
    check_fit(arts, name, flash_bytes, ram_bytes)
    return arts, stages
