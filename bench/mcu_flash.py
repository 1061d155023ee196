"""Flash of a compiled Cortex-M stage on its own, beside the whole ELF that bench/mcu.py runs under QEMU.

The whole ELF also holds the QEMU harness (cdriver/mcu_main.c: semihosting file I/O, SysTick timing,
stack painting, logging) and the newlib code it pulls in. A firmware that embeds the stage needs only the
stage: its kernels (kernels.o), weights and driver tables (stage.c), the workspace allocator
(runtime_common.c) and the libgcc routines those call. Measured by linking exactly those objects into a
bare stub (vector table, .data/.bss start-up, main = one eecc_run) with the same gcc flags and
subtracting the same stub linked alone (`size -A`: .text, .ARM.exidx/extab, .data image), then split by
symbol (`nm -S`): kernels = the symbols kernels.o defines, weights = stage.c's w_* arrays, the rest =
driver tables, eecc_run, allocator, libgcc and unnamed literal pools.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from eecc.targets import cortex_m

STUB = r"""
#include "eecc_driver.h"
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
void eecc_log(const char* msg) { (void)msg; }
volatile const void* eecc_keep[2];
int main(void) {
#ifdef WITH_STAGE
  eecc_keep[0] = eecc_inputs; eecc_keep[1] = eecc_outputs;  /* the firmware fills / reads these */
  eecc_workspace_init();
  return eecc_run();
#else
  return 0;
#endif
}
void Reset_Handler(void) {
  uint32_t *src = &__data_load, *dst = &__data_start;
  while (dst < &__data_end) *dst++ = *src++;
  for (dst = &__bss_start; dst < &__bss_end; ++dst) *dst = 0;
#if defined(__ARM_FP)
  (*(volatile uint32_t*)0xE000ED88) |= 0xFu << 20;
#endif
  main();
  for (;;) {}
}
static void Default_Handler(void) { for (;;) {} }
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
  (void (*)(void))&__stack_top, Reset_Handler, Default_Handler, Default_Handler,
};
__attribute__((weak)) void __aeabi_unwind_cpp_pr0(void) {}
"""


def _link(cpu: str, sources: list[Path], out: Path, defines: list[str]) -> Path:
    spec = cortex_m.CPUS[cpu]
    cdriver = cortex_m.CDRIVER
    cmd = ["arm-none-eabi-gcc", *spec["cflags"], "-O2", "-ffunction-sections", "-fdata-sections", "-nostartfiles",
           f"-I{cdriver}", "-T", str(cdriver / "mcu.ld"), "-Wl,--gc-sections", "--specs=nano.specs",
           "--specs=nosys.specs", *defines, *map(str, sources), "-o", str(out), "-lm", "-lgcc"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mcu_flash: link failed: {proc.stderr[-1500:]}")
    return out


def _symbols(path: Path, defined_only: bool = False) -> dict[str, int]:
    """name -> size (bytes) of the sized symbols `nm -S` lists."""
    out = subprocess.run(["arm-none-eabi-nm", "-S", *(["--defined-only"] if defined_only else []), str(path)],
                         capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def stage_flash(stage_dir: Path, cpu: str) -> dict:
    """{"stage_B", "kernels_B", "weights_B", "driver_B"}: flash of the stage without the QEMU harness
    (see the module docstring). stage_dir: a cortex_m.compile_stage output directory."""
    stage_dir = Path(stage_dir)
    objs = [stage_dir / "stage.c", cortex_m.CDRIVER / "runtime_common.c", stage_dir / "kernels.o",
            *(cortex_m.CDRIVER / f for f in cortex_m.CPUS[cortex_m.canonical_cpu(cpu)]["support"])]
    with tempfile.TemporaryDirectory(prefix="eecc-flash-") as tmp:
        stub = Path(tmp, "stub.c")
        stub.write_text(STUB)
        full = _link(cpu, [stub, *objs], Path(tmp, "with.elf"), ["-DWITH_STAGE"])
        bare = _link(cpu, [stub], Path(tmp, "bare.elf"), [])
        total = cortex_m.section_sizes(full)[0] - cortex_m.section_sizes(bare)[0]
        syms = _symbols(full)
        kernel_names = set(_symbols(stage_dir / "kernels.o", defined_only=True))
    kernels = sum(size for name, size in syms.items() if name in kernel_names)
    weights = sum(size for name, size in syms.items() if name.startswith("w_") and name[2:].isdigit())
    return {"stage_B": total, "kernels_B": kernels, "weights_B": weights, "driver_B": total - kernels - weights}
