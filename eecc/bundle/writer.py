"""The bundle: stage<k>.<processor>.onnx + manifest.json, written atomically (runtime/bundle.py reads it)."""

from __future__ import annotations

import json
import os
import platform as host_platform
import shutil
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from eecc import __version__
from eecc.model import ir
from eecc.errors import EeccError
from eecc.passes.split_by_target import stage_cost
from eecc.runtime.bundle import FORMAT, MANIFEST, VERSION
from eecc.targets.platform import Platform, estimate_exits

SINGLE_FILE = "cascade.single.onnx"
_DEPS = ("numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "networkx", "pymoo", "apache-tvm", "torch")


def build_manifest(stages: Sequence[gs.Graph], *, platform: Platform, thresholds: Sequence[float],
                   metric: str = "max_softmax", placement_metrics: dict | None = None,
                   pareto: list | None = None, extra: dict | None = None, decision: str = "single",
                   ensemble_weights: str | None = None, device=None) -> dict[str, Any]:
    """The manifest of a bundle; `stages` are the gated stage graphs (eecc.driver.pipeline.stages). With `device`
    (eecc.cost.segments.DeviceCost) stage seconds come from the cost model, else from nominal MAC/s."""
    costs = [stage_cost(s) for s in stages]
    procs = [s.name.split(".", 1)[1] for s in stages]
    predicted = [None] * len(stages)
    if device is not None:  # the measured cost model on each stage's own graph (eecc/cost)
        from eecc.cost.features import graph_features
        predicted = [device.predict(p, graph_features(s), c.macs) for s, p, c in zip(stages, procs, costs)]
    estimates = estimate_exits(platform, procs, [c.macs for c in costs], [c.handoff_bytes for c in costs],
                               compute_s=None if device is None else [x["seconds"] for x in predicted])
    entries, cumulative = [], 0
    for k, (stage, cost, est) in enumerate(zip(stages, costs, estimates)):
        cumulative += cost.macs
        last = k == len(stages) - 1
        entries.append({
            "index": k, "file": f"stage{k}.{procs[k]}.onnx", "target": procs[k],
            "kind": platform.processor(procs[k]).kind,
            "inputs": [_tensor_spec(t) for t in stage.inputs],
            "outputs": {"handoff": None if last else stage.outputs[0].name,
                        "logits": stage.outputs[0].name if last else f"exit{k}.logits",
                        "exit": None if last else f"exit{k}.exit",
                        "confidence": None if last else f"exit{k}.confidence",
                        **({"members": f"ensemble{k}.members"} if decision == "ensemble" else {})},
            "threshold": None if last else float(thresholds[k]),
            **({"ensemble_weights": ensemble_weights_of(k + 1, ensemble_weights)} if decision == "ensemble" else {}),
            **cost.to_dict(), "backbone_macs": cost.macs - cost.head_macs, "exit_macs": cumulative,
            "compute_s": est["compute_s"], "exit_latency_s": est["latency_s"], "exit_energy_j": est["energy_j"],
            **({"predicted": predicted[k]} if predicted[k] else {}),
        })
    final = stages[-1].outputs[0]
    return {
        "format": FORMAT, "version": VERSION,
        "input": _tensor_spec(stages[0].inputs[0]),
        "num_classes": int(final.shape[-1]) if final.shape else None,
        "original_macs": sum(c.macs - c.head_macs for c in costs),
        "confidence_metric": metric,
        # ensemble: stage k's exit logits are sum_i w_i z_i over exits 0..k (w = the stage's `ensemble_weights`)
        "decision": decision,
        "platform": platform.to_dict(),
        "energy_model": "per sample leaving at stage k: active power x compute time of the stages run "
                        "(cost model: predicted instructions x CPI / clock_hz; else MACs/(MAC/s)), plus "
                        "idle power of the placement's other processors for the rest of its latency; links "
                        "cost latency (latency_s + 8*bytes/bandwidth) but no energy",
        "cost_model": None if device is None else device.to_json(),
        "stages": entries,
        "placement": {"processors": procs, "cuts": [e["outputs"]["handoff"] for e in entries[:-1]],
                      "thresholds": [float(t) for t in thresholds],
                      "worst_case_macs": entries[-1]["exit_macs"],
                      "worst_case_latency_s": entries[-1]["exit_latency_s"],
                      "worst_case_energy_j": max(e["exit_energy_j"] for e in entries),
                      "metrics": dict(placement_metrics or {})},
        "pareto": pareto,
        "single_file": None,
        "versions": versions(),
        **(extra or {}),
    }


def write_bundle(out: str | os.PathLike, stages: Sequence[gs.Graph], manifest: dict, *, force: bool = False,
                 protect: Sequence[str | os.PathLike] = (), single_file: bool = False) -> Path:
    """All or nothing: stages and manifest appear at `out` together, or `out` is left as it was."""
    with open_bundle(out, force=force, protect=protect) as tmp:
        models = []
        for entry, stage in zip(manifest["stages"], stages):
            models.append(ir.to_model(stage))
            ir.save(models[-1], tmp / entry["file"])
        if single_file:
            ir.save(single_file_model(models), tmp / SINGLE_FILE)
            manifest = {**manifest, "single_file": SINGLE_FILE}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=ir.json_default) + "\n")
    return Path(out)


