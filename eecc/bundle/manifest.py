"""manifest.json as dataclasses: built from a compile's results, serialised once when the bundle is done.

The schema version is the bundle format's (`format` "eecc-bundle", `version` runtime.bundle.VERSION):
eecc/runtime/bundle.py reads the same JSON with the standard library only. Field order in the JSON is
the order below; optional sections (ensemble weights, int8 files, target code, fine-tuning, NACHOS,
quantization, codegen, report) appear only when the compile made them.
"""

from __future__ import annotations

import platform as host_platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from eecc import __version__
from eecc.model.stage_cost import stage_cost
from eecc.runtime.bundle import FORMAT, VERSION
from eecc.search.confidence import exit_rule
from eecc.targets.platform import Platform, estimate_exits

SCHEMA_VERSION = VERSION
ENERGY_MODEL = ("per sample leaving at stage k: active power x compute time of the stages run (cost model: "
                "predicted instructions x CPI / clock_hz; else MACs/(MAC/s)), plus idle power of the placement's "
                "other processors (the first, where the input arrives, always among them) for the rest of its "
                "latency, transfers included; links cost latency (latency_s + "
                "8*bytes/bandwidth) and their energy_j_per_byte when the platform states one; a sample leaving on "
                "another processor than the first sends its logits back there")
_DEPS = ("numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "networkx", "pymoo", "apache-tvm", "torch")


@dataclass
class StageEntry:
    index: int
    file: str                    # stage<k>.<processor>.onnx
    target: str                  # processor name
    kind: str                    # processor kind (cortex-m4, mali, ...)
    inputs: list[dict]           # {name, shape, dtype}, the stage input first
    outputs: dict                # handoff, logits, exit, confidence [, members]: tensor names
    threshold: float | None      # None on the last stage
    cost: dict                   # eecc.model.stage_cost.StageCost: macs, head_macs, params, bytes ...
    exit_macs: int               # per sample leaving here: every stage up to this one
    compute_s: float
    exit_latency_s: float
    exit_energy_j: float
    ensemble_weights: dict | None = None   # decision "ensemble": {mode, weights}
    float_file: str | None = None          # int8: the float stage kept beside the int8 one
    float_threshold: float | None = None
    target_code: dict = field(default_factory=dict)  # eecc.targets.codegen: codegen, emulation, calibrated figures
    predicted: dict | None = None          # eecc.cost: the cost model's instructions and seconds for this stage

    def to_json(self) -> dict[str, Any]:
        out = {"index": self.index, "file": self.file, "target": self.target, "kind": self.kind,
               "inputs": self.inputs, "outputs": self.outputs, "threshold": self.threshold}
        if self.ensemble_weights is not None:
            out["ensemble_weights"] = self.ensemble_weights
        out.update(self.cost)
        out.update(backbone_macs=self.cost["macs"] - self.cost["head_macs"], exit_macs=self.exit_macs,
                   compute_s=self.compute_s, exit_latency_s=self.exit_latency_s, exit_energy_j=self.exit_energy_j)
        if self.predicted:
            out["predicted"] = self.predicted
        if self.float_file is not None:
            out.update(float_file=self.float_file, float_threshold=self.float_threshold)
        return {**out, **self.target_code}


@dataclass
class PlacementRecord:
    processors: list[str]
    cuts: list[str]
    thresholds: list[float]
    worst_case_macs: int
    worst_case_latency_s: float
    worst_case_energy_j: float
    metrics: dict                # "search": the search's figures; "measured": the written cascade's


@dataclass
class CompileRecord:
    """What `eecc compile` adds beyond the stages: the search, the original model, the trainer."""

    model: str
    original: dict
    output: dict                 # the original model output: kind (BlockGraph.head.output_kind), normalized
    heads: list[dict]            # each chosen exit's head design (HeadSpec.to_json)
    search: dict
    mode: str                    # "search" | "default-placement"
    threshold_grid: dict | None  # the report's threshold heatmaps (None with NACHOS)
    trainer: str = "default"
    finetune: dict | None = None
    nachos: dict | None = None
    objective: str | None = None      # energy | latency | macs: what the search's scalar cost counted
    deployment: dict | None = None    # eecc.driver.deployment: the chosen deployment vs the best single processor

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "original": self.original, "output": self.output, "heads": self.heads,
                **({"objective": self.objective} if self.objective else {}),
                **({"deployment": self.deployment} if self.deployment else {}),
                "search": self.search, "mode": self.mode,
                "threshold_grid": self.threshold_grid, **({"finetune": self.finetune} if self.finetune else {}),
                "trainer": self.trainer, **({"nachos": self.nachos} if self.nachos else {})}


