"""A bundle as a firmware engineer receives it (new-user findings of the last session): its Cortex-M folder builds
alone, the block graph of an int8 bundle with two exits on one core shows both, and the manifest's int8 stages
are sized as int8 with the stack named.

One bundle for the module: the digits CNN, int8, two exits back to back on a one-core M4 platform (default
placement: the most exits), compiled with TVM (not emulated: the tests run what they need under QEMU).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.driver.compile import CompileOptions, compile_model
from eecc.examples import datasets
from eecc.model import ir
from eecc.model.stage_cost import stage_cost
from eecc.report.graph_picture import bundle_dot, collect
from eecc.runtime.cascade import Cascade
from eecc.runtime.emulate_program import emulate_cascade

MODELS = Path(__file__).parent / "fixtures" / "models"
needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None
                               or shutil.which("make") is None,
                               reason="needs gcc-arm-none-eabi, qemu-system-arm and make")
# Without eecc: PATH alone (the ARM toolchain), no PYTHONPATH, no checkout path anywhere in the environment.
BARE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, one_m4_toml):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("needs gcc-arm-none-eabi")
    root = tmp_path_factory.mktemp("firmware")
    data = datasets.load(json.loads((MODELS / "cnn.json").read_text())["dataset"])
    options = CompileOptions(target=str(one_m4_toml), out=root / "b", cache_dir=str(root / "c"), progress=False,
                             exits_per_processor=2, quantize="int8")
    manifest = compile_model(MODELS / "cnn.onnx", data, options)
    assert [s["target"] for s in manifest["stages"]] == ["m4"] * 3
    return root / "b", manifest, data


def _make(folder: Path, *target: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", *target], cwd=folder, env=BARE_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@needs_arm
def test_the_core_folder_builds_alone_into_the_program_eecc_built(bundle, tmp_path):
    out, manifest, data = bundle
    (program,) = manifest["codegen"]["programs"]
    copy = tmp_path / "firmware"  # an empty folder far from the checkout
    shutil.copytree(out / program["folder"], copy)
    built = (copy / program["elf"]).read_bytes()
    (copy / program["elf"]).unlink()
    _make(copy)
    assert (copy / program["elf"]).read_bytes() == built  # byte for byte: the same sources, flags and link order
    # and it runs as deployed: under QEMU it routes and predicts as the onnxruntime cascade of the bundle
    idx = np.linspace(0, len(data["x_test"]) - 1, 24).astype(int)
    x = data["x_test"][idx]
    emu, ref = emulate_cascade(copy, x), Cascade(out).run(x)
    np.testing.assert_array_equal(emu.exit_stage, ref.exit_stage)
    np.testing.assert_array_equal(emu.logits.argmax(-1), ref.predictions)
    readme = (copy / "README.md").read_text()
    assert "make lib" in readme and "eecc_cascade_run()" in readme and program["elf"] in readme


APP = r"""/* a firmware's own start-up and main, calling the model as the folder's README says */
#include <string.h>
#include "eecc_program.h"
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
static int semihost(int op, void* arg) {
  register int r0 __asm__("r0") = op; register void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory"); return r0;
}
void eecc_log(const char* msg) { (void)msg; }
__attribute__((weak)) void __aeabi_unwind_cpp_pr0(void) {}
static const float x[] = {SAMPLE};
int main(void) {
  static char line[] = "stage=0 class=0\n";
  eecc_workspace_init();
  memcpy(eecc_stages[0].inputs[0].data, x, eecc_stages[0].inputs[0].nbytes);
  int k = eecc_cascade_run();
  if (k < 0) return 1;
  const eecc_stage* s = &eecc_stages[k];
  const float* scores = (const float*)s->outputs[s->logits].data;
  int best = 0;
  for (int c = 1; c < CLASSES; ++c) if (scores[c] > scores[best]) best = c;
  line[6] = (char)('0' + k); line[14] = (char)('0' + best);
  semihost(0x04, line);
  return 0;
}
void Reset_Handler(void) {
  uint32_t *src = &__data_load, *dst = &__data_start;
  while (dst < &__data_end) *dst++ = *src++;
  for (dst = &__bss_start; dst < &__bss_end; ++dst) *dst = 0;
  (*(volatile uint32_t*)0xE000ED88) |= 0xFu << 20; /* the M4F's FPU on */
  __asm__ volatile("dsb\n isb");
  semihost(0x18, (void*)(main() == 0 ? 0x20026 : 0x20023));
  for (;;) {}
}
__attribute__((section(".vectors"), used)) static void (*const vectors[2])(void) = {
  (void (*)(void))&__stack_top, Reset_Handler};
