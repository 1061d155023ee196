"""Every fixture through `compile --emulate` on psoc6: emulated vs onnxruntime error per stage, and how well a
MAC/s calibrated on the OTHER fixtures predicts each stage's instruction-derived latency (leave-one-out).

    python bench/calibration.py [--quantize int8] [--out bench/results/calibration.json]

Issue 6 targets: emulated outputs within 1e-4 of onnxruntime for every stage of every fixture; after
calibration, estimated stage latency within ±30 % of the instruction-derived figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from eecc.examples import datasets
from eecc.driver.compile import CompileOptions, compile_model
from eecc.examples import example
from common import write_results

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
LIMIT = {"resnet": 6000, "dscnn": 4000}  # training samples: the heads only need to be plausible here


def workloads():
    for name in ("cnn", "cnn1d", "dscnn", "resnet"):
        meta = json.loads((MODELS / f"{name}.json").read_text())
        yield name, MODELS / f"{name}.onnx", datasets.load(meta["dataset"], limit_train=LIMIT.get(name))
    path, data = example("kws")
    yield "kws", path, data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quantize", choices=("int8",), default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "calibration.json"))
    args = ap.parse_args()
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, data in workloads():
            options = CompileOptions(target="psoc6", out=Path(tmp) / name, cache_dir=os.path.join(tmp, "cache"),
                                     emulate=True, quantize=args.quantize, progress=False)
            manifest = compile_model(path, data, options)
            for s in manifest["stages"]:
                emu, cal = s["emulation"], s["calibration"]
                rows.append({"model": name, "stage": s["index"], "cpu": s["kind"], "macs": s["macs"],
                             "instructions": emu["instructions"], "max_abs_error": emu["max_abs_error"],
                             "latency_instructions_s": s["latency_calibrated_s"],
                             "latency_paper_estimate_s": s["latency_estimate_s"],
                             "macs_per_s": cal["macs_per_s_calibrated"]})
    for row in rows:  # leave-one-out: this model's stages never inform their own prediction
        others = [r["macs_per_s"] for r in rows if r["cpu"] == row["cpu"] and r["model"] != row["model"]]
        rate = float(np.exp(np.mean(np.log(others))))
        row["latency_loo_estimate_s"] = row["macs"] / rate
        row["loo_error"] = row["latency_loo_estimate_s"] / row["latency_instructions_s"] - 1
    summary = {"quantize": args.quantize, "rows": rows, "wall_s": time.perf_counter() - t0,
               "max_abs_error": max(r["max_abs_error"] for r in rows),
               "within_30pct": sum(abs(r["loo_error"]) <= 0.3 for r in rows), "stages": len(rows),
               "load_average": os.getloadavg()}
    table = Table(title=f"psoc6 stages under QEMU ({args.quantize or 'float'}); LOO = MAC/s calibrated on the other fixtures")
    for col in ("model", "stage", "cpu", "MACs", "instructions", "max |err|", "instr. latency ms",
                "paper estimate ms", "LOO estimate ms", "LOO error"):
        table.add_column(col, justify="left" if col in ("model", "cpu") else "right")
    for r in rows:
        table.add_row(r["model"], str(r["stage"]), r["cpu"], f"{r['macs']:,}", f"{r['instructions']:,}",
                      f"{r['max_abs_error']:.1e}", f"{1e3 * r['latency_instructions_s']:.1f}",
                      f"{1e3 * r['latency_paper_estimate_s']:.1f}", f"{1e3 * r['latency_loo_estimate_s']:.1f}",
                      f"{100 * r['loo_error']:+.0f} %")
    Console(width=160).print(table)
    print(f"max |error| vs onnxruntime {summary['max_abs_error']:.1e}; LOO within ±30 %: "
          f"{summary['within_30pct']}/{summary['stages']} stages; {summary['wall_s']:.0f} s")
    write_results(args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
