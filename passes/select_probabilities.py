"""select_probabilities(m) -> m': a scikit-learn export's label and ZipMap outputs give way to its probability tensor.

  (label = f(ArgMax(p)), ZipMap(p))  ->  p      skl2onnx's default export (probabilities as a sequence of maps)
  (label = f(ArgMax(p)), p)          ->  p      skl2onnx with options={id(clf): {'zipmap': False}}
skl2onnx gives a classifier two outputs: the class label (int64 or string [N], from ArgMax and an ai.onnx.ml
ArrayFeatureExtractor over the class list) and the probabilities. eecc needs one output of class scores; the
label is argmax(p) mapped through the class list, so nothing is lost. The rewrite applies only to a model that
imports the ai.onnx.ml domain and whose outputs are one float tensor or ZipMap (its input a float tensor) and
otherwise only non-float tensors; anything else is left for ir.from_model to refuse. Nodes only the dropped
outputs needed are removed, and the ai.onnx.ml import with them when nothing else uses it. A one-line
EeccWarning says which outputs were dropped (and that class k is the model's k-th label where the class list
is not 0..K-1). Does not mutate its input.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ML = "ai.onnx.ml"


def select_probabilities(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    found = _probabilities(g) if any(o.domain == ML for o in out.opset_import) and len(g.output) > 1 else None
    if found is None:
        return out
    kept, _ = found
    del g.output[:]
    g.output.append(kept)
    _remove_dead_nodes(g)
    if not any(n.domain == ML for n in g.node):
        ops = [o for o in out.opset_import if o.domain != ML]
        del out.opset_import[:]
        out.opset_import.extend(ops)
    return out


def selection_note(before: onnx.ModelProto, after: onnx.ModelProto, origin: str) -> str | None:
    """What select_probabilities did, for a one-line warning (None: nothing): the outputs dropped, the tensor
    kept, and where the class list is not 0..K-1 that class k means its k-th label."""
    if len(before.graph.output) == len(after.graph.output):
        return None
    kept, zipmap = _probabilities(before.graph)
    dropped = [o.name for o in before.graph.output if o.name != kept.name]
    labels = _class_labels(before.graph, zipmap)
    how = f"from ZipMap's input '{kept.name}'" if zipmap is not None else f"from '{kept.name}'"
    note = "" if labels is None or labels == list(range(len(labels))) else (
        f"; class k is the model's label {labels[:4]}{'...' if len(labels) > 4 else ''}[k]: give y as those "
        "indices (np.searchsorted(classes, y))")
    return (f"{origin}: a scikit-learn export (skl2onnx): output{'s' if len(dropped) > 1 else ''} "
            f"{', '.join(repr(d) for d in dropped)} dropped: eecc reads the class probabilities {how}{note}")


def _probabilities(g: onnx.GraphProto) -> tuple[onnx.ValueInfoProto, onnx.NodeProto | None] | None:
    """(the probability tensor as a graph output, the ZipMap that read it or None), or None if the outputs are not
    one probability output beside labels."""
    producer = {o: n for n in g.node for o in n.output}
    probs, labels = [], 0
    for vi in g.output:
        node = producer.get(vi.name)
        if node is not None and node.op_type == "ZipMap" and node.domain == ML:
            probs.append((_tensor_output(g, node.input[0], node), node))
        elif vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            probs.append((vi, None))
        elif vi.type.HasField("tensor_type"):
            labels += 1
    if len(probs) != 1 or labels != len(g.output) - 1:
        return None
    return probs[0]


def _tensor_output(g: onnx.GraphProto, name: str, zipmap: onnx.NodeProto) -> onnx.ValueInfoProto:
    """ZipMap's input as a graph output: its declared type where the graph has one, else float [N, classes]."""
    declared = next((vi for vi in [*g.value_info, *g.input] if vi.name == name), None)
    if declared is not None:
        return declared
    inits = {t.name for t in g.initializer}
    batch = next(i for i in g.input if i.name not in inits).type.tensor_type.shape.dim[0]
    classes = len(_zipmap_labels(zipmap))
    vi = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None, classes])
    vi.type.tensor_type.shape.dim[0].CopyFrom(batch)
    return vi


def _zipmap_labels(zipmap: onnx.NodeProto) -> list:
    attrs = {a.name: helper.get_attribute_value(a) for a in zipmap.attribute}
    labels = attrs.get("classlabels_int64s") or attrs.get("classlabels_strings") or []
    return [v.decode() if isinstance(v, bytes) else int(v) for v in labels]


def _class_labels(g: onnx.GraphProto, zipmap: onnx.NodeProto | None) -> list | None:
    """The class list (ZipMap's labels, else the constant ArrayFeatureExtractor maps ArgMax through), or None."""
    if zipmap is not None:
        return _zipmap_labels(zipmap)
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "ArrayFeatureExtractor" and n.domain == ML and n.input[0] in inits:
            values = numpy_helper.to_array(inits[n.input[0]]).ravel()
            return [v.decode() if isinstance(v, bytes) else (int(v) if np.issubdtype(values.dtype, np.integer)
                                                             else str(v)) for v in values]
    return None


def _remove_dead_nodes(g: onnx.GraphProto) -> None:
    """Nodes, initializers and value_info that no graph output depends on, removed (nodes in their order)."""
    producer = {o: n for n in g.node for o in n.output}
    live, todo = set(), [o.name for o in g.output]
    while todo:
        name = todo.pop()
        if name in live:
            continue
        live.add(name)
        node = producer.get(name)
        if node is not None:
            todo += [i for i in node.input if i] + [o for o in node.output if o]
    nodes = [n for n in g.node if any(o in live for o in n.output)]
    inits = [t for t in g.initializer if t.name in live]
    infos = [vi for vi in g.value_info if vi.name in live]
    for field, keep in ((g.node, nodes), (g.initializer, inits), (g.value_info, infos)):
        del field[:]
        field.extend(keep)
