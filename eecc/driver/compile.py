"""The `eecc compile` flow: model + data + platform -> search -> stages -> a verified, deployable bundle."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from eecc.model import ir
from eecc.bundle.writer import (SINGLE_FILE, build_manifest, check_output, make_stages, open_bundle,
                                single_file_model)
from eecc.data.splits import Splits
from eecc.errors import EeccError
from eecc.exits.run import plan_exits
from eecc.passes.insert_exits import insert_exits
from eecc.report.page import REPORT, threshold_maps, write_report
from eecc.runtime.bundle import MANIFEST
from eecc.runtime.cascade import Cascade
from eecc.search.search import SearchOptions, search
from eecc.search.run import SearchRun, as_splits, search_model
from eecc.targets.platform import Platform, load_platform


@dataclass
class CompileOptions:
    target: str
    out: Path
    search: bool = False
    search_options: SearchOptions = field(default_factory=SearchOptions)
    max_latency_s: float | None = None
    input_shape: Sequence[int] | None = None
    scale: float | None = None
    cache_dir: str | None = None
    force: bool = False
    single_file: bool = False
    codegen: bool = True
    emulate: bool = False
    progress: bool = True
    protect: Sequence[str | os.PathLike] = ()
    quantize: str | None = None  # "int8": onnxruntime QDQ stages, thresholds recalibrated on them
    report: bool = False  # OUT/report.html + PNGs (the CLI turns it on; --no-report)
    executor: object = None  # eecc.executor.Executor for training and scoring (default: in-process)
    finetune_epochs: int = 0  # > 0 fine-tunes backbone + chosen exits jointly (eecc/train/finetune.py)
    trainer: str = "default"  # "nachos": the chosen exits learn a confidence the gates compare (eecc/train/nachos.py)


def compile_model(model: str | os.PathLike, data, options: CompileOptions) -> dict:
    """Writes the bundle at options.out (all or nothing) and returns its manifest."""
    t0 = time.perf_counter()
    decision, weights = options.search_options.decision, options.search_options.ensemble_weights
    if decision == "ensemble" and options.quantize:  # int8 recalibration scores single exits only
        raise EeccError("--quantize int8 recalibrates thresholds on single exits; drop --quantize or use "
                        "--decision single")
    if options.finetune_epochs < 0:
        raise EeccError(f"--finetune-epochs must be ≥ 0, got {options.finetune_epochs}")
    if options.finetune_epochs and decision == "ensemble":  # the re-search scores single exits
        raise EeccError("--finetune-epochs re-searches thresholds on single exits; drop it or use --decision single")
    _check_trainer(options, decision)
    # A bad -o must fail before any training, not when the bundle is written.
    protect = [model, *([data] if isinstance(data, (str, os.PathLike)) else []), *options.protect]
    check_output(options.out, force=options.force, protect=protect)
    platform = load_platform(options.target)
    plan = plan_exits(model, input_shape=options.input_shape)
    splits = as_splits(data, plan, options.scale)
    test = _test_split(splits)  # before any training: fail early
    run = search_model(plan, splits, platform, options=options.search_options, full_search=options.search,
                       max_latency_s=options.max_latency_s, cache_dir=options.cache_dir,
                       progress=options.progress, executor=options.executor)
    chosen = run.result.best
    heads = {h.spec.tensor: h for h in run.exits.heads()}
    graph = insert_exits(run.plan.graph, heads=[heads[t] for t in chosen.exits])
    # Joint fine-tuning: the stages, thresholds and figures come from the fine-tuned graph.
    logits, finetune = run.exits.logits, None
    if options.finetune_epochs > 0:
        from eecc.train.finetune import FINETUNED, refit_placement
        graph, chosen, logits, finetune = refit_placement(
            graph, splits, logits, chosen, options.search_options, epochs=options.finetune_epochs,
            original=run.result.original)
        finetune["model"] = FINETUNED
    metric, nachos = options.search_options.metric, None
    if options.trainer == "nachos":
        graph, chosen, nachos = _nachos(run, splits, chosen, options)
        metric = "learned"
        stages = _nachos_stages(graph, chosen, platform)
    else:
        stages = make_stages(graph, cuts=chosen.exits, processors=chosen.processors, thresholds=chosen.thresholds,
                             metric=metric, platform=platform, decision=decision, ensemble_weights=weights)
    search_json = run.result.to_json()
    manifest = build_manifest(
        stages, platform=platform, thresholds=chosen.thresholds, metric=metric, decision=decision,
        ensemble_weights=weights,
        placement_metrics={"search": search_json["chosen"]}, pareto=search_json["pareto"] or None,
        extra={"model": Path(model).name, "original": search_json["original"],
               "search": {k: search_json[k] for k in ("placements", "pruned", "baselines", "warnings", "options")},
               "mode": "search" if options.search else "default-placement",
               # The report's threshold heatmaps need the candidate logits, which only exist here.
               "threshold_grid": None if nachos else threshold_maps(
                   logits, chosen.exits, chosen.thresholds, metric=metric,
                   calibrate_on=options.search_options.calibrate_on),
               **({"finetune": finetune} if finetune else {}),
               **({"trainer": "nachos", "nachos": nachos} if nachos else {"trainer": "default"})})
    with open_bundle(options.out, force=options.force, protect=protect) as tmp:
        models = [ir.to_model(s) for s in stages]
        for entry, stage_model in zip(manifest["stages"], models):
            ir.save(stage_model, tmp / entry["file"])
        if options.single_file:
            ir.save(single_file_model(models), tmp / SINGLE_FILE)
            manifest["single_file"] = SINGLE_FILE
        if finetune:  # the fine-tuned model with its exits: the reference of the no-exit invariant
            ir.save(graph, tmp / finetune["model"])
        _write(tmp, manifest)
        manifest["placement"]["metrics"]["measured"] = verify_bundle(tmp, test, run, chosen)
        if options.quantize:
            models = _quantize(tmp, models, manifest, splits, run, chosen, options, test)
        if options.codegen:
            _codegen(tmp, models, manifest, platform, test if options.emulate else None)
        manifest["timings"] = {**run.timings, **run.exits.timings, "total_s": time.perf_counter() - t0}
        if options.report:  # inside the staging folder, so a failed report leaves no bundle
            t_report = time.perf_counter()
            manifest["report"] = REPORT
            write_report(tmp, manifest, progress=options.progress)
            manifest["timings"]["report_s"] = time.perf_counter() - t_report
        _write(tmp, manifest)
    return manifest


def verify_bundle(path: Path, test, run: SearchRun, chosen) -> dict:
    """Run the written cascade on the test split: the figures a user gets, and agreement with the search."""
    x, y = test
    t0 = time.perf_counter()
    res = Cascade(path).run(x)
    wall = time.perf_counter() - t0
    stages = json.loads((path / MANIFEST).read_text())["stages"]
    rates = np.bincount(res.exit_stage, minlength=len(stages)) / max(len(y), 1)
    simulated = chosen.test
    return {
        "split": "test", "samples": int(len(y)),
        "accuracy": float((res.predictions == y).mean()),
        "original_accuracy": float(run.result.original["accuracy"]),
        "mean_macs": float(res.macs.mean()), "original_macs": int(run.exits.logits.final_macs),
        "exit_rates": [float(r) for r in rates],
        "mean_latency_s": float(sum(r * s["exit_latency_s"] for r, s in zip(rates, stages))),
        "mean_energy_j": float(sum(r * s["exit_energy_j"] for r, s in zip(rates, stages))),
        # The search scores heads on cached fp16 features; the cascade runs them in fp32 on the real graph.
        "agreement_with_search": float((res.exit_stage == simulated.exit_index).mean()),
        "host_wall_s": wall,
    }


def _test_split(splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    if splits.test is None:
        raise EeccError("compile: the data has no test split (x_test, y_test); eecc reports the cascade's "
                        "accuracy on held-out test data only: add x_test and y_test")
    return splits.test.rows(0, len(splits.test)), np.asarray(splits.test.y)


# ---- NACHOS (--trainer nachos) ---------------------------------------------------------------------

def _check_trainer(options: CompileOptions, decision: str) -> None:
    if options.trainer not in ("default", "nachos"):
        raise EeccError(f"compile: unknown --trainer '{options.trainer}'; choose default or nachos")
    if options.trainer != "nachos":
        return
    clash = ("--decision ensemble" if decision == "ensemble" else "--quantize" if options.quantize
             else "--finetune-epochs" if options.finetune_epochs else None)
    if clash:
        raise EeccError(f"--trainer nachos gates on each exit's own learned confidence; it does not combine "
                        f"with {clash}: drop {clash} or use --trainer default")


def _nachos(run: SearchRun, splits: Splits, chosen, options: CompileOptions):
    """Train NACHOS exits on the chosen placement's cached features and search ε on their confidences.

    Returns (graph with the NACHOS heads and confidence outputs, the re-searched placement, manifest record).
    """
    from dataclasses import asdict, replace

    from eecc.data import cache as fcache
    from eecc.search.policy import position_costs
    from eecc.search.types import ExitLogits
    from eecc.train.nachos import NachosConfig, export_nachos, predict_nachos, train_nachos

    t0 = time.perf_counter()
    config, o, logits = NachosConfig(), options.search_options, run.exits.logits
    specs_by = {h.spec.tensor: h.spec for h in run.exits.heads()}
    specs = [specs_by[t] for t in chosen.exits]
    idx = [logits.tensors.index(t) for t in chosen.exits]
    root = options.cache_dir or fcache.default_root()
    fc = fcache.FeatureCache(root, run.plan.graph, specs)
    feats = {name: fc.fill(split) for name, split in splits.items()}  # warm: run_exits filled them
    sub = ExitLogits(tensors=list(chosen.exits), exit_macs=logits.exit_macs[idx], final_macs=logits.final_macs,
                     val_logits=logits.val_logits[idx], test_logits=logits.test_logits[idx],
                     final_val_logits=logits.final_val_logits, final_test_logits=logits.final_test_logits,
                     y_val=logits.y_val, y_test=logits.y_test, head_macs=logits.head_macs[idx])
    trained = train_nachos(specs, [feats["train"].features(s) for s in specs], splits.train.y,
                           feats["train"].final_logits(), position_costs(sub, range(len(idx))), sub.final_macs,
                           budget_macs=o.max_mean_macs if o.max_mean_macs and o.max_mean_macs < sub.final_macs
                           else None, config=config)
    out = {n: predict_nachos(trained.module, [feats[n].features(s) for s in specs])
           for n in {"val", "test", o.calibrate_on}}
    learned = ExitLogits(tensors=sub.tensors, exit_macs=sub.exit_macs, final_macs=sub.final_macs,
                         val_logits=out["val"][0], test_logits=out["test"][0],
                         final_val_logits=sub.final_val_logits, final_test_logits=sub.final_test_logits,
                         y_val=sub.y_val, y_test=sub.y_test, head_macs=sub.head_macs,
                         **({"train_logits": out["train"][0], "final_train_logits": feats["train"].final_logits(),
                             "y_train": np.asarray(splits.train.y)} if "train" in out else {}))
    placement = [p for p in run.placements if p.exits == tuple(chosen.exits)
                 and p.processors == tuple(chosen.processors)]
    result = search(learned, placements=placement, options=replace(o, metric="learned"),
                    confidences={n: c for n, (_, c) in out.items()})
    heads, branches = export_nachos(trained.module)
    graph = insert_exits(run.plan.graph, heads=heads, confidences=branches)
    record = {"config": asdict(config), "budget_macs": trained.budget_macs, "history": trained.history,
              "search": result.to_json()["chosen"], "train_s": time.perf_counter() - t0}
    return graph, result.best, record


def _nachos_stages(graph, chosen, platform: Platform) -> list:
    """make_stages for learned gates: the split drops the heads' confidence outputs, attach_confidence
    puts exit k's back before its gate compares it with ε."""
    from eecc.passes.assign_targets import assign_targets
    from eecc.passes.insert_gates import attach_confidence, insert_gates
    from eecc.passes.split_by_target import split_by_target

    stages = split_by_target(assign_targets(graph, cuts=chosen.exits, processors=chosen.processors,
                                            platform=platform), platform=platform)
    return [insert_gates(attach_confidence(s, graph), threshold=float(t), metric="learned")
            for s, t in zip(stages, chosen.thresholds)] + [stages[-1]]


