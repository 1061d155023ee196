"""assign_targets(g, cuts, processors) -> g' with every node of the cascade annotated `stage` and `target`.

Stage k = backbone from cut k-1 (or the model input) up to cut k, plus exit head k; the last stage =
the rest of the backbone plus the original classifier:
  nodes(k)    = anc(cut_k) − nodes(<k)          head(k) = anc(f"{cut_k}.exit{i}.logits") − anc(cut_k)
  nodes(last) = anc(original output) − nodes(<last) − exit heads
where anc(t) is every node that t depends on. Input-free nodes (Constant, shape arithmetic on
constants) go with their first consumer; split_by_target copies them into every stage that needs them.
The producer of cut k is marked `handoff` = cut name and that of exit k's logits `exit_logits` = name:
this pass decides, split_by_target does. Exit heads of unchosen candidates keep no `stage`.
"""

from __future__ import annotations

from typing import Sequence

import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, set_ann
from eecc.targets.platform import Platform


def assign_targets(graph: gs.Graph, *, cuts: Sequence[str], processors: Sequence[str],
                   platform: Platform | None = None) -> gs.Graph:
    """Requires exit heads from insert_exits on every cut. Does not mutate its input."""
    graph = graph.copy()
    graph.toposort()
    cuts, processors = list(cuts), list(processors)
    if len(processors) != len(cuts) + 1:
        raise EeccError(f"assign_targets: {len(cuts)} exit(s) need {len(cuts) + 1} processors (one stage each, "
                        f"the last runs the original classifier), got {len(processors)}: {processors}")
    if platform is not None:
        _check_processors(processors, platform)
    producer = {out.name: node for node in graph.nodes for out in node.outputs}
    is_const = _input_free(graph)
    final = [o for o in graph.outputs if get_ann(producer.get(o.name), "role") != "exit"] \
        if all(o.name in producer for o in graph.outputs) else []
    if len(final) != 1:
        raise EeccError(f"assign_targets: expected one original (non-exit) graph output, found "
                        f"{[o.name for o in final]}; the model must be a single-output classifier")

    owned: set[str] = set()
    stage_of: dict[str, int] = {}
    for k, cut in enumerate(cuts):
        if cut not in producer:
            raise EeccError(f"assign_targets: cut tensor '{cut}' is not produced by any node of the graph; "
                            "cut at a candidate exit (a block output listed by `eecc inspect`)")
        backbone = _ancestors(producer[cut], producer) - owned
        if k > 0 and producer[cuts[k - 1]].name not in _ancestors(producer[cut], producer):
            raise EeccError(f"assign_targets: cut '{cut}' does not come after cut '{cuts[k - 1]}'; "
                            "list the cuts in network order")
        logits = _exit_logits(graph, cut, producer)
        head = _ancestors(producer[logits], producer) - _ancestors(producer[cut], producer)
        for name in (backbone | head) - is_const:
            stage_of[name] = k
        owned |= backbone | head
        set_ann(producer[cut], "handoff", cut)
        set_ann(producer[logits], "exit_logits", logits)
    last = len(cuts)
    for name in _ancestors(producer[final[0].name], producer) - owned - is_const:
        stage_of[name] = last

    for node in reversed(graph.nodes):  # input-free nodes follow their first consumer
        if node.name in is_const:
            users = [stage_of[c.name] for out in node.outputs for c in out.outputs if c.name in stage_of]
            if users:
                stage_of[node.name] = min(users)
    for node in graph.nodes:
        if node.name in stage_of:
            set_ann(node, "stage", stage_of[node.name])
            set_ann(node, "target", processors[stage_of[node.name]])
        elif get_ann(node, "role") != "exit":
            raise EeccError(f"assign_targets: node '{node.name}' ({node.op}) feeds no stage output; remove "
                            "dead nodes from the model (ir.load + cleanup) before partitioning")
    return graph


def _check_processors(processors: list[str], platform: Platform) -> None:
    order = [p.name for p in platform.processors]
    for name in processors:
        platform.processor(name)  # raises with the valid names
    positions = [order.index(p) for p in processors]
    if positions != sorted(positions):  # consecutive stages may share a processor (exits back to back)
        raise EeccError(f"assign_targets: processors {processors} must follow the platform's order "
                        f"({', '.join(order)}): a cascade only moves forward")
    for src, dst in zip(processors, processors[1:]):
        if src != dst and platform.link(src, dst) is None:
            raise EeccError(f"assign_targets: platform '{platform.name}' has no link '{src}' -> '{dst}'; "
                            "add a [[links]] entry or choose processors that are linked")


def _exit_logits(graph: gs.Graph, cut: str, producer: dict[str, gs.Node]) -> str:
    found = sorted(name for name, node in producer.items()
                   if name.startswith(f"{cut}.exit") and name.endswith(".logits") and get_ann(node, "role") == "exit")
    if len(found) != 1:
        what = "no exit head" if not found else f"{len(found)} exit heads ({', '.join(found)})"
        raise EeccError(f"assign_targets: cut '{cut}' has {what}; run insert_exits with exactly one head "
                        f"per chosen exit (output '{cut}.exit<i>.logits')")
    return found[0]


def _ancestors(node: gs.Node, producer: dict[str, gs.Node]) -> set[str]:
    seen, todo = {node.name}, [node]
    while todo:
        for inp in todo.pop().inputs:
            parent = producer.get(inp.name)
            if parent is not None and parent.name not in seen:
                seen.add(parent.name)
                todo.append(parent)
    return seen


def _input_free(graph: gs.Graph) -> set[str]:
    """Names of nodes that depend on no graph input (constant subgraphs); graph must be toposorted."""
    fed = {t.name for t in graph.inputs}
    free = set()
    for node in graph.nodes:
        if any(isinstance(i, gs.Variable) and i.name in fed for i in node.inputs):
            fed.update(o.name for o in node.outputs)
        else:
            free.add(node.name)
    return free
