"""Cortex-M stages under QEMU: flash/RAM before and after memory planning, instructions, error vs onnxruntime.

Run from the repository root:  python bench/mcu.py [--samples 4] [--out mcu.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from eecc.runtime.emulate import emulate_stage
from eecc.targets import cortex_m, tvm_import

ROOT = Path(__file__).resolve().parents[1]


def _builders():
    spec = importlib.util.spec_from_file_location("test_cortex_m", ROOT / "tests" / "test_cortex_m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def models(t) -> dict[str, onnx.ModelProto]:
    found = {"small_cnn": t.small_cnn(), "exit_stage": t.exit_stage(), "dscnn_s_random": t.dscnn_like()}
    for path in sorted((ROOT / "tests" / "fixtures" / "models").glob("dscnn*.onnx")):
        found[path.stem] = onnx.load(path)
    return found


def measure(name, model, cpu, samples, t) -> dict:
    import tvm

    inp = model.graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal([samples, *shape[1:]]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=Path(tmp))
        start = time.perf_counter()
        result = emulate_stage(arts, {inp.name: x})
        emu_s = time.perf_counter() - start
    want = t.reference(model, x, inp.name)
    err = max(float(np.max(np.abs(result.outputs[k].astype(np.float64) - v.astype(np.float64))))
              for k, v in want.items())
    target = tvm.target.Target(cortex_m.CPUS[cpu]["target"])
    plain = tvm_import.lower_stage(model, target, reduce_workspace=False)
    return {"model": name, "cpu": cpu, "kernels": arts.kernel_count, "flash_B": arts.flash_bytes,
            "ram_unplanned_B": arts.ram_unplanned_bytes, "ram_B": arts.ram_bytes,
            "arena_unplanned_B": arts.arena_unplanned_bytes, "arena_B": arts.arena_bytes,
            "workspace_default_B": tvm_import.workspace_bytes(plain.kernels, target),
            "workspace_B": arts.workspace_bytes, "stack_used_B": result.stack_used,
            "instructions": result.instructions, "max_abs_err": err, "compile_s": arts.compile_s,
            "emulate_s": round(emu_s, 2), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("mcu.json"))
    args = parser.parse_args()
    t = _builders()
    rows = [measure(name, model, cpu, args.samples, t)
            for name, model in models(t).items() for cpu in ("cortex-m4", "cortex-m0plus")]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Cortex-M stages under QEMU (RAM before -> after planning)")
    for col in ("model", "cpu", "kernels", "flash KB", "RAM KB", "arena KB", "workspace KB",
                "instr/inf", "max |err|", "compile s"):
        table.add_column(col, justify="left" if col in ("model", "cpu") else "right")
    for r in rows:
        table.add_row(r["model"], r["cpu"], str(r["kernels"]), f"{r['flash_B'] / 1024:.1f}",
                      f"{r['ram_unplanned_B'] / 1024:.1f} -> {r['ram_B'] / 1024:.1f}",
                      f"{r['arena_unplanned_B'] / 1024:.1f} -> {r['arena_B'] / 1024:.1f}",
                      f"{r['workspace_default_B'] / 1024:.1f} -> {r['workspace_B'] / 1024:.1f}",
                      f"{r['instructions']:,}", f"{r['max_abs_err']:.1e}", f"{r['compile_s']:.1f}")
    Console().print(table)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
