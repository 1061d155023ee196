"""insert_ensemble(stage, index, mode) -> stage' whose decision logits are the AEP ensemble of every exit so far.

Stage k (from split_by_target, before insert_gates) gains:
  input   ensemble{k-1}.members  [N, k, C]   the raw logits of exits 0..k-1 (k >= 1)
  output  ensemble{k}.members    [N, k+1, C] = Concat(ensemble{k-1}.members, Unsqueeze(z_k, 1))
and its decision output (exit{k}.logits, or the original output on the last stage) becomes
  ReduceSum(Mul(ensemble{k}.members, w), axis 1),   w = ensemble_weights(k+1, mode) as [1, k+1, 1]
so that insert_gates takes the confidence on the ensemble, exactly as eecc/search/ensemble.py does on
cached logits. One stacked tensor instead of one input per member keeps every stage at two inputs
and never makes a graph input double as an output. Stage 0's ensemble is its own logits (weight 1), so
only the members output is added there; a lone stage (no exit chosen) is returned as it is. Does not
mutate its input.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, set_ann
from eecc.exits.ensemble import DEFAULT_WEIGHTS, ensemble_weights


def members_name(index: int) -> str:
    return f"ensemble{index}.members"


def insert_ensemble(stage: gs.Graph, *, index: int, mode: str = DEFAULT_WEIGHTS) -> gs.Graph:
    """Requires a stage from split_by_target; `index` is its position k (the last stage has no exit output)."""
    g = stage.copy()
    exit_name = f"exit{index}.logits"
    found = [o for o in g.outputs if o.name == exit_name]
    last = not found
    if last and index == 0 and len(g.outputs) == 1:  # a lone stage (no exit chosen): its ensemble is itself
        return g
    if last and (index < 1 or len(g.outputs) != 1):
        raise EeccError(f"insert_ensemble: stage '{g.name}' has no '{exit_name}' output and is not a last stage "
                        "with one output; apply it to the stages of split_by_target with their index")
    out = found[0] if found else g.outputs[0]
    shape = out.shape or []
    classes = shape[-1] if len(shape) == 2 else None
    if not isinstance(classes, (int, np.integer)) or classes < 2:
        raise EeccError(f"insert_ensemble: '{out.name}' has shape {list(shape)}; an ensemble needs [N, C] logits "
                        "with a static C >= 2")
    batch, opset, m = shape[0], g.opset or 13, index + 1
    weights = ensemble_weights(m, mode).astype(np.float32)
    b = _Builder(g, f"ensemble{index}", get_ann(out.inputs[0], "target") if out.inputs else None, index)

    name = out.name
    if index > 0:  # the raw logits become internal; their name goes to the ensemble
        out.name = "final.logits.raw" if last else f"exit{index}.logits.raw"
    axes = b.const("axes", np.array([1], dtype=np.int64))  # Unsqueeze and ReduceSum share it
    what = "members" if index == 0 else "member"
    if opset >= 13:
        one = b.op("Unsqueeze", [out, axes], what, [batch, 1, classes])
    else:
        one = b.op("Unsqueeze", [out], what, [batch, 1, classes], axes=[1])
    if index == 0:
        g.outputs = [*g.outputs, one]
        return g.cleanup(remove_unused_graph_inputs=False).toposort()

    earlier = gs.Variable(members_name(index - 1), dtype=np.float32, shape=[batch, index, classes])
    g.inputs = [*g.inputs, earlier]
    members = b.op("Concat", [earlier, one], "members", [batch, m, classes], axis=1)
    weighted = b.op("Mul", [members, b.const("weights", weights.reshape(1, m, 1))], "weighted", [batch, m, classes])
    if opset >= 13:
        ens = b.op("ReduceSum", [weighted, axes], "sum", [batch, classes], keepdims=0)
    else:
        ens = b.op("ReduceSum", [weighted], "sum", [batch, classes], axes=[1], keepdims=0)
    ens.name = name  # the gate and the manifest find the decision tensor by this name
    g.outputs = [ens if o is out else o for o in g.outputs] + [members]
    return g.cleanup(remove_unused_graph_inputs=False).toposort()


class _Builder:
    """Adds nodes named f"{prefix}.<what>" producing f"{prefix}.<what>", annotated role=exit."""

    def __init__(self, graph: gs.Graph, prefix: str, target: str | None, index: int):
        self.graph, self.prefix, self.target, self.index = graph, prefix, target, index

    def const(self, what: str, value) -> gs.Constant:
        return gs.Constant(f"{self.prefix}.{what}", np.asarray(value))

    def op(self, op: str, inputs: list, what: str, shape: list, **attrs) -> gs.Variable:
        out = gs.Variable(f"{self.prefix}.{what}", dtype=np.float32, shape=shape)
        node = gs.Node(op, name=f"{self.prefix}.node.{what}", attrs=attrs, inputs=inputs, outputs=[out])
        # role=exit: stage_cost counts these as head work, and the last stage's split keeps them.
        set_ann(node, "role", "exit")
        set_ann(node, "stage", self.index)
        if self.target is not None:
            set_ann(node, "target", self.target)
        self.graph.nodes.append(node)
        return out