@dataclass
class Manifest:
    input: dict
    num_classes: int | None
    original_macs: int
    confidence_metric: str
    decision: str                # "single" | "ensemble"
    platform: dict
    stages: list[StageEntry]
    placement: PlacementRecord
    pareto: list | None = None
    single_file: str | None = None
    versions: dict = field(default_factory=lambda: versions())
    compile: CompileRecord | None = None
    quantization: dict | None = None
    target_code: dict = field(default_factory=dict)  # eecc.targets.codegen's bundle-level records ("codegen")
    timings: dict | None = None
    report: str | None = None
    prediction_check: dict | None = None  # eecc.driver.deployment: cost model vs emulation (after --emulate)
    cost_model: dict | None = None        # eecc.cost.segments.DeviceCost.to_json, when stage seconds came from it
    energy_model: str = ENERGY_MODEL
    format: str = FORMAT
    version: int = SCHEMA_VERSION

    @classmethod
    def build(cls, stages: Sequence[gs.Graph], *, platform: Platform, thresholds: Sequence[float],
              metric: str = "max_softmax", placement_metrics: dict | None = None, pareto: list | None = None,
              decision: str = "single", ensemble_weights: str | None = None, device=None,
              numeric: str = "fp32") -> Manifest:
        """The manifest of the gated stage graphs (eecc.driver.pipeline.stages), before measurement. With
        `device` (eecc.cost.segments.DeviceCost) stage seconds come from the cost model, else nominal MAC/s;
        `numeric` ("int8" with --quantize int8) sizes each stage's weights and activations as it is built."""
        entries = stage_entries(stages, platform, thresholds, decision, ensemble_weights, device, numeric)
        final = stages[-1].outputs[0]
        placement = PlacementRecord(
            processors=[e.target for e in entries], cuts=[e.outputs["handoff"] for e in entries[:-1]],
            thresholds=[float(t) for t in thresholds], worst_case_macs=entries[-1].exit_macs,
            worst_case_latency_s=entries[-1].exit_latency_s,
            worst_case_energy_j=max(e.exit_energy_j for e in entries), metrics=dict(placement_metrics or {}))
        return cls(input=_tensor_spec(stages[0].inputs[0]),
                   num_classes=int(final.shape[-1]) if final.shape else None,
                   original_macs=sum(e.cost["macs"] - e.cost["head_macs"] for e in entries),
                   confidence_metric=metric, decision=decision, platform=platform.to_dict(), stages=entries,
                   placement=placement, pareto=pareto, cost_model=None if device is None else device.to_json())

    def to_json(self) -> dict[str, Any]:
        p = self.placement
        out = {"format": self.format, "version": self.version, "input": self.input, "num_classes": self.num_classes,
               "original_macs": self.original_macs, "confidence_metric": self.confidence_metric,
               # ensemble: stage k's exit logits are sum_i w_i z_i over exits 0..k (w = the stage's weights)
               "decision": self.decision, "platform": self.platform, "energy_model": self.energy_model,
               "cost_model": self.cost_model,
               "stages": [{**s.to_json(), **({"gate": exit_rule(self.confidence_metric, s.threshold)}
                                             if s.threshold is not None else {})} for s in self.stages],
               "placement": {"processors": p.processors, "cuts": p.cuts, "thresholds": p.thresholds,
                             "worst_case_macs": p.worst_case_macs, "worst_case_latency_s": p.worst_case_latency_s,
                             "worst_case_energy_j": p.worst_case_energy_j, "metrics": p.metrics},
               "pareto": self.pareto, "single_file": self.single_file, "versions": self.versions,
               **(self.compile.to_json() if self.compile else {})}
        out.update({"quantization": self.quantization} if self.quantization is not None else {})
        out.update(self.target_code)
        optional = {"prediction_check": self.prediction_check, "timings": self.timings, "report": self.report}
        return {**out, **{k: v for k, v in optional.items() if v is not None}}


