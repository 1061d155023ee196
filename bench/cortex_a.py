"""The Cortex-A (rk3588 CPU) cost model against qemu-aarch64 counts of compiled cascades.

    python bench/cortex_a.py [--out bench/results/cortex_a.json] [--models cnn,cnn1d,dscnn,resnet,kws]
                             [--extra NAME=MODEL.onnx:DATA.npz ...] [--formats fp32,int8]

Each model is compiled with `--search --emulate` (fp32, and `--quantize int8`) for the rk3588's CPU alone (a
one-processor platform made from targets/platforms/rk3588.toml's `cpu`, so the search builds an early-exit cascade
of up to two stages on it), its stages built for the A76 and counted under qemu-aarch64. Per stage: the instructions
the shipped fit predicts (what the search used), the count predicted with that model's measurements held out of the
fit (eecc/cost/aarch64.py rows), and QEMU's count; per cascade the emulated mean energy over the search's. Target:
within ±15 %. Seconds are instructions × CPI / clock_hz (targets/calibration.py's CPI for the A76 is an assumption), so
these ratios are about instruction counts, not measured time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tomllib
from pathlib import Path

import onnx
from rich.console import Console
from rich.table import Table

from eecc.cost import aarch64
from eecc.cost.features import graph_features
from eecc.cost.model import fit, load_rows
from eecc.driver.compile import CompileOptions, compile_model
from eecc.examples import datasets, example

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
LIMIT = {"resnet": 6000, "dscnn": 4000}


def workload(name: str, extra: dict):
    if name in extra:
        model, data = extra[name].rsplit(":", 1)
        return Path(model), data
    if name == "kws":
        return example("kws")
    meta = json.loads((MODELS / f"{name}.json").read_text())
    return MODELS / f"{name}.onnx", datasets.load(meta["dataset"], limit_train=LIMIT.get(name))


def cpu_only_platform(tmp: Path) -> Path:
    """The rk3588 with its CPU alone (the shipped TOML's cpu processor, nothing else)."""
    spec = tomllib.loads((ROOT / "targets" / "platforms" / "rk3588.toml").read_text())
    cpu = next(p for p in spec["processors"] if p["kind"] == "cortex-a")
    lines = ['name = "rk3588-cpu"', 'description = "rk3588 Cortex-A76 cluster alone"', "", "[[processors]]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in cpu.items()]
    path = tmp / "rk3588-cpu.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_of(name: str, fmt: str, path, data, platform: Path, tmp: Path) -> tuple[list[dict], dict]:
    """(per-stage rows, cascade figures) of one compile."""
    measured = load_rows()["rows"] + aarch64.load_rows()[0]
    held_out = fit(measured, exclude=(name,))
    out = tmp / f"{name}-{fmt}"
    options = CompileOptions(target=str(platform), out=out, search=True, emulate=True, progress=False,
                             quantize=None if fmt == "fp32" else "int8", cache_dir=str(tmp / "cache"))
    manifest = compile_model(path, data, options)
    files = [onnx.load(str(out / s.get("float_file", s["file"]))) for s in manifest["stages"]]
    first = files[0].graph.input[0].name
    rows = []
    for s, stage in zip(manifest["stages"], files):
        counted = s["emulation"]["instructions"]
        shipped = s["predicted"]["instructions"]
        held = float(held_out.instructions(graph_features(stage, model_input=first), aarch64.KIND, fmt))
        rows.append({"model": name, "format": fmt, "stage": s["index"], "macs": s["macs"],
                     "emulated_instructions": counted, "predicted_instructions": shipped,
                     "held_out_instructions": held, "error": shipped / counted - 1, "held_out_error": held / counted - 1})
    energy = manifest["prediction_check"]["cascade"]["energy"]
    cascade = {"model": name, "format": fmt, "stages": len(rows), "search_mean_energy_j": energy["search"],
               "emulated_mean_energy_j": energy["emulated"], "emulated_over_search": energy["emulated_over_search"],
               "deployment_line": manifest["deployment"]["line"]}
    return rows, cascade


def print_tables(summary: dict) -> None:
    console = Console(width=200)
    t = Table(title="Cortex-A76 stages (rk3588 CPU alone): cost model vs qemu-aarch64 instruction counts")
    for col in ("model", "format", "stage", "MACs", "emulated instr.", "search's (shipped fit)", "error",
                "held out", "error"):
        t.add_column(col, justify="left" if col in ("model", "format") else "right")
    for r in summary["stages"]:
        t.add_row(r["model"], r["format"], str(r["stage"]), f"{r['macs']:,}", f"{r['emulated_instructions']:,}",
                  f"{r['predicted_instructions']:,.0f}", f"{100 * r['error']:+.1f} %",
                  f"{r['held_out_instructions']:,.0f}", f"{100 * r['held_out_error']:+.1f} %")
    console.print(t)
    n = len(summary["stages"])
    console.print(f"within ±15 %: {summary['within_15pct']}/{n} stages (shipped fit), "
                  f"{summary['within_15pct_held_out']}/{n} (each model held out)")
    for c in summary["cascades"]:
        console.print(f"{c['model']} {c['format']}: emulated mean energy {1e3 * c['emulated_mean_energy_j']:.4f} mJ vs "
                      f"the search's {1e3 * c['search_mean_energy_j']:.4f} mJ "
                      f"({100 * (c['emulated_over_search'] - 1):+.1f} %)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cortex_a.json"))
    ap.add_argument("--models", default="cnn,cnn1d,dscnn,resnet,kws")
    ap.add_argument("--formats", default="fp32,int8")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=MODEL.onnx:DATA.npz",
                    help="another model (not in the fit: its held-out column equals the shipped one)")
    args = ap.parse_args()
    extra = dict(e.split("=", 1) for e in args.extra)
    t0, summary = time.perf_counter(), {"stages": [], "cascades": []}
    with tempfile.TemporaryDirectory(prefix="eecc-bench-a-") as tmp:
        platform = cpu_only_platform(Path(tmp))
        for name in [m for m in args.models.split(",") if m] + list(extra):
            path, data = workload(name, extra)
            for fmt in args.formats.split(","):
                rows, cascade = rows_of(name, fmt, path, data, platform, Path(tmp))
                summary["stages"] += rows
                summary["cascades"].append(cascade)
    summary["within_15pct"] = sum(abs(r["error"]) <= 0.15 for r in summary["stages"])
    summary["within_15pct_held_out"] = sum(abs(r["held_out_error"]) <= 0.15 for r in summary["stages"])
    summary.update(wall_s=time.perf_counter() - t0, load_average=os.getloadavg(),
                   kernels={f: aarch64.kernels_id(f) for f in args.formats.split(",")},
                   command="python bench/cortex_a.py" + (f" --models {args.models}" if args.models else "")
                   + "".join(f" --extra {e}" for e in args.extra) + f" --formats {args.formats}")
    print_tables(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
