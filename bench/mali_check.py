"""RK3588 path check: every model compiles for Mali (per-kernel schedule fallback) and its OpenCL kernels,
run on this machine's OpenCL device (PoCL), match onnxruntime; then rk3588 bundles with --emulate, whose
Cortex-A stage is counted under QEMU (instructions per MAC, calibrated latency) and Mali stage executed.

    python bench/mali_check.py [--skip-bundles] [--out bench/results/mali_check.json]

PoCL runs the kernels on host CPU threads: the figures check correctness, not Mali speed.
Issue targets: every model and stage compiles for Mali; outputs within 1e-4 of onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
EFFICIENTNET = ROOT / "bench" / "models" / "efficientnet_lite0.onnx"
FIXTURES = ("cnn", "cnn1d", "dscnn", "resnet", "cnn_dynamo", "cnn1d_dynamo", "dscnn_dynamo", "resnet_dynamo")


def models():
    sys.path.insert(0, str(ROOT / "tests"))
    from test_gpu_codegen import pad_dw_cnn  # the pad-before-conv test model

    for name in FIXTURES:
        yield name, onnx.load(MODELS / f"{name}.onnx")
    yield "kws", onnx.load(ROOT / "eecc" / "examples" / "kws.onnx")
    yield "pad_dw_cnn", pad_dw_cnn()
    if EFFICIENTNET.exists():
        yield "efficientnet_lite0", onnx.load(EFFICIENTNET)
    else:
        print(f"{EFFICIENTNET} missing: run python bench/make_efficientnet.py (needs the bench extra)")


def whole_model_on_mali(name: str, model: onnx.ModelProto, work: Path, samples: int = 4) -> dict:
    from eecc.runtime.gpu_run import run_plan
    from eecc.targets import mali

    start = time.perf_counter()
    arts = mali.compile_stage(model, out_dir=work / name)
    compile_s = time.perf_counter() - start
    inp = model.graph.input[0]
    shape = [samples] + [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    start = time.perf_counter()
    got, device = run_plan(work / name / "stage.plan.json", {inp.name: x})
    run_s = time.perf_counter() - start
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    want = [np.concatenate(r) for r in zip(*[sess.run(None, {inp.name: xi[None]}) for xi in x])]
    err = max(float(np.abs(got[o.name].reshape(w.shape) - w).max()) for o, w in zip(model.graph.output, want))
    fallbacks = {s["kernel"]: f"{s['rule']} (after {', '.join(s['failed'])} failed)" if s["failed"] else s["rule"]
                 for s in arts.extra["schedules"] if s["fallback"]}
    return {"model": name, "kernels": arts.kernel_count, "launches": arts.extra["launches"],
            "fallbacks": fallbacks, "pocl_checked": arts.checked, "max_abs_error": err, "samples": samples,
            "device": device, "compile_s": compile_s, "run_s": run_s}


def bundle_workloads(efficientnet: bool):
    sys.path.insert(0, str(ROOT / "bench"))
    from calibration import workloads

    yield from workloads()
    if efficientnet and EFFICIENTNET.exists():
        from make_efficientnet import load_data

        yield "efficientnet_lite0", EFFICIENTNET, load_data()


def rk3588_bundles(work: Path, *, efficientnet: bool) -> list[dict]:
    from eecc.driver.compile import CompileOptions, compile_model

    rows = []
    for name, path, data in bundle_workloads(efficientnet):
        options = CompileOptions(target="rk3588", out=work / f"{name}_rk3588", cache_dir=os.path.join(work, "cache"),
                                 emulate=True, progress=False)
        manifest = compile_model(path, data, options)
        for s in manifest["stages"]:
            emu, cal, cg = s.get("emulation") or {}, s.get("calibration") or {}, s.get("codegen") or {}
            rows.append({"model": name, "stage": s["index"], "processor": s["target"], "macs": s["macs"],
                         "backend": cg.get("backend"), "fallbacks": cg.get("schedule_fallbacks"),
                         "executed_on": emu.get("device") or emu.get("emulator"),
                         "max_abs_error": emu.get("max_abs_error"), "instructions": emu.get("instructions"),
                         "instructions_per_mac": cal.get("instructions_per_mac"),
                         "latency_estimate_s": s.get("latency_estimate_s"),
                         "latency_calibrated_s": s.get("latency_calibrated_s")})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-bundles", action="store_true", help="only the whole-model Mali check")
    ap.add_argument("--efficientnet-bundle", action="store_true",
                    help="also compile EfficientNet-Lite0 for rk3588 with search and --emulate (slow)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mali_check.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eecc-mali-") as tmp:
        rows = [whole_model_on_mali(name, model, Path(tmp)) for name, model in models()]
        stages = [] if args.skip_bundles else rk3588_bundles(Path(tmp), efficientnet=args.efficientnet_bundle)
    table = Table(title="whole model as one Mali stage: OpenCL kernels on PoCL vs onnxruntime (correctness, not speed)")
    for col in ("model", "kernels", "launches", "schedule fallbacks", "max |err|", "compile s", "PoCL run s"):
        table.add_column(col, justify="left" if col in ("model", "schedule fallbacks") else "right")
    for r in rows:
        table.add_row(r["model"], str(r["kernels"]), str(r["launches"]),
                      "; ".join(f"{k}: {v}" for k, v in r["fallbacks"].items()) or "—",
                      f"{r['max_abs_error']:.1e}", f"{r['compile_s']:.1f}", f"{r['run_s']:.1f}")
    console = Console(width=180)
    console.print(table)
    if stages:
        st = Table(title="rk3588 bundles (--emulate): per stage")
        for col in ("model", "#", "backend", "MACs", "executed on", "max |err|", "instr./MAC", "est. ms", "cal. ms"):
            st.add_column(col, justify="left" if col in ("model", "backend", "executed on") else "right")
        for r in stages:
            st.add_row(r["model"], str(r["stage"]), str(r["backend"]), f"{r['macs']:,}", str(r["executed_on"]),
                       "—" if r["max_abs_error"] is None else f"{r['max_abs_error']:.1e}",
                       "—" if r["instructions_per_mac"] is None else f"{r['instructions_per_mac']:.2f}",
                       f"{1e3 * r['latency_estimate_s']:.4f}",
                       "—" if r["latency_calibrated_s"] is None else f"{1e3 * r['latency_calibrated_s']:.4f}")
        console.print(st)
    worst = max([r["max_abs_error"] for r in rows] + [r["max_abs_error"] or 0.0 for r in stages])
    summary = {"models": rows, "rk3588_stages": stages, "max_abs_error": worst, "wall_s": time.perf_counter() - t0,
               "note": "PoCL executes the OpenCL kernels on the host CPU: correctness only, no Mali timing"}
    print(f"max |error| vs onnxruntime {worst:.1e} over {len(rows)} models and {len(stages)} rk3588 stages; "
          f"{summary['wall_s']:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
