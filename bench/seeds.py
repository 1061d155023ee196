"""Benchmarks against the seed papers: four workloads, one command each, JSON per workload, one table.

    python bench/seeds.py cnn1d|kws|resnet|efficientnet|all [--cache-dir DIR]
    python bench/seeds.py table            # BENCHMARKS.md tables from bench/results/*.json only

Per workload and per target: the full search (every placement, 13-value thresholds, <= 1 pt validation
accuracy drop, w_eff/w_acc 0.9/0.1); on the first target the chosen EENN is compiled into a bundle with
TVM codegen and QEMU emulation and its cascade is run on the test split (the EENN figures are that run);
the baselines (one global threshold, NACHOS greedy) use the chosen placement's exits and stages.
Search wall time is compared with one plain onnxruntime inference pass over train+val.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

from seeds_tables import write_markdown

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / "tests" / "fixtures" / "models"
MAX_ACC_DROP_PT = 1.0  # the CLI's default


def _fashion():
    from eecc.examples import datasets
    return datasets.load("fashion-mnist")


def _italy():
    from eecc.examples import datasets
    return datasets.load("italy-power-demand")


def _kws():
    from eecc.examples import example
    return example("kws")[1]


def _efficientnet():
    sys.path.insert(0, str(ROOT / "bench"))
    from make_efficientnet import load_data
    return load_data()


def _efficientnet_model() -> Path:
    path = ROOT / "bench" / "models" / "efficientnet_lite0.onnx"
    if not path.exists():  # 13.5 MB: regenerated, not committed
        raise SystemExit(f"{path} is missing: run python bench/make_efficientnet.py first "
                         "(pip install -e '.[bench]'; ~5 min on 2 cores)")
    return path


def _kws_model() -> Path:
    from eecc.examples import HERE
    return HERE / "kws.onnx"


# name -> (label, model, data loader, data name, targets: the first is compiled with codegen + emulation).
# psoc6 and rk3588 have two processors (one exit); rk3588-cuda has three, so two exits and a real
# multi-threshold search beside the baselines. "<target>@na" is the NA paper's setting: weights 0.9/0.1
# and no accuracy limit (search only).
WORKLOADS = {
    "cnn1d": ("1D CNN, UCR ItalyPowerDemand (the ECG-like path)", lambda: MODELS / "cnn1d.onnx", _italy,
              "italy-power-demand (sktime UCR)", ("psoc6", "psoc6@na")),
    "kws": ("DS-CNN keyword spotting, SYNTHETIC espeak-ng speech", _kws_model, _kws,
            "synthetic espeak-ng keywords (eecc.examples 'kws')", ("psoc6", "psoc6@na")),
    "resnet": ("ResNet, 8 residual blocks, Fashion-MNIST (the ResNet-152 analogue)", lambda: MODELS / "resnet.onnx",
               _fashion, "fashion-mnist (Debian dataset-fashion-mnist)",
               ("psoc6", "psoc6@na", "rk3588", "rk3588-cuda")),
    # 3.4 M fp32 parameters (13.5 MB) cannot fit psoc6's 2 MB flash: rk3588 only.
    "efficientnet": ("EfficientNet-Lite0, ImageNet-pretrained, fine-tuned on Fashion-MNIST 32x32",
                     _efficientnet_model, _efficientnet,
                     "fashion-mnist upsampled to 3x32x32", ("rk3588", "rk3588@na", "rk3588-cuda")),
}
ORDER = ("cnn1d", "kws", "resnet", "efficientnet")  # cheapest first

# NA paper (Sponner et al.) Table 2: published, NOT re-measured here.
PUBLISHED = [
    {"workload": "ARM DS-CNN, Speech Commands", "macs_pct": -59.67, "acc_pt": -12.96},
    {"workload": "1D-CNN, ECG", "macs_pct": -78.3, "acc_pt": -3.1},
    {"workload": "ResNet-152, CIFAR-10, validation calibration", "macs_pct": -7.75, "acc_pt": -0.32},
]


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), host.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "note": "2 cores shared with other engineers' jobs: wall times are upper bounds"}


def _policy(rates, accuracy, mean_macs, original: dict, stages: list[dict] | None) -> dict:
    out = {"accuracy": accuracy, "delta_pt": 100 * (accuracy - original["accuracy"]), "mean_macs": mean_macs,
           "delta_macs_pct": 100 * (mean_macs / original["macs"] - 1), "exit_rates": [float(r) for r in rates]}
    if stages:
        for key, field in (("mean_latency_s", "exit_latency_s"), ("mean_energy_j", "exit_energy_j"),
                           ("mean_latency_calibrated_s", "exit_latency_calibrated_s"),
                           ("mean_energy_calibrated_j", "exit_energy_calibrated_j")):
            vals = [s.get(field) for s in stages]
            out[key] = None if None in vals else float(sum(r * v for r, v in zip(rates, vals)))
    return out


def _stage_row(s: dict) -> dict:
    emu = s.get("emulation") or {}
    keep = ("index", "target", "kind", "threshold", "macs", "exit_macs", "params", "weight_bytes",
            "compute_s", "exit_latency_s", "exit_energy_j", "latency_calibrated_s", "exit_latency_calibrated_s",
            "exit_energy_calibrated_j")
    return {**{k: s.get(k) for k in keep}, "instructions_per_inference": emu.get("instructions"),
            "emulator": emu.get("emulator"), "emulated_samples": emu.get("samples"),
            "emulation_max_abs_error": emu.get("max_abs_error"), "emulation_skipped": emu.get("skipped")}


def _compiled(model: Path, splits, target: str, cache: str, out: Path) -> dict:
    from eecc.driver.compile import CompileOptions, compile_model
    from eecc.search.search import SearchOptions

    opts = CompileOptions(target=target, out=out, search=True, cache_dir=cache, force=True, emulate=True,
                          progress=False, search_options=SearchOptions(max_accuracy_drop=MAX_ACC_DROP_PT / 100))
    searched = _searched(model, splits, target, cache)  # cold search timings; compile then reuses the cache
    t0 = time.perf_counter()
    codegen_error = None
    try:
        man = compile_model(model, splits, opts)
    except Exception as exc:  # noqa: BLE001 - a TVM crash is a finding to record, then compile without codegen
        tb = traceback.extract_tb(exc.__traceback__)
        where = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb if "/work/" in f.filename or f is tb[-1]]
        codegen_error = {"error": f"{type(exc).__name__}: {exc}".strip(), "where": where}
        print(f"codegen failed ({codegen_error['error']}); compiling again without codegen", file=sys.stderr)
        man = compile_model(model, splits, replace(opts, codegen=False, emulate=False))
    wall = time.perf_counter() - t0
    measured, search = man["placement"]["metrics"]["measured"], man["placement"]["metrics"]["search"]
    original = {"accuracy": measured["original_accuracy"], "macs": measured["original_macs"]}
    stages = [_stage_row(s) for s in man["stages"]]
    t = man["timings"]
    eenn = _policy(measured["exit_rates"], measured["accuracy"], measured["mean_macs"], original, stages)
    eenn.update(oracle_macs=search["oracle_macs"], oracle_delta_macs_pct=100 * (search["oracle_macs"] / original["macs"] - 1),
                search_simulation={k: search[k] for k in ("accuracy", "mean_macs", "exit_rates")},
                agreement_with_search=measured["agreement_with_search"])
    base = {k: _policy(b["exit_rates"], b["accuracy"], b["mean_macs"], original, stages) | {"thresholds": b["thresholds"]}
            for k, b in man["search"]["baselines"].items()}
    return {"mode": "compile (search + TVM codegen + QEMU emulation + cascade run on test)",
            "original": original, "eenn": eenn, "baselines": base,
            "placement": {"exits": search["exits"], "processors": search["processors"],
                          "thresholds": search["thresholds"]},
            "placements_searched": len(man["search"]["placements"]), "placements_pruned": len(man["search"]["pruned"]),
            "stages": stages,
            "search_wall_s": searched["search_wall_s"], "cache": searched["cache"], "timings": searched["timings"],
            "compile_timings": t, "compile_wall_s": wall, "codegen_error": codegen_error,
            "same_choice_as_search": searched["placement"] == {"exits": search["exits"],
                                                                 "processors": search["processors"],
                                                                 "thresholds": search["thresholds"]}}


def _searched(model: Path, splits, target: str, cache: str, max_drop_pt: float | None = MAX_ACC_DROP_PT) -> dict:
    from eecc.search.run import search_model
    from eecc.search.search import SearchOptions
    from eecc.targets.platform import load_platform

    drop = None if max_drop_pt is None else max_drop_pt / 100
    run = search_model(model, splits, load_platform(target), cache_dir=cache,
                       options=SearchOptions(max_accuracy_drop=drop))
    res = run.result.to_json()
    original, ch = res["original"], res["chosen"]
    eenn = _policy(ch["exit_rates"], ch["accuracy"], ch["mean_macs"], original, None)
    eenn.update(oracle_macs=ch["oracle_macs"], oracle_delta_macs_pct=100 * (ch["oracle_macs"] / original["macs"] - 1),
                worst_case_latency_s=ch["latency_s"])
    base = {k: _policy(b["exit_rates"], b["accuracy"], b["mean_macs"], original, None) | {"thresholds": b["thresholds"]}
            for k, b in res["baselines"].items()}
    return {"mode": "search only (simulated cascade on the test split)", "original": original, "eenn": eenn,
            "baselines": base,
            "placement": {"exits": ch["exits"], "processors": ch["processors"], "thresholds": ch["thresholds"]},
            "placements_searched": len(res["placements"]), "placements_pruned": len(res["pruned"]),
            "search_wall_s": sum(run.timings.values()), "timings": {**run.timings, **run.exits.timings},
            "cache": "warm" if run.exits.warm else "cold"}


def _reference_pass(model: Path, splits, target: str, cache: str) -> float:
    """One plain onnxruntime pass over train+val (run_exits' reference pass on the warm cache: trains nothing)."""
    from eecc.exits.run import plan_exits, run_exits
    from eecc.search.placement import ModelCost, enumerate_placements, surviving_candidates
    from eecc.targets.platform import load_platform

    plan = plan_exits(model)
    placements = enumerate_placements(load_platform(target), plan.costs, ModelCost.from_blocks(plan.blocks))
    run = run_exits(plan, splits, candidates=surviving_candidates(placements, plan.costs), cache_dir=cache,
                    reference_pass=True)
    return float(run.timings["reference_pass_s"])


def run_workload(name: str, cache: str) -> dict:
    from eecc.exits.run import plan_exits
    from eecc.errors import EeccError

    label, model_fn, data_fn, data_name, targets = WORKLOADS[name]
    model = Path(model_fn())
    if not model.exists():
        raise EeccError(f"seeds: {name}: {model} is missing; "
                        + ("run `python bench/make_efficientnet.py`" if name == "efficientnet"
                           else "regenerate the model (tests/fixtures/make_*.py)"))
    t0 = time.perf_counter()
    record = {"workload": name, "label": label, "synthetic": name == "kws", "model": str(model.relative_to(ROOT)),
              "data": data_name, "machine_start": machine(), "max_acc_drop_pt": MAX_ACC_DROP_PT}
    data = data_fn()
    splits = plan_exits(model).splits(data)
    record["samples"] = {k: int(len(data[f"y_{k}"])) for k in ("train", "val", "test")}
    del data
    record["targets"] = {}
    with tempfile.TemporaryDirectory(prefix=f"eecc-seeds-{name}-") as tmp:
        for i, target in enumerate(targets):
            print(f"[{name}] {target}: {'compile' if i == 0 else 'search'} ...", file=sys.stderr, flush=True)
            if i == 0:
                record["targets"][target] = _compiled(model, splits, target, cache, Path(tmp) / target)
            else:
                platform, _, variant = target.partition("@")
                record["targets"][target] = _searched(model, splits, platform, cache,
                                                      None if variant == "na" else MAX_ACC_DROP_PT)
    print(f"[{name}] reference onnxruntime pass over train+val ...", file=sys.stderr, flush=True)
    ref = _reference_pass(model, splits, targets[0], cache)
    record["reference_pass_s"] = ref
    for r in record["targets"].values():
        r["search_over_reference_pass"] = r["search_wall_s"] / ref
    record["machine_end"] = machine()
    record["wall_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    os.replace(tmp_out, out)
    print(f"[{name}] wrote {out.relative_to(ROOT)} in {record['wall_s']:.0f} s", file=sys.stderr)
    return record



# ---- BENCHMARKS.md: tables generated from bench/results/*.json only ---------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=[*ORDER, "all", "table"])
    ap.add_argument("--cache-dir", default=str(ROOT / ".eecc-cache" / "seeds"),
                    help="one cache shared by every run: features and trained heads are reused")
    args = ap.parse_args(argv)
    from eecc.errors import EeccError

    names = ORDER if args.workload == "all" else () if args.workload == "table" else (args.workload,)
    failed = []
    for name in names:
        try:
            run_workload(name, args.cache_dir)
        except EeccError as exc:
            print(f"[{name}] not run: {exc}", file=sys.stderr)
            failed.append(name)
    write_markdown(RESULTS, ROOT / "BENCHMARKS.md", PUBLISHED, ORDER)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
