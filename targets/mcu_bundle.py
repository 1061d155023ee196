"""A Cortex-M folder of a bundle that builds on its own: the eecc C driver files its sources include or link,
a Makefile that links the ELF exactly as eecc did (cortex_m.compile_stage / mcu_program.compile_program), a
`make lib` archive of the model alone for the user's firmware, and a README on building and calling it.

Not imported by cortex_m: the files a measured count depends on (eecc/cost/measure.py kernels_files) stay as
they are; tests/test_firmware_bundle.py rebuilds a bundle's ELF with this Makefile and compares the images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from eecc.targets.cortex_m import CDRIVER, CPUS, STACK_BYTES, StageArtifacts

HEADERS = ("eecc_driver.h",)
PROGRAM_HEADERS = ("eecc_driver.h", "eecc_program.h", "program_main.inc")  # program_main.inc: mcu_main.c's loop
HARNESS = ("mcu_main.c", "mcu.ld")  # start-up, semihosting test loop and memory map of the QEMU board
COMMON = ("-O2", "-ffunction-sections", "-fdata-sections")
MODE = ", each preceded by an int32 mode, -1 = the cascade"

PROGRAM_CALL = """```c
#include "eecc_program.h"

eecc_workspace_init();                                 /* once, at start-up: the kernels' scratch memory */
memcpy(eecc_stages[0].inputs[0].data, x, eecc_stages[0].inputs[0].nbytes);  /* the input sample */
int k = eecc_cascade_run();                            /* stage 0, its exit gate, stage 1, ...; < 0: error */
const eecc_stage* s = &eecc_stages[k];                 /* the stage whose exit was taken */
const float* scores = (const float*)s->outputs[s->logits].data;  /* its class scores */
```
`eecc_cascade_run()` returns the index of the stage the sample left at (the last stage when no exit was
taken); each stage's hand-off stays where the stage before wrote it, nothing is copied. `eecc_stage_done(k)`
is a weak no-op called after each stage: define it to time or log stages."""
STAGE_CALL = """```c
#include "eecc_driver.h"

eecc_workspace_init();                                 /* once, at start-up: the kernels' scratch memory */
memcpy(eecc_inputs[0].data, x, eecc_inputs[0].nbytes); /* the stage input */
if (eecc_run() != 0) { /* a kernel failed (it logged why through eecc_log) */ }
/* eecc_outputs[i].data: the outputs listed below, in that order */
```"""


def make_buildable(arts: StageArtifacts, *, program: bool, scale: float | None = None) -> list[Path]:
    """Copies the C driver files into arts.out_dir, writes Makefile and README.md there, labels the stack in
    stage.json; returns the files added. `program`: the folder holds a multi-stage program (program.c).
    `scale`: the folder holds stage 0 of a bundle compiled with --scale S (`scaled_header`, `scaling_section`)."""
    cpu = CPUS[arts.cpu]
    own = ["program.c"] if program else ["stage.c"]
    objects = sorted(p.name for p in arts.files if p.suffix == ".o")
    # link order as eecc's own command: a program links the driver files before the kernels, a stage after
    driver = ["program_run.c", "runtime_common.c"] if program else ["runtime_common.c"]
    support = list(cpu["support"])
    inputs = [*own, *driver, "mcu_main.c", *support, *objects] if program else \
        [*own, *driver, "mcu_main.c", *objects, *support]
    added, main_header = [], "eecc_program.h" if program else "eecc_driver.h"
    for name in [*(PROGRAM_HEADERS if program else HEADERS), *driver, *support, *HARNESS]:
        copy_driver_file(CDRIVER / name, arts.out_dir / name, scale if name == main_header else None)
        added.append(arts.out_dir / name)
    elf = arts.files[0].name
    (arts.out_dir / "Makefile").write_text(makefile(cpu["cflags"], program, inputs, elf,
                                                    lib=[*own, *driver, *support], objects=objects))
    (arts.out_dir / "README.md").write_text(readme(arts, program, elf, scale))
    label_stack(arts.manifest)
    return [*added, arts.out_dir / "Makefile", arts.out_dir / "README.md"]


def copy_driver_file(source: Path, target: Path, scale: float | None = None) -> None:
    """A C driver file copied into a bundle folder; the header a stage-0 folder's code includes, with `scale`,
    also defines EECC_INPUT_SCALE (`scaled_header`)."""
    if scale is None:
        shutil.copyfile(source, target)
    else:
        target.write_text(scaled_header(source.read_text(), scale))


def scaled_header(text: str, scale: float) -> str:
    """A header of stage 0 of a bundle compiled with --scale S (Cortex-M, or Cortex-A: targets/linux_bundle.py
    writes the same header and README layout), defining EECC_INPUT_SCALE before its closing #endif (nu13 F1: the
    raw 0..255 codes of a --scale 1/255 bundle gave 55.9 % instead of 83.5 % under QEMU, silently). The binaries
    are unchanged (a macro no source uses)."""
    cut = text.rindex("#endif")
    define = (f"/* Compiled with --scale: the model reads EECC_INPUT_SCALE * x of uint8 codes x (no offset): write\n"
              f" * (float)x * EECC_INPUT_SCALE into the input buffer, not the raw codes. */\n"
              f"#define EECC_INPUT_SCALE {float(scale)!r}f\n")
    return text[:cut] + define + text[cut:]


def scaling_section(scale: float | None, header: str) -> str:
    """The README's section, before its "Inputs:" list, telling a stage-0 folder of a --scale S bundle to write
    S * code, not the raw code, into the input; empty without a scale. `header`: where EECC_INPUT_SCALE is."""
    if scale is None:
        return ""
    return f"""## Input scaling

