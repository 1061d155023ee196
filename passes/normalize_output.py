"""normalize_output(g) -> g': a classifier that outputs probabilities outputs log-probabilities instead.

  y = Softmax<axis=a>(z)     ->  y = LogSoftmax<axis=a>(z)             softmax(y) = softmax(z)
  y = LogSoftmax(z)          ->  unchanged                              softmax(y) = softmax(z)
  y = Sigmoid(z)             ->  y = Neg(Softplus(Neg(z))) = log σ(z)   softmax(y) = σ(z) / Σ σ(z)
(through any trailing Identity/Flatten/Reshape/Squeeze/Unsqueeze). Everywhere eecc takes a confidence
it applies softmax to the classifier output; on probabilities that would be softmax(p), a flattened
and wrong distribution. After this pass softmax(output) is the model's own probability vector (for
Softmax/LogSoftmax exactly; for a one-vs-rest Sigmoid the per-class probabilities normalised to sum
to 1), and argmax is unchanged. The final node gets annotation `output_kind` ("logits", "softmax",
"log_softmax" or "sigmoid"). Does not mutate its input.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from eecc.model.ir import get_ann, set_ann

KINDS = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Sigmoid": "sigmoid"}
_TRANSPARENT = {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"}


def normalize_output(graph: gs.Graph) -> gs.Graph:
    graph = graph.copy()
    out = graph.outputs[0]
    node = _probability_node(out)
    last = out.inputs[0] if out.inputs else None
    if node is None:
        if last is not None:
            set_ann(last, "output_kind", "logits")
        return graph
    kind = KINDS[node.op]
    if node.op == "Softmax":
        node.op = "LogSoftmax"
    elif node.op == "Sigmoid":
        z, y = node.inputs[0], node.outputs[0]
        neg = gs.Variable(f"{y.name}.neg", dtype=z.dtype, shape=z.shape)
        soft = gs.Variable(f"{y.name}.softplus", dtype=z.dtype, shape=z.shape)
        node.op, node.outputs = "Neg", [neg]
        graph.nodes.append(gs.Node("Softplus", f"{node.name}.softplus", inputs=[neg], outputs=[soft]))
        graph.nodes.append(gs.Node("Neg", f"{node.name}.logsigmoid", inputs=[soft], outputs=[y]))
        graph.toposort()
    set_ann(out.inputs[0], "output_kind", kind)
    return graph


def output_kind(graph: gs.Graph) -> str:
    """What the original model output: "logits", "softmax", "log_softmax" or "sigmoid" ("logits" if unknown)."""
    out = graph.outputs[0]
    return get_ann(out.inputs[0], "output_kind", "logits") if out.inputs else "logits"


def _probability_node(tensor: gs.Variable) -> gs.Node | None:
    while len(tensor.inputs) == 1:
        node = tensor.inputs[0]
        if node.op in KINDS:
            return node
        if node.op not in _TRANSPARENT or not node.inputs:
            return None
        tensor = node.inputs[0]
    return None
