"""int8 vs float cascades on the fixtures: accuracy and exit rates (onnxruntime), and per stage on the
Cortex-M0+ / M4 under QEMU: instructions per inference, flash, weight bytes, class parity with
onnxruntime's int8 stage.

Run from the repository root:  python bench/int8.py [--models cnn,dscnn] [--parity-samples 200] [--out int8.json]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from eecc.examples import datasets
from eecc.driver.compile import CompileOptions, compile_model
from eecc.runtime.emulate import emulate_stage
from eecc.targets import cortex_m, int8_parity
from eecc.targets.codegen import reference_runs

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
TRAIN_LIMIT = {"resnet": 6000, "dscnn": 4000}  # as tests/test_compile_e2e.py: heads still learn on these
CPUS = ("cortex-m0plus", "cortex-m4")


def load(name: str) -> dict:
    meta = json.loads((MODELS / f"{name}.json").read_text())
    data = datasets.load(meta["dataset"], limit_train=TRAIN_LIMIT.get(name))
    if name in TRAIN_LIMIT:
        data = {k: (v[:2000] if k.endswith(("_val", "_test")) else v) for k, v in data.items()}
    return data


def constant_bytes(stage_dir: Path) -> int:
    """Flash taken by the weights alone: the `const uint32_t w_*[]` arrays of the generated driver."""
    text = (stage_dir / "stage.c").read_text()
    return 4 * sum(int(n) for n in re.findall(r"static const uint32_t w_\d+\[(\d+)\]", text))


def measure_stage(name, k, entry, f_model, q_model, x, cpu, float_samples, tmp) -> dict:
    f_in, _ = reference_runs(f_model, x[:float_samples])[k]
    runs = reference_runs(q_model, x)
    q_in, q_want = runs[k]
    row = {"model": name, "stage": k, "target": entry["target"], "cpu": cpu}
    for tag, model, feed in (("float", f_model[k], f_in), ("int8", q_model[k], q_in)):
        out = Path(tmp) / f"{name}{k}{cpu}{tag}"
        arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=out)
        res = emulate_stage(arts, feed, timeout_s=3600)
        row.update({f"{tag}_instructions": res.instructions, f"{tag}_flash_B": arts.flash_bytes,
                    f"{tag}_weights_B": constant_bytes(out), f"{tag}_ram_B": arts.ram_bytes})
        if tag == "int8":
            parity = int8_parity.compare_int8(res.outputs, q_want, entry, where=f"{name} stage {k}")
            row.update(parity_samples=len(x), class_parity=parity["class_parity"],
                       exit_flag_agreement=parity.get("exit_flag_agreement"))
    row["instructions_ratio"] = row["float_instructions"] / max(row["int8_instructions"], 1)
    row["flash_ratio"] = row["int8_flash_B"] / row["float_flash_B"]
    row["weights_ratio"] = row["int8_weights_B"] / max(row["float_weights_B"], 1)
    return row


def bench_model(name: str, parity_samples: int, float_samples: int, tmp: str) -> tuple[dict, list[dict]]:
    data = load(name)
    out = Path(tmp) / f"{name}_bundle"
    manifest = compile_model(MODELS / f"{name}.onnx", data, CompileOptions(
        target="psoc6", out=out, cache_dir=str(Path(tmp) / f"{name}_cache"), codegen=False, progress=False,
        quantize="int8"))
    q = manifest["quantization"]
    summary = {"model": name, "float_accuracy": q["float"]["accuracy"], "int8_accuracy": q["int8"]["accuracy"],
               "delta_pt": 100 * (q["int8"]["accuracy"] - q["float"]["accuracy"]),
               "float_exit_rates": q["float"]["exit_rates"], "int8_exit_rates": q["int8"]["exit_rates"],
               "int8_with_float_thresholds": q["int8_with_float_thresholds"],
               "float_thresholds": q["float_thresholds"], "int8_thresholds": q["int8_thresholds"],
               "float_mean_macs": q["float"]["mean_macs"], "int8_mean_macs": q["int8"]["mean_macs"]}
    f_model = [onnx.load(str(out / e["float_file"])) for e in manifest["stages"]]
    q_model = [onnx.load(str(out / e["file"])) for e in manifest["stages"]]
    x = np.asarray(data["x_test"][:parity_samples], dtype=np.float32)
    rows = [measure_stage(name, k, e, f_model, q_model, x, cpu, float_samples, tmp)
            for k, e in enumerate(manifest["stages"]) for cpu in CPUS]
    return summary, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,cnn1d,dscnn,resnet")
    parser.add_argument("--parity-samples", type=int, default=200)
    parser.add_argument("--float-samples", type=int, default=2, help="float stages are slow on the M0+")
    parser.add_argument("--out", type=Path, default=Path("int8.json"))
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if (MODELS / f"{n}.onnx").exists()]
    summaries, rows = [], []
    with tempfile.TemporaryDirectory(prefix="eecc-int8-") as tmp:
        for name in names:
            s, r = bench_model(name, args.parity_samples, args.float_samples, tmp)
            summaries.append(s)
            rows += r
            args.out.write_text(json.dumps({"cascades": summaries, "stages": rows}, indent=2))
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="cascade accuracy and exit rates, float vs int8 stages (onnxruntime, test split)")
    for col in ("model", "float acc", "int8 acc", "Δ pt", "float exits", "int8 exits", "int8 @ float th"):
        table.add_column(col, justify="left" if col == "model" else "right")
    pct = lambda rates: " / ".join(f"{100 * r:.1f}" for r in rates)  # noqa: E731
    for s in summaries:
        table.add_row(s["model"], f"{100 * s['float_accuracy']:.2f}", f"{100 * s['int8_accuracy']:.2f}",
                      f"{s['delta_pt']:+.2f}", pct(s["float_exit_rates"]), pct(s["int8_exit_rates"]),
                      f"{100 * s['int8_with_float_thresholds']['accuracy']:.2f}")
    console.print(table)
    table = Table(title="stages under QEMU: float build vs int8 integer kernels")
    for col in ("model", "stage", "cpu", "instr float", "instr int8", "×", "flash float KB", "flash int8 KB",
                "weights ratio", "parity"):
        table.add_column(col, justify="left" if col in ("model", "cpu") else "right")
    for r in rows:
        table.add_row(r["model"], str(r["stage"]), r["cpu"], f"{r['float_instructions']:,}",
                      f"{r['int8_instructions']:,}", f"{r['instructions_ratio']:.1f}",
                      f"{r['float_flash_B'] / 1024:.1f}", f"{r['int8_flash_B'] / 1024:.1f}",
                      f"{r['weights_ratio']:.2f}", f"{100 * r['class_parity']:.1f} % of {r['parity_samples']}")
    console.print(table)


if __name__ == "__main__":
    main()
