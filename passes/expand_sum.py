"""expand_sum(m) -> m': every n-ary Sum becomes a chain of binary Adds.

  y = Sum(a, b, c)  ->  t = Add(a, b); y = Add(t, c)        y = Sum(a)  ->  y = Identity(a)
Classic exports (ResNet/DenseNet in the opset-7..9 model zoo) merge residual branches with Sum;
eecc's block analysis recognises a merge as an Add or Concat of two computed tensors. Broadcasting
is the same for Sum and Add (multidirectional). Does not mutate its input.
"""

from __future__ import annotations

import onnx
from onnx import helper


def expand_sum(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes = []
    for node in g.node:
        if node.op_type != "Sum" or node.domain:
            nodes.append(node)
            continue
        name, ins, y = node.name or f"Sum_{len(nodes)}", list(node.input), node.output[0]
        if len(ins) == 1:
            nodes.append(helper.make_node("Identity", ins, [y], name=name))
            continue
        acc = ins[0]
        for k, term in enumerate(ins[1:], start=1):
            dst = y if k == len(ins) - 1 else f"{y}.sum{k}"
            nodes.append(helper.make_node("Add", [acc, term], [dst], name=f"{name}.add{k}"))
            acc = dst
    del g.node[:]
    g.node.extend(nodes)
    return out
