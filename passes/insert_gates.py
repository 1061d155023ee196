"""insert_gates(stage, threshold, metric) -> stage' with outputs exit{k}.exit (bool [N]) and exit{k}.confidence.

  max_softmax:  conf = ReduceMax(Softmax(z))
  margin:       conf = ReduceMax(p) − ReduceMax(Where(ArgMax(p) == c, −1, p)),  p = Softmax(z), c = 0..C−1
                (top-1 minus top-2 without TopK: TVM lowers TopK to a packed extern the Cortex-M driver cannot
                call and whose Cortex-A build crashed; only the first maximum is masked, so a tie gives 0)
  entropy:      conf = 1 + ReduceSum(Softmax(z) · LogSoftmax(z)) / log C      (= 1 − H(p)/log C)
  learned:      conf = the stage's NACHOS head confidence (insert_exits confidences=, attach_confidence)
  exit = GreaterOrEqual(conf, threshold)
The formulas are those of eecc/search/confidence.py (the search picks thresholds with them); the
LogSoftmax form keeps 0·log 0 = 0 without a clip. Names derive from `exit{k}` so the runtime can wire
them. Does not mutate its input.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, set_ann

METRICS = ("max_softmax", "margin", "entropy", "learned")


def insert_gates(stage: gs.Graph, *, threshold: float, metric: str = "max_softmax") -> gs.Graph:
    """Requires a stage from split_by_target with an `exit{k}.logits` [N, C] output."""
    if metric not in METRICS:
        raise EeccError(f"insert_gates: unknown confidence metric '{metric}'; choose one of {', '.join(METRICS)}")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise EeccError(f"insert_gates: threshold {threshold!r} must be a finite number (conf >= t exits)")
    g = stage.copy()
    found = [o for o in g.outputs if o.name.startswith("exit") and o.name.endswith(".logits")]
    if len(found) != 1:
        raise EeccError(f"insert_gates: stage '{g.name}' has {len(found)} 'exit<k>.logits' outputs, needs one; "
                        "gate only the stages before the last, as split_by_target made them")
    logits = found[0]
    prefix = logits.name[: -len(".logits")]
    shape = logits.shape or []
    classes = shape[-1] if len(shape) == 2 else None
    if not isinstance(classes, (int, np.integer)) or classes < 2:
        raise EeccError(f"insert_gates: '{logits.name}' has shape {list(shape)}; a gate needs [N, C] logits "
                        "with a static C >= 2")
    batch = shape[0]
    opset = g.opset or 13
    b = _Builder(g, prefix, batch, get_ann(logits.inputs[0], "target") if logits.inputs else None)

    if metric == "learned":
        conf = _learned(g, prefix, logits, batch)
    elif metric == "entropy":
        logp = b.op("LogSoftmax", [logits], "logp", [batch, classes], axis=1)
        p = b.op("Softmax", [logits], "probs", [batch, classes], axis=1)
        plogp = b.op("Mul", [p, logp], "plogp", [batch, classes])
        neg_h = b.reduce("ReduceSum", plogp, "neg_entropy", batch, opset >= 13)
        scaled = b.op("Div", [neg_h, b.const("log_classes", np.float32(math.log(classes)))], "neg_entropy_norm",
                      [batch])
        conf = b.op("Add", [scaled, b.const("one", np.float32(1.0))], "confidence", [batch])
    else:
        p = b.op("Softmax", [logits], "probs", [batch, classes], axis=1)
        if metric == "max_softmax":
            conf = b.reduce("ReduceMax", p, "confidence", batch, opset >= 18)
        else:
            conf = _margin(b, p, batch, classes, opset)
    t = b.const("threshold", np.float32(threshold))
    if opset >= 12:
        exit_ = b.op("GreaterOrEqual", [conf, t], "exit", [batch], dtype=np.bool_)
    else:
        below = b.op("Less", [conf, t], "below_threshold", [batch], dtype=np.bool_)
        exit_ = b.op("Not", [below], "exit", [batch], dtype=np.bool_)
    g.outputs = [*g.outputs, exit_, conf]
    return g.cleanup(remove_unused_graph_inputs=False).toposort()


def _margin(b: "_Builder", p: gs.Variable, batch, classes: int, opset: int) -> gs.Variable:
    """p [N, C] -> p_(1) − p_(2) [N]: the largest probability minus the largest of the others (ArgMax keeps the
    first maximum, as a sort would, so two equal maxima give 0). Probabilities are >= 0, so −1 masks."""
    first = b.reduce("ReduceMax", p, "top1_prob", batch, opset >= 18)
    top = b.op("ArgMax", [p], "top1_class", [batch, 1], dtype=np.int64, axis=1, keepdims=1)
    hot = b.op("Equal", [top, b.const("classes", np.arange(classes, dtype=np.int64))], "top1_mask",
               [batch, classes], dtype=np.bool_)
    rest = b.op("Where", [hot, b.const("masked", np.float32(-1.0)), p], "others", [batch, classes])
    second = b.reduce("ReduceMax", rest, "top2_prob", batch, opset >= 18)
    return b.op("Sub", [first, second], "confidence", [batch])


# --- NACHOS learned confidence ---
def _learned(g: gs.Graph, prefix: str, logits: gs.Variable, batch) -> gs.Variable:
    """The head's own confidence output becomes `exit<k>.confidence`; it moves behind the exit flag."""
    found = [o for o in g.outputs if o.name.endswith(".confidence") and o.inputs
             and get_ann(o.inputs[0], "role") == "exit"]
    if len(found) != 1:
        raise EeccError(f"insert_gates: metric 'learned' needs the stage's head confidence output "
                        f"('<tensor>.exit<i>.confidence'), '{g.name}' has {len(found)}; insert the exits with "
                        "NACHOS confidences and attach_confidence the stage")
    conf = found[0]
    g.outputs = [o for o in g.outputs if o is not conf]
    conf.name = f"{prefix}.confidence"
    conf.shape = [batch]
    return conf


