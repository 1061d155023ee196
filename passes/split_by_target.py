"""split_by_target(g) -> [stage_0, …, stage_last]: one graph per `stage` annotation (from assign_targets).

  stage k < last:  (model input | hand-off k-1) -> (hand-off k, exit{k}.logits)
  stage last:      (hand-off last-1)            -> (original output)
Each stage is the whole graph with the hand-off's producer link cut and everything that does not
feed the stage's outputs cleaned away; a node of another stage left over means a second tensor
crosses the cut, which is an error. With a platform, memory checks name the stage that does not fit, in the
sizes of the numerics the stages will be built in (`numeric`, see stage_cost). Does not mutate its input.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, set_ann
from eecc.model.stage_cost import StageCost  # noqa: F401 (StageCost: importers' name)
from eecc.model.stage_cost import processor_needs, program_bytes, stage_cost
from eecc.targets.platform import Platform


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


def check_memory(stages: list[gs.Graph], platform: Platform, numeric: str = "fp32") -> None:
    """weights ≤ storage and peak activation ≤ RAM per stage, sized as `numeric` (stage_cost); shared storage
    holds all stages' weights. An fp32 overflow that int8 sizes would fit says --quantize int8."""
    why = _overflow(stages, platform, numeric)
    if why is not None:
        int8 = numeric == "fp32" and _overflow(stages, platform, "int8") is None
        raise EeccError(why + ("; or compile with --quantize int8 (the int8 stages fit)" if int8 else ""))


def _overflow(stages: list[gs.Graph], platform: Platform, numeric: str) -> str | None:
    """Each processor's stages against its storage and RAM (processor_needs: weights together, two arenas), the
    search's own figure (eecc/search/placement.py), then the shared storage."""
    what = " (int8)" if numeric == "int8" else ""
    costs = [stage_cost(stage, numeric) for stage in stages]
    procs = [_target(stage) for stage in stages]
    program = program_bytes(platform)
    needs = processor_needs(procs, [c.weight_bytes for c in costs], [c.peak_activation_bytes for c in costs],
                            [c.input_bytes for c in costs], program)
    for target, (weights, ram) in needs.items():
        proc, own = platform.processor(target), [k for k, p in enumerate(procs) if p == target]
        where = f"stage {own[0]}" if len(own) == 1 else f"stages {own[0]}-{own[-1]} (one program)"
        if weights > proc.storage_bytes:
            return (f"{where} on '{target}': weights{what} need {weights} bytes but its storage holds "
                    f"{proc.storage_bytes}; cut earlier so the stage is smaller, or use a larger processor")
        if ram > proc.ram_bytes:
            stack = " and stack" if program[target] else ""
            return (f"{where} on '{target}': activations{what}{stack} need {ram} bytes but its RAM holds "
                    f"{proc.ram_bytes}; cut elsewhere or use a processor with more RAM (or a smaller input resolution)")
    total, storage = sum(c.weight_bytes for c in costs), min(platform.processor(p).storage_bytes for p in procs)
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
