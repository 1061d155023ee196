"""The `eecc compile` flow: model + data + platform -> search -> stages -> a verified, deployable bundle.

compile_model reads as DESIGN.md's pipeline, one step per line; the passes themselves are listed in
eecc/driver/pipeline.py, the steps that change numerics after the search (fine-tuning, NACHOS, int8)
each end in the one shared threshold re-search (eecc.search.thresholds.retune).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from eecc.bundle.verify import verify_bundle
from eecc.bundle.manifest import CompileRecord, Manifest
from eecc.bundle.writer import (SINGLE_FILE, check_output, open_bundle, single_file_model, write_manifest,
                                write_stages)
from eecc.data.splits import Splits, require_test
from eecc.driver import pipeline
from eecc.driver.deployment import deployment_record, prediction_check
from eecc.errors import EeccError
from eecc.exits.heads import DEFAULT_BUDGET
from eecc.exits.run import plan_exits
from eecc.model import ir
from eecc.report.page import REPORT, threshold_maps, write_report
from eecc.search.run import SearchRun, search_model
from eecc.search.search import PlacementResult, SearchOptions
from eecc.search.types import ExitLogits
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
    quantize: str | None = None  # "int8": onnxruntime QDQ stages; the search runs on the int8 model's logits
    report: bool = False  # OUT/report.html + PNGs (the CLI turns it on; --no-report)
    executor: object = None  # eecc.driver.executor.Executor for training and scoring (default: in-process)
    finetune_epochs: int = 0  # > 0 fine-tunes backbone + chosen exits jointly (eecc/train/finetune.py)
    exits_per_processor: int | None = None  # None: one exit per processor, ≤ P-1 exits (two on one processor)
    trainer: str = "default"  # "nachos": the chosen exits learn a confidence the gates compare (eecc/train/nachos.py)
    head_set: str = "family"  # "blueprint": only the global-pool head per location (eecc/exits/family.py)
    head_budget: float = DEFAULT_BUDGET  # most MACs of one exit head, a share of the model's (eecc/exits/heads.py)


@dataclass
class Chosen:
    """The chosen placement after the search and any change of numerics (fine-tuning, NACHOS)."""

    graph: gs.Graph               # the model with the chosen exits as extra outputs
    placement: PlacementResult    # exits, processors, thresholds and test figures
    logits: ExitLogits            # what the thresholds were searched on (threshold heatmaps)
    metric: str                   # what the gates compare: a confidence metric, or "learned"
    finetune: dict | None = None  # manifest records
    nachos: dict | None = None


def compile_model(model: str | os.PathLike, data, options: CompileOptions) -> dict:
    """Writes the bundle at options.out (all or nothing) and returns its manifest."""
    t0 = time.perf_counter()
    protect = [model, *([data] if isinstance(data, (str, os.PathLike)) else []), *options.protect]
    check_options(options)
    check_output(options.out, force=options.force, protect=protect)  # a bad -o fails before any training
    platform = load_platform(options.target)
    plan = plan_exits(model, input_shape=options.input_shape,  # ir.load ─▶ annotate_cost ─▶ fuse_blocks ─▶ heads
                      budget=options.head_budget, data=data)
    if options.finetune_epochs > 0:  # an op fine-tuning cannot run is refused now, not after the search
        from eecc.train.finetune import check_supported

        check_supported(plan.graph)
    splits = plan.splits(data, options.scale)                  # the data, validated against the model
    test = _test_split(splits)                                 # before any training: fail early
    run = search_model(plan, splits, platform, options=options.search_options, full_search=options.search,
                       max_latency_s=options.max_latency_s, cache_dir=options.cache_dir,
                       progress=options.progress, executor=options.executor,  # features ─▶ heads ─▶ search
                       numeric=options.quantize or "fp32", exits_per_processor=options.exits_per_processor,
                       head_set=options.head_set)
    chosen = choose(run, splits, options)                      # insert_exits ─▶ [fine-tune | NACHOS]
    stages = lower(chosen, platform, options)                  # assign ─▶ split ─▶ [ensemble] ─▶ gates
    manifest = describe(stages, chosen, run, platform, options, Path(model).name)
    with open_bundle(options.out, force=options.force, protect=protect) as tmp:
        build_bundle(tmp, stages, chosen, run, splits, test, manifest, platform, options)  # files, measured
        manifest.timings = {**run.timings, **run.exits.timings, "total_s": time.perf_counter() - t0}
        if options.report:  # inside the staging folder, so a failed report leaves no bundle
            t_report = time.perf_counter()
            manifest.report = REPORT
            write_report(tmp, manifest.to_json(), progress=options.progress)
            manifest.timings["report_s"] = time.perf_counter() - t_report
        write_manifest(tmp, manifest)                          # once, when the bundle is complete
    return manifest.to_json()


def check_options(options: CompileOptions) -> None:
    """Combinations that cannot work, refused before anything runs."""
    decision = options.search_options.decision
    if decision == "ensemble" and options.quantize:  # int8 recalibration scores single exits only
        raise EeccError("--quantize int8 recalibrates thresholds on single exits; drop --quantize or use "
                        "--decision single")
    if options.finetune_epochs < 0:
        raise EeccError(f"--finetune-epochs must be ≥ 0, got {options.finetune_epochs}")
    if options.finetune_epochs and decision == "ensemble":  # the re-search scores single exits
        raise EeccError("--finetune-epochs re-searches thresholds on single exits; drop it or use --decision single")
    # the summary printed the search's certificate beside the re-searched thresholds it does not cover
    if options.finetune_epochs and options.search_options.guarantee is not None:
        raise EeccError("--guarantee certifies the search's thresholds; --finetune-epochs searches them again on the "
                        "fine-tuned model, uncertified: drop --finetune-epochs (or --guarantee)")
    if options.trainer not in ("default", "nachos"):
        raise EeccError(f"compile: unknown --trainer '{options.trainer}'; choose default or nachos")
    if options.trainer != "nachos":
        return
    clash = ("--decision ensemble" if decision == "ensemble" else "--quantize" if options.quantize
             else "--finetune-epochs" if options.finetune_epochs else None)
    if clash:
        raise EeccError(f"--trainer nachos gates on each exit's own learned confidence; it does not combine "
                        f"with {clash}: drop {clash} or use --trainer default")


def choose(run: SearchRun, splits: Splits, options: CompileOptions) -> Chosen:
    """The search's best placement as an exit graph; NACHOS or fine-tuning change its numerics, and its
    thresholds are searched again on the new numbers."""
    best, o = run.result.best, options.search_options
    if not best.exits:  # the original model alone on one processor won: nothing to train or tune
        (graph,) = pipeline.exits([]).run([run.plan.graph])
        return Chosen(graph, best, run.exits.logits, o.metric)
    if options.trainer == "nachos":
        from eecc.driver.nachos import nachos_exits

        graph, placement, record = nachos_exits(run, splits, best, options)
        return Chosen(graph, placement, run.exits.logits, "learned", nachos=record)
    heads = {h.spec.tensor: h for h in run.exits.heads()}
    (graph,) = pipeline.exits([heads[t] for t in best.exits]).run([run.plan.graph])
    if options.finetune_epochs <= 0:
        return Chosen(graph, best, run.chosen_logits(), o.metric)
    from eecc.train.finetune import FINETUNED, refit_placement

    graph, placement, logits, record = refit_placement(graph, splits, run.exits.logits, best, o,
                                                       epochs=options.finetune_epochs, original=run.result.original)
    return Chosen(graph, placement, logits, o.metric, finetune={**record, "model": FINETUNED})


def lower(chosen: Chosen, platform: Platform, options: CompileOptions) -> list[gs.Graph]:
    """The gated stage graphs of the chosen exit graph (the stages segment of the pipeline)."""
    p, o = chosen.placement, options.search_options
    return pipeline.stages(cuts=p.exits, processors=p.processors, thresholds=p.thresholds, metric=chosen.metric,
                           platform=platform, decision=o.decision, ensemble_weights=o.ensemble_weights,
                           exit_graph=chosen.graph, numeric=options.quantize or "fp32").run([chosen.graph])


def describe(stages, chosen: Chosen, run: SearchRun, platform: Platform, options: CompileOptions,
             model_name: str) -> Manifest:
    """The bundle's manifest before anything is written or measured (build_bundle completes it)."""
    o, p, search_json = options.search_options, chosen.placement, run.result.to_json()
    if chosen.finetune:  # what is built: the thresholds re-searched on the fine-tuned logits (nu13 F9)
        search_json["chosen"] = {"index": search_json["chosen"]["index"], **p.to_json()}
    manifest = Manifest.build(stages, platform=platform, thresholds=p.thresholds, metric=chosen.metric,
                              decision=o.decision, ensemble_weights=o.ensemble_weights, device=run.device,
                              numeric=options.quantize or "fp32",
                              placement_metrics={"search": search_json["chosen"]}, pareto=search_json["pareto"] or None)
    if options.scale is not None:  # uint8 data were multiplied by this; run/Cascade apply it again
        manifest.input["scale"] = float(options.scale)
    manifest.compile = CompileRecord(
        model=model_name, original=search_json["original"],
        # Stage outputs are logits (exits) or log-probabilities (a probability-output final stage).
        output={"kind": run.plan.blocks.head.output_kind, "normalized": list(run.plan.blocks.head.normalized)},
        heads=[{"tensor": h.spec.tensor, **h.spec.to_json()}  # each exit's head design
               for h in run.exits.heads() if h.spec.tensor in p.exits],
        search={k: search_json[k]
                for k in ("placements", "pruned", "baselines", "warnings", "options", "best_single")},
        mode="search" if options.search else "default-placement",
        # The report's threshold heatmaps need the candidate logits, which only exist here.
        threshold_grid=None if chosen.nachos or not p.exits else threshold_maps(
            chosen.logits, p.exits, p.thresholds, metric=chosen.metric, calibrate_on=o.calibrate_on),
        trainer="nachos" if chosen.nachos else "default", finetune=chosen.finetune, nachos=chosen.nachos,
        objective=search_json["objective"], deployment=deployment_record(search_json))
    return manifest


