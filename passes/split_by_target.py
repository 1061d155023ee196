"""split_by_target(g) -> [stage_0, …, stage_last]: one graph per `stage` annotation (from assign_targets).

  stage k < last:  (model input | hand-off k-1) -> (hand-off k, exit{k}.logits)
  stage last:      (hand-off last-1)            -> (original output)
Each stage is the whole graph with the hand-off's producer link cut and everything that does not
feed the stage's outputs cleaned away; a node of another stage left over means a second tensor
crosses the cut, which is an error. With a platform, memory checks name the stage that does not fit, in the
sizes of the numerics the stages will be built in (`numeric`, see stage_cost). Does not mutate its input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, per_sample_shape, set_ann
from eecc.targets.platform import Platform


@dataclass(frozen=True)
class StageCost:
    macs: int                    # per sample, README convention; head_macs included
    head_macs: int
    params: int
    weight_bytes: int
    peak_activation_bytes: int   # per sample, live tensors at the worst point of a sequential run
    input_bytes: int
    handoff_bytes: int           # 0 for the last stage

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def split_by_target(graph: gs.Graph, *, platform: Platform | None = None, numeric: str = "fp32") -> list[gs.Graph]:
    """Requires assign_targets. Stage graphs are named f"stage{k}.{target}"; `numeric` ("fp32" | "int8"): the
    format the memory check sizes the stages in."""
    stages = sorted({get_ann(n, "stage") for n in graph.nodes if get_ann(n, "stage") is not None})
    if not stages or stages != list(range(len(stages))):
        raise EeccError(f"split_by_target: stages {stages} are not 0..n-1; run assign_targets first")
    handoff, logits = _marked(graph, "handoff"), _marked(graph, "exit_logits")
    last = stages[-1]
    missing = [k for k in stages[:-1] if k not in handoff or k not in logits]
    if missing:
        raise EeccError(f"split_by_target: stage {missing[0]} has no hand-off or exit logits marked; "
                        "run assign_targets first")
    result = [_stage(graph, k, handoff, logits, last) for k in stages]
    if platform is not None:
        check_memory(result, platform, numeric)
    return result


def stage_cost(stage: gs.Graph, numeric: str = "fp32") -> StageCost:
    """Costs of one stage graph from the `macs` annotations and the tensors' static shapes.

    numeric "int8" sizes the stage as `--quantize int8` builds it (eecc/targets/quantize.py, the MCU program's
    layout): Conv/Gemm/MatMul weights 1 byte each, other float constants 4 (int32 biases, requantisation
    multipliers); activations 1 byte per element, the stage's inputs and outputs 4 + 1 (the stage edges stay
    float32: QuantizeLinear makes the int8 copy of an input, DequantizeLinear the float output). Hand-off and
    input bytes stay float32's: that is what crosses between stages.
    """
    if numeric not in ("fp32", "int8"):
        raise ValueError(f"stage_cost: numeric must be 'fp32' or 'int8', not {numeric!r}")
    macs = sum(int(get_ann(n, "macs", 0)) for n in stage.nodes)
    head = sum(int(get_ann(n, "macs", 0)) for n in stage.nodes if get_ann(n, "role") in ("exit", "gate"))
    weights = {id(t): t for n in stage.nodes for t in n.inputs if isinstance(t, gs.Constant)}
    weights |= {id(v): v for n in stage.nodes if n.op == "Constant"
                for v in [n.attrs.get("value")] if isinstance(v, gs.Constant)}
    arrays = [np.asarray(t.values) for t in weights.values()]
    out = stage.outputs[0] if len(stage.outputs) > 1 else None
    int8 = numeric == "int8"
    return StageCost(macs=macs, head_macs=head, params=int(sum(a.size for a in arrays)),
                     weight_bytes=int8_weight_bytes(stage.nodes) if int8 else int(sum(x.nbytes for x in arrays)),
                     peak_activation_bytes=_peak_activation(stage, int8),
                     input_bytes=sum(_bytes(t) for t in stage.inputs),
                     handoff_bytes=_bytes(out) if out is not None else 0)


def check_memory(stages: list[gs.Graph], platform: Platform, numeric: str = "fp32") -> None:
    """weights ≤ storage and peak activation ≤ RAM per stage, sized as `numeric` (stage_cost); shared storage
    holds all stages' weights. An fp32 overflow that int8 sizes would fit says --quantize int8."""
    why = _overflow(stages, platform, numeric)
    if why is not None:
        int8 = numeric == "fp32" and _overflow(stages, platform, "int8") is None
        raise EeccError(why + ("; or compile with --quantize int8 (the int8 stages fit)" if int8 else ""))


def _overflow(stages: list[gs.Graph], platform: Platform, numeric: str) -> str | None:
    total, what = 0, " (int8)" if numeric == "int8" else ""
    for k, stage in enumerate(stages):
        target = _target(stage)
        proc = platform.processor(target)
        cost = stage_cost(stage, numeric)
        total += cost.weight_bytes
        if cost.weight_bytes > proc.storage_bytes:
            return (f"stage {k} on '{target}': weights{what} need {cost.weight_bytes} bytes but its storage "
                    f"holds {proc.storage_bytes}; cut earlier so the stage is smaller, or use a larger processor")
        if cost.peak_activation_bytes > proc.ram_bytes:
            return (f"stage {k} on '{target}': peak activation memory{what} is {cost.peak_activation_bytes} "
                    f"bytes but its RAM holds {proc.ram_bytes}; cut elsewhere or use a processor with "
                    "more RAM (or a smaller input resolution)")
    storage = min(platform.processor(_target(s)).storage_bytes for s in stages)
    if platform.shared_memory and total > storage:
        return (f"stages 0..{len(stages) - 1}: weights{what} need {total} bytes together but platform "
                f"'{platform.name}' stores all stages in one shared {storage}-byte storage; "
                "use a smaller model or fewer exits")
    return None