def check_output(out: str | os.PathLike, *, force: bool = False, protect: Sequence[str | os.PathLike] = ()) -> Path:
    """The output checks of open_bundle, callable up front so that a bad -o fails before any training."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EeccError(f"output '{out}' exists and is not a folder; choose another output path")
    if out.exists() and not force:
        raise EeccError(f"output folder '{out}' already exists; pass --force to replace it")
    for path in protect:
        path = Path(path).resolve()
        if path == out.resolve() or out.resolve() in path.parents:
            raise EeccError(f"input '{path}' lies inside output folder '{out}', which would be replaced; "
                            "choose another output folder")
    return out


@contextmanager
def open_bundle(out: str | os.PathLike, *, force: bool = False,
                protect: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yields an empty staging folder beside `out`; on success it replaces `out`, on error it vanishes."""
    out = check_output(out, force=force, protect=protect)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "bundle")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def single_file_model(stages: Sequence[onnx.ModelProto]) -> onnx.ModelProto:
    """One model for batch 1: stage k runs inside the else-branch of an `If` on exit{k-1}.exit.

    Outputs `logits` [1, C] and `exit_stage` [1] (int64). Stage k's tensors keep their names; a name
    already used by an earlier stage (a copied constant) gets the suffix `.s<k>`.
    """
    first = stages[0]
    used = {v.name for v in first.graph.input}
    for stage in stages:
        _rename_clashes(stage, used)
    classes = stages[-1].graph.output[0].type.tensor_type.shape.dim[-1].dim_value or None
    outs = [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, classes]),
            onnx.helper.make_tensor_value_info("exit_stage", onnx.TensorProto.INT64, [1])]

    def body(k: int, names: tuple[str, str]) -> tuple[list, list]:
        """Nodes and initializers of stage k onwards, ending in tensors `names`."""
        g = stages[k].graph
        nodes, inits = list(g.node), list(g.initializer)
        if k == len(stages) - 1:
            nodes.append(onnx.helper.make_node("Identity", [g.output[0].name], [names[0]]))
            nodes.append(_const(names[1], k))
            return nodes, inits
        then = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", [f"exit{k}.logits"], [f"exit{k}.taken.logits"]),
             _const(f"exit{k}.taken.stage", k)],
            f"exit{k}.taken", [], [_vi(f"exit{k}.taken.logits", classes), _vi(f"exit{k}.taken.stage", None)])
        inner, inner_inits = body(k + 1, (f"stage{k + 1}.result.logits", f"stage{k + 1}.result.stage"))
        other = onnx.helper.make_graph(inner, f"stage{k + 1}", [],
                                       [_vi(f"stage{k + 1}.result.logits", classes),
                                        _vi(f"stage{k + 1}.result.stage", None)], initializer=inner_inits)
        nodes.append(onnx.helper.make_node("If", [f"exit{k}.exit"], list(names), name=f"exit{k}.if",
                                           then_branch=then, else_branch=other))
        return nodes, inits

    nodes, inits = body(0, ("logits", "exit_stage"))
    graph = onnx.helper.make_graph(nodes, "eecc.cascade", list(first.graph.input), outs, initializer=inits)
    model = onnx.helper.make_model(graph, opset_imports=list(first.opset_import), ir_version=first.ir_version)
    model.producer_name = "eecc"
    onnx.checker.check_model(model)
    return model


def ensemble_weights_of(m: int, mode: str | None) -> dict:
    from eecc.exits.ensemble import DEFAULT_WEIGHTS, ensemble_weights

    mode = mode or DEFAULT_WEIGHTS
    return {"mode": mode, "weights": [float(w) for w in ensemble_weights(m, mode)]}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"eecc": __version__, "python": host_platform.python_version()}
    for dist in _DEPS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def _rename_clashes(model: onnx.ModelProto, used: set[str]) -> None:
    g = model.graph
    k = g.name.split(".")[0].removeprefix("stage") or "0"
    outer_inputs = {v.name for v in g.input}
    mine = ({i.name for i in g.initializer} | {o for n in g.node for o in n.output}) - outer_inputs
    rename = {name: f"{name}.s{k}" for name in mine if name in used}
    for n in g.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for init in g.initializer:
        init.name = rename.get(init.name, init.name)
    for v in list(g.output) + list(g.value_info):
        v.name = rename.get(v.name, v.name)
    used.update(rename.get(name, name) for name in mine)


def _const(name: str, value: int) -> onnx.NodeProto:
    return onnx.helper.make_node("Constant", [], [name],
                                 value=onnx.numpy_helper.from_array(np.array([value], dtype=np.int64)))


def _vi(name: str, classes: int | None) -> onnx.ValueInfoProto:
    if classes is None:
        return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [1])
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, classes])


def _tensor_spec(t: gs.Variable) -> dict[str, Any]:
    shape = [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in (t.shape or [])]
    return {"name": t.name, "shape": shape,
            "dtype": np.dtype(t.dtype).name if t.dtype is not None else None}