def build_bundle(tmp: Path, stages, chosen: Chosen, run: SearchRun, splits: Splits, test, manifest: Manifest,
                 platform: Platform, options: CompileOptions) -> None:
    """Stages, single file and fine-tuned model into the staging folder, the cascade measured on them;
    int8 and target code replace or add files after that. `manifest` records it all."""
    models = write_stages(tmp, stages, manifest)
    if options.single_file:
        ir.save(single_file_model(models), tmp / SINGLE_FILE)
        manifest.single_file = SINGLE_FILE
    if chosen.finetune:  # the fine-tuned model with its exits: the reference of the no-exit invariant
        ir.save(chosen.graph, tmp / chosen.finetune["model"])

    reference = run.logits or run.exits.logits  # the original as the search saw it (int8 after an int8 search)

    def verify() -> dict:
        return verify_bundle(tmp, manifest, test, run.result.original["accuracy"], reference.final_macs,
                             chosen.placement.test.exit_index,
                             original_pred=reference.final_test_logits.argmax(1))

    manifest.placement.metrics["measured"] = verify()
    if options.quantize:
        from eecc.driver.int8 import quantize_bundle

        searched = run.numeric == "int8" and not chosen.finetune  # its thresholds are already int8 ones
        models = quantize_bundle(tmp, models, manifest, splits, run.exits.logits, options, test, verify, run.result,
                                 searched_int8=searched)
    if options.codegen:
        _codegen(tmp, models, manifest, platform, test if options.emulate else None)
        _counted_estimates(manifest, run.plan.graph)
    compare_deployments(manifest, run, splits, test, platform, options)
    if manifest.prediction_check is not None:  # emulated: where it leaves the search's prediction, and its limits
        from eecc.driver.prediction_gap import prediction_gaps

        manifest.prediction_check.update(prediction_gaps(manifest.to_json(), options.max_latency_s))