# ---- int8 stages ------------------------------------------------------------------------------------

def _quantize(tmp: Path, models, manifest: dict, splits: Splits, run: SearchRun, chosen, options: CompileOptions,
              test) -> list:
    """Replace the bundle's stages by int8 QDQ stages whose thresholds are searched again on the int8
    stages' own confidences; the float stages stay beside them as stage<k>.<proc>.float.onnx."""
    from eecc.search.confidence import confidence
    from eecc.search.policy import Objective, SplitScores, evaluate_policy
    from eecc.search.thresholds import NEVER, search_thresholds
    from eecc.targets.quantize import CALIBRATION_SAMPLES, quantize_stages, set_threshold, stage_logits

    if options.quantize != "int8":
        raise EeccError(f"compile: unknown --quantize '{options.quantize}'; the only scheme is int8")
    o, metric, entries = options.search_options, options.search_options.metric, manifest["stages"]
    t0 = time.perf_counter()
    calib_x = splits.train.rows(0, min(len(splits.train), CALIBRATION_SAMPLES))
    quantized = quantize_stages(models, calib_x)
    on = splits.val if o.calibrate_on == "val" else splits.train

    def split_of(stage_models, x, y):
        heads, final = stage_logits(stage_models, entries, x)
        return SplitScores(conf=np.stack([confidence(h, metric) for h in heads]),
                           pred=np.stack([h.argmax(-1) for h in heads]), final_pred=final.argmax(-1),
                           y=np.asarray(y, dtype=np.int64))

    calib = split_of(quantized, on.rows(0, len(on)), on.y)
    logits, costs = run.exits.logits, np.array([e["exit_macs"] for e in entries], dtype=np.float64)
    original = getattr(logits, f"final_{o.calibrate_on}_logits").argmax(-1) == getattr(logits, f"y_{o.calibrate_on}")
    objective = Objective(logits.final_macs, float(original.mean()), o.w_eff, o.w_acc, o.max_accuracy_drop,
                          o.max_mean_macs)
    exits = list(range(len(entries) - 1))
    choice = search_thresholds(calib, exits, costs, objective, method=o.method, fine=o.fine)
    th = choice.thresholds
    if o.calibrate_on == "train" and o.correction != 1.0:
        th = tuple(min(t * o.correction, NEVER) if t < NEVER else t for t in th)
    quantized = [set_threshold(m, t) for m, t in zip(quantized[:-1], th)] + [quantized[-1]]
    float_th = [e["threshold"] for e in entries[:-1]]
    for entry, m, t in zip(entries, quantized, [*th, None]):
        entry["float_file"] = entry["file"].removesuffix(".onnx") + ".float.onnx"
        os.replace(tmp / entry["file"], tmp / entry["float_file"])
        ir.save(m, tmp / entry["file"])
        entry.update(threshold=None if t is None else float(t), float_threshold=entry["threshold"])
    manifest["placement"]["thresholds"] = [float(t) for t in th]
    if manifest.get("single_file"):
        ir.save(single_file_model(quantized), tmp / manifest["single_file"])
    float_measured = manifest["placement"]["metrics"]["measured"]
    _write(tmp, manifest)
    measured = verify_bundle(tmp, test, run, chosen)
    on_test = split_of(quantized, *test)
    stale = evaluate_policy(on_test, exits, tuple(float_th), costs)  # int8 stages, float thresholds
    manifest["placement"]["metrics"]["measured"] = measured
    manifest["quantization"] = {
        "scheme": "int8", "format": "onnxruntime QDQ, per-channel symmetric int8 weights, asymmetric int8 "
                                    "activations, MinMax calibration", "calibration_samples": int(len(calib_x)),
        "thresholds_calibrated_on": o.calibrate_on, "float_thresholds": float_th, "int8_thresholds": list(th),
        "float": {k: float_measured[k] for k in ("accuracy", "mean_macs", "exit_rates")},
        "int8": {k: measured[k] for k in ("accuracy", "mean_macs", "exit_rates")},
        "int8_with_float_thresholds": {"accuracy": stale.accuracy, "mean_macs": stale.mean_macs,
                                       "exit_rates": [float(r) for r in stale.exit_rates]},
        "int8_final_accuracy": float((on_test.final_pred == on_test.y).mean()),
        "calibration_cost": choice.cost, "seconds": time.perf_counter() - t0}
    _write(tmp, manifest)
    return quantized


def _codegen(tmp: Path, models, manifest: dict, platform: Platform, test) -> None:
    from eecc.targets.codegen import compile_stages

    inputs = None if test is None else test[0]
    updates = compile_stages(models, manifest, platform, tmp, emulate_inputs=inputs)
    for entry, update in zip(manifest["stages"], updates.get("stages", [])):
        entry.update(update)
    manifest.update({k: v for k, v in updates.items() if k != "stages"})
    stages, measured = manifest["stages"], manifest["placement"]["metrics"]["measured"]
    if all(s.get("exit_latency_calibrated_s") is not None for s in stages):  # every stage was emulated
        rates = measured["exit_rates"]
        measured["mean_latency_calibrated_s"] = sum(r * s["exit_latency_calibrated_s"] for r, s in zip(rates, stages))
        measured["mean_energy_calibrated_j"] = sum(r * s["exit_energy_calibrated_j"] for r, s in zip(rates, stages))


def _write(tmp: Path, manifest: dict) -> None:
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=ir.json_default) + "\n")
