"""unfix_batch(m) -> m': a batch size B written into the model becomes a free batch dimension.

  input float[B, C, H, W]                      ->  input float[N, C, H, W]   (outputs of batch B likewise)
  y = Reshape(x, [B, -1])   with x: [B, C, H, W] ->  y = Reshape(x, [-1, C·H·W])
  y = Reshape(x, [B, 0, 4]) with x: [B, 8, 2, 2] ->  y = Reshape(x, [-1, 8, 4])
Exports traced at a fixed batch (`x.view(1, -1)`, classic zoo files, torch.onnx.export without
dynamic_axes at the batch of its example input) run only at that batch; eecc's feature pass and cascade
run batches. B is the first graph input's leading dim when it is a number. A Reshape is rewritten when
its target shape is a constant whose first entry is B and its data input carries the batch (depends on
the graph input). Value-info entries are dropped (they held the old batch; shape inference recomputes
them). Does not mutate its input.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

BATCH = "N"


def unfix_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    shapes = _static_shapes(out)
    consts = _constants(g)
    batched = _depends_on_input(g)
    fixed = _fixed_batch(g)
    if fixed is None:
        return out
    changed = False
    for node in g.node:
        if node.op_type != "Reshape" or node.domain or len(node.input) < 2 or node.input[0] not in batched:
            continue
        target = consts.get(node.input[1])
        src = shapes.get(node.input[0])
        if target is None or target.ndim != 1 or len(target) < 2 or target[0] != fixed or src is None:
            continue
        new = _batch_free(target, src)
        if new is None:
            continue
        name = f"{node.input[1]}.batchfree"
        g.initializer.append(numpy_helper.from_array(new, name))
        node.input[1] = name
        changed = True
    for vi in [*g.input, *g.output]:
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        if vi.name in {i.name for i in g.initializer} or not dims:
            continue
        if dims[0].HasField("dim_value") and dims[0].dim_value == fixed:
            dims[0].Clear()
            dims[0].dim_param = BATCH
            changed = True
    if changed:
        del g.value_info[:]
        _drop_unused_constants(g)
    return out


def _fixed_batch(g: onnx.GraphProto) -> int | None:
    """The first graph input's leading dim when it is a number, else None (the batch is already free)."""
    inits = {t.name for t in g.initializer}
    inp = next((i for i in g.input if i.name not in inits), None)
    if inp is None or not inp.type.HasField("tensor_type") or not inp.type.tensor_type.shape.dim:
        return None
    dim = inp.type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value >= 1 else None


def _drop_unused_constants(g: onnx.GraphProto) -> None:
    """The replaced shape constants: a dead Constant node would end up in no stage when eecc partitions."""
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    nodes = [n for n in g.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    inits = [t for t in g.initializer if t.name in used]
    del g.node[:], g.initializer[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)


def _batch_free(target: np.ndarray, src: tuple[int, ...]) -> np.ndarray | None:
    """[B, *rest] -> [-1, *rest'] where rest' resolves 0 (copy) and -1 from the static source shape."""
    rest = [int(src[i + 1]) if d == 0 and i + 1 < len(src) else int(d) for i, d in enumerate(target[1:])]
    if -1 in rest:
        known = math.prod(d for d in rest if d != -1)
        if known == 0 or math.prod(src[1:]) % known:
            return None
        rest[rest.index(-1)] = math.prod(src[1:]) // known
    if math.prod(rest) != math.prod(src[1:]):
        return None  # the first dim was not the batch (e.g. a flattening that folds the batch in)
    return np.array([-1, *rest], dtype=np.int64)


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = inferred.graph
    out = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in list(dims)[1:]) and len(dims):
            out[vi.name] = tuple([1] + [d.dim_value for d in list(dims)[1:]])
    return out


def _constants(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return consts


def _depends_on_input(g: onnx.GraphProto) -> set[str]:
    inits = {t.name for t in g.initializer}
    live = {i.name for i in g.input if i.name not in inits}
    for node in g.node:  # nodes are topologically ordered in a valid model
        if any(i in live for i in node.input):
            live.update(o for o in node.output if o)
    return live