def _stage(graph: gs.Graph, k: int, handoff: dict[int, str], logits: dict[int, str], last: int) -> gs.Graph:
    g = graph.copy()
    tensors = g.tensors()
    if k > 0:
        entry = tensors[handoff[k - 1]]
        entry.inputs.clear()
        g.inputs = [entry]
    if k < last:
        exit_out = tensors[logits[k]]
        exit_out.name = f"exit{k}.logits"
        exit_out.dtype = exit_out.dtype or np.float32
        g.outputs = [tensors[handoff[k]], exit_out]
    else:
        producer = {o.name: n for n in g.nodes for o in n.outputs}
        g.outputs = [o for o in g.outputs if get_ann(producer.get(o.name), "role") != "exit"]
    g.cleanup(remove_unused_graph_inputs=False).toposort()
    targets = {get_ann(n, "target") for n in g.nodes if get_ann(n, "stage") == k}
    for node in g.nodes:
        if get_ann(node, "stage") != k:
            continue
        for t in node.inputs:
            src = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
            other = get_ann(src, "stage") if src is not None else None
            if other is not None and other != k and _depends_on_input(src):
                raise EeccError(f"split_by_target: stage {k} needs tensor '{t.name}' of stage {other} besides the "
                                "hand-off; cut at a block output (a candidate exit) so that only one tensor crosses")
    target = targets.pop() if len(targets) == 1 else "mixed"
    for node in g.nodes:  # constant nodes copied from another stage now belong to this one
        set_ann(node, "stage", k)
        set_ann(node, "target", target)
    g.name = f"stage{k}.{target}"
    return g


def _depends_on_input(node: gs.Node) -> bool:
    """True unless node is constant arithmetic: some ancestor tensor is a producer-less (input) Variable."""
    seen, todo = set(), [node]
    while todo:
        for t in todo.pop().inputs:
            if isinstance(t, gs.Variable) and t.name and not t.inputs:
                return True
            for parent in t.inputs:
                if id(parent) not in seen:
                    seen.add(id(parent))
                    todo.append(parent)
    return False


def _marked(graph: gs.Graph, key: str) -> dict[int, str]:
    return {get_ann(n, "stage"): get_ann(n, key) for n in graph.nodes if get_ann(n, key) is not None
            and get_ann(n, "stage") is not None}


def _target(stage: gs.Graph) -> str:
    return next(get_ann(n, "target") for n in stage.nodes if get_ann(n, "target") is not None)


def _bytes(t: gs.Tensor, float_size: int | None = None) -> int:
    """Per-sample bytes; `float_size` replaces the item size of a float tensor."""
    shape = per_sample_shape(t) if isinstance(t, gs.Variable) else None
    if shape is None:
        return 0
    itemsize = np.dtype(t.dtype).itemsize if t.dtype is not None else 4
    if float_size is not None and (t.dtype is None or np.issubdtype(np.dtype(t.dtype), np.floating)):
        itemsize = float_size
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def int8_weight_bytes(nodes: Iterable[gs.Node]) -> int:
    """Weights as int8 stages store them: a Conv/Gemm/MatMul weight (input 1) 1 byte per value, every other
    float constant (biases as int32, scales) 4, integer constants (shapes, axes) as they are."""
    sizes: dict[int, int] = {}
    for node in nodes:
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == "Constant":
                t = t.inputs[0].attrs.get("value")  # a Constant node's value, counted like an initializer
            if isinstance(t, gs.Constant):
                a, weight = np.asarray(t.values), i == 1 and node.op in ("Conv", "Gemm", "MatMul")
                size = a.size if weight else 4 * a.size if np.issubdtype(a.dtype, np.floating) else a.nbytes
                sizes[id(t)] = min(size, sizes.get(id(t), size))
    return int(sum(sizes.values()))


def _peak_activation(stage: gs.Graph, int8: bool = False) -> int:
    """Sequential run in topological order: a tensor lives from its producer to its last consumer (int8:
    float tensors sized as stage_cost says)."""
    outputs = {t.name for t in stage.outputs}
    edges = outputs | {t.name for t in stage.inputs}

    def size(t: gs.Tensor) -> int:
        return _bytes(t, (5 if t.name in edges else 1) if int8 else None)

    last_use: dict[str, int] = {}
    for i, node in enumerate(stage.nodes):
        for t in node.inputs:
            if isinstance(t, gs.Variable):
                last_use[t.name] = i
    live = {t.name: size(t) for t in stage.inputs}
    peak = sum(live.values())
    for i, node in enumerate(stage.nodes):
        if node.op == "Constant":
            continue
        for t in node.outputs:
            live[t.name] = size(t)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= i and n not in outputs]:
            del live[name]
    return int(peak)