def _counted_estimates(manifest: Manifest, graph: gs.Graph) -> None:
    """The search's warning that stages holding ops the cost model never measured are estimates, re-worded once
    --emulate counted every such stage under QEMU (nu15 F2: the advice to emulate was repeated after it was taken)."""
    from eecc.cost.coverage import counted_warning, unmeasured_ops

    held = [s for s in manifest.to_json()["stages"] if (s.get("predicted") or {}).get("unmeasured_ops")]
    if not held or any(s.get("exit_latency_calibrated_s") is None for s in held):
        return
    ops, search = unmeasured_ops(graph), manifest.compile.search
    said = f"the cost model never measured {', '.join(ops)}: "  # unmeasured_warning's start, whatever its advice
    search["warnings"] = [counted_warning(ops) if w.startswith(said) else w for w in search["warnings"]]


def compare_deployments(manifest: Manifest, run: SearchRun, splits: Splits, test, platform: Platform,
                        options: CompileOptions) -> None:
    """The deployment record's line becomes like for like: the bundle as written (int8 stages, emulated when
    counted) against the original model alone on the best single processor, quantised and counted the same
    way (eecc.driver.baseline); the search's float-network prediction stays as `predicted_line`."""
    dep = manifest.compile.deployment
    if not dep or dep.get("best_single") is None or dep.get("chosen") is None:
        return
    from eecc.driver.baseline import original_alone
    from eecc.driver.deployment import like_for_like
    from eecc.targets.quantize import CALIBRATION_SAMPLES

    single = {}
    if dep["chosen"]["exits"]:  # else the bundle itself is the original alone
        calib = splits.train.rows(0, min(len(splits.train), CALIBRATION_SAMPLES)) if options.quantize else None
        measured = manifest.placement.metrics["measured"]
        single = original_alone(run.plan.graph, dep["best_single"]["processors"][0], platform, test,
                                int8_calibration=calib, fp32_accuracy=measured["original_accuracy"],
                                emulate=measured.get("mean_energy_calibrated_j") is not None)  # as the bundle was
    rec = like_for_like(manifest.to_json(), single)
    network = "; int8 network" if run.numeric == "int8" else "; accuracy of the float network" if options.quantize else ""
    basis = "cost model" + network + ("; thresholds re-searched after fine-tuning" if manifest.compile.finetune else "")
    dep.update(predicted_line=f"search's prediction ({basis}): {dep['line']}", measured=rec, line=rec["line"])


