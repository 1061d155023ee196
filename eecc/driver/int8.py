"""--quantize int8: the bundle's stages become int8 QDQ stages (quantised as one graph and cut again,
targets/int8_cascade.py, so a hand-off has the Q/DQ the search's int8 model gives it); they keep the thresholds
the search chose on the int8 model when those hold the limits on the int8 stages, else the thresholds are
searched again on the int8 stages' own confidences; the float stages stay beside them as
stage<k>.<proc>.float.onnx."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from eecc.bundle.manifest import Manifest, StageEntry
from eecc.errors import EeccError
from eecc.model import ir
from eecc.search.confidence import confidence
from eecc.search.policy import Objective, SplitScores, evaluate_policy
from eecc.search.thresholds import retune
from eecc.search.unit import PER_EXIT

PER_AXIS_OPSET = 13  # first opset whose QuantizeLinear/DequantizeLinear take `axis` (per-channel scales)
# How the int8 figures were measured, and how a host application must open the stage files to get them
# (runtime/sessions.py, nu12 F6): onnxruntime's default level fuses the QDQ nodes into QLinear kernels that
# saturate on x86 CPUs without AVX-VNNI.
ONNXRUNTIME_SESSION = {
    "graph_optimization_level": "ORT_ENABLE_BASIC",
    "why": "at ORT_ENABLE_EXTENDED and above (onnxruntime's default is ORT_ENABLE_ALL) the QDQ nodes become "
           "QLinearConv/QLinearMatMul, whose x86 kernels without AVX-VNNI saturate int16 pair sums and give "
           "other outputs than these stages define; eecc.runtime opens them at ORT_ENABLE_BASIC"}
FORMAT = ("onnxruntime QDQ, per-channel symmetric int8 weights, asymmetric int8 activations, MinMax "
          "calibration")


def quantize_bundle(tmp: Path, models, manifest: Manifest, splits, logits, options, test,
                    verify: Callable[[], dict], result=None, *, searched_int8: bool = False) -> list:
    """Replaces the stages in the staging folder `tmp`, records int8 in `manifest` (thresholds, files,
    `quantization`, the measured figures); returns the int8 stage models. `verify()` runs the stage
    files in `tmp` as `manifest` describes them on the test split. `result` (the SearchResult) gives
    the objective (unit, reference cost and accuracy, limits).

    `searched_int8`: the search chose the thresholds on the int8 model's logits (eecc/exits/int8.py), so
    they stay, and are checked on the int8 stages on the calibration split; they are searched again only
    when the stages break a limit there (or when the search saw float logits, e.g. after fine-tuning)."""
    from eecc.targets.int8_cascade import quantize_cascade
    from eecc.targets.quantize import CALIBRATION_SAMPLES, set_threshold, stage_logits

    if options.quantize != "int8":
        raise EeccError(f"compile: unknown --quantize '{options.quantize}'; the only scheme is int8")
    o, entries = options.search_options, manifest.stages
    t0 = time.perf_counter()
    calib_x = splits.train.rows(0, min(len(splits.train), CALIBRATION_SAMPLES))
    quantized = quantize_cascade(per_axis_opset(models), calib_x)
    on = splits.val if o.calibrate_on == "val" else splits.train

    def scores(stage_models, x, y) -> SplitScores:
        heads, final = stage_logits(stage_models, [e.to_json() for e in entries], x)
        n = len(final)  # a one-stage bundle (the original model alone) has no exit rows
        return SplitScores(conf=np.stack([confidence(h, o.metric) for h in heads]) if heads else np.zeros((0, n)),
                           pred=np.stack([h.argmax(-1) for h in heads]) if heads else np.zeros((0, n), np.int64),
                           final_pred=final.argmax(-1), y=np.asarray(y, dtype=np.int64))

    costs, objective = _objective(entries, logits, o, result)
    macs = np.array([e.exit_macs for e in entries], dtype=np.float64)
    reference_accuracy = objective.original_accuracy
    exits = list(range(len(entries) - 1))
    calibration = scores(quantized, on.rows(0, len(on)), on.y)
    kept = evaluate_policy(calibration, exits, tuple(e.threshold for e in entries[:-1]), costs)
    keep = searched_int8 and bool(objective.feasible(kept.accuracy, kept.mean_macs))
    choice = None if keep else retune(calibration, exits, costs, objective, o)
    th = tuple(e.threshold for e in entries[:-1]) if keep else choice.thresholds
    chosen = kept if keep else choice.selected
    quantized = [set_threshold(m, t) for m, t in zip(quantized[:-1], th)] + [quantized[-1]]
    float_th = [e.threshold for e in entries[:-1]]
    _swap_files(tmp, entries, quantized, th)
    manifest.placement.thresholds = [float(t) for t in th]
    if manifest.single_file:
        from eecc.bundle.writer import single_file_model

        ir.save(single_file_model(quantized), tmp / manifest.single_file)
    float_measured = manifest.placement.metrics["measured"]
    measured = verify()
    on_test = scores(quantized, *test)
    stale = evaluate_policy(on_test, exits, tuple(float_th), macs)  # int8 stages, float thresholds
    manifest.placement.metrics["measured"] = measured
    manifest.quantization = _record(
        calib_x, o, float_th, th, keep, searched_int8, chosen, objective, float_measured, measured, stale, on_test)
    manifest.quantization["seconds"] = time.perf_counter() - t0
    return quantized


def _objective(entries: list[StageEntry], logits, o, result) -> tuple[np.ndarray, Objective]:
    """The exit costs per position in the objective's unit and the search's Objective (reference cost and
    accuracy, weights, limits); `result` None (no search) means MACs against the float original."""
    unit = "macs" if result is None else result.objective
    field = PER_EXIT.get(unit, "exit_macs")
    costs = np.array([getattr(e, field) for e in entries], dtype=np.float64)
    reference = logits.final_macs if result is None else result.original.get("reference_cost", logits.final_macs)
    original = getattr(logits, f"final_{o.calibrate_on}_logits").argmax(-1) == getattr(logits, f"y_{o.calibrate_on}")
    reference_accuracy = float(original.mean()) if result is None else result.original["val_accuracy"]
    limit = o.max_mean_macs if unit != "macs" else None  # binds the thresholds in the other unit too (nu11 F9)
    return costs, Objective(reference, reference_accuracy, o.w_eff, o.w_acc, o.max_accuracy_drop,
                            o.max_mean_macs if unit == "macs" else None,
                            position_macs=tuple(float(e.exit_macs) for e in entries) if limit is not None else None,
                            limit_macs=limit)


def _record(calib_x, o, float_th, th, keep, searched_int8, chosen, objective, float_measured, measured, stale,
            on_test) -> dict:
    """manifest.quantization: the scheme, where the thresholds come from, the calibration split's figures and
    the test split's (float stages, int8 stages, int8 stages with the float thresholds)."""
    reference_accuracy = objective.original_accuracy
    return {
        "scheme": "int8", "format": FORMAT, "calibration_samples": int(len(calib_x)),
        "thresholds_calibrated_on": o.calibrate_on, "float_thresholds": float_th, "int8_thresholds": list(th),
        "thresholds": ("the search's, chosen on the int8 model" if keep else "searched again on the int8 stages"
                       + (" (the search's broke a limit on them)" if searched_int8 else "")),
        "calibration_split": {"accuracy": chosen.accuracy, "reference_accuracy": reference_accuracy,
                              "drop": reference_accuracy - chosen.accuracy,
                              "exit_rates": [float(r) for r in chosen.exit_rates],
                              "feasible": bool(objective.feasible(chosen.accuracy, chosen.mean_macs)),
                              "violations": objective.violations(chosen.accuracy, chosen.mean_macs)},
        "float": {k: float_measured[k] for k in ("accuracy", "mean_macs", "exit_rates")},
        "int8": {k: measured[k] for k in ("accuracy", "mean_macs", "exit_rates")},
        "int8_with_float_thresholds": {"accuracy": stale.accuracy, "mean_macs": stale.mean_macs,
                                       "exit_rates": [float(r) for r in stale.exit_rates]},
        "int8_final_accuracy": float((on_test.final_pred == on_test.y).mean()),
        "onnxruntime_session": ONNXRUNTIME_SESSION,
        "calibration_cost": float(objective.cost(chosen.accuracy, chosen.mean_macs))}


