"""Where a Cortex-M stage's instructions go, function by function: one cost-model unit compiled as
`python -m eecc.cost refit` compiles it, run under QEMU with a block-counting TCG plugin (bench/insn_profile.c),
the executed blocks mapped to the ELF's symbols (kernels, TVM operators, soft-float helpers like __aeabi_fdiv).

    python bench/mcu_profile.py cnn 5 [--cpu cortex-m0plus] [--format int8] [--top 25] [--out FILE.json]
    python bench/mcu_profile.py layer:gemm-64-o10

The unit is eecc/cost/measure.units_of's numbering (or a layer of eecc/cost/layers.py), its input the one the
cost model measured it on (the fixture's units quantised and run together, 2 samples). The profile includes the
harness (main, semihosting I/O) besides eecc_run; the measured count (SysTick) is eecc_run alone.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from eecc.cost.__main__ import fixture_models
from eecc.cost.layers import layer_models
from eecc.cost.measure import SAMPLES, units_of
from eecc.runtime import emulate
from eecc.targets import cortex_m
from eecc.targets.codegen import reference_runs
from eecc.targets.quantize import quantize_stages

PLUGIN = Path(__file__).with_name("insn_profile.c")


def unit_and_inputs(name: str, index: int, fmt: str):
    """(stage model in `fmt`, its input feed) as eecc/cost/measure.measure_units builds them."""
    if name.startswith("layer:"):
        group, pos = [layer_models()[name]], 0
    else:
        units = units_of(name, fixture_models()[name])
        group, pos = [u.float_model for u in units], [u.index for u in units].index(index)
    shape = [d.dim_value for d in group[0].graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(0).normal(size=(64, *shape)).astype(np.float32)
    models = quantize_stages(group, x) if fmt == "int8" else group
    return models[pos], reference_runs(models, x[:SAMPLES])[pos][0]


def profile(model, inputs: dict, cpu: str, work: Path) -> tuple[int, dict[str, float]]:
    """(SysTick-measured instructions per inference, {function: instructions per inference})."""
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=work / "stage")
    counted = emulate.emulate_stage(arts, inputs).instructions
    stage_dir, man = emulate._manifest(arts)
    blobs = [np.ascontiguousarray(np.asarray(inputs[s["name"]], dtype=s["dtype"])).reshape(SAMPLES, -1).view(np.uint8)
             for s in man["inputs"]]
    (work / "input.bin").write_bytes(np.concatenate(blobs, axis=1).tobytes())
    plugin = work / "insn_profile.so"
    subprocess.run([shutil.which("gcc") or "cc", "-O2", "-shared", "-fPIC", str(PLUGIN), "-o", str(plugin)], check=True)
    cmd, _ = emulate._command(stage_dir, man, work)
    subprocess.run([cmd[0], "-plugin", str(plugin), *cmd[1:]], cwd=work, capture_output=True, check=True,
                   env=dict(os.environ, PROF_OUT=str(work / "prof.txt")))
    nm = subprocess.run(["arm-none-eabi-nm", "-n", str(stage_dir / man["run"]["elf"])], capture_output=True,
                        text=True, check=True).stdout.split("\n")
    syms = sorted((int(p[0], 16) & ~1, p[2]) for p in (line.split() for line in nm) if len(p) == 3 and p[1] in "tTwW")
    starts, per = [a for a, _ in syms], {}
    for line in (work / "prof.txt").read_text().splitlines():
        vaddr, n, count = line.split()
        i = bisect.bisect_right(starts, int(vaddr, 16)) - 1
        name = syms[i][1] if i >= 0 else "?"
        per[name] = per.get(name, 0.0) + int(n) * int(count) / SAMPLES
    return counted, dict(sorted(per.items(), key=lambda kv: -kv[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a fixture (cnn, cnn1d, dscnn, resnet, kws) or layer:<name>")
    ap.add_argument("unit", nargs="?", type=int, default=0)
    ap.add_argument("--cpu", default="cortex-m0plus", choices=sorted(cortex_m.CPUS))
    ap.add_argument("--format", default="int8", choices=("fp32", "int8"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", help="write {unit, counted, functions} as JSON here")
    args = ap.parse_args()
    model, inputs = unit_and_inputs(args.model, args.unit, args.format)
    with tempfile.TemporaryDirectory(prefix="eecc-profile-") as tmp:
        counted, per = profile(model, inputs, args.cpu, Path(tmp))
    print(f"{args.model} unit {args.unit}, {args.cpu} {args.format}: {counted:,} instructions per inference "
          f"(eecc_run); profile {sum(per.values()):,.0f} with the harness")
    for name, n in list(per.items())[:args.top]:
        print(f"{n:>14,.0f}  {name}")
    if args.out:
        Path(args.out).write_text(json.dumps({"unit": [args.model, args.unit, args.cpu, args.format],
                                              "counted": counted, "functions": per}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