def _test_split(splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    test = require_test(splits)
    return test.rows(0, len(test)), np.asarray(test.y)


def _codegen(tmp: Path, models, manifest: Manifest, platform: Platform, test) -> None:
    """TVM code per stage (eecc.targets.codegen), emulated when `test` is given; recorded in the manifest."""
    from eecc.targets.codegen import compile_stages

    inputs = None if test is None else test[0]
    updates = compile_stages(models, manifest.to_json(), platform, tmp, emulate_inputs=inputs)
    for entry, update in zip(manifest.stages, updates.get("stages", [])):
        entry.target_code = update
    manifest.target_code = {k: v for k, v in updates.items() if k != "stages"}
    stages, measured = [e.target_code for e in manifest.stages], manifest.placement.metrics["measured"]
    # every stage emulated and calibrated (exit_latency_calibrated_s is set on all when one is, the others at nominal
    # seconds: a mean of those is not an emulated figure, nu13 F10)
    if all(s.get("latency_calibrated_s") for s in stages):
        rates = measured["exit_rates"]
        measured["mean_latency_calibrated_s"] = sum(r * s["exit_latency_calibrated_s"] for r, s in zip(rates, stages))
        measured["mean_energy_calibrated_j"] = sum(r * s["exit_energy_calibrated_j"] for r, s in zip(rates, stages))
    manifest.prediction_check = prediction_check(manifest.to_json())
