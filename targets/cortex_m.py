"""Cortex-M backend: TVM kernels + an eecc C driver (static, planned buffers; weights in flash), linked bare-metal."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from eecc.errors import EeccError
from eecc.targets import mcu_direct, tvm_import
from eecc.targets.mcu_driver import DLPACK, HEADER, io_list, stage_tables  # noqa: F401 (DLPACK: public)

CDRIVER = Path(__file__).parent / "cdriver"

# Boards are the QEMU machines that run the code: no M0+ board exists, the M3 of an385 runs v6-M code.
CPUS = {
    "cortex-m4": dict(
        target={"kind": "llvm", "mtriple": "thumbv7em-none-eabi", "mcpu": "cortex-m4", "mfloat-abi": "hard",
                "vector-width": 32},  # no 128-bit SIMD on Cortex-M; also silences LLVM's warning
        cflags=["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
        board="mps2-an386", support=["dot_dsp.c", "ops_fpu.c"],  # cdriver files every stage links
    ),
    "cortex-m0plus": dict(
        target={"kind": "llvm", "mtriple": "thumbv6m-none-eabi", "mcpu": "cortex-m0plus", "mfloat-abi": "soft",
                "vector-width": 32},
        cflags=["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"],
        board="mps2-an385", support=["softfloat_v6m.c", "dot_v6m.c", "rq_tie.c"],  # cdriver files every stage links
    ),
}
ALIASES = {"cortex-m4f": "cortex-m4", "m4": "cortex-m4", "cortex-m0+": "cortex-m0plus", "m0+": "cortex-m0plus"}
STACK_BYTES = 8192


@dataclass
class StageArtifacts:
    out_dir: Path
    cpu: str
    files: list[Path]  # everything written, the ELF / shared library first
    flash_bytes: int  # code + const weights + .data image
    ram_bytes: int  # .data + .bss (arena, workspace, I/O buffers) + stack, with memory planning
    ram_unplanned_bytes: int  # the same with one static buffer per tensor (no reuse)
    arena_bytes: int
    arena_unplanned_bytes: int
    workspace_bytes: int
    kernel_count: int
    compile_s: float
    inputs: list[dict] = field(default_factory=list)  # {"name", "shape", "dtype"}
    outputs: list[dict] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out_dir / "stage.json"


def canonical_cpu(cpu: str) -> str:
    cpu = ALIASES.get(cpu.lower(), cpu.lower())
    if cpu not in CPUS:
        raise EeccError(f"cortex_m: unknown cpu '{cpu}'; use one of {sorted(CPUS)}")
    return cpu


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EeccError(f"cortex_m: '{name}' is not installed; install the Debian package that provides it "
                        "(gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm, gcc-aarch64-linux-gnu)")
    return path


def compile_stage(model: onnx.ModelProto, *, cpu: str, out_dir: Path, flash_bytes: int | None = None,
                  ram_bytes: int | None = None, name: str = "stage") -> StageArtifacts:
    """Compile one stage for a Cortex-M; raises EeccError when it does not fit flash_bytes / ram_bytes."""
    import tvm

    cpu = canonical_cpu(cpu)
    spec = CPUS[cpu]
    gcc = require_tool("arm-none-eabi-gcc")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    target = tvm.target.Target(spec["target"])
    stage = tvm_import.lower_stage(model, target)
    plan, flat = tvm_import.plan_memory(stage), tvm_import.unplanned(stage)
    workspace = tvm_import.workspace_bytes(stage.kernels, target)
    direct = mcu_direct.direct_calls(stage.kernels)
    mcu_direct.write_kernels(mcu_direct.without(stage.kernels, direct), target, out_dir / "kernels.o", gcc,
                             spec["cflags"])
    (out_dir / "stage.c").write_text(emit_driver(stage, plan, workspace, pointers=True, direct=direct))
    elf = out_dir / f"{name}.elf"
    cmd = [gcc, *spec["cflags"], "-O2", "-ffunction-sections", "-fdata-sections", "-nostartfiles",
           f"-I{CDRIVER}", "-T", str(CDRIVER / "mcu.ld"), f"-Wl,--defsym=STACK_SIZE={STACK_BYTES}",
           "-Wl,--gc-sections", "--specs=nano.specs", "--specs=nosys.specs",
           str(out_dir / "stage.c"), str(CDRIVER / "runtime_common.c"), str(CDRIVER / "mcu_main.c"),
           str(out_dir / "kernels.o"), *(str(CDRIVER / f) for f in spec["support"])]
    cmd += ["-o", str(elf), "-lm", "-lgcc"]
    _run(cmd, "link")
    flash, ram = section_sizes(elf)
    arts = StageArtifacts(
        out_dir=out_dir, cpu=cpu, files=[elf, out_dir / "stage.c", out_dir / "kernels.o", out_dir / "stage.json"],
        flash_bytes=flash, ram_bytes=ram, ram_unplanned_bytes=ram - plan.arena_bytes + flat.arena_bytes,
        arena_bytes=plan.arena_bytes, arena_unplanned_bytes=flat.arena_bytes, workspace_bytes=workspace,
        kernel_count=len(stage.calls), compile_s=round(time.perf_counter() - start, 3),
        inputs=io_specs(stage, stage.inputs), outputs=io_specs(stage, [stage.output_views[o] for o in stage.outputs],
                                                                names=stage.outputs))
    write_manifest(arts, kind="mcu", run={"board": spec["board"], "elf": elf.name})
    check_fit(arts, name, flash_bytes, ram_bytes)
    return arts


def check_fit(arts: StageArtifacts, name: str, flash_bytes: int | None, ram_bytes: int | None) -> None:
    if flash_bytes is not None and arts.flash_bytes > flash_bytes:
        raise EeccError(f"cortex_m: stage '{name}' needs {arts.flash_bytes} B of flash but the {arts.cpu} has "
                        f"{flash_bytes} B; move an exit earlier or assign fewer layers to this processor")
    if ram_bytes is not None and arts.ram_bytes > ram_bytes:
        raise EeccError(f"cortex_m: stage '{name}' needs {arts.ram_bytes} B of RAM (arena {arts.arena_bytes} B) "
                        f"but the {arts.cpu} has {ram_bytes} B; assign fewer or smaller layers to this processor")


def io_specs(stage, views: list[str], names: list[str] | None = None) -> list[dict]:
    names = names or views
    return [{"name": n, "shape": list(stage.views[v].shape), "dtype": stage.views[v].dtype}
            for n, v in zip(names, views)]


def write_manifest(arts: StageArtifacts, *, kind: str, run: dict) -> None:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(arts).items()}
    data["files"] = [p.name for p in arts.files]
    data["out_dir"] = "."
    data.update(kind=kind, run=run)
    arts.manifest.write_text(json.dumps(data, indent=2))


def section_sizes(elf: Path, size_tool: str = "arm-none-eabi-size") -> tuple[int, int]:
    """(flash, ram) from `size -A`: flash holds every loaded section (including the .data image)."""
    out = _run([require_tool(size_tool), "-A", str(elf)], "size")
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    flash = sum(v for k, v in sizes.items() if k in (".text", ".ARM.extab", ".ARM.exidx", ".data"))
    ram = sum(v for k, v in sizes.items() if k in (".data", ".bss", ".stack"))
    return flash, ram


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EeccError(f"cortex_m: {what} failed ({Path(cmd[0]).name}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def emit_driver(stage: tvm_import.LoweredStage, plan: tvm_import.MemoryPlan, workspace: int,
                pointers: bool = False, direct: dict | None = None) -> str:
    """stage.c: buffers, one view per tensor (a DLTensor, or with `pointers` its data pointer alone: see
    mcu_driver.stage_tables), the kernels in call order. Weights are `const`, so they stay in flash;
    activations live in one arena laid out by the memory plan. direct: kernels called straight from stage.c
    (mcu_direct.direct_calls; Cortex-M only)."""
    out = [*HEADER, ""]
    out.append(f"static uint8_t arena[{max(plan.arena_bytes, 64)}] __attribute__((aligned(64)));")
    out.append(f"uint8_t eecc_workspace[{max(workspace, 64)}] __attribute__((aligned(64)));")
    out.append(f"const uint32_t eecc_workspace_bytes = {max(workspace, 64)};")
    tables = stage_tables(stage, plan, pointers=pointers, direct=direct)
    out += tables.lines
    out.append(f"""
int eecc_run(void) {{
  TVMFFIAny args[{tables.max_args}], ret;
  unsigned k = 0;
  for (unsigned c = 0; c < {len(stage.calls)}; ++c) {{
    for (unsigned a = 0; a < nargs[c]; ++a) {{
      args[a].type_index = EECC_FFI_DLTENSOR_PTR; args[a].zero_padding = 0;
      args[a].u.v_int64 = 0; args[a].u.v_ptr = (void*)&views[argv_[k++]];
    }}
    ret.type_index = 0; ret.zero_padding = 0; ret.u.v_int64 = 0;
    if (calls[c](0, args, nargs[c], &ret) != 0) return (int)c + 1;
  }}
  return 0;
}}""")
    outputs = list(stage.output_views.items())
    out.append(f"const eecc_io eecc_inputs[] = {{{io_list(stage, stage.inputs, stage.inputs, tables.ptr)}}};")
    out.append(f"const eecc_io eecc_outputs[] = "
               f"{{{io_list(stage, [n for n, _ in outputs], [v for _, v in outputs], tables.ptr)}}};")
    out.append(f"const int eecc_num_inputs = {len(stage.inputs)}, eecc_num_outputs = {len(outputs)};")
    return "\n".join(out) + "\n"