def _swap_files(tmp: Path, entries: list[StageEntry], quantized, thresholds) -> None:
    """stage<k>.onnx becomes the int8 stage; the float stage moves to stage<k>.float.onnx."""
    for entry, m, t in zip(entries, quantized, [*thresholds, None]):
        entry.float_file = entry.file.removesuffix(".onnx") + ".float.onnx"
        os.replace(tmp / entry.file, tmp / entry.float_file)
        ir.save(m, tmp / entry.file)
        entry.float_threshold, entry.threshold = entry.threshold, None if t is None else float(t)


def per_axis_opset(models: list) -> list:
    """The stages, those of an opset 11/12 model upgraded to opset 13 (onnx.version_converter, node
    annotations kept by name): the int8 stages' per-channel DequantizeLinear takes `axis`, which opset 11
    onnxruntime rejects. Raises EeccError naming the op the converter cannot upgrade."""
    import onnx.version_converter

    out = []
    for model in models:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is None or opset >= PER_AXIS_OPSET:
            out.append(model)
            continue
        try:
            upgraded = onnx.version_converter.convert_version(model, PER_AXIS_OPSET)
        except Exception as exc:  # the converter names the op it cannot upgrade
            raise EeccError(f"--quantize int8: the model is opset {opset} and upgrading its stages to "
                            f"{PER_AXIS_OPSET} failed ({str(exc).strip().splitlines()[0][:160]}); re-export it "
                            "with opset 13 or newer, or compile without --quantize") from None
        props = {n.name: list(n.metadata_props) for n in model.graph.node if n.name}
        for node in upgraded.graph.node:
            if node.name in props and not node.metadata_props:
                node.metadata_props.extend(props[node.name])
        out.append(upgraded)
    return out