def stage_entries(stages: Sequence[gs.Graph], platform: Platform, thresholds: Sequence[float],
                  decision: str = "single", ensemble_weights: str | None = None, device=None,
                  numeric: str = "fp32") -> list[StageEntry]:
    """One entry per stage graph: files, tensor names, costs sized as `numeric` builds the stage (the sizes
    split_by_target checked) and the platform's estimates (stage seconds from `device`, an
    eecc.cost.segments.DeviceCost, when given)."""
    from eecc.exits.ensemble import DEFAULT_WEIGHTS, ensemble_weights as weights_of

    costs = [stage_cost(s, numeric) for s in stages]
    procs = [s.name.split(".", 1)[1] for s in stages]
    predicted = [None] * len(stages)
    if device is not None:  # the measured cost model on each stage's own graph (eecc/cost)
        from eecc.cost.features import graph_features
        first = stages[0].inputs[0].name  # the model's own input (quantised in full: no ReLU zeros)
        predicted = [_labelled(device.predict(p, graph_features(s, model_input=first), c.macs), s)
                     for s, p, c in zip(stages, procs, costs)]
    estimates = estimate_exits(platform, procs, [c.macs for c in costs], [c.handoff_bytes for c in costs],
                               compute_s=None if device is None else [x["seconds"] for x in predicted],
                               input_bytes=costs[0].input_bytes, result_bytes=costs[-1].result_bytes)
    entries, cumulative, mode = [], 0, ensemble_weights or DEFAULT_WEIGHTS
    for k, (stage, cost, est) in enumerate(zip(stages, costs, estimates)):
        cumulative += cost.macs
        last, ensemble = k == len(stages) - 1, decision == "ensemble"
        entries.append(StageEntry(
            index=k, file=f"stage{k}.{procs[k]}.onnx", target=procs[k], kind=platform.processor(procs[k]).kind,
            inputs=[_tensor_spec(t) for t in stage.inputs],
            outputs={"handoff": None if last else stage.outputs[0].name,
                     "logits": stage.outputs[0].name if last else f"exit{k}.logits",
                     "exit": None if last else f"exit{k}.exit", "confidence": None if last else f"exit{k}.confidence",
                     **({"members": f"ensemble{k}.members"} if ensemble else {})},
            threshold=None if last else float(thresholds[k]), cost=cost.to_dict(), exit_macs=cumulative,
            compute_s=est["compute_s"], exit_latency_s=est["latency_s"], exit_energy_j=est["energy_j"],
            ensemble_weights={"mode": mode, "weights": [float(w) for w in weights_of(k + 1, mode)]}
            if ensemble else None, predicted=predicted[k] or None))
    return entries


def _labelled(predicted: dict, stage: gs.Graph) -> dict:
    """A cost-model prediction for a stage holding ops that no measured unit holds (a GRU, a LayerNormalization, a
    Transpose: eecc/cost/coverage.py) is an estimate: its `source` says so and `unmeasured_ops` names them."""
    from eecc.cost.coverage import unmeasured_ops
    from eecc.cost.segments import ESTIMATED, MEASURED

    ops = unmeasured_ops(stage)
    if not ops or predicted["source"] != MEASURED:
        return predicted
    return {**predicted, "source": ESTIMATED, "unmeasured_ops": ops}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"eecc": __version__, "python": host_platform.python_version()}
    for dist in _DEPS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def _tensor_spec(t: gs.Variable) -> dict[str, Any]:
    shape = [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in (t.shape or [])]
    return {"name": t.name, "shape": shape,
            "dtype": np.dtype(t.dtype).name if t.dtype is not None else None}
