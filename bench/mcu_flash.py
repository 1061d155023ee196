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


def sweep(names, out: Path) -> dict:
    """Every candidate cut of each fixture as a two-stage cascade (eecc/cost/measure.units_of's units 1000 + 10 c + k:
    stage k of the model cut at candidate c, with the design's exit head and gate), on the M4: stage-alone flash of
    the int8 and the fp32 build (stage_flash) and instructions per MAC from the shipped rows (eecc/cost/measured.json,
    the same units quantised the same way). Writes `out` (JSON) and returns it; "worst" is the largest int8/fp32."""
    import json

    import numpy as np

    from eecc.cost.__main__ import fixture_models
    from eecc.cost.measure import units_of
    from eecc.cost.model import MEASURED
    from eecc.model import ir
    from eecc.model.stage_cost import stage_cost
    from eecc.targets.quantize import quantize_stages

    shipped = json.loads(MEASURED.read_text())
    counts = {(r["model"], r["index"], r["cpu"], r["format"]): r["instructions"] for r in shipped["rows"]}
    rows = []
    for name in names:
        units = units_of(name, fixture_models()[name])
        floats = [u.float_model for u in units]
        shape = [d.dim_value for d in floats[0].graph.input[0].type.tensor_type.shape.dim][1:]
        x = np.random.default_rng(0).normal(size=(64, *shape)).astype(np.float32)  # as measure_units quantises
        quantised = quantize_stages(floats, x)
        for u, q in zip(units, quantised):
            if u.index < 1000:
                continue
            macs = stage_cost(ir.from_model(u.float_model, classifier=False), "fp32").macs
            row = {"model": name, "unit": u.index, "cut": (u.index - 1000) // 10, "stage": u.index % 10, "macs": macs}
            with tempfile.TemporaryDirectory(prefix="eecc-sweep-") as tmp:
                for fmt, m in (("int8", q), ("fp32", u.float_model)):
                    cortex_m.compile_stage(m, cpu="cortex-m4", out_dir=Path(tmp, fmt))
                    row[f"flash_{fmt}_B"] = stage_flash(Path(tmp, fmt), "cortex-m4")["stage_B"]
            row["flash_ratio"] = round(row["flash_int8_B"] / row["flash_fp32_B"], 4)
            for cpu, fmt in (("cortex-m4", "int8"), ("cortex-m0plus", "int8"), ("cortex-m4", "fp32")):
                n = counts.get((name, u.index, cpu, fmt))
                row[f"i_per_mac_{cpu.replace('cortex-', '')}_{fmt}"] = round(n / macs, 3) if n else None
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = {"kernels": shipped["kernels"], "rows": rows, "worst": max(rows, key=lambda r: r["flash_ratio"])}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="stage-alone flash of every cut's stages (--sweep)")
    ap.add_argument("--sweep", default="kws,resnet", help="fixtures whose every cut is swept")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mcu_flash_sweep.json")
    args = ap.parse_args()
    doc = sweep(args.sweep.split(","), args.out)
    print("worst flash int8/fp32:", doc["worst"])
