"""remove_dropout(m) -> m': inference-time Dropout nodes removed, their consumers read the Dropout's input.

  y, mask = Dropout(x, ratio)  ->  (y := x)     when `mask` is unused (it always is at inference)
Old exports keep Dropout (opset 7-11 emit a second `mask` output); at inference it is the identity,
and removing it keeps every classifier head a plain chain. A Dropout whose mask is consumed, or
whose output is a graph output, is kept. Does not mutate its input.
"""

from __future__ import annotations

import onnx


def remove_dropout(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consumed = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    rename: dict[str, str] = {}
    keep = []
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        removable = (node.op_type == "Dropout" and not node.domain
                     and all(o not in consumed for o in node.output[1:]) and node.output[0] not in
                     {o.name for o in g.output})
        if removable:
            rename[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    drop = {o for o in rename}
    kept_vi = [vi for vi in g.value_info if vi.name not in drop]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    return out
