"""flatten_output(m) -> m': a classifier output [N, C, 1, ..., 1] (or [N, 1, C]) becomes [N, C].

  y[N, C, 1, 1] = GlobalAveragePool(z)   ->  y' = GlobalAveragePool(z);  y[N, C] = Flatten<axis=1>(y')
  y[N, 1, C] = Unsqueeze(z[N, C])       ->  y[N, C] = z                  (also Reshape; z used nowhere else)
A conv classifier ending in a global pool without Flatten (nu11: SqueezeNet-style exports), or a Linear
followed by `unsqueeze(1)`, has its classes in a dim that is not the last; eecc reads the class count from
the last dim of a 2-D output. When every per-sample dim but one is 1, the Flatten changes no value (the
output keeps its name; its values in row-major order are the same), so the user's labels and argmax hold.
Outputs with two per-sample dims > 1, or unknown per-sample dims, are left for fuse_blocks to refuse.
Does not mutate its input.
"""

from __future__ import annotations

import onnx
from onnx import helper


def flatten_output(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not out.graph.output:
        return out
    y = out.graph.output[0]
    dims = y.type.tensor_type.shape.dim
    per_sample = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if len(per_sample) < 2 or None in per_sample or sum(d > 1 for d in per_sample) != 1:
        return out
    if _drop_reshape(out, y.name):
        _set_classes(dims, max(per_sample))
        return out
    inner = f"{y.name}.unflattened"
    for node in out.graph.node:
        node.output[:] = [inner if o == y.name else o for o in node.output]
        node.input[:] = [inner if i == y.name else i for i in node.input]
    for vi in out.graph.value_info:
        if vi.name == y.name:
            vi.name = inner
    out.graph.node.append(helper.make_node("Flatten", [inner], [y.name], name=f"{y.name}.flatten", axis=1))
    _set_classes(dims, max(per_sample))
    return out


def _drop_reshape(model: onnx.ModelProto, name: str) -> bool:
    """If `name` is made by an Unsqueeze/Reshape of a 2-D tensor that nothing else reads, that tensor becomes the
    output `name` (the classifier's Gemm then ends the graph, as fuse_blocks expects of a head)."""
    g = model.graph
    node = next((n for n in g.node if name in n.output), None)
    if node is None or node.op_type not in ("Unsqueeze", "Reshape") or node.domain:
        return False
    z = node.input[0]
    shapes = {vi.name: vi.type.tensor_type.shape for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    readers = [n for n in g.node if z in n.input]
    if z not in shapes or len(shapes[z].dim) != 2 or len(readers) != 1 or z in {i.name for i in g.input}:
        return False
    g.node.remove(node)
    for n in g.node:
        n.output[:] = [name if o == z else o for o in n.output]
    kept = [vi for vi in g.value_info if vi.name != z]
    del g.value_info[:]
    g.value_info.extend(kept)
    return True


def _set_classes(dims, classes: int) -> None:
    del dims[2:]
    dims[1].Clear()
    dims[1].dim_value = classes