"""


@needs_arm
def test_make_lib_links_into_a_firmware_that_calls_it_as_the_readme_says(bundle, tmp_path):
    out, manifest, data = bundle
    (program,) = manifest["codegen"]["programs"]
    copy = tmp_path / "firmware"
    shutil.copytree(out / program["folder"], copy)
    _make(copy, "lib")
    nm = subprocess.run(["arm-none-eabi-nm", "libeecc.a"], cwd=copy, capture_output=True, text=True).stdout
    assert " T eecc_cascade_run" in nm and " T main" not in nm  # the model alone, no start-up
    routed = Cascade(out).run(data["x_test"][:64])
    i = int(np.argmax(routed.exit_stage > 0))  # a sample that passes a gate: the hand-off is read where it lies
    sample = data["x_test"][i].astype(np.float32).reshape(-1)
    app = APP.replace("SAMPLE", ", ".join(f"{v!r}f" for v in sample.tolist()))
    (copy / "app.c").write_text(app.replace("CLASSES", str(manifest["num_classes"])))
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-nostartfiles",
             "-I.", "-T", "mcu.ld", "--specs=nano.specs", "--specs=nosys.specs"]
    link = subprocess.run(["arm-none-eabi-gcc", *flags, "app.c", "libeecc.a", "-o", "app.elf", "-lm", "-lgcc"],
                          cwd=copy, env=BARE_ENV, capture_output=True, text=True)
    assert link.returncode == 0, link.stderr
    run = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
                          "-semihosting-config", "enable=on,target=native", "-kernel", "app.elf"],
                         cwd=copy, capture_output=True, text=True, timeout=120)
    ref = Cascade(out).run(data["x_test"][i:i + 1])
    assert run.returncode == 0 and f"stage={ref.exit_stage[0]} class={ref.predictions[0]}" in run.stdout + run.stderr, \
        run.stdout + run.stderr
    shipped = (copy / program["elf"]).read_bytes()
    _make(copy, "clean")  # removes what make lib built, not the shipped program (it deleted the ELF)
    assert not (copy / "libeecc.a").exists() and not (copy / "lib").exists()
    assert (copy / program["elf"]).read_bytes() == shipped


def test_block_graph_of_an_int8_bundle_shows_each_exit(bundle):
    """nu10: the int8 stages' Conv+Relu fused by the quantiser took the block's closing mark with it, and the
    picture showed one exit of the two on the core."""
    out, manifest, _ = bundle
    source = bundle_dot(out, manifest)
    exits = len(manifest["stages"]) - 1
    assert exits == 2
    assert sum(f"exit{k} [label=" in source for k in range(exits)) == exits
    assert sum(f" -> exit{k} [style=bold" in source for k in range(exits)) == exits
    # the int8 files alone (a bundle without its float stages) still place every exit after a block
    _, found = collect([ir.load(out / s["file"], classifier=False) for s in manifest["stages"]])
    assert [e.position for e in found] == list(range(exits)) and all(e.after_block >= 0 for e in found)


def test_int8_stage_sizes_are_int8_and_the_stack_is_named(bundle, capsys):
    out, manifest, _ = bundle
    for s in manifest["stages"]:
        graph = ir.load(out / s["float_file"], classifier=False)
        int8, fp32 = stage_cost(graph, "int8"), stage_cost(graph, "fp32")
        assert (s["weight_bytes"], s["peak_activation_bytes"]) == (int8.weight_bytes, int8.peak_activation_bytes)
        assert s["weight_bytes"] < fp32.weight_bytes  # (a stage's float edges held twice may outweigh its int8 peak)
        assert s["codegen"]["stack_bytes"] == 8192
    (program,) = manifest["codegen"]["programs"]
    stage = json.loads((out / program["folder"] / "stage.json").read_text())
    assert stage["stack_bytes"] == 8192 and stage["ram_static_bytes"] + 8192 == stage["ram_bytes"]
    assert "stack" in stage["ram_note"]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "RAM B includes the 8,192 B stack the linker script reserves" in capsys.readouterr().out


@needs_arm
def test_a_scale_bundle_states_the_input_scaling_and_the_advice_works(tmp_path, one_m4_toml):
    """nu13 F1: compiled with --scale S, the firmware folder said only "float32 [1, 1, 14, 14]", and the sensor's raw
    codes gave 55.9 % instead of 83.5 % under QEMU. eecc_program.h now defines EECC_INPUT_SCALE and the README says
    to write (float)x * EECC_INPUT_SCALE: done so, the program routes and predicts as the cascade on the codes; the
    raw codes do not. The macro changes no code: make relinks the same ELF."""
    codes = {k: (np.round(v * 16).astype(np.uint8) if k.startswith("x_") else v)
             for k, v in datasets.load("digits").items()}  # digits are 0..16 / 16: uint8 codes with S = 1/16
    options = CompileOptions(target=str(one_m4_toml), out=tmp_path / "b", cache_dir=str(tmp_path / "c"),
                             progress=False, head_set="blueprint", exits_per_processor=2, scale=1 / 16)
    manifest = compile_model(MODELS / "cnn.onnx", codes, options)
    (program,) = manifest["codegen"]["programs"]
    folder = tmp_path / "b" / program["folder"]
    scale = float(re.search(r"#define EECC_INPUT_SCALE (\S+)f\n", (folder / "eecc_program.h").read_text()).group(1))
    readme = (folder / "README.md").read_text()
    assert scale == 1 / 16 and "`--scale 0.0625`" in readme and "(float)x * EECC_INPUT_SCALE" in readme
    sizes = {a["path"]: a["bytes"] for s in manifest["stages"] for a in s["artifacts"]}
    assert sizes[f"{program['folder']}/README.md"] == (folder / "README.md").stat().st_size
    x = codes["x_test"][np.linspace(0, len(codes["x_test"]) - 1, 24).astype(int)]
    ref = Cascade(tmp_path / "b").run(x)  # uint8 codes: the runtime applies the recorded scale
    advised = emulate_cascade(folder, x.astype(np.float32) * np.float32(scale))
    np.testing.assert_array_equal(advised.exit_stage, ref.exit_stage)
    np.testing.assert_array_equal(advised.logits.argmax(-1), ref.predictions)
    raw = emulate_cascade(folder, x.astype(np.float32))
    assert (raw.exit_stage != ref.exit_stage).any() or (raw.logits.argmax(-1) != ref.predictions).any()
    copy = tmp_path / "firmware"
    shutil.copytree(folder, copy)
    (copy / program["elf"]).unlink()
    _make(copy)
    assert (copy / program["elf"]).read_bytes() == (folder / program["elf"]).read_bytes()
