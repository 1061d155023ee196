"""What the device really spends: the cost model against QEMU, and eecc's deployment against the original model
on its best single processor (psoc6).

    python bench/energy.py [--out bench/results/energy.json] [--skip-cost-model] [--skip-deployments]
                           [--exits-per-processor K] [--guarantee P]

1. Cost model, leave one model out: every fixture (and the kws example) compiled for psoc6 with a two-stage
   cascade (--placement m0plus,m4, so that both cores get a stage; --objective macs, no accuracy limit, so that a
   cascade beats the original alone) in fp32 and int8, run under QEMU; each stage's instructions predicted by the
   model fitted WITHOUT that fixture's measurements. Target: within ±15 %.
2. Deployments (int8, the default energy objective, --emulate): kws and cnn1d. The chosen cascade's emulated
   mean energy on the test split against the original int8 model alone on each processor (compiled and run
   under QEMU the same way). Targets: ≤ 0.75x (kws) and ≤ 0.5x (1D CNN) of the best single processor at
   ≤ 1 pt accuracy drop; emulated mean energy within ±10 % of the search's figure. The search runs with the
   CLI's default limit (1 pt on the validation split, against the int8 original: the search chooses on the
   int8 model's logits); the table gives the validation drop it held and the test drop with its interval.
   With --guarantee P each model is also compiled with --guarantee P (the 1 pt limit certified for unseen data
   with probability P, eecc/search/guarantee.py), one row beside the default mode's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from eecc.cost.features import graph_features
from eecc.cost.measure import kernels_id
from eecc.cost.model import CPI, fit, load_rows
from eecc.cli.search import DEFAULT_MAX_ACC_DROP
from eecc.driver.compile import CompileOptions, compile_model
from eecc.errors import EeccError
from eecc.examples import datasets, example
from eecc.search.search import SearchOptions
from eecc.targets.platform import load_platform

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
LIMIT = {"resnet": 6000, "dscnn": 4000}
BOTH_CORES = ("m0plus", "m4")  # the cost-model part's placement: a stage on each psoc6 core


def workload(name: str):
    if name == "kws":
        return example("kws")
    meta = json.loads((MODELS / f"{name}.json").read_text())
    return MODELS / f"{name}.onnx", datasets.load(meta["dataset"], limit_train=LIMIT.get(name))


def cost_model_rows(tmp: Path) -> list[dict]:
    rows, measured = [], load_rows()["rows"]
    for name in ("cnn", "cnn1d", "dscnn", "resnet", "kws"):
        held_out = fit(measured, exclude=(name,))
        path, data = workload(name)
        for fmt in ("fp32", "int8"):
            out = tmp / f"{name}-{fmt}"
            options = CompileOptions(target="psoc6", out=out, search=True, emulate=True, progress=False,
                                     quantize=None if fmt == "fp32" else "int8", cache_dir=str(tmp / "cache"),
                                     search_options=SearchOptions(objective="macs", placement=BOTH_CORES))
            manifest = compile_model(path, data, options)
            if [s["target"] for s in manifest["stages"]] != list(BOTH_CORES):  # else one core goes untested
                raise SystemExit(f"{name} {fmt}: the search chose {manifest['placement']['processors']}, not "
                                 f"{' → '.join(BOTH_CORES)}")
            files = [onnx.load(str(out / s.get("float_file", s["file"]))) for s in manifest["stages"]]
            first = files[0].graph.input[0].name  # the model's own input (features.in_dense)
            for s, stage in zip(manifest["stages"], files):
                features = graph_features(stage, model_input=first)
                predicted = float(held_out.instructions(features, s["kind"], fmt))
                counted = s["emulation"]["instructions"]
                rows.append({"model": name, "format": fmt, "stage": s["index"], "cpu": s["kind"], "macs": s["macs"],
                             "emulated_instructions": counted, "predicted_instructions": predicted,
                             "error": predicted / counted - 1, "kernels": kernels_id(),  # bench/energy_reprice.py
                             "features": [round(float(v), 3) for v in features]})
    return rows


def single_processor(path: Path, data: dict, platform, tmp: Path) -> dict:
    """The original model as one int8 stage on each processor, compiled and counted under QEMU, its latency and
    energy from the platform's model as the compile's own baseline (eecc.driver.baseline.emulated_alone: the input
    sent from the first processor, the logits back, that processor idling meanwhile)."""
    import onnxruntime as ort

    from eecc.driver.baseline import emulated_alone
    from eecc.runtime.sessions import session_options
    from eecc.targets.quantize import quantize_stages

    model = quantize_stages([onnx.load(str(path))], data["x_train"][:512])[0]
    # the QDQ model's own arithmetic (runtime/sessions.py): onnxruntime's fused int8 kernels saturate on x86
    # without AVX-VNNI (kws: 86.77 % there against 91.56 %)
    sess = ort.InferenceSession(model.SerializeToString(), session_options(model=model),
                                providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: data["x_test"].astype(np.float32)})[0]
    out = {"int8_accuracy": float((logits.argmax(-1) == data["y_test"]).mean())}
    for proc in platform.processors:
        alone = emulated_alone(model, platform, proc.name, data["x_test"][:4].astype(np.float32))
        out[proc.name] = {"instructions": alone["instructions"], "latency_s": alone["mean_latency_s"],
                          "energy_j": alone["mean_energy_j"]}
    return out


def deployment_rows(tmp: Path, exits_per_processor: int | None = None, guarantee: float | None = None) -> list[dict]:
    """kws and cnn1d in the default mode (the limit checked on validation) and, with `guarantee`, also with
    --guarantee P (the limit certified for unseen data); a guarantee refused for want of validation data is a
    row with the refusal."""
    platform, rows = load_platform("psoc6"), []
    for name, target in (("kws", 0.75), ("cnn1d", 0.5)):
        path, data = workload(name)
        single = single_processor(path, data, platform, tmp)
        for mode in [None] + ([guarantee] if guarantee is not None else []):
            try:
                rows.append(deployment_row(name, target, path, data, single, tmp, exits_per_processor, mode))
            except EeccError as exc:
                rows.append({"model": name, "mode": f"guarantee {mode}", "refused": str(exc)})
    return rows


def deployment_row(name: str, target: float, path: Path, data: dict, single: dict, tmp: Path,
                   exits_per_processor: int | None, guarantee: float | None) -> dict:
    """One compile (int8, --search, --emulate, the CLI's 1 pt limit) against the original on each processor."""
    options = CompileOptions(target="psoc6", out=tmp / f"deploy-{name}-{guarantee}", search=True, emulate=True,
                             quantize="int8", progress=False, cache_dir=str(tmp / "cache"),
                             exits_per_processor=exits_per_processor,  # the CLI's default limit, 1 pt
                             search_options=SearchOptions(max_accuracy_drop=DEFAULT_MAX_ACC_DROP / 100,
                                                          guarantee=guarantee))
    manifest = compile_model(path, data, options)
    m = manifest["placement"]["metrics"]["measured"]
    best = min(("m0plus", "m4"), key=lambda p: single[p]["energy_j"])
    search = manifest["placement"]["metrics"]["search"]
    r = {"model": name, "mode": "default" if guarantee is None else f"guarantee {guarantee}",
         "target_ratio": target, "exits_per_processor": exits_per_processor or 1,
         "processors": manifest["placement"]["processors"], "exits": len(manifest["stages"]) - 1,
         "heads": [h["design"] for h in manifest.get("heads") or []],
         "accuracy": m["accuracy"], "exit_rates": m["exit_rates"], "validation_samples": len(data["y_val"]),
         "original_float_accuracy": m["original_accuracy"], "original_int8_accuracy": single["int8_accuracy"],
         "emulated_mean_energy_j": m.get("mean_energy_calibrated_j"),
         "emulated_mean_latency_s": m.get("mean_latency_calibrated_s"),
         "search_mean_energy_j": search.get("mean_energy_j"), "predicted_mean_energy_j": m["mean_energy_j"],
         "single": single, "best_single": best, "deployment_line": manifest["deployment"]["line"],
         "max_accuracy_drop_pt": DEFAULT_MAX_ACC_DROP, "search_accuracy": search.get("accuracy"),
         "guarantee": search.get("guarantee"), "thresholds": manifest["quantization"].get("thresholds"),
         "val_drop_pt": 100 * manifest["quantization"]["calibration_split"]["drop"],
         "test_drop_interval_pt": [100 * v for v in (m.get("intervals") or {}).get("accuracy_drop", [])] or None,
         "int8_logits_s": manifest.get("timings", {}).get("int8_logits_s"),
         "stages": [{k: st[k] for k in ("index", "target", "predicted_instructions", "emulated_instructions", "error")}
                    for st in (manifest.get("prediction_check") or {}).get("stages", [])]}
    r["energy_ratio"] = r["emulated_mean_energy_j"] / single[best]["energy_j"]
    r["accuracy_drop_pt"] = 100 * (single["int8_accuracy"] - r["accuracy"])
    r["emulated_over_search"] = r["emulated_mean_energy_j"] / r["search_mean_energy_j"]
    return r


def print_tables(summary: dict) -> None:
    console = Console(width=200)
    if summary.get("cost_model"):
        t = Table(title="cost model vs QEMU, each fixture held out of the fit (psoc6 stages)")
        for col in ("model", "format", "stage", "cpu", "MACs", "emulated instr.", "predicted", "error"):
            t.add_column(col, justify="left" if col in ("model", "format", "cpu") else "right")
        for r in summary["cost_model"]:
            t.add_row(r["model"], r["format"], str(r["stage"]), r["cpu"], f"{r['macs']:,}",
                      f"{r['emulated_instructions']:,}", f"{r['predicted_instructions']:,.0f}",
                      f"{100 * r['error']:+.1f} %")
        console.print(t)
        console.print(f"within ±15 %: {summary['within_15pct']}/{len(summary['cost_model'])} stages")
    if summary.get("deployments"):
        t = Table(title="psoc6 int8: chosen deployment vs the original on each single processor (emulated)")
        for col in ("model", "mode", "deployment", "acc %", "orig int8 acc %", "val drop pt", "test drop pt [95 %]",
                    "mean mJ", "M0+ alone mJ", "M4 alone mJ", "ratio to best", "target", "vs search"):
            t.add_column(col, justify="left" if col in ("model", "mode", "deployment") else "right")
        for r in summary["deployments"]:
            if "refused" in r:
                t.add_row(r["model"], r["mode"], "refused (see below)", *[""] * 10)
                continue
            iv = r.get("test_drop_interval_pt") or [float("nan")] * 2
            t.add_row(r["model"], r.get("mode", "default"), " → ".join(r["processors"]), f"{100 * r['accuracy']:.2f}",
                      f"{100 * r['original_int8_accuracy']:.2f}", f"{r['val_drop_pt']:+.2f}",
                      f"{r['accuracy_drop_pt']:+.2f} [{iv[0]:.2f}, {iv[1]:.2f}]", f"{1e3 * r['emulated_mean_energy_j']:.3f}",
                      f"{1e3 * r['single']['m0plus']['energy_j']:.3f}", f"{1e3 * r['single']['m4']['energy_j']:.3f}",
                      f"{r['energy_ratio']:.2f}x", f"≤ {r['target_ratio']}x",
                      f"{100 * (r['emulated_over_search'] - 1):+.1f} %")
        console.print(t)
        for r in summary["deployments"]:
            if "refused" in r:
                console.print(f"{r['model']} ({r['mode']}): {r['refused']}")
                continue
            console.print(f"{r['model']} ({r.get('mode', 'default')}): {r['deployment_line']}")
            for st in r["stages"]:  # where a mismatch with the search comes from
                if st["error"] is not None:
                    console.print(f"  stage {st['index']} on {st['target']}: predicted {st['predicted_instructions']:,.0f}"
                                  f" vs emulated {st['emulated_instructions']:,} instructions ({100 * st['error']:+.1f} %)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "energy.json"))
    ap.add_argument("--skip-cost-model", action="store_true")
    ap.add_argument("--skip-deployments", action="store_true")
    ap.add_argument("--exits-per-processor", type=int, default=None, help="as eecc compile (default: NA's one)")
    ap.add_argument("--guarantee", type=float, default=None, metavar="P",
                    help="also compile each model with --guarantee P (a row beside the default mode's)")
    args = ap.parse_args()
    t0, summary = time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cost_model:
            summary["cost_model"] = cost_model_rows(Path(tmp))
            summary["within_15pct"] = sum(abs(r["error"]) <= 0.15 for r in summary["cost_model"])
        if not args.skip_deployments:
            summary["deployments"] = deployment_rows(Path(tmp), args.exits_per_processor, args.guarantee)
    summary.update(wall_s=time.perf_counter() - t0, load_average=os.getloadavg(),
                   command="python bench/energy.py" + "".join(
                       f" {a}" for a, on in (("--skip-cost-model", args.skip_cost_model),
                                             ("--skip-deployments", args.skip_deployments)) if on)
                   + (f" --exits-per-processor {args.exits_per_processor}" if args.exits_per_processor else "")
                   + (f" --guarantee {args.guarantee}" if args.guarantee is not None else ""))
    print_tables(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