def attach_confidence(stage: gs.Graph, graph: gs.Graph) -> gs.Graph:
    """`stage` (split_by_target of `graph`) + exit k's NACHOS confidence branch, copied from `graph`, as an
    output: the split keeps only the hand-off and the logits, so the branch is re-added here. Pure."""
    g = stage.copy()
    found = [o for o in g.outputs if o.name.startswith("exit") and o.name.endswith(".logits") and o.inputs]
    if len(found) != 1:
        raise EeccError(f"attach_confidence: stage '{g.name}' has no single 'exit<k>.logits' output; "
                        "attach confidences to the gated stages only (all but the last)")
    original = found[0].inputs[0].name.rsplit(".", 1)[0]  # the head's Gemm is named f"{logits}.Gemm"
    source = graph.tensors().get(original[: -len(".logits")] + ".confidence")
    if source is None:
        raise EeccError(f"attach_confidence: '{original}' has no confidence branch in the graph; "
                        "insert the exits with NACHOS confidences (insert_exits(confidences=...))")
    have = g.tensors()
    rename = {original: found[0].name}
    stage_ann = {k: v for k, v in found[0].inputs[0].attrs.items() if k in ("eecc.stage", "eecc.target")}
    made: dict[str, gs.Variable] = {}

    def tensor(t: gs.Tensor) -> gs.Tensor:
        name = rename.get(t.name, t.name)
        if name in made:
            return made[name]
        if name in have:
            return have[name]
        if isinstance(t, gs.Constant):
            return gs.Constant(t.name, np.asarray(t.values))
        node = t.inputs[0]
        inputs = [tensor(i) for i in node.inputs]
        outputs = [gs.Variable(o.name, dtype=o.dtype, shape=o.shape) for o in node.outputs]
        made.update({o.name: o for o in outputs})
        g.nodes.append(gs.Node(node.op, name=node.name, attrs={**node.attrs, **stage_ann}, inputs=inputs,
                               outputs=outputs))
        return made[name]

    g.outputs = [*g.outputs, tensor(source)]
    return g.toposort()
# --- end NACHOS ---


class _Builder:
    """Adds gate nodes named f"{prefix}.gate.<what>" producing f"{prefix}.<what>", annotated role=gate."""

    def __init__(self, graph: gs.Graph, prefix: str, batch, target: str | None):
        self.graph, self.prefix, self.batch = graph, prefix, batch
        self.k = int(prefix[len("exit"):]) if prefix[len("exit"):].isdigit() else prefix
        self.target = target

    def const(self, what: str, value) -> gs.Constant:
        return gs.Constant(f"{self.prefix}.{what}", np.asarray(value))

    def op(self, op: str, inputs: list, what: str, shape: list, *, dtype=np.float32, extra=None,
           **attrs) -> gs.Variable:
        out = gs.Variable(f"{self.prefix}.{what}", dtype=dtype, shape=shape)
        outputs = [out]
        if extra is not None:
            outputs.append(gs.Variable(f"{self.prefix}.{extra[0]}", dtype=extra[1], shape=shape))
        node = gs.Node(op, name=f"{self.prefix}.gate.{what}", attrs=attrs, inputs=inputs, outputs=outputs)
        set_ann(node, "role", "gate")
        set_ann(node, "exit", self.k)
        set_ann(node, "stage", self.k)
        if self.target is not None:
            set_ann(node, "target", self.target)
        self.graph.nodes.append(node)
        return out

    def reduce(self, op: str, x: gs.Variable, what: str, batch, axes_as_input: bool) -> gs.Variable:
        if axes_as_input:
            return self.op(op, [x, self.const(f"{what}_axes", np.array([1], dtype=np.int64))], what, [batch],
                           keepdims=0)
        return self.op(op, [x], what, [batch], axes=[1], keepdims=0)