This bundle was compiled with `--scale {float(scale)!r}`: the model reads `{float(scale)!r} * x` of uint8 codes `x`
(no offset). Write `(float)x * EECC_INPUT_SCALE` (defined in `{header}`) into the input buffer, and into
`input.bin` for the QEMU run, not the raw codes: the model was never shown those and predicts other classes.

"""


def label_stack(stage_json: Path) -> None:
    """stage.json's ram_bytes counts the stack the linker script reserves; name it and the rest."""
    data = json.loads(stage_json.read_text())
    data["stack_bytes"] = STACK_BYTES
    data["ram_static_bytes"] = data["ram_bytes"] - STACK_BYTES
    data["ram_note"] = (f"ram_bytes = .data + .bss ({data['ram_static_bytes']} B: arena, workspace, I/O buffers) "
                        f"+ the {STACK_BYTES} B stack mcu.ld reserves (make STACK_SIZE=...)")
    stage_json.write_text(json.dumps(data, indent=2))


def makefile(cflags: list[str], program: bool, inputs: list[str], elf: str, *, lib: list[str],
             objects: list[str]) -> str:
    defs = " -DEECC_PROGRAM" if program else ""
    lib_objs = " ".join(f"lib/{Path(c).stem}.o" for c in lib)
    return f"""# generated by eecc: builds this folder with no eecc checkout (arm-none-eabi-gcc + newlib-nano)
#   make       {elf}: the program exactly as eecc linked and emulated it (QEMU mps2 start-up and test loop)
#   make lib   libeecc.a: the model alone (no start-up, no main) to link into your own firmware
#   make clean removes what make lib built; the shipped {elf} stays
CC = arm-none-eabi-gcc
AR = arm-none-eabi-ar
CPU_FLAGS = {' '.join(cflags)}
CFLAGS = $(CPU_FLAGS) {' '.join(COMMON)}{defs}
STACK_SIZE = {STACK_BYTES}
INPUTS = {' '.join(inputs)}

all: {elf}

{elf}: $(INPUTS) $(wildcard *.h *.inc) mcu.ld
\t$(CC) $(CPU_FLAGS) {' '.join(COMMON)} -nostartfiles{defs} -I. -T mcu.ld -Wl,--defsym=STACK_SIZE=$(STACK_SIZE) \\
\t  -Wl,--gc-sections --specs=nano.specs --specs=nosys.specs $(INPUTS) -o $@ -lm -lgcc

lib: libeecc.a

libeecc.a: {lib_objs} {' '.join(objects)}
\trm -f $@
\t$(AR) rcs $@ $^

lib/%.o: %.c $(wildcard *.h)
\tmkdir -p lib
\t$(CC) $(CFLAGS) -I. -c $< -o $@

# {elf} is shipped (the program eecc emulated): clean keeps it; make relinks it when a source is newer
clean:
\trm -rf libeecc.a lib

.PHONY: all lib clean
"""


def _io(specs: list[dict]) -> str:
    return "\n".join(f"  - `{s['name']}`: {s['dtype']} {list(s['shape'])}" for s in specs)


def readme(arts: StageArtifacts, program: bool, elf: str, scale: float | None = None) -> str:
    board = CPUS[arts.cpu]["board"]
    static = arts.ram_bytes - STACK_BYTES
    call = PROGRAM_CALL if program else STAGE_CALL
    return f"""# eecc Cortex-M {'program' if program else 'stage'} for {arts.cpu}

Generated by eecc. This folder builds on its own: the generated C (`{'program.c' if program else 'stage.c'}`),
the TVM kernels (`*.o`), and the eecc C driver files they include or link are all here.

## Build

Needs `arm-none-eabi-gcc` with newlib (Debian: `gcc-arm-none-eabi libnewlib-arm-none-eabi`).

    make         # {elf}: byte for byte the program eecc built and ran under QEMU
    make lib     # libeecc.a: the model alone, to link into your firmware

Compiler flags (the Makefile's `CFLAGS`): `{' '.join([*CPUS[arts.cpu]['cflags'], *COMMON])}`.
`{elf}` uses `mcu_main.c` (start-up, semihosting test loop) and `mcu.ld`, the memory map of QEMU's
`{board}` board: run it with

    qemu-system-arm -M {board} -nographic -monitor none -serial none \\
      -semihosting-config enable=on,target=native -icount shift=5 -kernel {elf}

in a folder holding `input.bin` (raw input samples{MODE if program else ''});
it writes `output.bin` (see the comment at the top of `{'program_main.inc' if program else 'mcu_main.c'}`).

## Call it from your firmware

Link `libeecc.a` (`make lib`: the generated C, the driver files and the kernels) with `-lm -lgcc`, and provide
`void eecc_log(const char* msg)` (error messages; may do nothing). Your linker script must place `.got`
inside `.data` (copied to RAM at start-up, as `mcu.ld` does): TVM's kernel code is position independent.
The kernels reference `__aeabi_unwind_cpp_pr0`; define it as an empty weak function if your libraries do not
(`mcu_main.c` does).

{call}

{scaling_section(scale, 'eecc_program.h' if program else 'eecc_driver.h')}Inputs:
{_io(arts.inputs)}

Outputs{' of the last stage' if program else ''}:
{_io(arts.outputs)}

## Memory (as linked by `make`)

- flash: {arts.flash_bytes} B (code, `const` weights, the `.data` image)
- RAM: {arts.ram_bytes} B = {static} B static (`.data` + `.bss`: activation arena {arts.arena_bytes} B,
  kernel workspace {arts.workspace_bytes} B, input buffers) + {STACK_BYTES} B stack reserved by `mcu.ld`
  (`make STACK_SIZE=...`; with `eecc compile --emulate`, manifest.json's `emulation.stack_bytes` is the stack
  a stage used under QEMU)
"""
